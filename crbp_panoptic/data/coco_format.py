"""The COCO panoptic format, read and written: segment ids as RGB, uncompressed RLE masks,
"separated" semantic labels, segment records, and the JSON and PNG files that hold them.

Needs only numpy and Pillow. The validator (:mod:`.validate`) and the split writer
(:mod:`.splits`) share these; they work on real COCO panoptic data as well.
"""

import json
import os
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "PanopticFormatError",
    "id2rgb",
    "load_json",
    "mask_to_rle",
    "panoptic_to_semantic",
    "read_png",
    "rgb2id",
    "rle_to_mask",
    "segment_record",
    "write_json",
]


class PanopticFormatError(ValueError):
    """An annotation file disagrees with the COCO panoptic format or with its PNGs."""


# ---------------------------------------------------------------------------------------
# The RGB encoding of segment ids (panopticapi.utils.id2rgb / rgb2id, re-implemented so
# that this module needs no panopticapi; tests check both agree).


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Encode segment ids as colours: ``id = R + 256 G + 256^2 B``.

    Args:
        ids (np.ndarray): (H, W) non-negative integers below 256**3.

    Returns:
        np.ndarray: (H, W, 3) uint8.
    """
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([(ids >> (8 * c)) & 255 for c in range(3)], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`id2rgb`: (H, W, 3) uint8 -> (H, W) int64 segment ids."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


# ---------------------------------------------------------------------------------------
# COCO run-length encoding (the uncompressed form: a dict with a list of counts).


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a binary mask (column-major runs, starting with zeros).

    Args:
        mask (np.ndarray): (H, W) bool.

    Returns:
        dict: ``{"size": [H, W], "counts": [int, ...]}``, readable by pycocotools
        (``frPyObjects``) and by Detectron2's ``load_coco_json``.
    """
    h, w = mask.shape
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode an uncompressed COCO RLE (see :func:`mask_to_rle`) to an (H, W) bool mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected H*W = {h * w}")
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape((w, h)).T


# ---------------------------------------------------------------------------------------
# Semantic labels for Panoptic FPN, as Detectron2's prepare_panoptic_fpn.py derives them.


def panoptic_to_semantic(
    panoptic: np.ndarray, segments_info: Sequence[dict], categories: Sequence[dict]
) -> np.ndarray:
    """The "separated" semantic labels of a panoptic annotation.

    Things map to 0, the i-th stuff category (in the order of ``categories``) to i + 1,
    and pixels of no listed segment (including id 0) to 255 -- the convention of
    Detectron2's ``datasets/prepare_panoptic_fpn.py`` and ``register_coco_panoptic_separated``.

    Args:
        panoptic (np.ndarray): (H, W) segment ids.
        segments_info (list[dict]): the annotation's segments (``id``, ``category_id``).
        categories (list[dict]): the dataset's categories (``id``, ``isthing``).

    Returns:
        np.ndarray: (H, W) uint8.
    """
    stuff_ids = [c["id"] for c in categories if not c["isthing"]]
    if len(stuff_ids) > 254:
        raise ValueError(f"{len(stuff_ids)} stuff categories do not fit 8-bit labels 1..254")
    label = {c["id"]: 0 for c in categories if c["isthing"]}
    label.update({cid: i + 1 for i, cid in enumerate(stuff_ids)})
    out = np.full(panoptic.shape, 255, dtype=np.uint8)
    for seg in segments_info:
        out[panoptic == seg["id"]] = label[seg["category_id"]]
    return out


def segment_record(seg_id: int, category_id: int, mask: np.ndarray) -> dict:
    """The COCO panoptic ``segments_info`` entry of a segment: id, category, box, area.

    Args:
        seg_id (int): the segment id.
        category_id (int): its category.
        mask (np.ndarray): (H, W) bool, the segment's pixels (at least one).

    Returns:
        dict: ``id``, ``category_id``, ``iscrowd`` (0), ``bbox`` [x, y, w, h], ``area``.
    """
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
    return {
        "id": int(seg_id),
        "category_id": int(category_id),
        "iscrowd": 0,
        "bbox": bbox,
        "area": int(mask.sum()),
    }


# ---------------------------------------------------------------------------------------
# Files.


def write_json(obj, path: str) -> None:
    """Write ``obj`` as compact JSON (the split writer's format)."""
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


def load_json(path: str) -> dict:
    """Read an annotation file that holds a JSON object; errors name the file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PanopticFormatError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(data, dict):
        raise PanopticFormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_png(path: str, what: str) -> np.ndarray:
    """Read a PNG (``what`` names it in errors) as an array."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise PanopticFormatError(f"{path}: cannot read {what} ({e})") from e
