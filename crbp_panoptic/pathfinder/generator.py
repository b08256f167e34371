"""Procedural Pathfinder images for contour segmentation ("PF-SEG").

An image holds several smooth curved paths, each made of short straight dashes
separated by gaps, on a black background; a marker dot sits at one end of the
*target* path. The target mask is every pixel of the target path plus the dot.
Telling the target from the distractors takes grouping the dashes along the
contour: locally every path looks the same, and distractors may cross the target
or run close beside it.

Our own implementation of the idea (Linsley et al. 2018, 2020), written from the
task description, not ported from anyone's code.

A path is a random walk of headings: dash ``k`` runs from ``p_k`` to
``q_k = p_k + dash_length * (cos θ_k, sin θ_k)``, the next dash starts at
``p_{k+1} = q_k + gap * (cos θ_k, sin θ_k)`` and turns by
``θ_{k+1} - θ_k ~ U(-curvature, curvature)``. A turn that would leave the image
margin is redrawn (a few tries), otherwise the path restarts elsewhere.

Everything is deterministic from ``(seed, index)``: :class:`PathfinderDataset`
draws sample ``i`` from ``numpy.random.default_rng([seed, i])``, so samples are
made on the fly in any order and on any worker, and nothing touches the disk
unless :func:`write_cache` is called.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import List, Optional, Tuple

import numpy as np

__all__ = [
    "PathfinderConfig",
    "PathfinderSample",
    "PathfinderDataset",
    "CachedPathfinder",
    "generate",
    "write_cache",
    "save_examples",
]


@dataclasses.dataclass(frozen=True)
class PathfinderConfig:
    """Parameters of the generator (lengths in pixels, angles in radians).

    Attributes:
        size: image side length (square images).
        path_length: dashes per path (target and full-length distractors).
        dash_length: length of one dash.
        gap: distance between the end of one dash and the start of the next.
        curvature: largest heading change between consecutive dashes.
        distractors: full-length distractor paths.
        near_distractors: how many of the distractors start on or beside the
            target path (at a random dash of it), so they cross or run close;
            the rest start anywhere.
        thickness: line width of a dash.
        dot_radius: radius of the marker dot.
        margin: paths keep this far from the border.
        max_tries: restarts allowed per path before giving up (``RuntimeError``).
    """

    size: int = 64
    path_length: int = 8
    dash_length: float = 4.0
    gap: float = 2.0
    curvature: float = math.pi / 7
    distractors: int = 2
    near_distractors: int = 1
    thickness: float = 1.5
    dot_radius: float = 2.0
    margin: float = 3.0
    max_tries: int = 200

    def __post_init__(self):
        if self.size < 8:
            raise ValueError(f"size={self.size!r}; must be >= 8")
        if self.path_length < 1:
            raise ValueError(f"path_length={self.path_length!r}; must be >= 1")
        if self.dash_length <= 0 or self.gap < 0:
            raise ValueError(f"dash_length={self.dash_length!r}, gap={self.gap!r}; need dash_length > 0, gap >= 0")
        if not 0 <= self.curvature <= math.pi:
            raise ValueError(f"curvature={self.curvature!r}; must lie in [0, pi]")
        if self.distractors < 0 or not 0 <= self.near_distractors <= self.distractors:
            raise ValueError(
                f"distractors={self.distractors!r}, near_distractors={self.near_distractors!r}; "
                "need 0 <= near_distractors <= distractors"
            )
        if self.thickness <= 0 or self.dot_radius <= 0:
            raise ValueError(f"thickness={self.thickness!r}, dot_radius={self.dot_radius!r}; must be > 0")
        if 2 * self.margin >= self.size:
            raise ValueError(f"margin={self.margin!r} leaves no room in size={self.size!r}")


@dataclasses.dataclass
class PathfinderSample:
    """One generated example.

    Attributes:
        image: float32 array (size, size) in [0, 1]; paths and dot are bright.
        mask: bool array (size, size); pixels of the target path and the dot.
        paths: list of dash arrays, target first; each array has shape
            (path_length, 2, 2) = (dash, start/end, xy).
        dot: (x, y) centre of the marker dot (at the start of the target's first dash).
    """

    image: np.ndarray
    mask: np.ndarray
    paths: List[np.ndarray]
    dot: Tuple[float, float]


# ----------------------------------------------------------------------------- geometry


def _inside(p: np.ndarray, lo: float, hi: float) -> bool:
    return bool(lo <= p[0] <= hi and lo <= p[1] <= hi)


def _walk(
    rng: np.random.Generator, cfg: PathfinderConfig, start: np.ndarray, heading: float
) -> Optional[np.ndarray]:
    """One path from ``start``; None if it got stuck against the border.

    Each turn is drawn uniformly in ``[-curvature, curvature]``; a draw is kept if
    the dash, the next start and a point ``lookahead`` further on stay inside the
    margin (the look-ahead makes the walk steer away from walls in time). If a
    dozen draws fail, draws without look-ahead are tried before giving up.
    """
    lo, hi = cfg.margin, cfg.size - 1 - cfg.margin
    step = cfg.dash_length + cfg.gap
    dashes = np.empty((cfg.path_length, 2, 2), dtype=np.float64)
    p = start.astype(np.float64)
    theta = heading
    for k in range(cfg.path_length):
        last = k + 1 == cfg.path_length
        remaining = cfg.path_length - k - 1
        lookahead = min(3, remaining) * step
        for attempt in range(24):
            if k == 0:  # the first dash may point anywhere
                t = theta if attempt == 0 else rng.uniform(-math.pi, math.pi)
            else:
                t = theta + rng.uniform(-cfg.curvature, cfg.curvature)
            d = np.array([math.cos(t), math.sin(t)])
            q = p + cfg.dash_length * d
            ok = _inside(q, lo, hi) and (last or _inside(q + cfg.gap * d, lo, hi))
            if ok and attempt < 12:
                ok = _inside(q + lookahead * d, lo, hi) or lookahead == 0
            if ok:
                break
        else:
            return None
        dashes[k, 0], dashes[k, 1] = p, q
        theta = t
        p = q + cfg.gap * d
    return dashes


def _random_path(
    rng: np.random.Generator, cfg: PathfinderConfig, near: Optional[np.ndarray] = None
) -> np.ndarray:
    lo, hi = cfg.margin, cfg.size - 1 - cfg.margin
    for _ in range(cfg.max_tries):
        if near is None:
            start = rng.uniform(lo, hi, size=2)
        else:
            # Start on (or just beside) a random dash of the target, so this path crosses
            # it or runs close to it.
            k = rng.integers(len(near))
            a, b = near[k]
            start = a + rng.uniform(0, 1) * (b - a) + rng.normal(0, cfg.thickness, size=2)
            start = np.clip(start, lo, hi)
        path = _walk(rng, cfg, start, rng.uniform(-math.pi, math.pi))
        if path is not None:
            return path
    raise RuntimeError(
        f"could not fit a path of {cfg.path_length} dashes in {cfg.max_tries} tries "
        f"(size={cfg.size}, dash_length={cfg.dash_length}, gap={cfg.gap}); make the image larger "
        "or the path shorter"
    )


# ----------------------------------------------------------------------------- rendering


def _draw_segment(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    """Max-composite an anti-aliased segment of ``width`` pixels onto ``canvas`` (in place)."""
    size = canvas.shape[0]
    r = width / 2 + 1
    x0, x1 = int(max(0, math.floor(min(a[0], b[0]) - r))), int(min(size - 1, math.ceil(max(a[0], b[0]) + r)))
    y0, y1 = int(max(0, math.floor(min(a[1], b[1]) - r))), int(min(size - 1, math.ceil(max(a[1], b[1]) + r)))
    if x1 < x0 or y1 < y0:
        return
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    ab = b - a
    t = ((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(float(ab @ ab), 1e-12)
    t = np.clip(t, 0.0, 1.0)
    dist = np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))
    # Coverage falls linearly from 1 to 0 over one pixel at the line's edge.
    val = np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)
    view = canvas[y0 : y1 + 1, x0 : x1 + 1]
    np.maximum(view, val, out=view)


def _draw_disk(canvas: np.ndarray, c: Tuple[float, float], radius: float) -> None:
    _draw_segment(canvas, np.asarray(c, float), np.asarray(c, float), 2 * radius)


def generate(cfg: PathfinderConfig, rng: np.random.Generator) -> PathfinderSample:
    """Draw one image and its target mask.

    Args:
        cfg: generator parameters.
        rng: numpy Generator; the sample is a pure function of its state.

    Returns:
        A :class:`PathfinderSample`.
    """
    target = _random_path(rng, cfg)
    paths = [target]
    for j in range(cfg.distractors):
        paths.append(_random_path(rng, cfg, near=target if j < cfg.near_distractors else None))
    # Draw the layers in a random order so the target is not always on top.
    image = np.zeros((cfg.size, cfg.size), dtype=np.float64)
    for idx in rng.permutation(len(paths)):
        for a, b in paths[idx]:
            _draw_segment(image, a, b, cfg.thickness)
    dot = (float(target[0, 0, 0]), float(target[0, 0, 1]))
    _draw_disk(image, dot, cfg.dot_radius)

    cover = np.zeros_like(image)
    for a, b in target:
        _draw_segment(cover, a, b, cfg.thickness)
    _draw_disk(cover, dot, cfg.dot_radius)
    mask = cover >= 0.5
    return PathfinderSample(image.astype(np.float32), mask, paths, dot)


# ----------------------------------------------------------------------------- datasets


class PathfinderDataset:
    """Map-style dataset generating sample ``i`` on the fly from ``(seed, i)``.

    Works with ``torch.utils.data.DataLoader`` (returns tensors if torch is
    importable) but does not need torch to generate.

    Args:
        cfg: generator parameters.
        length: number of samples.
        seed: base seed; train and test sets should use different seeds.

    Item ``i`` is ``(image, mask)``: float32 (1, size, size) in [0, 1] and
    float32 (1, size, size) in {0, 1}.
    """

    def __init__(self, cfg: PathfinderConfig, length: int, seed: int = 0):
        if length < 0:
            raise ValueError(f"length={length!r}; must be >= 0")
        self.cfg, self.length, self.seed = cfg, int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    def sample(self, i: int) -> PathfinderSample:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a dataset of {self.length}")
        return generate(self.cfg, np.random.default_rng([self.seed, int(i)]))

    def __getitem__(self, i: int):
        s = self.sample(i)
        return _as_tensors(s.image[None], s.mask[None].astype(np.float32))


def _as_tensors(image: np.ndarray, mask: np.ndarray):
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a project dependency
        return image, mask
    return torch.from_numpy(image), torch.from_numpy(mask)


def write_cache(dataset: PathfinderDataset, path: str) -> str:
    """Generate every sample of ``dataset`` once and save them to one ``.npz`` file.

    Images are stored as uint8 (0-255) and masks as packed bits.

    Returns:
        The path written.
    """
    n, s = len(dataset), dataset.cfg.size
    images = np.empty((n, s, s), dtype=np.uint8)
    masks = np.empty((n, s, s), dtype=bool)
    for i in range(n):
        smp = dataset.sample(i)
        images[i] = np.round(smp.image * 255).astype(np.uint8)
        masks[i] = smp.mask
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(
        path,
        images=images,
        masks=np.packbits(masks, axis=-1),
        size=s,
        config=repr(dataset.cfg),
        seed=dataset.seed,
    )
    return path


class CachedPathfinder:
    """Dataset read from a file written by :func:`write_cache` (same item format)."""

    def __init__(self, path: str):
        data = np.load(path)
        self.size = int(data["size"])
        self.images = data["images"]
        self.masks = np.unpackbits(data["masks"], axis=-1, count=self.size).astype(bool)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i].astype(np.float32)[None] / 255.0
        return _as_tensors(img, self.masks[i][None].astype(np.float32))


def save_examples(cfg: PathfinderConfig, path: str, n: int = 4, seed: int = 0, scale: int = 2) -> str:
    """Render ``n`` examples as one PNG: image on top, target mask (red) over it below.

    Args:
        cfg: generator parameters.
        path: output PNG path.
        n: number of examples (columns).
        seed: dataset seed.
        scale: integer upscaling (nearest neighbour) for visibility.

    Returns:
        The path written.
    """
    from PIL import Image

    ds = PathfinderDataset(cfg, n, seed)
    s, pad = cfg.size, 2
    canvas = np.full((2 * s + 3 * pad, n * s + (n + 1) * pad, 3), 128, dtype=np.uint8)
    for i in range(n):
        smp = ds.sample(i)
        grey = np.round(smp.image * 255).astype(np.uint8)
        x0 = pad + i * (s + pad)
        canvas[pad : pad + s, x0 : x0 + s] = grey[..., None]
        over = np.repeat((grey // 3)[..., None], 3, axis=-1)
        over[smp.mask] = (255, 60, 60)
        canvas[2 * pad + s : 2 * pad + 2 * s, x0 : x0 + s] = over
    img = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path, optimize=True)
    return path
