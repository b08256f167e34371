"""Tests of the Pathfinder generator: determinism, geometry, target, caching."""
import math

import numpy as np
import pytest
from scipy import ndimage

from crbp_panoptic.pathfinder.generator import (
    CachedPathfinder,
    PathfinderConfig,
    PathfinderDataset,
    generate,
    save_examples,
    write_cache,
)

CFG = PathfinderConfig(size=48, path_length=6, distractors=2, near_distractors=1)


def test_deterministic_from_seed_and_index():
    a = PathfinderDataset(CFG, 5, seed=3)
    b = PathfinderDataset(CFG, 5, seed=3)
    for i in (4, 0, 2):  # any order
        sa, sb = a.sample(i), b.sample(i)
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.mask, sb.mask)
    assert not np.array_equal(a.sample(0).image, a.sample(1).image)
    assert not np.array_equal(a.sample(0).image, PathfinderDataset(CFG, 5, seed=4).sample(0).image)


@pytest.mark.parametrize("cfg", [CFG, PathfinderConfig(size=150, path_length=25, distractors=3, near_distractors=2)])
def test_paths_are_connected_smooth_chains_inside_the_image(cfg):
    ds = PathfinderDataset(cfg, 6, seed=0)
    for i in range(len(ds)):
        s = ds.sample(i)
        assert len(s.paths) == 1 + cfg.distractors
        for path in s.paths:
            assert path.shape == (cfg.path_length, 2, 2)
            vec = path[:, 1] - path[:, 0]
            np.testing.assert_allclose(np.linalg.norm(vec, axis=1), cfg.dash_length, rtol=1e-9)
            np.testing.assert_allclose(np.linalg.norm(path[1:, 0] - path[:-1, 1], axis=1), cfg.gap, rtol=1e-9)
            heading = np.arctan2(vec[:, 1], vec[:, 0])
            turn = np.angle(np.exp(1j * np.diff(heading)))
            assert np.all(np.abs(turn) <= cfg.curvature + 1e-9)
            assert path.min() >= cfg.margin - 1e-9 and path.max() <= cfg.size - 1 - cfg.margin + 1e-9


def test_target_is_one_contour_touching_the_dot():
    ds = PathfinderDataset(CFG, 20, seed=1)
    for i in range(len(ds)):
        s = ds.sample(i)
        x, y = (int(round(v)) for v in s.dot)
        assert s.mask[y, x] and s.image[y, x] == pytest.approx(1.0)
        # Dashes are separated by gaps; closing the gaps must leave one component that holds the dot.
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
    [dict(size=4), dict(path_length=0), dict(dash_length=0), dict(curvature=4.0), dict(distractors=1, near_distractors=2)],
)
def test_invalid_config_is_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PathfinderConfig(**kwargs)


def test_impossible_path_raises():
    cfg = PathfinderConfig(size=16, path_length=60, dash_length=6, gap=4, curvature=0.01, max_tries=5, margin=3)
    with pytest.raises(RuntimeError, match="could not fit"):
        generate(cfg, np.random.default_rng(0))
