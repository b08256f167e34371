"""Tests of the Pathfinder generator: determinism, geometry, separation, oracle, caching."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage

from crbp_panoptic.pathfinder.generator import (
    INK,
    CachedPathfinder,
    PathfinderConfig,
    PathfinderDataset,
    cached_arrays,
    connected_to_dot,
    generate,
    save_examples,
    write_cache,
)

CFG = PathfinderConfig(size=48, path_length=7, distractors=2)


def test_deterministic_from_seed_and_index():
    a = PathfinderDataset(CFG, 5, seed=3)
    b = PathfinderDataset(CFG, 5, seed=3)
    for i in (4, 0, 2):  # any order
        sa, sb = a.sample(i), b.sample(i)
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.mask, sb.mask)
    assert not np.array_equal(a.sample(0).image, a.sample(1).image)
    assert not np.array_equal(a.sample(0).image, PathfinderDataset(CFG, 5, seed=4).sample(0).image)


@pytest.mark.parametrize("cfg", [CFG, PathfinderConfig(size=150, path_length=25, distractors=3)])
def test_paths_are_connected_smooth_chains_inside_the_image(cfg):
    ds = PathfinderDataset(cfg, 6, seed=0)
    for i in range(len(ds)):
        s = ds.sample(i)
        assert len(s.paths) == 1 + cfg.distractors
        for path in s.paths:
            assert path.shape == (cfg.path_length, 2, 2)
            vec = path[:, 1] - path[:, 0]
            np.testing.assert_allclose(np.linalg.norm(vec, axis=1), cfg.dash_length, rtol=1e-9)
            np.testing.assert_allclose(
                np.linalg.norm(path[1:, 0] - path[:-1, 1], axis=1), cfg.gap, rtol=1e-9
            )
            heading = np.arctan2(vec[:, 1], vec[:, 0])
            turn = np.angle(np.exp(1j * np.diff(heading)))
            assert np.all(np.abs(turn) <= cfg.curvature + 1e-9)
            assert (
                path.min() >= cfg.margin - 1e-9 and path.max() <= cfg.size - 1 - cfg.margin + 1e-9
            )


def test_target_is_one_contour_touching_the_dot():
    ds = PathfinderDataset(CFG, 20, seed=1)
    for i in range(len(ds)):
        s = ds.sample(i)
        x, y = (int(round(v)) for v in s.dot)
        assert s.mask[y, x] and s.image[y, x] == pytest.approx(1.0)
        # Closing the gaps between dashes must leave one component that holds the dot.
        closed = ndimage.binary_dilation(s.mask, iterations=int(math.ceil(CFG.gap / 2)) + 1)
        labels, n = ndimage.label(closed, structure=np.ones((3, 3)))
        assert n == 1 and labels[y, x] == 1
        # The mask covers the target's dashes and nothing far from them.
        assert s.mask.sum() >= CFG.path_length * CFG.dash_length
        assert np.all(s.image[s.mask] > 0.4)
        assert s.image.dtype == np.float32 and 0 <= s.image.min() and s.image.max() <= 1


def test_items_are_tensors_of_the_right_shape():
    image, mask = PathfinderDataset(CFG, 2)[1]
    assert tuple(image.shape) == (1, 48, 48) and tuple(mask.shape) == (1, 48, 48)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_cache_round_trip_and_examples(tmp_path):
    ds = PathfinderDataset(CFG, 3, seed=2)
    cached = CachedPathfinder(write_cache(ds, str(tmp_path / "pf.npz")))
    assert len(cached) == 3
    for i in range(3):
        img, m = ds[i]
        cimg, cm = cached[i]
        assert (cm == m).all()
        assert (cimg - img).abs().max() <= 1 / 255
    png = save_examples(CFG, str(tmp_path / "ex.png"), n=2)
    assert (tmp_path / "ex.png").stat().st_size > 0 and png.endswith("ex.png")


def test_nothing_written_without_asking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate(CFG, np.random.default_rng(0))
    PathfinderDataset(CFG, 2)[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size=4),
        dict(path_length=0),
        dict(dash_length=0),
        dict(curvature=4.0),
        dict(distractors=-1),
        dict(min_separation=-1.0),
    ],
)
def test_invalid_config_is_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PathfinderConfig(**kwargs)


@pytest.mark.parametrize(
    "cfg",
    [
        PathfinderConfig(
            size=16, path_length=60, dash_length=6, gap=4, curvature=0.01, max_tries=5
        ),
        # a target fits, but no distractor can keep 20 px from it in a 24 px image
        PathfinderConfig(size=24, path_length=2, distractors=1, min_separation=20.0, max_tries=3),
    ],
)
def test_impossible_layout_raises(cfg):
    with pytest.raises(RuntimeError, match="could not fit"):
        generate(cfg, np.random.default_rng(0))


def _segment_distance(p, q, a, b):
    """Least distance between segments p-q and a-b, by dense sampling (0.05 px)."""
    t = np.linspace(0, 1, 200)[:, None]
    u, v = p + t * (q - p), a + t * (b - a)
    return np.hypot(*(u[:, None] - v[None]).transpose(2, 0, 1)).min()


def _centre_segments(path):
    ends = np.concatenate([path[:, 0], path[-1:, 1]])
    return list(zip(ends[:-1], ends[1:]))


def test_paths_keep_their_distance_from_each_other_and_the_dot():
    cfg = PathfinderConfig(
        size=48, path_length=7, distractors=2, min_separation=4.0, dot_clearance=6.0
    )
    ds = PathfinderDataset(cfg, 8, seed=5)
    for i in range(len(ds)):
        s = ds.sample(i)
        dot = np.asarray(s.dot)
        for j, path in enumerate(s.paths):
            for k in range(j):
                d = min(
                    _segment_distance(p, q, a, b)
                    for p, q in _centre_segments(path)
                    for a, b in _centre_segments(s.paths[k])
                )
                assert d >= cfg.min_separation - 0.3, (i, j, k, d)
            if j:
                pts = np.concatenate([np.linspace(a, b, 50) for a, b in _centre_segments(path)])
                assert np.hypot(*(pts - dot).T).min() >= cfg.dot_clearance - 0.3


@pytest.mark.parametrize("cfg", [CFG, PathfinderConfig(size=150, path_length=14, distractors=3)])
def test_flood_fill_from_the_dot_along_the_ink_recovers_the_target(cfg):
    ds = PathfinderDataset(cfg, 12, seed=7)
    ious = []
    for i in range(len(ds)):
        s = ds.sample(i)
        oracle = connected_to_dot(s.image, s.dot)
        ious.append((oracle & s.mask).sum() / (oracle | s.mask).sum())
        # every path is in the image: the ink holds more than the target
        assert (s.image >= INK).sum() > s.mask.sum()
    assert min(ious) > 0.99


def test_cached_arrays_are_reused_and_regenerated_when_the_config_changes(tmp_path):
    root = str(tmp_path / "cache")
    a = cached_arrays(CFG, 3, seed=2, root=root)
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 1 and files[0].parent.name == CFG.digest()
    mtime = files[0].stat().st_mtime_ns
    b = cached_arrays(CFG, 3, seed=2, root=root)
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(a.images, b.images)
    ds = PathfinderDataset(CFG, 3, seed=2)
    for i in range(3):
        np.testing.assert_array_equal(a.masks[i], ds.sample(i).mask)
        np.testing.assert_allclose(a.dots[i], ds.sample(i).dot, atol=1e-4)
    other = PathfinderConfig(size=48, path_length=6, distractors=2)
    assert other.digest() != CFG.digest()
    c = cached_arrays(other, 3, seed=2, root=root)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2
    assert not np.array_equal(c.masks, a.masks)
    assert not list((tmp_path / "cache").rglob("*partial*"))


def test_max_path_length_follows_the_layout_rule():
    """The capacity rule's two limits, and a layout at the limit draws in reasonable time."""
    from crbp_panoptic.pathfinder.generator import EXTENT_LIMIT, LOAD_LIMIT

    side = CFG.size - 1 - 2 * CFG.margin  # 41
    step = CFG.dash_length + CFG.gap
    by_extent = EXTENT_LIMIT * side / step  # 9.02: the binding limit here
    by_load = LOAD_LIMIT * side**2 / ((CFG.distractors + 1) * step * CFG.min_separation)
    assert CFG.max_path_length() == math.floor(min(by_extent, by_load)) == 9
    # a target alone may curl up: only the load limit applies
    alone = PathfinderConfig(size=48, path_length=7, distractors=0)
    assert alone.max_path_length() == math.floor(LOAD_LIMIT * side**2 / (step * 4.0)) == 29
    # more distractors: the load limit binds
    crowded = PathfinderConfig(size=48, path_length=7, distractors=5)
    assert crowded.max_path_length() == math.floor(LOAD_LIMIT * side**2 / (6 * step * 4.0)) == 4
    assert PathfinderConfig(size=8, path_length=1, margin=3.0).max_path_length() == 0
    # the smallest size for a length holds it, one pixel less does not
    size = CFG.smallest_size_for(14)
    assert dataclasses.replace(CFG, size=size).max_path_length() >= 14
    assert dataclasses.replace(CFG, size=size - 1).max_path_length() < 14
    assert CFG.smallest_size_for(14, largest=size - 1) is None
    edge = PathfinderConfig(size=32, path_length=5, distractors=1, margin=3.5, max_tries=30)
    assert edge.max_path_length() == 5
    for i in range(3):
        generate(edge, np.random.default_rng([0, i]))
