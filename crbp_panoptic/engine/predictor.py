"""Panoptic predictions on image files, written the way Detectron2 users read them.

For each image ``NAME``: ``NAME.png`` (the prediction drawn by Detectron2's Visualizer),
``NAME_panoptic.png`` (segment ids in panopticapi's RGB encoding, id = R + 256 G +
256^2 B, 0 = no segment) and ``NAME.json`` (its segments). For a run,
``predictions.json`` holds every image's segments in the COCO panoptic results format.
Category ids in the written files are the dataset's (COCO) ids, mapped back from the
model's contiguous ids as Detectron2's ``COCOPanopticEvaluator`` does.

Nothing is overwritten by surprise: :func:`plan_outputs` refuses, before the model is
loaded, an output folder that cannot be written, two inputs whose outputs would have the
same name, and an output that would replace an input. Every file is written to a
temporary name and renamed into place, with the permissions of the user's umask.
"""

import json
import logging
import os
import uuid
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from .checkpoint import check_weights_given, load_trained_weights
from .inputs import read_rgb

__all__ = [
    "RUN_FILE",
    "OutputError",
    "PanopticCategories",
    "build_predictor",
    "check_output_dir",
    "output_names",
    "plan_outputs",
    "predict_to_files",
    "segments_record",
    "write_image_outputs",
]

logger = logging.getLogger(__name__)

RUN_FILE = "predictions.json"


class OutputError(ValueError):
    """An output that cannot or must not be written; the message names the file or folder."""


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


def output_names(name: str) -> Dict[str, str]:
    """The files written for an image whose file name stem is ``name``, by what they hold."""
    return {"overlay": f"{name}.png", "id map": f"{name}_panoptic.png", "segments": f"{name}.json"}


def check_output_dir(out_dir: str) -> None:
    """Check that ``out_dir`` is a writable folder, or can be created as one (not yet).

    Raises:
        OutputError: naming the folder: it is a file, it is not writable, or the folder
            it would be created in is a file or is not writable.
    """
    path = os.path.abspath(out_dir)
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise OutputError(f"output folder {out_dir!r} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"output folder {out_dir!r} is not writable")
        return
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"cannot create the output folder {out_dir!r}: {parent!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot create the output folder {out_dir!r}: {parent!r} is not writable"
        )


def plan_outputs(paths: Sequence[str], out_dir: str) -> List[Tuple[str, str]]:
    """Check every output name of a run before anything is computed.

    Args:
        paths: the input images.
        out_dir: the output folder.

    Returns:
        list[(str, str)]: (input path, output name stem), in input order.

    Raises:
        OutputError: naming both files when two outputs would have the same name (inputs
            ``x.png`` and ``x_panoptic.jpg``: both would write ``x_panoptic.png``; an input
            named ``predictions.*``: its segments would be the run's ``predictions.json``)
            or an output would replace an input (``out_dir`` is an input's folder);
            and as :func:`check_output_dir`.
    """
    check_output_dir(out_dir)
    owners = {RUN_FILE: (None, "the run's predictions")}
    plan = []
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        for what, file_name in output_names(name).items():
            if file_name in owners:
                other, other_what = owners[file_name]
                first = other_what if other is None else f"the {other_what} of {other!r}"
                raise OutputError(
                    f"{first} and the {what} of {path!r} would both be written to "
                    f"{os.path.join(out_dir, file_name)!r}; rename one of the inputs"
                )
            owners[file_name] = (path, what)
        plan.append((path, name))
    inputs = {os.path.realpath(p): p for p in paths}
    for file_name, (path, what) in owners.items():
        target = os.path.join(out_dir, file_name)
        source = f"the {what} of {path!r}" if path else what
        clash = inputs.get(os.path.realpath(target))
        if clash is None and os.path.exists(target):  # e.g. a case-insensitive file system
            clash = next((p for p in paths if os.path.samefile(p, target)), None)
        if clash is not None:
            raise OutputError(
                f"{source} would be written to {target!r}, replacing the input {clash!r}; "
                "choose another --output folder"
            )
    return plan


def _replace_into(path: str, write: Callable) -> None:
    """Call ``write(file)`` on a new temporary file next to ``path``, then rename it to ``path``.

    The file is created with mode 0666 less the umask, as ``open`` creates files.

    Raises:
        OutputError: naming ``path`` (not the temporary file) when writing fails.
    """
    tmp = os.path.join(os.path.dirname(path) or ".", f".tmp-{uuid.uuid4().hex[:12]}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path!r}: {e.strerror or e}") from e
        raise


def _save_png(array: np.ndarray, path: str) -> None:
    _replace_into(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def _save_json(obj, path: str) -> None:
    _replace_into(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def write_image_outputs(
    out_dir: str,
    name: str,
    image_rgb: np.ndarray,
    panoptic_seg: torch.Tensor,
    segments_info: List[dict],
    categories: PanopticCategories,
    image_size: Optional[Tuple[int, int]] = None,
) -> dict:
    """Write ``NAME.png``, ``NAME_panoptic.png`` and ``NAME.json``; return the COCO annotation.

    ``image_rgb`` and ``panoptic_seg`` have the same size, which ``NAME.json`` records
    as ``height`` and ``width``; ``image_size`` (default: the same) is the input file's
    own (height, width), recorded as ``image_height`` and ``image_width``.
    """
    from panopticapi.utils import id2rgb

    from detectron2.utils.visualizer import Visualizer

    seg = panoptic_seg.cpu()
    seg_np = seg.numpy().astype(np.int64)
    segments = segments_record(seg_np, segments_info, categories)
    overlay = Visualizer(image_rgb, categories.metadata).draw_panoptic_seg(seg, segments_info)
    files = output_names(name)
    _save_png(overlay.get_image(), os.path.join(out_dir, files["overlay"]))
    _save_png(id2rgb(seg_np).astype(np.uint8), os.path.join(out_dir, files["id map"]))
    h, w = seg_np.shape
    image_h, image_w = image_size or (h, w)
    record = {"height": h, "width": w, "image_height": image_h, "image_width": image_w}
    _save_json({**record, "segments_info": segments}, os.path.join(out_dir, files["segments"]))
    coco_segments = [
        {k: s[k] for k in ("id", "category_id", "isthing", "area", "score")} for s in segments
    ]
    return {"image_id": name, "file_name": files["id map"], "segments_info": coco_segments}


def build_predictor(cfg, random_weights: bool = False):
    """Detectron2's ``DefaultPredictor`` with trained weights, or a clear error.

    Args:
        cfg: a frozen config.
        random_weights: run an untrained model (``--random-weights``) instead of
            requiring ``MODEL.WEIGHTS``.

    Raises:
        WeightsError: ``MODEL.WEIGHTS`` missing (without ``random_weights``), unreadable,
            or not fitting the model (see :mod:`crbp_panoptic.engine.checkpoint`).
    """
    from detectron2.engine import DefaultPredictor

    weights = check_weights_given(cfg.MODEL.WEIGHTS, random_weights)
    empty = cfg.clone()
    empty.defrost()
    empty.MODEL.WEIGHTS = ""  # loaded below, strictly
    empty.freeze()
    predictor = DefaultPredictor(empty)
    load_trained_weights(predictor.model, weights)
    return predictor


def predict_to_files(
    cfg,
    paths: Sequence[str],
    out_dir: str,
    progress: bool = True,
    predictor: Optional[Callable] = None,
    random_weights: bool = False,
) -> Dict[str, object]:
    """Run a predictor on checked image paths and write every output.

    The output names and folder are checked (:func:`plan_outputs`) before the model is
    built. An image larger than the model's test-time size (``INPUT.MIN_SIZE_TEST`` on
    the short side, at most ``INPUT.MAX_SIZE_TEST`` on the long side) is shrunk to that
    size when read, which is all the model sees: its outputs have that size and
    ``NAME.json`` records the file's own size too. Smaller images keep their size.

    Args:
        cfg: a frozen config (``MODEL.WEIGHTS`` is loaded by :func:`build_predictor`).
        paths: images, already checked (:func:`~crbp_panoptic.engine.inputs.collect_images`).
        out_dir: created if missing.
        progress: show a tqdm progress bar.
        predictor: a callable ``BGR array -> outputs`` (``DefaultPredictor``'s contract)
            to use instead of building one.
        random_weights: see :func:`build_predictor`.

    Returns:
        dict: the contents of ``predictions.json`` (``{"annotations": [...]}``): one entry
        per image with ``image_id`` (the file name stem), ``file_name``
        (``NAME_panoptic.png``) and ``segments_info``.

    Raises:
        OutputError: see :func:`plan_outputs`; or a file that cannot be written.
        WeightsError: see :func:`build_predictor`.
    """
    from tqdm import tqdm

    from detectron2.data import MetadataCatalog

    plan = plan_outputs(paths, out_dir)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
    categories = PanopticCategories(metadata)
    predictor = predictor or build_predictor(cfg, random_weights)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder {out_dir!r}: {e.strerror}") from e
    test_size = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    annotations = []
    for path, name in tqdm(plan, desc="predict", unit="image", disable=not progress):
        image_rgb, image_size = read_rgb(path, test_size)
        # DefaultPredictor takes BGR and converts it to INPUT.FORMAT itself.
        outputs = predictor(np.ascontiguousarray(image_rgb[:, :, ::-1]))
        if "panoptic_seg" not in outputs:
            raise ValueError(
                f"{cfg.MODEL.META_ARCHITECTURE} gives no 'panoptic_seg'; use a panoptic config"
            )
        seg, segments_info = outputs["panoptic_seg"]
        annotations.append(
            write_image_outputs(
                out_dir, name, image_rgb, seg, segments_info, categories, image_size
            )
        )
    result = {"annotations": annotations}
    _save_json(result, os.path.join(out_dir, RUN_FILE))
    return result
