"""crbp_panoptic.experiments.engine_benchmark: one refiner step per arm, and against
torchdeq (optional)."""

import sys

import pytest
import torch

from crbp_panoptic.crbp import HGRUCell, parse_arm
from crbp_panoptic.experiments import engine_benchmark as eb


def test_saved_memory_grows_with_bptt_steps_and_stays_flat_under_rbp():
    arms = [
        parse_arm(a)
        for a in ("bptt:1", "bptt:4", "rbp:2", "rbp:8", "crbp:8", "crbp:8:sub2", "crbp:8:crop2")
    ]
    shapes = eb.shapes(channels=8, rois=4, roi_size=6, images=1, fpn_hw=(6, 8))
    rows = eb.benchmark(arms, shapes, num_groups=4, neumann_steps=3)
    assert [(s, a.name) for s, _, a, _ in rows] == [
        (s, a.name) for s in ("mask", "fpn") for a in arms
    ]
    for scale in ("mask", "fpn"):
        saved = {a.name: r["saved"] for s, _, a, r in rows if s == scale}
        assert saved["bptt:4"] > 2 * saved["bptt:1"] > 0
        assert saved["rbp:8"] == saved["rbp:2"]  # the backward does not keep the unrolled steps
        assert all(v > 0 for v in saved.values())
    for _, shape, arm, r in rows:
        assert r["time"] > 0 and r["cpu"] >= 0 and r["peak"] is None  # CPU: no CUDA peak
        assert r["lcp"] == 0 if arm.mode == "rbp" or arm.mode == "bptt" else r["lcp"] >= 0
        assert r["neumann"] != "-" if arm.mode in ("rbp", "crbp") else r["neumann"] == "-"
    mask_rows = [line for line in eb.table(rows) if line.startswith("| mask |")]
    assert len(mask_rows) == len(arms) and "| 4x8x6x6 | bptt:1 |" in mask_rows[0]
    assert mask_rows[2].split(" | ")[4] == "-"  # no rbp:20 row to divide by


def test_missing_torchdeq_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdeq", None)
    with pytest.raises(ImportError, match=r"pip install torchdeq==0.1.0 --no-deps"):
        eb.torchdeq_step(HGRUCell(4, num_groups=2), torch.zeros(1, 4, 3, 3), 3, 2)


def test_torchdeq_arms_must_match_the_step_count():
    with pytest.raises(ValueError, match=r"every arm must be recurrent with 4 steps"):
        eb.compare((1, 4, 5, 5), steps=4, neumann_steps=2, arms=["crbp:5"], repeats=1)


def test_torchdeq_ift_and_rbp_agree_at_the_fixed_point():
    pytest.importorskip("torchdeq")
    torch.manual_seed(0)
    cell = HGRUCell(8, num_groups=4).double().train()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    assert eb.gradient_gap(cell, x, steps=150, neumann_steps=15) < 1e-6


def test_torchdeq_report_has_every_arm():
    pytest.importorskip("torchdeq")
    result = eb.compare((2, 8, 6, 6), steps=4, neumann_steps=3, repeats=1, check_steps=100)
    names = [name for name, _ in result["rows"]]
    assert names[:2] == ["torchdeq IFT", "torchdeq IFT (hook_ift)"]
    assert names[2:] == ["RBP-4", "C-RBP-4", "C-RBP-4 (LCP on 25% of rows)"]
    assert all(r["peak"] > 0 and r["time"] > 0 for _, r in result["rows"])
    assert any(line.startswith("| torchdeq IFT | ") for line in eb.torchdeq_table(result))
