"""What every kind of synthetic image shares: the random stream of an image, the stuff
background (sky, water, ground in wavy bands) and the rendered-sample record.

Each kind (:mod:`.shapes`, :mod:`.longrange`) paints its things over :func:`paint_stuff`'s
background with the image's own generator (:func:`sample_rng`), so image ``i`` of a split
depends only on ``(seed, split, i, image_size)``.
"""

import zlib
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

__all__ = [
    "SEGMENT_ID_DIVISOR",
    "STUFF_CATEGORIES",
    "Sample",
    "jitter",
    "paint_stuff",
    "sample_rng",
]

# Sorted by id. ``color`` is the visualisation colour (COCO's field).
STUFF_CATEGORIES = tuple(
    {"id": i, "name": name, "isthing": 0, "color": color, "supercategory": "background"}
    for i, name, color in [
        (92, "sky", [70, 130, 180]),
        (95, "water", [0, 150, 160]),
        (100, "ground", [140, 110, 60]),
    ]
)
_STUFF_ID = {c["name"]: c["id"] for c in STUFF_CATEGORIES}
SEGMENT_ID_DIVISOR = 1000  # segment id = category_id * 1000 + k (k = 1, 2, ... per image)
_VOID_SEAM_PROB = 0.25
# Stuff bands, top to bottom.
_LAYOUTS = (("sky", "ground"), ("sky", "water"), ("water", "ground"), ("sky", "water", "ground"))


@dataclass
class Sample:
    """One rendered image and its panoptic annotation.

    Attributes:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        panoptic (np.ndarray): (H, W) int64 segment ids, 0 = unlabeled.
        segments_info (list[dict]): COCO panoptic segments (``id``, ``category_id``,
            ``iscrowd``, ``bbox`` [x, y, w, h], ``area``), stuff first, then things in
            painting order (later ones occlude earlier ones).
    """

    image: np.ndarray
    panoptic: np.ndarray
    segments_info: List[dict]


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a split (numpy's ``SeedSequence``)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def _smooth_noise(rng, h, w, cells):
    """Bilinearly upsampled (cells+1)^2 Gaussian grid: low-frequency noise, (H, W)."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    g = lambda dy, dx: grid[np.ix_(y0 + dy, x0 + dx)]  # noqa: E731
    return (g(0, 0) * (1 - fx) + g(0, 1) * fx) * (1 - fy) + (g(1, 0) * (1 - fx) + g(1, 1) * fx) * fy


def jitter(rng, low, high):
    """A random base colour per channel between ``low`` and ``high``, as (1, 1, 3)."""
    return rng.uniform(low, high)[None, None, :]


def _stuff_texture(name, rng, yy, xx):
    """(H, W, 3) float texture of a stuff category, over the whole image."""
    h, w = yy.shape
    if name == "sky":  # blue, lighter towards the horizon, soft clouds
        base = jitter(rng, (50, 110, 180), (100, 160, 235))
        clouds = np.maximum(_smooth_noise(rng, h, w, 4), 0)
        tex = base + (40 * yy / h + 22 * clouds)[..., None]
    elif name == "water":  # teal with horizontal ripples
        base = jitter(rng, (15, 85, 110), (60, 135, 165))
        period = rng.uniform(5, 9)
        wobble = 1.5 * np.sin(2 * np.pi * xx / rng.uniform(20, 40))
        ripple = np.sin(2 * np.pi * yy / period + wobble)
        tex = base + (16 * ripple)[..., None]
    else:  # ground: brown/olive, blotchy and grainy
        base = jitter(rng, (95, 75, 35), (150, 120, 70))
        tex = base + 18 * _smooth_noise(rng, h, w, 6)[..., None] + rng.normal(0, 14, (h, w, 1))
    return tex


def paint_stuff(rng, yy, xx, image, panoptic) -> Tuple[str, ...]:
    """Paint two or three bands of stuff split by wavy boundaries ``y = b(x)``, in place.

    Each band gets its category's texture in ``image`` and the segment id
    ``category_id * 1000 + 1`` in ``panoptic``; with probability 1/4 a one-pixel seam on
    one boundary is left unlabeled (id 0).

    Args:
        rng (np.random.Generator): the image's generator (draws in a fixed order).
        yy, xx (np.ndarray): (H, W) pixel-centre coordinates.
        image (np.ndarray): (H, W, 3) float, written.
        panoptic (np.ndarray): (H, W) int64 segment ids, written.

    Returns:
        tuple[str, ...]: the stuff names, top to bottom.
    """
    h, w = yy.shape
    layout = _LAYOUTS[rng.integers(len(_LAYOUTS))]
    n_bounds = len(layout) - 1
    if n_bounds == 1:
        centres = [rng.uniform(0.3, 0.7)]
    else:
        centres = [rng.uniform(0.2, 0.4), rng.uniform(0.6, 0.8)]
    bounds = []
    for k, centre in enumerate(centres):
        amp, freq = rng.uniform(0.02, 0.08) * h, rng.uniform(0.5, 2.5)
        phase = rng.uniform(0, 2 * np.pi)
        b = centre * h + amp * np.sin(2 * np.pi * freq * xx[0] / w + phase)
        if k:  # keep the bands apart
            b = np.maximum(b, bounds[-1] + 0.1 * h)
        bounds.append(b)
    band = np.zeros((h, w), dtype=np.int64)
    for b in bounds:
        band += yy >= b[None, :]
    for k, name in enumerate(layout):
        region = band == k
        image[region] = _stuff_texture(name, rng, yy, xx)[region]
        panoptic[region] = _STUFF_ID[name] * SEGMENT_ID_DIVISOR + 1
    if rng.random() < _VOID_SEAM_PROB:  # an unlabeled one-pixel seam on one boundary
        b = bounds[rng.integers(n_bounds)]
        panoptic[np.abs(yy - b[None, :]) < 0.5] = 0
    return layout
