"""crbp_panoptic.experiments.torchdeq_benchmark (torchdeq itself is optional)."""

import sys

import pytest
import torch

from crbp_panoptic.crbp import HGRUCell
from crbp_panoptic.experiments import torchdeq_benchmark as tb


def test_missing_torchdeq_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdeq", None)
    with pytest.raises(ImportError, match=r"pip install torchdeq==0.1.0 --no-deps"):
        tb.torchdeq_step(HGRUCell(4, num_groups=2), torch.zeros(1, 4, 3, 3), 3, 2)


def test_arms_must_match_the_step_count():
    pytest.importorskip("torchdeq")
    with pytest.raises(ValueError, match=r"every arm must be recurrent with 4 steps"):
        tb.compare((1, 4, 5, 5), steps=4, neumann_steps=2, arms=["crbp:5"], repeats=1)


def test_torchdeq_ift_and_rbp_agree_at_the_fixed_point():
    pytest.importorskip("torchdeq")
    torch.manual_seed(0)
    cell = HGRUCell(8, num_groups=4).double().train()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    assert tb.gradient_gap(cell, x, steps=150, neumann_steps=15) < 1e-6


def test_report_has_every_arm():
    pytest.importorskip("torchdeq")
    result = tb.compare((2, 8, 6, 6), steps=4, neumann_steps=3, repeats=1, check_steps=100)
    names = [name for name, _ in result["rows"]]
    assert names[:2] == ["torchdeq IFT", "torchdeq IFT (hook_ift)"]
    assert names[2:] == ["RBP-4", "C-RBP-4", "C-RBP-4 (LCP on 25% of rows)"]
    assert all(r["peak"] > 0 and r["time"] > 0 for _, r in result["rows"])
    assert "| torchdeq IFT | " in tb.table(result)
