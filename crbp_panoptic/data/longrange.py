"""Long-range synthetic panoptic data: thin curved cables that cross one another.

The shapes of :mod:`.shapes` are compact: a few 3x3 convolutions see all of an
object, so a feedforward mask head has nothing left for recurrence to do. Here every
*thing* is a long, thin cable whose box a detector finds from local cues, but whose
pixels only the continuity of its contour tells apart from the other cables in the box:

* **Easy to detect.** A cable runs between two round plugs that sit at opposite corners
  of its box: the curve is monotone in x and in y (a cubic Bezier whose control points
  lie in the box, in order), so the plugs are the box's extreme points. Plugs lie on the
  stuff, never on a cable, and are never covered; they are a dark ring around a bright
  core whose colour the two plugs of a cable share and no other cable of the image has,
  so the two corners of a box match. Bodies are 5 to 7 px wide and bright against the
  stuff (sky, water, ground: :func:`~.scene.paint_stuff`); at 128x128 boxes are 24 to 117 px
  on a side with aspect ratios 0.4 to 2.5, which the anchors of the synthetic Panoptic
  FPN configs (16 to 256 px, ratios 0.5, 1, 2) cover.
* **Grouping decides the masks.** There is one thing class, and all cables of an image
  have one body colour. Six to nine cables cross each other, so a cable's box holds
  long pieces of other cables of the same colour; a cable on top cuts the one below
  into pieces that belong to the same instance. The mask "every pixel of the class in
  the true box" (:func:`box_class_mask_iou`, no grouping) has a median IoU below 0.5.

Categories: thing ``1 cable``; stuff ``92 sky, 95 water, 100 ground``. Segment ids are
those of :mod:`.shapes`; file layout, determinism and atomic writing are the split
writer's (:mod:`.splits`; importing this module registers the kind ``"cables"``).
:func:`split_statistics` measures how much grouping a split asks for.
"""

import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .coco_format import rgb2id, segment_record
from .scene import SEGMENT_ID_DIVISOR, STUFF_CATEGORIES, Sample, paint_stuff, sample_rng
from .splits import SplitSpec, register_kind, split_paths

__all__ = [
    "CABLE_CATEGORIES",
    "box_class_mask_iou",
    "box_sharing",
    "cable_curve",
    "render_cables_sample",
    "split_statistics",
]

# Sorted by id; the thing first.
CABLE_CATEGORIES = (
    {"id": 1, "name": "cable", "isthing": 1, "color": [230, 80, 40], "supercategory": "line"},
) + tuple(dict(c) for c in STUFF_CATEGORIES)
_ID = {c["name"]: c["id"] for c in CABLE_CATEGORIES}
# Version of the rendering: bump it when the images change (older splits are regenerated).
_KIND_VERSION = 4
_MIN_CABLES, _MAX_CABLES = 6, 9
_HALF_WIDTH = (2.5, 3.5)  # body half width at 128x128 (pixels)
_PLUG_RADIUS, _PLUG_CORE = 4.5, 2.5  # plug disc and its bright core, at 128x128
_MIN_VISIBLE = 0.5  # a cable keeps at least this fraction of its pixels visible
# One body colour per image (RGB), far from the stuff colours.
_BODY_PALETTE = np.array(
    [(235, 235, 235), (245, 215, 40), (240, 60, 50), (240, 100, 210), (250, 140, 30)],
    dtype=np.float64,
)
# Plug cores, one per cable of an image (more than _MAX_CABLES).
_PLUG_PALETTE = np.array(
    [
        (255, 0, 0),
        (0, 230, 0),
        (40, 80, 255),
        (255, 255, 0),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 255),
        (255, 128, 0),
        (140, 0, 255),
    ],
    dtype=np.float64,
)


def cable_curve(
    rng: np.random.Generator,
    h: int,
    w: int,
    margin: float = 0.0,
    num_points: int = 0,
    ends_ok: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
    tries: int = 100,
) -> Optional[np.ndarray]:
    """A random smooth curve, monotone in x and y, between two far-apart points.

    The end points are ``margin`` or more inside the image, 0.35 to 0.9 of its smaller
    side apart, in a direction 20 to 70 degrees from the horizontal (so the box is never
    a thin strip). The two control points lie in the box of the end points, ordered
    along x and along y, which makes the cubic Bezier monotone in both: its box is the
    box of its end points. Curves range from straight to arcs bent along a box edge.

    Args:
        rng (np.random.Generator): the image's generator.
        h, w (int): image size.
        margin (float): least distance of the end points from the image border.
        num_points (int): samples along the curve; 0: about one per pixel of length.
        ends_ok (callable, optional): a further condition on the end points:
            ``ends_ok(p0, p3)`` takes two (N, 2) float (x, y) arrays of candidate pairs and
            returns an (N,) bool array.
        tries (int): end-point pairs drawn before giving up.

    Returns:
        np.ndarray or None: (num_points, 2) float (x, y) points in pixel units, from one
        end point to the other; None if no pair of end points of ``tries`` fits.
    """
    side = min(h, w)
    lo = np.array([margin, margin])
    hi = np.array([w - margin, h - margin])
    # All candidate end-point pairs at once; the first that fits is used.
    length = rng.uniform(0.35, 0.9, (tries, 1)) * side
    angle = np.deg2rad(rng.uniform(20.0, 70.0, tries)) + 0.5 * np.pi * rng.integers(4, size=tries)
    p0s = rng.uniform(lo, hi, (tries, 2))
    p3s = p0s + length * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    fits = np.all((p3s >= lo) & (p3s <= hi), axis=1)
    if ends_ok is not None and fits.any():
        fits[fits] = ends_ok(p0s[fits], p3s[fits])
    if not fits.any():
        return None
    k = int(np.argmax(fits))
    p0, p3 = p0s[k], p3s[k]
    # Control points: fractions along x and along y, each pair sorted.
    fx, fy = np.sort(rng.uniform(0, 1, 2)), np.sort(rng.uniform(0, 1, 2))
    p1 = p0 + np.array([fx[0], fy[0]]) * (p3 - p0)
    p2 = p0 + np.array([fx[1], fy[1]]) * (p3 - p0)
    if num_points <= 0:
        num_points = int(np.ceil(1.25 * np.abs(p3 - p0).sum())) + 2
    t = np.linspace(0.0, 1.0, num_points)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _distance_to_curve(points: np.ndarray, h: int, w: int, reach: float) -> np.ndarray:
    """Distance from each pixel centre to the nearest curve sample, up to ``reach``.

    Returns:
        np.ndarray: (H, W) float distances; ``inf`` farther than ``reach`` from every sample.
    """
    r = int(np.ceil(reach)) + 1
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    base = np.floor(points).astype(np.int64)
    px = base[:, :1] + ox.ravel()[None, :]
    py = base[:, 1:] + oy.ravel()[None, :]
    d = np.hypot(px + 0.5 - points[:, :1], py + 0.5 - points[:, 1:])
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h) & (d <= reach)
    dist = np.full(h * w, np.inf)
    np.minimum.at(dist, (py * w + px)[ok], d[ok])
    return dist.reshape(h, w)


def _any_within(grid: np.ndarray, points: np.ndarray, r: float) -> np.ndarray:
    """For each (x, y) point, whether ``grid`` is true at a pixel centre within ``r`` of it.

    Args:
        grid (np.ndarray): (H, W) bool.
        points (np.ndarray): (N, 2) float (x, y).
        r (float): radius (pixels).

    Returns:
        np.ndarray: (N,) bool.
    """
    h, w = grid.shape
    k = int(np.ceil(r)) + 1
    oy, ox = np.mgrid[-k : k + 1, -k : k + 1]
    px = np.floor(points[:, :1]).astype(np.int64) + ox.ravel()[None, :]
    py = np.floor(points[:, 1:]).astype(np.int64) + oy.ravel()[None, :]
    near = (px + 0.5 - points[:, :1]) ** 2 + (py + 0.5 - points[:, 1:]) ** 2 <= r * r
    near &= (px >= 0) & (px < w) & (py >= 0) & (py < h)
    return (grid[np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)] & near).any(axis=1)


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
    rng = sample_rng(spec.seed, "cables-" + split, index)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    image = np.zeros((h, w, 3))
    panoptic = np.zeros((h, w), dtype=np.int64)
    layout = paint_stuff(rng, yy, xx, image, panoptic)

    scale = min(h, w) / 128.0
    body_colour = _BODY_PALETTE[rng.integers(len(_BODY_PALETTE))] * rng.uniform(0.92, 1.04, 3)
    plug_colours = _PLUG_PALETTE[rng.permutation(len(_PLUG_PALETTE))]
    plug_r, core_r = _PLUG_RADIUS * scale, _PLUG_CORE * scale
    min_area = max(12.0, 60.0 * scale * scale)
    target = int(rng.integers(_MIN_CABLES, _MAX_CABLES + 1))
    occupied = np.zeros((h, w), dtype=bool)  # pixels of any cable (body or plug)
    keep_out = np.zeros((h, w), dtype=bool)  # no centre line here: near a plug
    cables = []  # [full mask, visible mask]
    for _attempt in range(30 * target):
        if len(cables) == target:
            break
        half_width = rng.uniform(*_HALF_WIDTH) * scale
        # Plugs lie on the stuff only (checked first: cheap), and no body passes over a plug.
        curve = cable_curve(
            rng,
            h,
            w,
            margin=plug_r + 1,
            ends_ok=lambda p0, p3: (
                ~(
                    _any_within(occupied, p0, plug_r + 2 * scale)
                    | _any_within(occupied, p3, plug_r + 2 * scale)
                )
            ),
            tries=20,
        )
        if curve is None:
            continue
        ends = (curve[0], curve[-1])
        on_grid = np.floor(curve).astype(np.int64)
        if keep_out[on_grid[:, 1], on_grid[:, 0]].any():
            continue
        dist = _distance_to_curve(curve, h, w, half_width + 1)
        body = dist <= half_width
        d_ends = [np.hypot(xx - x, yy - y) for x, y in ends]
        plugs = (d_ends[0] <= plug_r) | (d_ends[1] <= plug_r)
        gap = plug_r + 2 * scale + _HALF_WIDTH[1] * scale
        near_plugs = (d_ends[0] <= gap) | (d_ends[1] <= gap)
        full = body | plugs
        if full.sum() < 2 * min_area:
            continue
        if any((vis & ~full).sum() < max(min_area, _MIN_VISIBLE * f.sum()) for f, vis in cables):
            continue
        for c in cables:
            c[1] &= ~full
        shade = 1.0 - 0.35 * np.clip(np.minimum(dist, half_width) / half_width, 0, 1) ** 2
        image[body] = body_colour[None, :] * shade[body][:, None]
        core = plug_colours[len(cables)]
        for d in d_ends:
            image[d <= plug_r] = (25.0, 25.0, 25.0)
            image[d <= core_r] = core
        occupied |= full
        keep_out |= near_plugs
        cables.append([full, full.copy()])
    if not cables:
        raise RuntimeError(f"could not place a cable in image {index} of size {(h, w)}")

    segments = []
    for name in layout:
        seg_id = _ID[name] * SEGMENT_ID_DIVISOR + 1
        if ((panoptic == seg_id) & ~occupied).any():
            segments.append((seg_id, _ID[name]))
    cid = _ID["cable"]
    for k, (_full, vis) in enumerate(cables):
        seg_id = cid * SEGMENT_ID_DIVISOR + k + 1
        panoptic[vis] = seg_id
        segments.append((seg_id, cid))
    segments_info = [segment_record(sid, c, panoptic == sid) for sid, c in segments]

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


register_kind("cables", CABLE_CATEGORIES, render_cables_sample, _KIND_VERSION)
