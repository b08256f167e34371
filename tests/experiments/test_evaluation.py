"""crbp_panoptic.experiments.evaluation: residual and drift curves of a model's recurrent
modules, on the drives they received, against a cell whose curves are known exactly."""

import pytest
import torch
from torch import nn

from crbp_panoptic.crbp import RecurrentRefiner
from crbp_panoptic.experiments.evaluation import residual_curves


class HalfCell(nn.Module):
    """h' = h / 2 + x: h_t = x (2 - 2^(1-t)), so every relative quantity is known in closed form."""

    def forward(self, x, h):
        return 0.5 * h + x


def expected_residual(t):
    return 2.0 ** (1 - t) / (2 - 2.0 ** (1 - t))


class ToyModel(nn.Module):
    """Two refiners; the second sees an empty batch on odd images (a mask head without ROIs)."""

    def __init__(self):
        super().__init__()
        self.a = RecurrentRefiner(cell=HalfCell(), steps=2)
        self.b = RecurrentRefiner(cell=HalfCell(), steps=2)

    def forward(self, batch):
        (item,) = batch
        out = self.a(item["x"])
        return out, self.b(item["x"][: 0 if item["odd"] else 1])


def test_residual_curves_capture_drives_and_average():
    model = ToyModel().train()
    inputs = [{"x": torch.randn(1, 2, 3, 3), "odd": i % 2 == 1} for i in range(3)]
    curves = residual_curves(model, inputs, 4, 2)
    assert model.training  # mode restored
    assert set(curves) == {"a", "b", "mean"}
    assert [curves[k]["images"] for k in ("a", "b", "mean")] == [3, 2, 2]
    expected = [expected_residual(t) for t in range(1, 5)]
    h = [2 - 2.0 ** (1 - t) for t in range(1, 5)]
    for name in ("a", "b", "mean"):
        assert curves[name]["residual"] == pytest.approx(expected, rel=1e-5)
        assert curves[name]["drift"] == pytest.approx([abs(v - h[1]) / h[1] for v in h], rel=1e-5)
    for module in (model.a, model.b):  # the hooks are gone
        assert not module._forward_pre_hooks
