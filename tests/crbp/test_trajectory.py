"""crbp.trajectory against a linear contraction whose residuals and drift are known exactly."""

from functools import partial

import pytest
import torch
from torch import nn

from crbp_panoptic.crbp.solvers import relative_residual
from crbp_panoptic.crbp.trajectory import capture_inputs, iterate, trajectory

A = 0.5  # h' = A h + x from h_0 = 0: h_t = x (1 - A^t) / (1 - A)


def contraction(x, h):
    return A * h + x


def residual(t):
    """||h_t - h_{t-1}|| / ||h_t|| = A^(t-1) (1 - A) / (1 - A^t)."""
    return A ** (t - 1) * (1 - A) / (1 - A**t)


def drift(t, ref):
    """||h_t - h_T|| / ||h_T|| = |A^T - A^t| / (1 - A^T)."""
    return abs(A**ref - A**t) / (1 - A**ref)


def test_iterate_yields_each_state_and_its_closed_form_residual():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    out = list(iterate(partial(contraction, x), torch.zeros_like(x), 5))
    assert [t for t, _, _ in out] == [1, 2, 3, 4, 5]
    for t, h, res in out:
        torch.testing.assert_close(h, x * (1 - A**t) / (1 - A))
        assert res == pytest.approx(residual(t), rel=1e-9)
    assert out[0][2] == pytest.approx(1.0)  # from zero, the first step is all new


def test_trajectory_records_residuals_drift_and_optionally_the_states():
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    tr = trajectory(partial(contraction, x), torch.zeros_like(x), 6, ref_step=3)
    assert tr.residuals == pytest.approx([residual(t) for t in range(1, 7)], rel=1e-9)
    assert tr.drift == pytest.approx([drift(t, 3) for t in range(1, 7)], rel=1e-9, abs=1e-12)
    assert tr.drift[2] == 0 and tr.states == []
    kept = trajectory(partial(contraction, x), torch.zeros_like(x), 2, keep_states=True)
    assert kept.drift == [] and len(kept.states) == 2
    assert not any(h.requires_grad for h in kept.states)  # no graph, whatever the input
    with pytest.raises(ValueError, match="ref_step=4"):
        trajectory(partial(contraction, x), torch.zeros_like(x), 3, ref_step=4)


def test_relative_residual_is_what_the_trajectory_reports():
    new, old = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 0.0])
    assert float(relative_residual(new, old)) == pytest.approx(4.0 / 5.0)
    assert float(relative_residual(torch.zeros(0, 3), torch.zeros(0, 3))) == 0.0


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Identity(), nn.Identity()

    def forward(self, x):
        return self.b(self.a(x) + 1)


def test_capture_inputs_records_each_call_and_removes_its_hooks():
    model = Twice()
    x = torch.ones(2)
    with capture_inputs(model.named_children()) as seen:
        model(x)
        model(2 * x)
    assert [v.tolist() for v in seen["a"]] == [[1.0, 1.0], [2.0, 2.0]]
    assert [v.tolist() for v in seen["b"]] == [[2.0, 2.0], [3.0, 3.0]]
    with capture_inputs([("b", model.b)], lambda m, v: None if v.sum() < 5 else v.sum()) as kept:
        model(x)
        model(2 * x)
    assert kept == {"b": [torch.tensor(6.0)]}  # None results are not kept
    assert not model.a._forward_pre_hooks and not model.b._forward_pre_hooks
