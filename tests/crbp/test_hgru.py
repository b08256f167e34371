"""HGRUCell: shapes, initialisation that takes effect, validation, contractive start."""
import math

import pytest
import torch

from crbp_panoptic.crbp import HGRUCell, equilibrium
from crbp_panoptic.crbp.lcp import column_sums


@pytest.mark.parametrize("gala", [False, True])
@pytest.mark.parametrize("norm", ["GN", "none"])
def test_shapes(gala, norm):
    cell = HGRUCell(16, kernel_size=5, norm=norm, num_groups=4, gala=gala)
    x, h = torch.randn(3, 16, 7, 9), torch.rand(3, 16, 7, 9)
    out = cell(x, h)
    assert out.shape == (3, 16, 7, 9) and torch.isfinite(out).all()


def test_initialisation_took_effect():
    cell = HGRUCell(16, num_groups=4)
    b = cell.gate.bias.detach()
    # the documented gate bias, not PyTorch's default U(-1/sqrt(C), 1/sqrt(C))
    assert torch.allclose(b, torch.full_like(b, math.log(3.0)))
    assert torch.allclose(torch.sigmoid(b), torch.full_like(b, 0.75))
    assert torch.all(cell.alpha == 0.1) and torch.all(cell.mu == 1.0)
    for gn in (cell.norm_inh, cell.norm_exc):
        assert torch.all(gn.weight == 0.1) and torch.all(gn.bias == 0)
    assert cell.gate.weight.std() < 0.1 / math.sqrt(16) * 1.5
    # W_inh / W_exc: orthogonal rows scaled by gain / k
    for conv in (cell.w_inh, cell.w_exc):
        flat = conv.weight.detach().reshape(16, -1)
        scale = HGRUCell.KERNEL_GAIN / 3
        torch.testing.assert_close(flat @ flat.T, scale**2 * torch.eye(16), atol=1e-6, rtol=0)
    # reset_parameters restores it after training moved the values
    with torch.no_grad():
        cell.gate.bias.add_(1.0)
        cell.alpha.mul_(3)
    cell.reset_parameters()
    assert torch.allclose(cell.gate.bias, torch.full_like(b, math.log(3.0))) and torch.all(cell.alpha == 0.1)


@pytest.mark.parametrize("norm", ["GN", "none"])
def test_contractive_at_initialisation(norm):
    """At the equilibrium of a freshly initialised cell, the Jacobian's column sums stay
    below tau = 0.9 (zero LCP) and the spectral radius is well below 1."""
    torch.manual_seed(0)
    cell = HGRUCell(16, norm=norm, num_groups=4)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        res = equilibrium(lambda h: cell(x, h), torch.zeros_like(x), mode="rbp", steps=60)
    assert res.residual < 1e-5
    h = res.state.clone().requires_grad_()
    out = cell(x, h)
    u = column_sums(out, h)
    assert u.max() < 0.9
    v = torch.randn_like(h)
    for _ in range(30):  # power iteration on J^T
        w = torch.autograd.grad(out, h, v, retain_graph=True)[0]
        rate, v = (w.norm() / v.norm()).item(), w / w.norm()
    assert rate < 0.6


def test_batched_equals_single():
    torch.manual_seed(0)
    cell = HGRUCell(8, num_groups=2, gala=True)
    x, h = torch.randn(3, 8, 5, 5), torch.rand(3, 8, 5, 5)
    batched = cell(x, h)
    single = torch.cat([cell(x[i : i + 1], h[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single)


def test_empty_batch():
    cell = HGRUCell(8, num_groups=4)
    out = cell(torch.zeros(0, 8, 4, 4), torch.zeros(0, 8, 4, 4))
    assert out.shape == (0, 8, 4, 4)


def test_validation_errors():
    with pytest.raises(ValueError, match=r"norm='BN'.*\['GN', 'none'\]"):
        HGRUCell(8, norm="BN")
    with pytest.raises(ValueError, match="num_groups=3 must divide channels=8"):
        HGRUCell(8, num_groups=3)
    with pytest.raises(ValueError, match="num_groups=32 must divide channels=8"):
        HGRUCell(8)
    with pytest.raises(ValueError, match="kernel_size=4"):
        HGRUCell(8, kernel_size=4, num_groups=4)
    with pytest.raises(ValueError, match="channels=0"):
        HGRUCell(0)
    HGRUCell(8, norm="none", num_groups=3)  # groups are irrelevant without GN
    cell = HGRUCell(8, num_groups=4)
    with pytest.raises(ValueError, match="x.shape"):
        cell(torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 4, 5))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    for gala in (False, True):
        cell = HGRUCell(8, num_groups=4, gala=gala)
        x = torch.randn(2, 8, 5, 5)
        h = torch.rand(2, 8, 5, 5)
        cell(x, cell(x, h)).square().sum().backward()
        for name, p in cell.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
