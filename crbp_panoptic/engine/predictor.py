"""Panoptic predictions on image files, written the way Detectron2 users read them.

For each image ``NAME``: ``NAME.png`` (the prediction drawn by Detectron2's Visualizer),
``NAME_panoptic.png`` (segment ids in panopticapi's RGB encoding, id = R + 256 G +
256^2 B, 0 = no segment) and ``NAME.json`` (its segments). For a run,
``predictions.json`` holds every image's segments in the COCO panoptic results format.
Category ids in the written files are the dataset's (COCO) ids, mapped back from the
model's contiguous ids as Detectron2's ``COCOPanopticEvaluator`` does.
"""

import json
import logging
import os
import tempfile
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "PanopticCategories",
    "predict_to_files",
    "segments_record",
    "write_image_outputs",
]

logger = logging.getLogger(__name__)


class PanopticCategories:
    """Names and dataset ids of a panoptic model's contiguous categories, from metadata.

    Args:
        metadata: Detectron2 metadata with ``thing_classes`` and ``stuff_classes`` and,
            optionally, ``thing_dataset_id_to_contiguous_id`` /
            ``stuff_dataset_id_to_contiguous_id`` (without them, ids stay contiguous).
    """

    def __init__(self, metadata):
        missing = [k for k in ("thing_classes", "stuff_classes") if not hasattr(metadata, k)]
        if missing:
            raise ValueError(
                f"metadata {metadata.name!r} lacks {missing}; set DATASETS.TEST to a registered "
                "panoptic dataset so categories can be named"
            )
        self.metadata = metadata
        self._names = {True: metadata.thing_classes, False: metadata.stuff_classes}
        self._to_dataset = {}
        for isthing, key in (
            (True, "thing_dataset_id_to_contiguous_id"),
            (False, "stuff_dataset_id_to_contiguous_id"),
        ):
            mapping = metadata.get(key) or {}
            self._to_dataset[isthing] = {v: k for k, v in mapping.items()}

    def name(self, contiguous_id: int, isthing: bool) -> str:
        return self._names[isthing][contiguous_id]

    def dataset_id(self, contiguous_id: int, isthing: bool) -> int:
        return int(self._to_dataset[isthing].get(contiguous_id, contiguous_id))


def segments_record(
    panoptic_seg: np.ndarray, segments_info: List[dict], categories: PanopticCategories
) -> List[dict]:
    """The segments of one prediction with dataset category ids, names and exact areas.

    Args:
        panoptic_seg: (H, W) int segment ids; 0 = no segment.
        segments_info: Panoptic FPN's list of dicts (``id``, ``category_id`` contiguous,
            ``isthing``, ``score`` for things).
        categories: the id mapping and names.

    Returns:
        list[dict]: ``id``, ``category_id`` (dataset id), ``category`` (name),
        ``isthing``, ``area`` (pixels of the id in ``panoptic_seg``), ``score`` (None
        for stuff, which Panoptic FPN does not score).
    """
    ids, counts = np.unique(panoptic_seg, return_counts=True)
    areas = dict(zip(ids.tolist(), counts.tolist()))
    out = []
    for s in segments_info:
        isthing = bool(s["isthing"])
        out.append(
            {
                "id": int(s["id"]),
                "category_id": categories.dataset_id(int(s["category_id"]), isthing),
                "category": categories.name(int(s["category_id"]), isthing),
                "isthing": isthing,
                "area": int(areas.get(int(s["id"]), 0)),
                "score": float(s["score"]) if isthing and "score" in s else None,
            }
        )
    return out


def _replace_into(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _save_png(array: np.ndarray, path: str) -> None:
    _replace_into(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _save_json(obj, path: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)

    _replace_into(path, write)


def write_image_outputs(
    out_dir: str,
    name: str,
    image_rgb: np.ndarray,
    panoptic_seg: torch.Tensor,
    segments_info: List[dict],
    categories: PanopticCategories,
) -> dict:
    """Write ``NAME.png``, ``NAME_panoptic.png`` and ``NAME.json``; return the COCO annotation."""
    from panopticapi.utils import id2rgb

    from detectron2.utils.visualizer import Visualizer

    seg = panoptic_seg.cpu()
    seg_np = seg.numpy().astype(np.int64)
    segments = segments_record(seg_np, segments_info, categories)
    overlay = Visualizer(image_rgb, categories.metadata).draw_panoptic_seg(seg, segments_info)
    png_name = f"{name}_panoptic.png"
    _save_png(overlay.get_image(), os.path.join(out_dir, f"{name}.png"))
    _save_png(id2rgb(seg_np).astype(np.uint8), os.path.join(out_dir, png_name))
    h, w = seg_np.shape
    _save_json(
        {"height": h, "width": w, "segments_info": segments}, os.path.join(out_dir, f"{name}.json")
    )
    coco_segments = [
        {k: s[k] for k in ("id", "category_id", "isthing", "area", "score")} for s in segments
    ]
    return {"image_id": name, "file_name": png_name, "segments_info": coco_segments}


def predict_to_files(
    cfg,
    paths: Sequence[str],
    out_dir: str,
    progress: bool = True,
    predictor: Optional[Callable] = None,
) -> Dict[str, object]:
    """Run ``DefaultPredictor(cfg)`` on checked image paths and write every output.

    Args:
        cfg: a frozen config (``MODEL.WEIGHTS`` is loaded by the predictor).
        paths: images, already checked (:func:`~crbp_panoptic.engine.inputs.collect_images`).
        out_dir: created if missing.
        progress: show a tqdm progress bar.
        predictor: a callable ``BGR/RGB array -> outputs`` to use instead of building one.

    Returns:
        dict: the contents of ``predictions.json`` (``{"annotations": [...]}``): one entry
        per image with ``image_id`` (the file name stem), ``file_name``
        (``NAME_panoptic.png``) and ``segments_info``.
    """
    from tqdm import tqdm

    from detectron2.data import MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor

    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
    categories = PanopticCategories(metadata)
    predictor = predictor or DefaultPredictor(cfg)
    os.makedirs(out_dir, exist_ok=True)
    annotations = []
    for path in tqdm(paths, desc="predict", unit="image", disable=not progress):
        image_rgb = read_image(path, format="RGB")
        model_input = image_rgb[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image_rgb
        outputs = predictor(np.ascontiguousarray(model_input))
        if "panoptic_seg" not in outputs:
            raise ValueError(
                f"{cfg.MODEL.META_ARCHITECTURE} gives no 'panoptic_seg'; use a panoptic config"
            )
        seg, segments_info = outputs["panoptic_seg"]
        name = os.path.splitext(os.path.basename(path))[0]
        annotations.append(
            write_image_outputs(out_dir, name, image_rgb, seg, segments_info, categories)
        )
    result = {"annotations": annotations}
    _save_json(result, os.path.join(out_dir, "predictions.json"))
    return result
