"""The mask head alone: its masks for the true boxes and classes of a test split.

PQ and mask AP mix detection with segmentation. Here every thing of ``DATASETS.TEST[0]``
gets its ground-truth box and class (``roi_heads.forward_with_given_boxes``), and the mask
head's mask (Detectron2's postprocessing: pasted into the image at threshold 0.5) is
compared with the thing's own mask. Beside the IoU, ``miss`` is the share of the thing the
mask leaves out and ``leak`` the share of the mask lying on *other* instances of the class:
the error of a head that does not group where instances of one class cross. The
grouping-free mask ("every pixel of the class inside the true box", as
:func:`crbp_panoptic.data.longrange.box_class_mask_iou`) is scored on the same things.
"""

import copy
import os
import statistics
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["SCORES", "score_masks", "score_summary", "summarize", "true_box_masks", "true_things"]

#: Per-thing scores of :func:`score_masks`, in order.
SCORES = ("iou", "miss", "leak", "grouping_free_iou")


def _box_slices(box) -> tuple:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return slice(max(y0, 0), max(y1, 0)), slice(max(x0, 0), max(x1, 0))


def score_masks(
    pred: np.ndarray, gt: np.ndarray, classes: Sequence[int], boxes: Sequence
) -> List[Dict[str, float]]:
    """Scores of each thing (:data:`SCORES`).

    Args:
        pred, gt: (N, H, W) bool: the predicted and true masks of N things of one image.
        classes: their N classes; boxes: their N true boxes, XYXY in pixels.
    """
    out = []
    for k in range(len(gt)):
        others = np.zeros(gt.shape[1:], dtype=bool)
        for j in range(len(gt)):
            if j != k and classes[j] == classes[k]:
                others |= gt[j]
        rows, cols = _box_slices(boxes[k])
        free = np.zeros_like(others)
        free[rows, cols] = (gt[k] | others)[rows, cols]
        p, g = pred[k], gt[k]
        out.append(
            {
                "iou": float((p & g).sum() / max((p | g).sum(), 1)),
                "miss": float((g & ~p).sum() / max(g.sum(), 1)),
                "leak": float((p & others).sum() / max(p.sum(), 1)),
                "grouping_free_iou": float((free & g).sum() / max((free | g).sum(), 1)),
            }
        )
    return out


def summarize(scores: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """``things``; per score its median and mean; ``found`` and ``grouping_free_found``: the
    share of things above IoU 0.5 (the panoptic matching threshold)."""
    out: Dict[str, float] = {"things": len(scores)}
    for key in SCORES:
        values = [s[key] for s in scores]
        out[f"{key}_median"] = statistics.median(values) if values else None
        out[f"{key}_mean"] = statistics.fmean(values) if values else None
    for key, name in (("iou", "found"), ("grouping_free_iou", "grouping_free_found")):
        out[name] = sum(s[key] > 0.5 for s in scores) / len(scores) if scores else None
    return out


def _gt_masks(annotations: Sequence[dict], height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_util

    from detectron2.structures import polygons_to_bitmask

    masks = []
    for a in annotations:
        segm = a["segmentation"]
        if isinstance(segm, dict):
            if isinstance(segm["counts"], list):
                segm = mask_util.frPyObjects(segm, *segm["size"])
            masks.append(mask_util.decode(segm).astype(bool))
        else:
            masks.append(polygons_to_bitmask(segm, height, width))
    return np.stack(masks)


def true_things(cfg, dataset_name: str):
    """Per image of ``dataset_name`` with a non-crowd thing: ``(dataset dict, mapped input as
    at test time, its non-crowd annotations, their boxes XYXY at the image's size (N, 4)
    float32, the (4,) scale from the image's size to the input's)``."""
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.structures import BoxMode

    mapper = DatasetMapper(cfg, is_train=False)
    for d in DatasetCatalog.get(dataset_name):
        annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        if not annos:
            continue
        inp = mapper(copy.deepcopy(d))
        (in_h, in_w), h, w = inp["image"].shape[1:], d["height"], d["width"]
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
            dtype=np.float32,
        )
        yield d, inp, annos, boxes, np.array([in_w / w, in_h / h] * 2, dtype=np.float32)


def true_box_masks(cfg, model, mask_threshold: float = 0.5) -> Dict[str, float]:
    """:func:`summarize` of the scores of every thing of ``cfg.DATASETS.TEST[0]`` (crowd
    regions left out), ``model`` in eval mode. Images are resized as at test time; the
    masks are compared at the image's own size, a pixel in the mask where the head's
    probability is at least ``mask_threshold`` (Detectron2's default 0.5)."""
    if not 0.0 < mask_threshold < 1.0:
        raise ValueError(f"mask_threshold={mask_threshold}; expected a probability in (0, 1)")
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import Boxes, Instances

    scores: List[Dict[str, float]] = []
    for d, inp, annos, boxes, scale in true_things(cfg, cfg.DATASETS.TEST[0]):
        h, w = d["height"], d["width"]
        in_h, in_w = inp["image"].shape[1:]
        inst = Instances((in_h, in_w))
        inst.pred_boxes = Boxes(torch.from_numpy(boxes * scale))
        inst.pred_classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.int64)
        with torch.no_grad():
            images = model.preprocess_image([inp])
            features = model.backbone(images.tensor)
            (out,) = model.roi_heads.forward_with_given_boxes(features, [inst])
            out = detector_postprocess(out, h, w, mask_threshold=mask_threshold)
        if len(out) != len(annos):
            raise ValueError(f"{d['file_name']}: a true box is empty after clipping to the image")
        pred = out.pred_masks.cpu().numpy().astype(bool)
        classes = [a["category_id"] for a in annos]
        scores += score_masks(pred, _gt_masks(annos, h, w), classes, boxes)
    return summarize(scores)


def score_summary(
    summary: dict,
    seeds: Optional[Sequence[int]] = None,
    multiples: Sequence[float] = (1,),
    thresholds: Sequence[float] = (0.5,),
) -> List[dict]:
    """:func:`true_box_masks` of the finished runs of a comparison's ``summary.json``
    (``tools/compare_configs.py``) at each mask threshold: one row per (run entry,
    threshold) with ``arm``, ``seed``, ``test_steps``, ``mask_threshold`` and the scores.

    Args:
        seeds: the seeds to score (None: all); multiples: the test-step multiples of T.
    """
    from ..engine import setup_cfg
    from .evaluation import load_model

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    for t in thresholds:
        if not 0.0 < t < 1.0:
            raise ValueError(f"mask threshold {t}; expected a probability in (0, 1)")
    rows = []
    for r in summary["runs"]:
        if r.get("status") != "ok" or r["steps_multiple"] not in multiples:
            continue
        if seeds is not None and r["seed"] not in seeds:
            continue
        cfg = setup_cfg(os.path.join(repo, r["config"]), list(r["opts"]) + ["MODEL.DEVICE", "cpu"])
        cfg.freeze()
        model = load_model(cfg, r["weights"])
        for t in thresholds:
            row = dict(arm=r["arm"], seed=r["seed"], test_steps=r["test_steps"], mask_threshold=t)
            rows.append({**row, **true_box_masks(cfg, model, t)})
    return rows
