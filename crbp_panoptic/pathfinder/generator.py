"""Procedural Pathfinder images for contour segmentation ("PF-SEG").

An image holds several smooth curved paths, each made of short straight dashes
separated by small gaps, on a black background; a marker dot sits at one end of
the *target* path. The target mask is every pixel of the target path plus the dot.
Locally every path looks the same: telling the target from the distractors takes
following the contour from the dot, dash after dash.

Our own implementation of the idea (Linsley et al. 2018, 2020), written from the
task description, not ported from anyone's code.

A path is a random walk of headings: dash ``k`` runs from ``p_k`` to
``q_k = p_k + dash_length * (cos θ_k, sin θ_k)``, the next dash starts at
``p_{k+1} = q_k + gap * (cos θ_k, sin θ_k)`` and turns by
``θ_{k+1} - θ_k ~ U(-curvature, curvature)``. A turn that would leave the image
margin, or bring a distractor closer than ``min_separation`` to another path (or
closer than ``dot_clearance`` to the dot), is redrawn; a path that gets stuck
restarts elsewhere. Paths therefore never touch, and the ink connected to the dot
(``image >= 0.5``, 8-connectivity) is exactly the target: :func:`connected_to_dot`
is the task's oracle, and a model has to compute that connectivity with local
operations.

Everything is deterministic from ``(seed, index)``: :class:`PathfinderDataset`
draws sample ``i`` from ``numpy.random.default_rng([seed, i])``, so samples are
made on the fly in any order and on any worker. :func:`cached_arrays` generates a
whole set once and keeps it on disk under a folder named by the hash of the
generator's parameters, so a changed config gets fresh data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from typing import List, Optional, Tuple

import numpy as np

__all__ = [
    "INK",
    "PathfinderConfig",
    "PathfinderSample",
    "PathfinderDataset",
    "CachedPathfinder",
    "cached_arrays",
    "connected_to_dot",
    "generate",
    "write_cache",
    "save_examples",
]

#: A pixel whose ink coverage reaches this belongs to a path (the target mask uses the same).
INK = 0.5

#: Bump when the drawing changes, so caches made by older code are not reused.
GENERATOR_VERSION = 2

#: Capacity of the layout (:meth:`PathfinderConfig.max_path_length`): with distractors, a
#: path's contour span ``path_length * (dash_length + gap)`` may reach this many times the
#: free side of the image, ...
EXTENT_LIMIT = 1.1
#: ... and every path's separation band (contour span x ``min_separation``) together may
#: cover this share of the free area.
LOAD_LIMIT = 0.35


@dataclasses.dataclass(frozen=True)
class PathfinderConfig:
    """Parameters of the generator (lengths in pixels, angles in radians).

    Attributes:
        size: image side length (square images).
        path_length: dashes per path (target and distractors).
        dash_length: length of one dash.
        gap: distance between the end of one dash and the start of the next
            (small enough that a line of ``thickness`` stays 8-connected across it).
        curvature: largest heading change between consecutive dashes.
        distractors: distractor paths.
        thickness: line width of a dash.
        dot_radius: radius of the marker dot.
        margin: paths keep this far from the border.
        min_separation: least distance between the centre lines of two different
            paths (gaps included), so paths never touch or cross.
        dot_clearance: least distance from the dot's centre to any distractor.
        max_tries: restarts allowed per path before giving up (``RuntimeError``).
    """

    size: int = 64
    path_length: int = 8
    dash_length: float = 4.0
    gap: float = 1.0
    curvature: float = math.pi / 7
    distractors: int = 2
    thickness: float = 2.0
    dot_radius: float = 2.0
    margin: float = 3.0
    min_separation: float = 4.0
    dot_clearance: float = 6.0
    max_tries: int = 200

    def __post_init__(self):
        if self.size < 8:
            raise ValueError(f"size={self.size!r}; must be >= 8")
        if self.path_length < 1:
            raise ValueError(f"path_length={self.path_length!r}; must be >= 1")
        if self.dash_length <= 0 or self.gap < 0:
            raise ValueError(
                f"dash_length={self.dash_length!r}, gap={self.gap!r}; "
                "need dash_length > 0, gap >= 0"
            )
        if not 0 <= self.curvature <= math.pi:
            raise ValueError(f"curvature={self.curvature!r}; must lie in [0, pi]")
        if self.distractors < 0:
            raise ValueError(f"distractors={self.distractors!r}; must be >= 0")
        if self.thickness <= 0 or self.dot_radius <= 0:
            raise ValueError(
                f"thickness={self.thickness!r}, dot_radius={self.dot_radius!r}; must be > 0"
            )
        if 2 * self.margin >= self.size:
            raise ValueError(f"margin={self.margin!r} leaves no room in size={self.size!r}")
        if self.min_separation < 0 or self.dot_clearance < 0:
            raise ValueError(
                f"min_separation={self.min_separation!r}, dot_clearance={self.dot_clearance!r}; "
                "must be >= 0"
            )

    def max_path_length(self) -> int:
        """The longest path, in dashes, that the layout places in reasonable time.

        A rule of thumb fitted to this generator, not a geometric bound. With ``side =
        size - 1 - 2 margin`` the free side, ``step = dash_length + gap`` and ``band =
        max(min_separation, thickness)``, a length ``L`` is held when the paths' bands fill
        at most :data:`LOAD_LIMIT` of the free area,
        ``(distractors + 1) * L * step * band <= LOAD_LIMIT * side^2``, and, with
        distractors, when one path's span is at most :data:`EXTENT_LIMIT` free sides,
        ``L * step <= EXTENT_LIMIT * side`` (a target alone may curl up; distractors
        must find room around it). Timed on this generator (2 distractors, the defaults'
        geometry, 10 images each): at 48 px, 9 dashes took 0.4 s an image and 10 dashes
        failed 8 of 10 layouts within 30 tries; 14 dashes took 1.1 s at 64 px and 0.08 s at
        80 px; at 150 px with 3 distractors, 25 dashes took 0.08 s and 40 took 4.3 s.

        Returns:
            the largest ``path_length`` within both limits (0 if not even one dash fits).
        """
        side = self.size - 1 - 2 * self.margin
        if side <= 0:
            return 0
        step = self.dash_length + self.gap
        band = max(self.min_separation, self.thickness)
        limit = LOAD_LIMIT * side**2 / ((self.distractors + 1) * step * band)
        if self.distractors:
            limit = min(limit, EXTENT_LIMIT * side / step)
        return max(int(math.floor(limit + 1e-9)), 0)

    def smallest_size_for(self, path_length: int, largest: int = 4096) -> Optional[int]:
        """The smallest ``size`` (other parameters kept) whose :meth:`max_path_length` is at
        least ``path_length``; None if none up to ``largest``."""
        for size in range(max(8, self.size), largest + 1):
            if size > 2 * self.margin and (
                dataclasses.replace(self, size=size).max_path_length() >= path_length
            ):
                return size
        return None

    def digest(self) -> str:
        """A short hash of every parameter and the generator version (names cache folders)."""
        text = f"v{GENERATOR_VERSION}:{dataclasses.astuple(self)!r}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]


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


def _points(a: np.ndarray, b: np.ndarray, spacing: float = 0.5) -> np.ndarray:
    """Points every ``spacing`` px on the segment a-b, both ends included, shape (n, 2)."""
    n = max(int(math.ceil(float(np.hypot(*(b - a))) / spacing)), 1)
    return a + np.linspace(0.0, 1.0, n + 1)[:, None] * (b - a)


class _Obstacles:
    """Points a new path must keep away from, each with its own clearance."""

    def __init__(self):
        self.points = np.zeros((0, 2))
        self.clearance = np.zeros(0)

    def add(self, points: np.ndarray, clearance: float) -> None:
        self.points = np.concatenate([self.points, points])
        self.clearance = np.concatenate([self.clearance, np.full(len(points), clearance)])

    def clear(self, points: np.ndarray) -> bool:
        """True if every point of ``points`` (n, 2) keeps its distance from every obstacle."""
        if not len(self.points):
            return True
        d = np.hypot(*(points[:, None, :] - self.points[None, :, :]).transpose(2, 0, 1))
        return bool((d >= self.clearance[None, :]).all())


def _centre_line(dashes: np.ndarray) -> np.ndarray:
    """Points along a path's whole centre line, dashes and gaps, shape (n, 2)."""
    ends = np.concatenate([dashes[:, 0], dashes[-1:, 1]])
    return np.concatenate([_points(a, b) for a, b in zip(ends[:-1], ends[1:])])


def _walk(
    rng: np.random.Generator,
    cfg: PathfinderConfig,
    start: np.ndarray,
    heading: float,
    avoid: _Obstacles,
) -> Optional[np.ndarray]:
    """One path from ``start``; None if it got stuck (border or obstacles).

    Each turn is drawn uniformly in ``[-curvature, curvature]``; a draw is kept if
    the dash and the gap after it stay inside the margin and clear of ``avoid``, and
    a point ``lookahead`` further on stays inside the margin (the look-ahead makes
    the walk steer away from walls in time). If a dozen draws fail, draws without
    look-ahead are tried before giving up.
    """
    lo, hi = cfg.margin, cfg.size - 1 - cfg.margin
    step = cfg.dash_length + cfg.gap
    dashes = np.empty((cfg.path_length, 2, 2), dtype=np.float64)
    p = start.astype(np.float64)
    theta = heading
    for k in range(cfg.path_length):
        last = k + 1 == cfg.path_length
        lookahead = min(3, cfg.path_length - k - 1) * step
        for attempt in range(24):
            if k == 0:  # the first dash may point anywhere
                t = theta if attempt == 0 else rng.uniform(-math.pi, math.pi)
            else:
                t = theta + rng.uniform(-cfg.curvature, cfg.curvature)
            d = np.array([math.cos(t), math.sin(t)])
            q = p + cfg.dash_length * d
            end = q if last else q + cfg.gap * d
            ok = _inside(q, lo, hi) and _inside(end, lo, hi)
            if ok and attempt < 12:
                ok = _inside(q + lookahead * d, lo, hi) or lookahead == 0
            if ok and avoid.clear(_points(p, end)):
                break
        else:
            return None
        dashes[k, 0], dashes[k, 1] = p, q
        theta = t
        p = q + cfg.gap * d
    return dashes


def _random_path(
    rng: np.random.Generator, cfg: PathfinderConfig, avoid: _Obstacles, tries: int
) -> Optional[np.ndarray]:
    """A path that starts anywhere clear of ``avoid``; None after ``tries`` failed starts."""
    lo, hi = cfg.margin, cfg.size - 1 - cfg.margin
    for _ in range(tries):
        start = rng.uniform(lo, hi, size=2)
        if not avoid.clear(start[None]):
            continue
        path = _walk(rng, cfg, start, rng.uniform(-math.pi, math.pi), avoid)
        if path is not None:
            return path
    return None


def _layout(rng: np.random.Generator, cfg: PathfinderConfig) -> Optional[List[np.ndarray]]:
    """Target first, then the distractors around it; None if a distractor found no room."""
    target = _random_path(rng, cfg, _Obstacles(), cfg.max_tries)
    if target is None:
        return None
    avoid = _Obstacles()
    avoid.add(target[:1, 0], cfg.dot_clearance)
    avoid.add(_centre_line(target), cfg.min_separation)
    paths = [target]
    for _ in range(cfg.distractors):
        path = _random_path(rng, cfg, avoid, _DISTRACTOR_TRIES)
        if path is None:
            return None
        avoid.add(_centre_line(path), cfg.min_separation)
        paths.append(path)
    return paths


#: Starts tried per distractor before the whole image is drawn again.
_DISTRACTOR_TRIES = 20


# ----------------------------------------------------------------------------- rendering


def _draw_segment(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    """Max-composite an anti-aliased segment of ``width`` pixels onto ``canvas`` (in place)."""
    size = canvas.shape[0]
    r = width / 2 + 1
    x0, x1 = (
        int(max(0, math.floor(min(a[0], b[0]) - r))),
        int(min(size - 1, math.ceil(max(a[0], b[0]) + r))),
    )
    y0, y1 = (
        int(max(0, math.floor(min(a[1], b[1]) - r))),
        int(min(size - 1, math.ceil(max(a[1], b[1]) + r))),
    )
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
    for _ in range(cfg.max_tries):
        paths = _layout(rng, cfg)
        if paths is not None:
            break
    else:
        raise RuntimeError(
            f"could not fit a target and {cfg.distractors} distractors of {cfg.path_length} dashes "
            f"in {cfg.max_tries} tries (size={cfg.size}, dash_length={cfg.dash_length}, "
            f"gap={cfg.gap}, min_separation={cfg.min_separation}); make the image larger, the "
            "paths shorter or fewer"
        )
    target = paths[0]
    dot = (float(target[0, 0, 0]), float(target[0, 0, 1]))
    image = np.zeros((cfg.size, cfg.size), dtype=np.float64)
    for path in paths:
        for a, b in path:
            _draw_segment(image, a, b, cfg.thickness)
    _draw_disk(image, dot, cfg.dot_radius)

    cover = np.zeros_like(image)
    for a, b in target:
        _draw_segment(cover, a, b, cfg.thickness)
    _draw_disk(cover, dot, cfg.dot_radius)
    mask = cover >= INK
    return PathfinderSample(image.astype(np.float32), mask, paths, dot)


def connected_to_dot(image: np.ndarray, dot: Tuple[float, float]) -> np.ndarray:
    """The oracle: ink (``image >= INK``) 8-connected to the dot, bool (size, size).

    Args:
        image: (size, size) in [0, 1].
        dot: (x, y) centre of the marker dot.
    """
    from scipy import ndimage

    ink = image >= INK
    labels, _ = ndimage.label(ink, structure=np.ones((3, 3), dtype=bool))
    x, y = int(round(dot[0])), int(round(dot[1]))
    return labels == labels[y, x] if labels[y, x] else np.zeros_like(ink)


# ----------------------------------------------------------------------------- datasets


class PathfinderDataset:
    """Map-style dataset generating sample ``i`` on the fly from ``(seed, i)``.

    Args:
        cfg: generator parameters.
        length: number of samples.
        seed: base seed; train and test sets should use different seeds.

    Item ``i`` is ``(image, mask)``: float32 tensors (1, size, size), the image in
    [0, 1] and the mask in {0, 1}.
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
    import torch

    return torch.from_numpy(image), torch.from_numpy(mask)


def _sample_arrays(args) -> Tuple[np.ndarray, np.ndarray, Tuple[float, float]]:
    cfg, seed, i = args
    smp = generate(cfg, np.random.default_rng([seed, int(i)]))
    return np.round(smp.image * 255).astype(np.uint8), smp.mask, smp.dot


def _generate_arrays(dataset: PathfinderDataset, workers: int = 0) -> dict:
    jobs = [(dataset.cfg, dataset.seed, i) for i in range(len(dataset))]
    workers = min(workers, len(jobs))
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_sample_arrays, jobs, chunksize=64)
    else:
        results = [_sample_arrays(j) for j in jobs]
    s = dataset.cfg.size
    return {
        "images": np.stack([r[0] for r in results]) if results else np.zeros((0, s, s), np.uint8),
        "masks": np.stack([r[1] for r in results]) if results else np.zeros((0, s, s), bool),
        "dots": np.array([r[2] for r in results], dtype=np.float32).reshape(-1, 2),
    }


def write_cache(dataset: PathfinderDataset, path: str, workers: int = 0) -> str:
    """Generate every sample of ``dataset`` once and save them to one ``.npz`` file.

    Images are stored as uint8 (0-255), masks as packed bits, dots as (n, 2) float32.
    The file is written under a temporary name and renamed, so an interrupted run
    leaves no half-written cache.

    Returns:
        The path written.
    """
    arrays = _generate_arrays(dataset, workers)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial.npz"
    np.savez_compressed(
        tmp,
        images=arrays["images"],
        masks=np.packbits(arrays["masks"], axis=-1),
        dots=arrays["dots"],
        size=dataset.cfg.size,
        config=repr(dataset.cfg),
        seed=dataset.seed,
    )
    os.replace(tmp, path)
    return path


class CachedPathfinder:
    """Dataset read from a file written by :func:`write_cache` (same item format).

    Attributes:
        images: uint8 (n, size, size); masks: bool (n, size, size); dots: float32 (n, 2).
    """

    def __init__(self, path: str):
        with np.load(path) as data:
            self.size = int(data["size"])
            self.images = data["images"]
            self.masks = np.unpackbits(data["masks"], axis=-1, count=self.size).astype(bool)
            self.dots = data["dots"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i].astype(np.float32)[None] / 255.0
        return _as_tensors(img, self.masks[i][None].astype(np.float32))


def cached_arrays(
    cfg: PathfinderConfig,
    length: int,
    seed: int,
    root: str = "datasets/pathfinder",
    workers: int = 0,
) -> CachedPathfinder:
    """The set ``PathfinderDataset(cfg, length, seed)``, generated once and kept on disk.

    The file is ``root/<cfg.digest()>/n<length>_seed<seed>.npz``; a changed
    config (or generator version) hashes to a new folder, so stale data is never read.

    Args:
        cfg: generator parameters.
        length: number of samples.
        seed: base seed.
        root: cache folder.
        workers: processes used to generate a missing file (0 or 1: this process).
    """
    path = os.path.join(root, cfg.digest(), f"n{int(length)}_seed{int(seed)}.npz")
    if not os.path.exists(path):
        write_cache(PathfinderDataset(cfg, length, seed), path, workers)
    return CachedPathfinder(path)


def save_examples(
    cfg: PathfinderConfig, path: str, n: int = 4, seed: int = 0, scale: int = 2
) -> str:
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
    img = Image.fromarray(canvas).resize(
        (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path, optimize=True)
    return path
