"""Plausible detections derived from COCO ground truth, for the COCOeval tests: every object
found with a jittered box and a shifted mask, some missed, some duplicated, some false
positives, so AP is neither 0 nor 1 and every branch of COCOeval's matching runs."""

from typing import List

import numpy as np
import pycocotools.mask as mask_util


def rle_to_mask(rle: dict) -> np.ndarray:
    """An (H, W) bool mask from a COCO RLE (uncompressed, as the synthetic data writes it)."""
    return mask_util.decode(mask_util.frPyObjects(rle, *rle["size"])).astype(bool)


def _detection(image_id, category_id, mask, score, rng, max_shift):
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    mask = np.roll(mask, (dy, dx), axis=(0, 1))
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]
    box = [v + float(rng.normal(0, 1.0)) for v in box[:2]] + [
        max(1.0, v + float(rng.normal(0, 1.5))) for v in box[2:]
    ]
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # JSON-able, as Detectron2 writes it
    return dict(image_id=int(image_id), category_id=int(category_id), score=float(score)) | {
        "bbox": box,
        "segmentation": rle,
    }


def perturbed_detections(
    coco_json: dict,
    seed: int = 0,
    miss: float = 0.1,
    duplicate: float = 0.1,
    false_positive: float = 0.2,
    max_shift: int = 3,
) -> List[dict]:
    """COCO results derived from ground truth, deterministically.

    Args:
        coco_json: a COCO instances dataset (``images``, ``annotations`` with uncompressed
            RLE ``segmentation`` as the synthetic data has, ``categories``).
        seed: seed of the perturbations.
        miss: probability that an object is not detected.
        duplicate: probability of a second, lower-scored detection of an object.
        false_positive: expected false positives per image (Poisson): the mask of a
            random object of the same image size, any class.
        max_shift: masks move by up to this many pixels in each direction.

    Returns:
        list[dict]: ``image_id``, ``category_id``, ``score``, ``bbox`` [x, y, w, h] and
        ``segmentation`` (compressed RLE, counts as str).
    """
    rng = np.random.default_rng(seed)
    categories = [c["id"] for c in coco_json["categories"]]
    annotations = coco_json["annotations"]
    out = []
    for ann in annotations:
        mask, ids = rle_to_mask(ann["segmentation"]), (ann["image_id"], ann["category_id"])
        if rng.random() >= miss:
            out.append(_detection(*ids, mask, rng.uniform(0.3, 1.0), rng, max_shift))
        if rng.random() < duplicate:
            out.append(_detection(*ids, mask, rng.uniform(0.05, 0.5), rng, 2 * max_shift))
    for image in coco_json["images"]:
        for _ in range(rng.poisson(false_positive) if annotations else 0):
            source = annotations[int(rng.integers(len(annotations)))]
            if source["segmentation"]["size"] != [image["height"], image["width"]]:
                continue
            mask = rle_to_mask(source["segmentation"])
            category = rng.choice(categories)
            out.append(
                _detection(image["id"], category, mask, rng.uniform(0.05, 0.9), rng, max_shift)
            )
    return [d for d in out if d is not None]
