"""Long-range synthetic panoptic data: thin curved cables that cross one another.

The shapes of ``synthetic.py`` are compact: a few 3x3 convolutions see all of an
object, so a feedforward mask head has nothing left for recurrence to do. Here every
*thing* is a long, thin, smoothly curved cable (a cubic Bezier curve, 8 to 10 pixels wide
at 128x128) and the cables of one image cross and touch each other. All cables of an
image share one colour, so colour never tells two of them apart; a cable on top hides
the one below, which is then cut into pieces that belong to the same instance. A cable's
box therefore holds parts of other cables of the same colour (often of the same class),
and only the continuity of a contour across the box says which pixels are the box's
instance.

Each cable ends in two dark round plugs (part of the instance), so the corners of a box
show where a cable starts and ends: a box head can find cables from local cues, while a
mask head still has to follow the cable from one plug to the other through the crossings.
Two thing classes differ by a local texture only: ``cable`` (smooth, shaded like a tube)
and ``rope`` (dark bands across it every few pixels, like a braid). The stuff is the same
as in ``synthetic.py`` (two or three wavy bands of sky, water and ground, with the same
category ids), so PQ has things and stuff. Every image has three to six cables, each of
the image's main class with probability 3/4, so most boxes hold other cables of their
own class.

Categories: things ``1 cable, 2 rope``; stuff ``92 sky, 95 water, 100 ground``. Segment
ids, file layout, determinism and atomic writing are those of ``synthetic.py`` (a split
of ``SplitSpec.kind`` ``"cables"``); :func:`box_sharing` measures how often a box holds
another instance.
"""

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from .synthetic import (
    CATEGORIES,
    Sample,
    SplitSpec,
    _rng,
    _segment_record,
    paint_stuff,
    rgb2id,
    split_paths,
)

__all__ = [
    "CABLE_CATEGORIES",
    "box_class_mask_iou",
    "box_sharing",
    "cable_curve",
    "render_cables_sample",
    "split_statistics",
]

_STUFF = tuple(c for c in CATEGORIES if not c["isthing"])
# Sorted by id; things first (the stuff categories are those of synthetic.py).
CABLE_CATEGORIES = (
    {"id": 1, "name": "cable", "isthing": 1, "color": [230, 80, 40], "supercategory": "line"},
    {"id": 2, "name": "rope", "isthing": 1, "color": [60, 60, 220], "supercategory": "line"},
) + tuple(dict(c) for c in _STUFF)
_THINGS = ("cable", "rope")
_ID = {c["name"]: c["id"] for c in CABLE_CATEGORIES}
_SEGMENT_ID_DIVISOR = 1000
_MIN_CABLES, _MAX_CABLES = 3, 6
_PLUG_RADIUS, _PLUG_SHADE = 1.5, 0.35  # end plugs: radius (x half width), darker colour
_MAIN_CLASS_PROB = 0.75  # each cable is of the image's main class with this probability
_MIN_VISIBLE = 0.55  # a cable keeps at least this fraction of its pixels visible
# One colour per image, drawn from these (RGB); none is a stuff colour.
_PALETTE = np.array(
    [
        (225, 45, 35),
        (240, 200, 30),
        (235, 235, 235),
        (230, 100, 200),
        (250, 130, 20),
        (150, 240, 60),
    ],
    dtype=np.float64,
)


def cable_curve(rng: np.random.Generator, h: int, w: int, num_points: int = 400) -> np.ndarray:
    """A random smooth curve: a cubic Bezier between two far-apart points.

    The end points lie inside the image at a distance of 0.4 to 0.85 of its smaller side;
    the two control points are pushed sideways by up to 0.7 of that distance, so curves
    range from nearly straight to C- and S-shaped arcs.

    Args:
        rng (np.random.Generator): the image's generator.
        h, w (int): image size.
        num_points (int): samples along the curve.

    Returns:
        np.ndarray: (num_points, 2) float (x, y) points in pixel units.
    """
    side = min(h, w)
    for _ in range(100):
        p0 = rng.uniform([0.05 * w, 0.05 * h], [0.95 * w, 0.95 * h])
        p3 = rng.uniform([0.05 * w, 0.05 * h], [0.95 * w, 0.95 * h])
        dist = np.linalg.norm(p3 - p0)
        if 0.4 * side <= dist <= 0.85 * side:
            break
    direction = (p3 - p0) / max(dist, 1e-6)
    normal = np.array([-direction[1], direction[0]])
    p1 = p0 + (p3 - p0) / 3 + normal * rng.uniform(-0.7, 0.7) * dist
    p2 = p0 + 2 * (p3 - p0) / 3 + normal * rng.uniform(-0.7, 0.7) * dist
    t = np.linspace(0.0, 1.0, num_points)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _distance_to_curve(points: np.ndarray, yy: np.ndarray, xx: np.ndarray, reach: float):
    """Distance of the pixel centres near a sampled curve to it, and the arc length there.

    Only pixels within ``reach`` of the curve's bounding box are measured; the others get
    distance ``inf`` (and arc length 0).

    Returns:
        tuple[np.ndarray, np.ndarray]: (H, W) distance and (H, W) arc length (pixels) of
        the nearest curve sample.
    """
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    x0, y0 = np.floor(points.min(0) - reach).astype(int)
    x1, y1 = np.ceil(points.max(0) + reach).astype(int)
    h, w = yy.shape
    win = (slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w)))
    pix = np.stack([xx[win].ravel(), yy[win].ravel()], axis=1).astype(np.float32)
    pts = points.astype(np.float32)
    best = np.full(pix.shape[0], np.inf, dtype=np.float32)
    arg = np.zeros(pix.shape[0], dtype=np.int64)
    for start in range(0, len(pts), 100):  # chunks keep the (P, 100) array small
        d2 = ((pix[:, None, :] - pts[None, start : start + 100, :]) ** 2).sum(-1)
        k = d2.argmin(1)
        v = d2[np.arange(len(k)), k]
        better = v < best
        best[better], arg[better] = v[better], k[better] + start
    dist, along = np.full(yy.shape, np.inf), np.zeros(yy.shape)
    shape = yy[win].shape
    dist[win], along[win] = np.sqrt(best).reshape(shape), arc[arg].reshape(shape)
    return dist, along


def _cable_texture(name, rng, colour, dist, along, half_width):
    """(H, W, 3) float appearance of one cable (valid where ``dist <= half_width``)."""
    # Tube-like shading: darker towards the edges.
    shade = 1.0 - 0.35 * np.clip(np.minimum(dist, half_width) / half_width, 0, 1) ** 2
    if name == "rope":  # dark bands across the rope, like a braid
        period = rng.uniform(5.0, 7.0)
        bands = np.where(np.mod(along, period) < 0.45 * period, 0.6, 1.0)
        shade = shade * bands
    return colour[None, None, :] * shade[..., None]


def render_cables_sample(
    index: int, split: str = "train", image_size=(128, 128), seed: int = 0
) -> Sample:
    """Render image ``index`` of a cables split (see the module docstring).

    Args:
        index (int): image index within the split (>= 0).
        split (str): split name; part of the seed.
        image_size (tuple[int, int]): (H, W).
        seed (int): base seed.

    Returns:
        Sample: the image, its segment-id map and its segments (stuff first, then the
        cables in painting order: later ones lie on top).
    """
    spec = SplitSpec(split, 1, image_size, seed, "cables")  # validates the arguments
    h, w = spec.image_size
    rng = _rng(spec.seed, "cables-" + split, index)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    image = np.zeros((h, w, 3))
    panoptic = np.zeros((h, w), dtype=np.int64)
    layout = paint_stuff(rng, yy, xx, image, panoptic)

    colour = _PALETTE[rng.integers(len(_PALETTE))] * rng.uniform(0.9, 1.05, 3)
    scale = min(h, w) / 128.0
    min_area = max(20.0, 60.0 * scale * scale)
    target = int(rng.integers(_MIN_CABLES, _MAX_CABLES + 1))
    main = int(rng.integers(len(_THINGS)))
    cables = []  # [name, full mask, visible mask]
    for _attempt in range(40 * target):
        if len(cables) == target:
            break
        name = _THINGS[main if rng.random() < _MAIN_CLASS_PROB else 1 - main]
        half_width = rng.uniform(4.0, 5.0) * max(scale, 0.5)
        curve = cable_curve(rng, h, w)
        dist, along = _distance_to_curve(curve, yy, xx, half_width + 1)
        plug_r = _PLUG_RADIUS * half_width
        plugs = np.zeros((h, w), dtype=bool)
        for x, y in (curve[0], curve[-1]):
            plugs |= (xx - x) ** 2 + (yy - y) ** 2 <= plug_r * plug_r
        mask = (dist <= half_width) | plugs
        if mask.sum() < 2 * min_area:
            continue
        if any(
            (vis & ~mask).sum() < max(min_area, _MIN_VISIBLE * full.sum())
            for _n, full, vis in cables
        ):
            continue
        for c in cables:
            c[2] &= ~mask
        texture = _cable_texture(name, rng, colour, dist, along, half_width)
        texture[plugs] = _PLUG_SHADE * colour
        image[mask] = texture[mask]
        cables.append([name, mask, mask.copy()])
    if not cables:
        raise RuntimeError(f"could not place a cable in image {index} of size {(h, w)}")

    segments = []
    for name in layout:
        seg_id = _ID[name] * _SEGMENT_ID_DIVISOR + 1
        visible = panoptic == seg_id
        for _n, _full, vis in cables:
            visible &= ~vis
        if visible.any():
            segments.append((seg_id, _ID[name]))
    per_cat: Dict[int, int] = {}
    for name, _full, vis in cables:
        cid = _ID[name]
        per_cat[cid] = per_cat.get(cid, 0) + 1
        seg_id = cid * _SEGMENT_ID_DIVISOR + per_cat[cid]
        panoptic[vis] = seg_id
        segments.append((seg_id, cid))
    segments_info = [_segment_record(sid, cid, panoptic == sid) for sid, cid in segments]

    image += rng.normal(0, 6, image.shape)  # sensor noise
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Sample(image=image, panoptic=panoptic, segments_info=segments_info)


def box_sharing(
    panoptic: np.ndarray,
    segments_info: Sequence[dict],
    categories: Sequence[dict] = CABLE_CATEGORIES,
) -> Tuple[int, int, int]:
    """How many thing boxes hold pixels of another thing instance.

    Args:
        panoptic (np.ndarray): (H, W) segment ids.
        segments_info (list[dict]): the segments (``id``, ``category_id``, ``bbox``).
        categories (list[dict]): the categories (``id``, ``isthing``).

    Returns:
        tuple[int, int, int]: (thing boxes, boxes holding pixels of another instance of
        the same class, boxes holding pixels of another thing instance of any class).
    """
    isthing = {c["id"]: bool(c["isthing"]) for c in categories}
    things: List[dict] = [s for s in segments_info if isthing[s["category_id"]]]
    same = any_other = 0
    for s in things:
        x, y, bw, bh = s["bbox"]
        window = panoptic[y : y + bh, x : x + bw]
        others = [o for o in things if o["id"] != s["id"]]
        any_other += any(bool((window == o["id"]).any()) for o in others)
        same += any(
            bool((window == o["id"]).any()) for o in others if o["category_id"] == s["category_id"]
        )
    return len(things), same, any_other


def box_class_mask_iou(
    panoptic: np.ndarray,
    segments_info: Sequence[dict],
    categories: Sequence[dict] = CABLE_CATEGORIES,
) -> List[float]:
    """IoU of each thing with the mask "every pixel of its class inside its box".

    That mask is what a mask head gets from a perfect box and a perfect per-pixel class
    decision, with no grouping: it is right only where no other instance of the class
    enters the box. Panoptic quality counts a segment as found only above IoU 0.5.

    Returns:
        list[float]: one IoU per thing segment, in ``segments_info`` order.
    """
    isthing = {c["id"]: bool(c["isthing"]) for c in categories}
    things = [s for s in segments_info if isthing[s["category_id"]]]
    out = []
    for s in things:
        x, y, bw, bh = s["bbox"]
        same = np.isin(panoptic, [o["id"] for o in things if o["category_id"] == s["category_id"]])
        guess = np.zeros_like(same)
        guess[y : y + bh, x : x + bw] = same[y : y + bh, x : x + bw]
        truth = panoptic == s["id"]
        out.append(float((guess & truth).sum() / (guess | truth).sum()))
    return out


def split_statistics(split_dir: str) -> Dict[str, float]:
    """How much grouping a generated split asks for, read from its panoptic PNGs.

    Returns:
        dict: ``things`` (thing segments), ``box_holds_same_class`` / ``box_holds_other``
        (fractions of thing boxes holding pixels of another instance of the same class /
        of any thing class), ``fragmented`` (fraction of things whose visible mask has
        more than one 8-connected piece), ``box_class_iou_median`` and
        ``box_class_iou_above_half`` (of :func:`box_class_mask_iou`).
    """
    from scipy import ndimage

    p = split_paths(split_dir)
    with open(p.panoptic_json) as f:
        data = json.load(f)
    isthing = {c["id"]: bool(c["isthing"]) for c in data["categories"]}
    n = same = other = pieces = 0
    ious: List[float] = []
    for ann in data["annotations"]:
        with Image.open(os.path.join(p.panoptic_dir, ann["file_name"])) as im:
            pan = rgb2id(np.asarray(im))
        counts = box_sharing(pan, ann["segments_info"], data["categories"])
        n, same, other = n + counts[0], same + counts[1], other + counts[2]
        ious += box_class_mask_iou(pan, ann["segments_info"], data["categories"])
        for s in ann["segments_info"]:
            if isthing[s["category_id"]]:
                pieces += ndimage.label(pan == s["id"], structure=np.ones((3, 3)))[1] > 1
    return {
        "things": n,
        "box_holds_same_class": same / max(n, 1),
        "box_holds_other": other / max(n, 1),
        "fragmented": pieces / max(n, 1),
        "box_class_iou_median": float(np.median(ious)) if ious else float("nan"),
        "box_class_iou_above_half": float(np.mean(np.array(ious) > 0.5)) if ious else 0.0,
    }
