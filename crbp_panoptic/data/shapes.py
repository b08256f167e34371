"""The quick synthetic data (split kind ``"shapes"``): compact shapes over stuff bands.

Images show three kinds of *things* (square, disc, triangle: distinct shapes with noisy,
class-typical colours and textures, of varied size, touching and occluding one another)
on two or three bands of *stuff* (sky, water, ground: textured regions split by wavy
boundaries, :func:`~.scene.paint_stuff`). Every image has stuff; every image whose index is
3 mod 8 has no things, all others have at least one, so any split holds both
(panopticapi's ``pq_compute`` divides by zero otherwise). About one image in four leaves a
one-pixel seam on a stuff boundary unlabeled (segment id 0), so "void" occurs, sparingly.

Categories use COCO-like, non-contiguous ids, to exercise the id mappings:
things ``1 square, 2 disc, 3 triangle``; stuff ``92 sky, 95 water, 100 ground``.
A segment's id is ``category_id * 1000 + k`` (``k`` = 1, 2, ... per category and image),
so ids use all three bytes of the RGB encoding.

Importing this module registers the kind with the split writer (:mod:`.splits`); its
rendering is versioned by :data:`~.splits.GENERATOR_VERSION`.
"""

import numpy as np

from .coco_format import segment_record
from .scene import (
    SEGMENT_ID_DIVISOR,
    STUFF_CATEGORIES,
    Sample,
    jitter,
    paint_stuff,
    sample_rng,
)
from .splits import SplitSpec, register_kind

__all__ = ["CATEGORIES", "render_sample"]

# Sorted by id; things first. ``color`` is the visualisation colour (COCO's field).
CATEGORIES = (
    tuple(
        {"id": i, "name": name, "isthing": 1, "color": color, "supercategory": "shape"}
        for i, name, color in [
            (1, "square", [220, 20, 60]),
            (2, "disc", [250, 170, 30]),
            (3, "triangle", [119, 11, 200]),
        ]
    )
    + STUFF_CATEGORIES
)
_CAT = {c["name"]: c for c in CATEGORIES}
_EMPTY_PERIOD, _EMPTY_PHASE = 8, 3  # images with index % 8 == 3 have no things
_MAX_THINGS = 5


def _thing_texture(name, rng, yy, xx, cx, cy, size):
    """(H, W, 3) float texture of a thing category, over the whole image."""
    h, w = yy.shape
    if name == "square":  # red, diagonal stripes
        base = jitter(rng, (170, 25, 25), (240, 95, 95))
        period = rng.uniform(4, 8)
        tex = base + (22 * np.sign(np.sin(2 * np.pi * (xx + yy) / period)))[..., None]
    elif name == "disc":  # yellow, brightest at the centre
        base = jitter(rng, (195, 165, 15), (250, 225, 85))
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (size / 2)
        tex = base * (1.15 - 0.35 * np.clip(r, 0, 1))[..., None]
    else:  # triangle: purple, speckled
        base = jitter(rng, (105, 25, 155), (175, 85, 235))
        tex = base + rng.normal(0, 22, (h, w, 1))
    return tex


def _shape_mask(name, yy, xx, cx, cy, size, angle):
    """Pixel-centre test of a shape; returns (mask (H, W) bool, its unclipped area)."""
    dx, dy = xx - cx, yy - cy
    if name == "disc":
        r = size / 2
        return dx * dx + dy * dy <= r * r, np.pi * r * r
    c, s = np.cos(angle), np.sin(angle)
    if name == "square":
        u, v = c * dx + s * dy, -s * dx + c * dy
        half = size / 2
        return np.maximum(np.abs(u), np.abs(v)) <= half, size * size
    # Equilateral triangle, circumradius R: three half-planes at the inradius R / 2.
    big_r = 0.75 * size
    mask = np.ones(dx.shape, dtype=bool)
    for k in range(3):
        a = angle + 2 * np.pi * k / 3
        mask &= np.cos(a) * dx + np.sin(a) * dy <= big_r / 2
    return mask, 3 * np.sqrt(3) / 4 * big_r * big_r


def render_sample(index: int, split: str = "train", image_size=(128, 128), seed: int = 0) -> Sample:
    """Render image ``index`` of a split (see the module docstring for what it shows).

    Args:
        index (int): image index within the split (>= 0).
        split (str): split name; part of the seed.
        image_size (tuple[int, int]): (H, W).
        seed (int): base seed.

    Returns:
        Sample: the image, its segment-id map and its segments.
    """
    spec = SplitSpec(split, 1, image_size, seed)  # validates the arguments
    h, w = spec.image_size
    rng = sample_rng(spec.seed, split, index)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # pixel centres
    image = np.zeros((h, w, 3))
    panoptic = np.zeros((h, w), dtype=np.int64)

    layout = paint_stuff(rng, yy, xx, image, panoptic)

    # Things: shapes placed one after another; a new shape may occlude earlier ones but
    # must leave each of them at least 40% of its area (and min_area pixels) visible.
    things = []  # [name, full mask, visible mask]
    if index % _EMPTY_PERIOD != _EMPTY_PHASE:
        target = int(rng.integers(1, _MAX_THINGS + 1))
        min_area = max(12.0, (min(h, w) / 16.0) ** 2)
        names = [c["name"] for c in CATEGORIES if c["isthing"]]
        for attempt in range(1000):
            if len(things) == target or (things and attempt > 30 * target):
                break
            name = names[rng.integers(len(names))]
            size = rng.uniform(0.16, 0.45) * min(h, w)
            cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
            mask, full_area = _shape_mask(name, yy, xx, cx, cy, size, rng.uniform(0, 2 * np.pi))
            area = mask.sum()
            if area < min_area or area < 0.6 * full_area:  # too small or too far outside
                continue
            if any(
                (vis & ~mask).sum() < max(min_area, 0.4 * full.sum()) for _n, full, vis in things
            ):
                continue
            for t in things:
                t[2] &= ~mask  # occluded by the new shape
            texture = _thing_texture(name, rng, yy, xx, cx, cy, size)
            image[mask] = texture[mask]
            things.append([name, mask, mask.copy()])
        if not things:
            raise RuntimeError(f"could not place a shape in image {index} of size {(h, w)}")

    segments = []
    for name in layout:
        seg_id = _CAT[name]["id"] * SEGMENT_ID_DIVISOR + 1
        visible = panoptic == seg_id
        for _n, _full, vis in things:
            visible &= ~vis
        if visible.any():
            segments.append((seg_id, _CAT[name]["id"], visible))
    per_cat = {}
    for name, _full, vis in things:
        cid = _CAT[name]["id"]
        per_cat[cid] = per_cat.get(cid, 0) + 1
        seg_id = cid * SEGMENT_ID_DIVISOR + per_cat[cid]
        panoptic[vis] = seg_id
        segments.append((seg_id, cid, vis))
    segments_info = [segment_record(sid, cid, panoptic == sid) for sid, cid, _ in segments]

    image += rng.normal(0, 6, image.shape)  # sensor noise
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Sample(image=image, panoptic=panoptic, segments_info=segments_info)


register_kind("shapes", CATEGORIES, render_sample)
