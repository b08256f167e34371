"""Checking a COCO panoptic split against its files: what Detectron2's loaders and
panopticapi's PQ assume, with errors that name the offending file.

Works on any COCO panoptic data (real COCO included); needs only numpy and Pillow.
"""

import os
from typing import Dict, Optional

import numpy as np

from .coco_format import (
    PanopticFormatError,
    load_json,
    panoptic_to_semantic,
    read_png,
    rgb2id,
    rle_to_mask,
)

__all__ = ["validate_panoptic_split"]


def _require(obj, keys, where):
    missing = [k for k in keys if k not in obj]
    if missing:
        raise PanopticFormatError(f"{where}: missing key(s) {missing}")


def validate_panoptic_split(
    panoptic_json: str,
    panoptic_root: str,
    image_root: Optional[str] = None,
    sem_seg_root: Optional[str] = None,
    instances_json: Optional[str] = None,
    check_pixels: bool = True,
) -> Dict[str, int]:
    """Check a COCO panoptic split; errors name the offending file.

    Cheap checks (always): both JSONs parse and have the COCO keys; every annotation's
    image and category ids are declared; segment ids are unique per image; the panoptic
    PNGs, images and semantic PNGs exist; the split has both thing and stuff segments.
    Pixel checks (``check_pixels``; reads every PNG, so meant for small data): each
    panoptic PNG is RGB of the declared size, holds exactly the segment ids of its JSON
    entry (besides 0) with the JSON's areas and boxes; each semantic PNG equals
    :func:`panoptic_to_semantic` of its panoptic PNG; each uncompressed-RLE instance
    mask has the image's size and the annotation's area.

    Args:
        panoptic_json (str): COCO panoptic JSON.
        panoptic_root (str): directory of the panoptic PNGs.
        image_root (str, optional): directory of the images (``images[].file_name``).
        sem_seg_root (str, optional): directory of the "separated" semantic PNGs
            (``<stem>.png`` for image ``<stem>.jpg``).
        instances_json (str, optional): COCO instances JSON of the same images.
        check_pixels (bool): also run the pixel checks.

    Returns:
        dict: counts: ``images``, ``segments``, ``thing_segments``, ``stuff_segments``,
        ``images_without_things``.

    Raises:
        PanopticFormatError (a ValueError), FileNotFoundError.
    """
    data = load_json(panoptic_json)
    _require(data, ["images", "annotations", "categories"], panoptic_json)
    categories = data["categories"]
    for c in categories:
        _require(c, ["id", "isthing"], f"{panoptic_json}: category {c}")
    isthing = {c["id"]: bool(c["isthing"]) for c in categories}
    images = {}
    for im in data["images"]:
        _require(im, ["id", "file_name", "width", "height"], f"{panoptic_json}: image {im}")
        images[im["id"]] = im
    stats = dict(
        images=len(images), segments=0, thing_segments=0, stuff_segments=0, images_without_things=0
    )
    seen = set()
    for ann in data["annotations"]:
        _require(ann, ["image_id", "file_name", "segments_info"], f"{panoptic_json}: annotation")
        where = f"{panoptic_json}: annotation of image_id {ann['image_id']} ({ann['file_name']})"
        if ann["image_id"] not in images:
            raise PanopticFormatError(f"{where}: image_id not in 'images'")
        if ann["image_id"] in seen:
            raise PanopticFormatError(f"{where}: second annotation of the same image")
        seen.add(ann["image_id"])
        segs = ann["segments_info"]
        ids = [s.get("id") for s in segs]
        if len(set(ids)) != len(ids):
            raise PanopticFormatError(f"{where}: repeated segment ids {ids}")
        for s in segs:
            _require(s, ["id", "category_id", "area", "bbox", "iscrowd"], f"{where}: segment {s}")
            if s["category_id"] not in isthing:
                raise PanopticFormatError(
                    f"{where}: segment {s['id']} has undeclared category_id {s['category_id']}"
                )
        n_things = sum(isthing[s["category_id"]] for s in segs)
        stats["segments"] += len(segs)
        stats["thing_segments"] += n_things
        stats["stuff_segments"] += len(segs) - n_things
        stats["images_without_things"] += n_things == 0

        image = images[ann["image_id"]]
        png_path = os.path.join(panoptic_root, ann["file_name"])
        if not os.path.isfile(png_path):
            raise FileNotFoundError(
                f"panoptic PNG not found: {png_path} (listed in {panoptic_json})"
            )
        if image_root is not None:
            img_path = os.path.join(image_root, image["file_name"])
            if not os.path.isfile(img_path):
                raise FileNotFoundError(f"image not found: {img_path} (listed in {panoptic_json})")
        sem_path = None
        if sem_seg_root is not None:
            sem_path = os.path.join(sem_seg_root, os.path.splitext(image["file_name"])[0] + ".png")
            if not os.path.isfile(sem_path):
                raise FileNotFoundError(f"semantic PNG not found: {sem_path}")
        if check_pixels:
            _check_panoptic_pixels(png_path, sem_path, image, segs, categories)
    if not data["annotations"]:
        raise PanopticFormatError(f"{panoptic_json}: no annotations")
    if not stats["thing_segments"] or not stats["stuff_segments"]:
        raise PanopticFormatError(
            f"{panoptic_json}: the split has {stats['thing_segments']} thing and "
            f"{stats['stuff_segments']} stuff segments; PQ needs both"
        )
    if instances_json is not None:
        _check_instances(instances_json, images, check_pixels)
    return stats


def _check_panoptic_pixels(png_path, sem_path, image, segs, categories):
    rgb = read_png(png_path, "panoptic PNG")
    h, w = image["height"], image["width"]
    if rgb.shape != (h, w, 3):
        raise PanopticFormatError(
            f"{png_path}: shape {rgb.shape}, expected an RGB PNG of {(h, w, 3)}"
        )
    pan = rgb2id(rgb)
    ids, counts = np.unique(pan, return_counts=True)
    in_png = dict(zip(ids.tolist(), counts.tolist()))
    in_png.pop(0, None)
    listed = {s["id"]: s for s in segs}
    for sid, s in listed.items():
        if sid not in in_png:
            raise PanopticFormatError(
                f"{png_path}: segment id {sid} (category {s['category_id']}) is listed in the "
                "JSON but absent from the PNG"
            )
        if s["area"] != in_png[sid]:
            raise PanopticFormatError(
                f"{png_path}: segment id {sid} has area {s['area']} in the JSON but "
                f"{in_png[sid]} pixels in the PNG"
            )
        ys, xs = np.nonzero(pan == sid)
        x0, y0 = int(xs.min()), int(ys.min())
        box = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
        if not np.allclose(s["bbox"], box, atol=1e-3):
            raise PanopticFormatError(
                f"{png_path}: segment id {sid} has bbox {s['bbox']} in the JSON but {box} "
                "in the PNG"
            )
    extra = sorted(set(in_png) - set(listed))
    if extra:
        raise PanopticFormatError(
            f"{png_path}: segment id(s) {extra[:10]} appear in the PNG but not in the JSON"
        )
    if sem_path is not None:
        sem = read_png(sem_path, "semantic PNG")
        expected = panoptic_to_semantic(pan, segs, categories)
        if sem.shape != expected.shape:
            raise PanopticFormatError(
                f"{sem_path}: shape {sem.shape}, expected a single-channel PNG of {expected.shape}"
            )
        wrong = int((sem != expected).sum())
        if wrong:
            raise PanopticFormatError(
                f"{sem_path}: {wrong} pixels disagree with the labels derived from {png_path} "
                "(things 0, stuff 1..N in category order, unlabeled 255)"
            )


def _check_instances(instances_json, pan_images, check_pixels):
    data = load_json(instances_json)
    _require(data, ["images", "annotations", "categories"], instances_json)
    images = {im["id"]: im for im in data["images"]}
    if set(images) != set(pan_images):
        raise PanopticFormatError(
            f"{instances_json}: its image ids differ from the panoptic JSON's "
            f"({len(images)} vs {len(pan_images)} images)"
        )
    cat_ids = {c["id"] for c in data["categories"]}
    ann_ids = set()
    for ann in data["annotations"]:
        _require(
            ann,
            ["id", "image_id", "category_id", "bbox", "area", "iscrowd"],
            f"{instances_json}: annotation",
        )
        where = f"{instances_json}: annotation id {ann['id']}"
        if ann["id"] in ann_ids:
            raise PanopticFormatError(f"{where}: repeated annotation id")
        ann_ids.add(ann["id"])
        if ann["image_id"] not in images:
            raise PanopticFormatError(f"{where}: image_id {ann['image_id']} not in 'images'")
        if ann["category_id"] not in cat_ids:
            raise PanopticFormatError(f"{where}: undeclared category_id {ann['category_id']}")
        if len(ann["bbox"]) != 4:
            raise PanopticFormatError(f"{where}: bbox {ann['bbox']} is not [x, y, w, h]")
        segm = ann.get("segmentation")
        if isinstance(segm, dict):
            im = images[ann["image_id"]]
            if list(segm.get("size", [])) != [im["height"], im["width"]]:
                raise PanopticFormatError(
                    f"{where}: RLE size {segm.get('size')} differs from the image's "
                    f"{[im['height'], im['width']]}"
                )
            if check_pixels and isinstance(segm.get("counts"), list):
                try:
                    area = int(rle_to_mask(segm).sum())
                except ValueError as e:
                    raise PanopticFormatError(f"{where}: {e}") from e
                if area != ann["area"]:
                    raise PanopticFormatError(
                        f"{where}: area {ann['area']} but its mask has {area} pixels"
                    )
