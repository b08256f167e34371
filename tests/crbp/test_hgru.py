"""HGRUCell: the equations against an independent computation, each init, validation, and
dynamics that start near (not far below) the LCP's threshold."""

import math

import pytest
import torch
import torch.nn.functional as F

from crbp_panoptic.crbp import HGRUCell, cell_diagnostics, equilibrium
from crbp_panoptic.crbp.hgru import chronos_bias
from crbp_panoptic.crbp.lcp import column_sums

f64 = torch.float64


def _sp(t):
    return torch.log1p(torch.exp(-t.abs())) + t.clamp_min(0)  # softplus, written out


def _conv(h, w, dilation=1):
    """k x k same-padded convolution, taps ``dilation`` apart, by explicit shifts (no conv2d)."""
    k, d = w.shape[-1], dilation
    padded = F.pad(h, (d * (k // 2),) * 4)
    height, width = h.shape[-2:]
    out = h.new_zeros(h.shape[0], w.shape[0], height, width)
    for dy in range(k):
        for dx in range(k):
            window = padded[:, :, d * dy : d * dy + height, d * dx : d * dx + width]
            out = out + torch.einsum("oc,bchw->bohw", w[:, :, dy, dx], window)
    return out


def _group_norm(t, groups, weight, bias, eps=1e-5):
    b, c, hh, ww = t.shape
    g = t.reshape(b, groups, -1)
    g = (g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + eps)
    return g.reshape(b, c, hh, ww) * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)


def _batch_norm(t, weight, bias, eps=1e-5):
    mean = t.mean((0, 2, 3), keepdim=True)
    var = t.var((0, 2, 3), unbiased=False, keepdim=True)
    return (t - mean) / torch.sqrt(var + eps) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def reference_step(cell, x, h, groups):
    """The paper's equations from the cell's raw parameters, without its modules."""

    def norm(t, layer):
        if cell.norm == "GN":
            return _group_norm(t, groups, layer.weight, layer.bias)
        if cell.norm == "BN":
            return _batch_norm(t, layer.weight, layer.bias)
        return t

    def one_by_one(t, conv):
        out = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], t)
        return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)

    def k_by_k(t, conv):
        out = _conv(t, conv.weight)
        return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)

    if cell.gala:  # the authors' GALA: channel gate x spatial gate, plus b1
        g = cell.att_gala
        channel = one_by_one(_sp(one_by_one(h, g.channel_0)), g.channel_1)
        spatial = k_by_k(_sp(k_by_k(h, g.spatial_0)), g.spatial_1)
        g1 = torch.sigmoid(channel * spatial + cell.att_bias)
    else:
        g1 = torch.sigmoid(one_by_one(h, cell.attention))
    c1 = norm(_conv(h * g1, cell.w_inh.weight, cell.dilation), cell.norm_inh)
    if cell.variant == "less_softplus":
        i = _sp(x - c1 * (cell.alpha * h + cell.mu))
        g2 = torch.sigmoid(one_by_one(i, cell.gate))
        h_tilde = _sp(norm(_conv(i, cell.w_exc.weight, cell.dilation), cell.norm_exc))
        return (1 - g2) * h + g2 * h_tilde
    inhibition = _sp(c1 * (cell.alpha * h + cell.mu))
    if cell.variant == "pathfinder":
        i = _sp(x - inhibition)
    else:
        i = _sp(_sp(x) - inhibition)
    g2 = torch.sigmoid(one_by_one(i, cell.gate))
    e = norm(_conv(i, cell.w_exc.weight, cell.dilation), cell.norm_exc)
    if cell.variant == "pathfinder":
        h_tilde = _sp(cell.kappa * i + cell.gamma * e + cell.omega * i * e)
    else:
        e = _sp(e)
        h_tilde = _sp(cell.kappa * (i + e) + cell.omega * (i * e))
    return _sp((1 - g2) * h + g2 * h_tilde)


VARIANTS = ["less_softplus", "kappa_omega", "pathfinder"]


@pytest.mark.parametrize("gala", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("norm", ["GN", "BN", "none"])
def test_step_matches_the_equations(variant, norm, gala):
    torch.manual_seed(0)
    cell = HGRUCell(8, kernel_size=3, norm=norm, num_groups=4, variant=variant, gala=gala)
    cell = cell.double()
    with torch.no_grad():  # a generic cell: every parameter away from its init
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, h = torch.randn(2, 8, 6, 7, dtype=f64), torch.rand(2, 8, 6, 7, dtype=f64)
    torch.testing.assert_close(cell(x, h), reference_step(cell, x, h, groups=4))


@pytest.mark.parametrize("variant", VARIANTS)
def test_dilated_step_matches_the_equations(variant):
    torch.manual_seed(0)
    cell = HGRUCell(8, kernel_size=3, dilation=2, num_groups=4, variant=variant, gala=True)
    cell = cell.double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, h = torch.randn(2, 8, 9, 10, dtype=f64), torch.rand(2, 8, 9, 10, dtype=f64)
    torch.testing.assert_close(cell(x, h), reference_step(cell, x, h, groups=4))


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_dilation_widens_one_steps_reach_with_the_same_parameters(dilation):
    # Without a normalisation's global statistics, h' at p sees the drive x at p (the gate)
    # and, through W_exc, at the k x k taps dilation apart: exactly those positions.
    torch.manual_seed(0)
    cell = HGRUCell(4, dilation=dilation, norm="none", variant="less_softplus").double()
    x, h = torch.randn(1, 4, 15, 15, dtype=f64), torch.rand(1, 4, 15, 15, dtype=f64)
    grad = torch.autograd.functional.jacobian(lambda x_: cell(x_, h)[0, :, 7, 7].sum(), x)
    reached = grad[0].abs().sum(0) > 0
    expected = torch.zeros(15, 15, dtype=torch.bool)
    expected[7 - dilation : 8 + dilation : dilation, 7 - dilation : 8 + dilation : dilation] = True
    assert torch.equal(reached, expected)
    same = HGRUCell(4, norm="none", variant="less_softplus")
    assert [p.shape for p in cell.parameters()] == [p.shape for p in same.parameters()]


def test_initialisation_took_effect():
    torch.manual_seed(0)
    cell = HGRUCell(16, num_groups=4, gate_bias_range=(1.0, 19.0))
    b1, b2 = cell.attention.bias.detach(), cell.gate.bias.detach()
    # chronos: b1 = log U(1, 19) (not PyTorch's default), b2 = -b1
    assert torch.all(b1 >= 0) and torch.all(b1 <= math.log(19.0)) and b1.std() > 0.2
    torch.testing.assert_close(b2, -b1)
    # the update gate starts mostly closed: sigmoid(b2) in [1/20, 1/2]
    assert torch.all(torch.sigmoid(b2) <= 0.5) and torch.all(torch.sigmoid(b2) >= 1 / 20 - 1e-6)
    for name, value in (("alpha", 0.1), ("mu", 1.0), ("kappa", 0.5), ("omega", 0.5)):
        assert torch.all(getattr(cell, name) == value), name
    assert not hasattr(cell, "gamma")  # the kappa/omega cell has no gamma
    for layer in (cell.norm_inh, cell.norm_exc):
        assert torch.all(layer.weight == 0.1) and torch.all(layer.bias == 0)
    for conv in (cell.attention, cell.gate):
        assert conv.weight.std() < 0.1 / math.sqrt(16) * 1.5
    for conv in (cell.w_inh, cell.w_exc):  # orthogonal rows scaled by gain / k
        flat = conv.weight.detach().reshape(16, -1)
        scale = HGRUCell.KERNEL_GAIN / 3
        torch.testing.assert_close(flat @ flat.T, scale**2 * torch.eye(16), atol=1e-6, rtol=0)
    # reset_parameters restores it after training moved the values
    with torch.no_grad():
        cell.gate.bias.add_(1.0)
        cell.alpha.mul_(3)
    cell.reset_parameters()
    torch.testing.assert_close(cell.gate.bias, -cell.attention.bias)
    assert torch.all(cell.alpha == 0.1)


def test_pathfinder_variant_and_norm_options():
    cell = HGRUCell(8, norm="BN", variant="pathfinder", norm_gain=1.0, gate_bias_range=(2.0, 2.0))
    assert torch.all(cell.gamma == 1.0)
    assert isinstance(cell.norm_inh, torch.nn.BatchNorm2d) and not cell.norm_inh.track_running_stats
    assert torch.all(cell.norm_exc.weight == 1.0)
    torch.testing.assert_close(cell.attention.bias, torch.full((8,), math.log(2.0)))


def test_authors_coco_cell_parameters():
    """less_softplus has alpha and mu only (no kappa, omega, gamma); the authors' GALA at
    C = 256, k = 3 has 329,280 parameters with b1; their whole cell 1,576,256."""
    cell = HGRUCell(256, variant="less_softplus", gala=True)
    names = {n for n, _ in cell.named_parameters()}
    assert {"alpha", "mu", "att_bias"} <= names
    assert not names & {"kappa", "omega", "gamma", "attention.weight", "attention.bias"}
    g = cell.att_gala
    assert g.channel_0.weight.shape == (64, 256, 1, 1) and g.channel_0.bias is not None
    assert g.channel_1.weight.shape == (256, 64, 1, 1) and g.channel_1.bias is None
    assert g.spatial_0.weight.shape == (128, 256, 3, 3) and g.spatial_0.bias is not None
    assert g.spatial_1.weight.shape == (1, 128, 3, 3) and g.spatial_1.bias is None
    gala = sum(p.numel() for p in g.parameters()) + cell.att_bias.numel()
    # 256*64 + 64, 64*256, 256*128*9 + 128, 128*9, and b1 (256)
    assert gala == 16_448 + 16_384 + 295_040 + 1_152 + 256 == 329_280
    # + W_inh, W_exc (2 * 256*256*9), two GroupNorms (4 * 256), alpha, mu, U2 and b2
    assert sum(p.numel() for p in cell.parameters()) == 329_280 + 1_179_648 + 1_024 + 512 + 65_792
    x = torch.randn(2, 256, 6, 6)
    assert g(x).shape == (2, 256, 6, 6)  # (B, C, 1, 1)-free: every position its own gate
    assert cell.attend(x).shape == (2, 256, 6, 6)


def test_raw_gate_bias_init_is_the_authors():
    """gate_bias_init="raw": b1 ~ U(lo, hi) untransformed (the authors' trained models),
    b2 = -b1, so the update gate starts nearly closed: sigmoid(-b1) <= sigmoid(-1)."""
    torch.manual_seed(0)
    for gala in (False, True):
        cell = HGRUCell(64, num_groups=4, gala=gala, gate_bias_init="raw", gate_bias_range=(1, 19))
        b1 = (cell.att_bias if gala else cell.attention.bias).detach().flatten()
        assert b1.min() >= 1.0 and b1.max() <= 19.0 and b1.mean() > 5.0  # not log U(1, 19)
        torch.testing.assert_close(cell.gate.bias.detach(), -b1)
        assert torch.sigmoid(cell.gate.bias).max() <= torch.sigmoid(torch.tensor(-1.0))
    chronos = HGRUCell(64, num_groups=4, gate_bias_range=(1, 19)).attention.bias
    assert chronos.max() <= math.log(19.0)


def test_chronos_bias_is_log_uniform():
    torch.manual_seed(0)
    b = chronos_bias(20000, 1.0, 9.0)
    assert b.min() >= 0 and b.max() <= math.log(9.0)
    assert abs(b.exp().mean().item() - 5.0) < 0.05  # exp(b) ~ U(1, 9)


@pytest.mark.parametrize("norm", ["GN", "none"])
def test_dynamics_start_near_the_lcp_threshold(norm):
    """The chronos init puts the column sums of a fresh cell's Jacobian close to, mostly
    below, tau = 0.9: a long-memory, contractive start."""
    torch.manual_seed(0)
    cell = HGRUCell(16, norm=norm, num_groups=4, gate_bias_range=(1.0, 19.0))
    x = torch.randn(2, 16, 10, 10)
    with torch.no_grad():
        res = equilibrium(lambda h: cell(x, h), torch.zeros_like(x), mode="rbp", steps=200)
    assert res.residual < 1e-5
    h = res.state.clone().requires_grad_()
    out = cell(x, h)
    u = column_sums(out, h)
    assert 0.6 < u.median() < 0.9 and u.mean() < 0.9
    v = torch.randn_like(h)
    for _ in range(50):  # power iteration on J^T: contractive
        w = torch.autograd.grad(out, h, v, retain_graph=True)[0]
        rate, v = (w.norm() / v.norm()).item(), w / w.norm()
    assert 0.5 < rate < 1.0


def test_state_carries_the_drive():
    """The kappa path passes the drive's structure into the state: a bright square in the
    drive is a bright square in the equilibrium."""
    torch.manual_seed(0)
    cell = HGRUCell(8, norm="GN", num_groups=4, gate_bias_range=(1.0, 9.0))
    x = torch.zeros(1, 8, 16, 16)
    x[..., 4:8, 4:8] = 3.0
    with torch.no_grad():
        res = equilibrium(lambda h: cell(x, h), torch.zeros_like(x), mode="rbp", steps=100)
    inside, outside = res.state[..., 4:8, 4:8].mean(), res.state[..., 12:, 12:].mean()
    assert inside > outside + 0.5


def test_cell_diagnostics_match_a_dense_jacobian():
    torch.manual_seed(0)
    cell = HGRUCell(4, norm="none", gate_bias_range=(1.0, 5.0)).double()
    x, h = torch.randn(1, 4, 3, 3, dtype=f64), torch.rand(1, 4, 3, 3, dtype=f64)
    stats = cell_diagnostics(cell, x, h, tau=0.8)
    jac = torch.autograd.functional.jacobian(lambda s: cell(x, s), h).reshape(36, 36)
    u = jac.sum(0)  # column sums
    assert stats["colsum_mean"] == pytest.approx(u.mean().item(), rel=1e-6)
    assert stats["colsum_max"] == pytest.approx(u.max().item(), rel=1e-6)
    assert stats["colsum_p50"] == pytest.approx(u.float().quantile(0.5).item(), rel=1e-5)
    assert stats["frac_above_tau"] == pytest.approx((u > 0.8).double().mean().item())
    contrast = h.flatten(2).std(dim=2, unbiased=False).mean()
    assert stats["contrast"] == pytest.approx(contrast.item(), rel=1e-6)
    assert stats["contrast_rel"] == pytest.approx((contrast / h.abs().mean()).item(), rel=1e-6)
    assert cell_diagnostics(cell, x[:0], h[:0])["colsum_mean"] == 0.0


@pytest.mark.parametrize("gain", [0.5, 3.0])
def test_adjoint_growth_is_the_spectral_radius_of_a_dense_jacobian(gain):
    """The Neumann terms grow by the Jacobian's spectral radius per term. The step is a
    dense map with radius ``gain`` up to the tanh's slopes: gain 3 is expansive (a series
    that diverges), gain 0.5 contractive."""
    torch.manual_seed(0)
    weight = torch.randn(36, 36, dtype=f64)
    weight *= gain / torch.linalg.eigvals(weight).abs().max()

    def step(x, h):
        return torch.tanh((weight @ h.flatten()).view_as(h) + x)

    x, h = torch.randn(1, 4, 3, 3, dtype=f64), torch.rand(1, 4, 3, 3, dtype=f64)
    jac = torch.autograd.functional.jacobian(lambda s: step(x, s), h).reshape(36, 36)
    radius = torch.linalg.eigvals(jac).abs().max().item()
    growth = cell_diagnostics(step, x, h, power_iters=400)["adjoint_growth"]
    assert growth == pytest.approx(radius, rel=0.02)
    assert (radius > 1.0) == (gain > 1.0)
    assert "adjoint_growth" not in cell_diagnostics(step, x, h)
    assert cell_diagnostics(step, x[:0], h[:0], power_iters=5)["adjoint_growth"] == 0.0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("gala", [False, True])
@pytest.mark.parametrize("norm", ["GN", "BN", "none"])
def test_shapes(gala, norm, variant):
    cell = HGRUCell(16, kernel_size=5, norm=norm, num_groups=4, gala=gala, variant=variant)
    x, h = torch.randn(3, 16, 7, 9), torch.rand(3, 16, 7, 9)
    out = cell(x, h)
    assert out.shape == (3, 16, 7, 9) and torch.isfinite(out).all() and torch.all(out > 0)


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
    with pytest.raises(ValueError, match=r"norm='LN'; choose from \['BN', 'GN', 'none'\]"):
        HGRUCell(8, norm="LN")
    with pytest.raises(ValueError, match="num_groups=3; must divide the channel count 8"):
        HGRUCell(8, num_groups=3)
    with pytest.raises(ValueError, match="num_groups=32; must divide the channel count 8"):
        HGRUCell(8)
    with pytest.raises(ValueError, match="kernel_size=4"):
        HGRUCell(8, kernel_size=4, num_groups=4)
    with pytest.raises(ValueError, match="channels=0"):
        HGRUCell(0)
    with pytest.raises(ValueError, match="dilation=0; expected an integer >= 1"):
        HGRUCell(8, dilation=0, num_groups=4)
    allowed = r"\['kappa_omega', 'less_softplus', 'pathfinder'\]"
    with pytest.raises(ValueError, match=rf"variant='hgru'; choose from {allowed}"):
        HGRUCell(8, num_groups=4, variant="hgru")
    with pytest.raises(ValueError, match=r"gate_bias_init='log'; choose from \['chronos', 'raw'\]"):
        HGRUCell(8, num_groups=4, gate_bias_init="log")
    with pytest.raises(ValueError, match="norm_gain=0"):
        HGRUCell(8, num_groups=4, norm_gain=0)
    with pytest.raises(ValueError, match=r"gate_bias_range=\(5.0, 2.0\); expected \[lo, hi\]"):
        HGRUCell(8, num_groups=4, gate_bias_range=(5.0, 2.0))
    HGRUCell(8, norm="none", num_groups=3)  # groups are irrelevant without GN
    cell = HGRUCell(8, num_groups=4)
    with pytest.raises(ValueError, match="x.shape"):
        cell(torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 4, 5))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant):
    torch.manual_seed(1)  # (GALA's 1x1 bottlenecks are small: some seeds start with dead ReLUs)
    for gala in (False, True):
        cell = HGRUCell(16, num_groups=4, gala=gala, variant=variant)
        x = torch.randn(2, 16, 5, 5)
        h = torch.rand(2, 16, 5, 5)
        cell(x, cell(x, h)).square().sum().backward()
        for name, p in cell.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
