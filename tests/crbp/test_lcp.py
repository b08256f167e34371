"""Lipschitz-coefficient penalty against explicitly built Jacobians, and its subsample;
the spectral penalty against dense Jacobians' eigenvalues and an explicit gradient."""

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from crbp_panoptic.crbp import (
    BatchSubsample,
    HGRUCell,
    SpatialCrop,
    batch_subsample,
    cell_diagnostics,
    equilibrium,
    lipschitz_penalty,
    spatial_crop,
    spectral_penalty,
    step_penalty,
)
from crbp_panoptic.crbp.lcp import column_sums, crop, penalty_from_sums, row_directions

f64 = torch.float64


def tanh_step(W, U, x):
    return lambda h: torch.tanh(h @ W.T + x @ U.T)


def conv_step(w, x):
    return lambda h: torch.tanh(F.conv2d(h, w, padding=1) + x)


def dense_penalty(f, h, tau):
    """1^T J as column sums of the dense Jacobian, penalty by plain torch ops."""
    n = h.numel()
    J = jacobian(f, h, create_graph=True).reshape(n, n)  # J[i, j] = d f_i / d h_j
    u = J.sum(0)
    return torch.clamp(u - tau, min=0).square().mean(), u.reshape(h.shape)


@pytest.fixture
def tanh_case():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 5, generator=g, dtype=f64) * 0.6
    U = torch.randn(5, 3, generator=g, dtype=f64)
    x = torch.randn(2, 3, generator=g, dtype=f64)
    h = torch.randn(2, 5, generator=g, dtype=f64)
    return W, U, x, h


def median_tau(u):
    u = u.detach().flatten()
    tau = float(u[u > 0].median())  # tau must be > 0
    assert (u > tau).any() and (u < tau).any()  # both branches of relu are exercised
    return tau


def test_penalty_value_and_gradient_match_dense_jacobian(tanh_case):
    W, U, x, h = tanh_case
    _, u_ref = dense_penalty(tanh_step(W, U, x), h, 0.0)
    tau = median_tau(u_ref)

    Wl, xl = W.clone().requires_grad_(), x.clone().requires_grad_()
    pen, h_next = lipschitz_penalty(tanh_step(Wl, U, xl), h, tau)
    torch.testing.assert_close(h_next, tanh_step(W, U, x)(h))
    gW, gx = torch.autograd.grad(pen, [Wl, xl])

    Wr, xr = W.clone().requires_grad_(), x.clone().requires_grad_()
    ref, _ = dense_penalty(tanh_step(Wr, U, xr), h, tau)
    rW, rx = torch.autograd.grad(ref, [Wr, xr])
    torch.testing.assert_close(pen, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gW, rW, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx, rx, rtol=1e-10, atol=1e-12)
    assert gx.abs().sum() > 0  # the penalty's gradient reaches captured inputs

    # finite differences on a few entries of W (independent of autograd altogether)
    eps = 1e-6
    for i, j in [(0, 0), (1, 3), (4, 2)]:
        Wp, Wm = W.clone(), W.clone()
        Wp[i, j] += eps
        Wm[i, j] -= eps
        fd = (
            dense_penalty(tanh_step(Wp, U, x), h, tau)[0]
            - dense_penalty(tanh_step(Wm, U, x), h, tau)[0]
        ) / (2 * eps)
        assert abs(fd.item() - gW[i, j].item()) < 1e-7


def test_conv_penalty_matches_dense_jacobian():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=f64) * 0.3
    x = torch.randn(2, 2, 4, 4, generator=g, dtype=f64)
    h = torch.randn(2, 2, 4, 4, generator=g, dtype=f64)
    _, u_ref = dense_penalty(conv_step(w, x), h, 0.0)
    tau = median_tau(u_ref)
    wl = w.clone().requires_grad_()
    hl = h.clone().requires_grad_()
    pen = step_penalty(conv_step(wl, x)(hl), hl, tau)
    (gw,) = torch.autograd.grad(pen, [wl])
    wr = w.clone().requires_grad_()
    ref, _ = dense_penalty(conv_step(wr, x), h, tau)
    (rw,) = torch.autograd.grad(ref, [wr])
    torch.testing.assert_close(pen, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gw, rw, rtol=1e-10, atol=1e-12)


def _iterate(f, h, n):
    for _ in range(n):
        h = f(h)
    return h


def test_equilibrium_lcp_crbp_and_cbptt(tanh_case):
    """crbp: penalty at h_{T-1} treated as a constant; cbptt: h_{T-1}(W) differentiated too."""
    W, U, x, _ = tanh_case
    T = 4
    h0 = torch.zeros(2, 5, dtype=f64)
    with torch.no_grad():
        h_prev = _iterate(tanh_step(W, U, x), h0, T - 1)
    _, u = dense_penalty(tanh_step(W, U, x), h_prev, 0.0)
    tau = median_tau(u)

    def engine_grad(mode):
        Wl = W.clone().requires_grad_()
        res = equilibrium(tanh_step(Wl, U, x), h0, mode=mode, steps=T, lcp_tau=tau)
        return res.lcp, torch.autograd.grad(res.lcp, [Wl])[0]

    # crbp reference: dense penalty at the constant h_{T-1}
    Wr = W.clone().requires_grad_()
    ref_c, _ = dense_penalty(tanh_step(Wr, U, x), h_prev, tau)
    (rW_c,) = torch.autograd.grad(ref_c, [Wr])
    # cbptt reference: h_{T-1} is a function of W as well
    Wr = W.clone().requires_grad_()
    ref_u, _ = dense_penalty(tanh_step(Wr, U, x), _iterate(tanh_step(Wr, U, x), h0, T - 1), tau)
    (rW_u,) = torch.autograd.grad(ref_u, [Wr])

    lcp, gW = engine_grad("crbp")
    torch.testing.assert_close(lcp, ref_c, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gW, rW_c, rtol=1e-10, atol=1e-12)
    lcp, gW = engine_grad("cbptt")
    torch.testing.assert_close(lcp, ref_u, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gW, rW_u, rtol=1e-10, atol=1e-12)
    assert (rW_u - rW_c).abs().max() > 1e-6  # the two modes really differ


def dense_summed_penalty(f, h, tau):
    """sum_j relu(u_j - tau)^2 with u the column sums of the dense Jacobian (the authors'
    COCO penalty), written without the engine."""
    n = h.numel()
    u = jacobian(f, h, create_graph=True).reshape(n, n).sum(0)
    return torch.clamp(u - tau, min=0).square().sum()


def test_summed_penalty_matches_dense_jacobian():
    """lcp_reduction="sum": the sum over every element of the state, value and gradient,
    against an explicit Jacobian of an hGRU step (the authors' COCO cell)."""
    torch.manual_seed(0)
    cell = HGRUCell(4, num_groups=2, variant="less_softplus", gala=True).double()
    x = torch.randn(2, 4, 3, 3, dtype=f64)
    h0 = torch.zeros_like(x)
    T = 3
    with torch.no_grad():
        h_prev = _iterate(lambda h: cell(x, h), h0, T - 1)
    n = h_prev.numel()
    u = jacobian(lambda h: cell(x, h), h_prev).reshape(n, n).sum(0)
    tau = median_tau(u)
    weight = cell.w_exc.weight
    res = equilibrium(
        lambda h: cell(x, h), h0, mode="crbp", steps=T, lcp_tau=tau, lcp_reduction="sum"
    )
    (grad,) = torch.autograd.grad(res.lcp, [weight])
    ref = dense_summed_penalty(lambda h: cell(x, h), h_prev, tau)
    (ref_grad,) = torch.autograd.grad(ref, [weight])
    torch.testing.assert_close(res.lcp, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    mean = equilibrium(lambda h: cell(x, h), h0, mode="crbp", steps=T, lcp_tau=tau)
    torch.testing.assert_close(res.lcp, mean.lcp * n, rtol=1e-12, atol=1e-14)
    assert ref > 0
    # a row subsample estimates the same sum: its rows' penalty scaled to the whole state
    sampler = batch_subsample(lambda i, hs: cell(x.index_select(0, i), hs), 1)
    sub = equilibrium(
        lambda h: cell(x, h),
        h0,
        mode="crbp",
        steps=T,
        lcp_tau=tau,
        lcp_reduction="sum",
        lcp_subsample=sampler,
    )
    row = sampler.last_index.item()
    rows_u = u.reshape(h_prev.shape)[row]
    expected = torch.clamp(rows_u - tau, min=0).square().sum() * 2  # 2 rows in the batch
    torch.testing.assert_close(sub.lcp, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"lcp_reduction='max'; choose from \['mean', 'sum'\]"):
        equilibrium(lambda h: cell(x, h), h0, mode="crbp", steps=T, lcp_reduction="max")


def test_penalty_of_empty_state_is_zero():
    W = torch.randn(4, 4, dtype=f64, requires_grad=True)
    pen, out = lipschitz_penalty(lambda h: torch.tanh(h @ W.T), torch.zeros(0, 4, dtype=f64), 0.9)
    assert out.shape == (0, 4) and pen.item() == 0.0
    pen.backward()
    assert torch.isfinite(W.grad).all()


def _separable_case():
    """Per-sample conv + GroupNorm step: the Jacobian is block diagonal over the batch."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 4, 3, 3, generator=g, dtype=f64) * 0.3
    x = torch.randn(6, 4, 5, 5, generator=g, dtype=f64)
    h = torch.randn(6, 4, 5, 5, generator=g, dtype=f64)

    def step_rows(w, index, hs):
        return torch.tanh(F.group_norm(F.conv2d(hs, w, padding=1), 2) + x.index_select(0, index))

    return w, x, h, step_rows


def test_batch_subsample_gives_exact_rows():
    w, x, h, step_rows = _separable_case()
    all_rows = torch.arange(6)
    hl = h.clone().requires_grad_()
    wl = w.clone().requires_grad_()
    u_full = column_sums(step_rows(wl, all_rows, hl), hl)
    tau = median_tau(u_full)

    wl2 = w.clone().requires_grad_()
    sampler = batch_subsample(
        lambda i, hs: step_rows(wl2, i, hs), 2, generator=torch.Generator().manual_seed(5)
    )
    f_sub, h_sub = sampler(h)
    idx = sampler.last_index
    assert idx.shape == (2,) and torch.equal(h_sub, h[idx])
    pen_sub, _ = lipschitz_penalty(f_sub, h_sub, tau)
    # exact per-row values: the full u restricted to the chosen rows
    ref = torch.clamp(u_full[idx] - tau, min=0).square().mean()
    torch.testing.assert_close(pen_sub, ref, rtol=1e-12, atol=1e-14)
    (g_sub,) = torch.autograd.grad(pen_sub, [wl2])
    (g_ref,) = torch.autograd.grad(ref, [wl])
    torch.testing.assert_close(g_sub, g_ref, rtol=1e-10, atol=1e-12)
    # the full mean is the average over a partition of rows into equal subsets
    full = torch.clamp(u_full - tau, min=0).square().mean()
    parts = [torch.clamp(u_full[r] - tau, min=0).square().mean() for r in torch.arange(6).split(2)]
    torch.testing.assert_close(full, sum(parts) / 3)


def test_equilibrium_with_subsample():
    w, x, h, step_rows = _separable_case()
    calls = []
    wl = w.clone().requires_grad_()

    def f(hs):
        calls.append(hs.shape[0])
        return step_rows(wl, torch.arange(6), hs)

    def f_rows(i, hs):
        calls.append(hs.shape[0])
        return step_rows(wl, i, hs)

    sampler = BatchSubsample(f_rows, 0.5, generator=torch.Generator().manual_seed(0))
    res = equilibrium(
        f, torch.zeros_like(x), mode="crbp", steps=3, lcp_tau=0.05, lcp_subsample=sampler
    )
    assert calls == [6, 6, 6, 3] and res.steps == 3
    # reference: the exact penalty at h_{T-1}, restricted to the chosen rows
    with torch.no_grad():
        h_prev = f(f(torch.zeros_like(x)))
    hp = h_prev.clone().requires_grad_()
    u = column_sums(step_rows(w, torch.arange(6), hp), hp)
    ref = torch.clamp(u[sampler.last_index] - 0.05, min=0).square().mean()
    assert ref > 0
    torch.testing.assert_close(res.lcp, ref, rtol=1e-12, atol=1e-14)
    res.lcp.backward()
    assert wl.grad.abs().sum() > 0


def test_subsample_sizes_and_errors():
    h = torch.zeros(8, 3)
    step = lambda i, hs: hs  # noqa: E731
    assert batch_subsample(step, 0.25)(h)[1].shape[0] == 2
    assert batch_subsample(step, 0.1)(h)[1].shape[0] == 1  # rounded up: never zero rows
    assert batch_subsample(step, 20)(h)[1].shape[0] == 8  # clipped to the batch
    assert batch_subsample(step, 0.5)(torch.zeros(0, 3))[1].shape[0] == 0
    for bad in (0.0, 1.5, 0, -2, True, "half"):
        with pytest.raises(ValueError, match="lcp_subsample"):
            batch_subsample(step, bad)


def test_hgru_is_separable_so_subsample_is_exact():
    torch.manual_seed(0)
    cell = HGRUCell(8, num_groups=4, gala=True).double()
    x = torch.randn(4, 8, 5, 5, dtype=f64)
    h = torch.rand(4, 8, 5, 5, dtype=f64)
    hl = h.clone().requires_grad_()
    u = column_sums(cell(x, hl), hl)
    tau = median_tau(u)
    sampler = batch_subsample(lambda i, hs: cell(x.index_select(0, i), hs), 2)
    pen, _ = lipschitz_penalty(*sampler(h), tau)
    ref = torch.clamp(u[sampler.last_index] - tau, min=0).square().mean()
    torch.testing.assert_close(pen, ref, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- spatial crop


def side_distance(box, hw):
    """Per crop position: distance to the nearest crop side that is not a map side."""
    top, left, hc, wc = box
    rows, cols = torch.arange(hc)[:, None].expand(hc, wc), torch.arange(wc)[None, :].expand(hc, wc)
    d = torch.full((hc, wc), 10**6)
    sides = (
        (top > 0, rows),
        (top + hc < hw[0], hc - 1 - rows),
        (left > 0, cols),
        (left + wc < hw[1], wc - 1 - cols),
    )
    for inner, dist in sides:
        if inner:
            d = torch.minimum(d, dist)
    return d


def hgru_state(norm, seed=0, **cell_kwargs):
    """A small hGRU (8 ch, 24 x 24) and a state h_{T-1} after 5 steps from 0."""
    torch.manual_seed(seed)
    cell = HGRUCell(8, num_groups=4, norm=norm, **cell_kwargs).double()
    x = torch.randn(2, 8, 24, 24, dtype=f64)
    h = torch.zeros_like(x)
    with torch.no_grad():
        for _ in range(5):
            h = cell(x, h)
    return cell, x, h


def crop_and_exact_sums(cell, x, h, box_seed, size=16):
    hl = h.clone().requires_grad_()
    u_full = column_sums(cell(x, hl), hl).detach()
    gen = torch.Generator().manual_seed(box_seed)
    sampler = spatial_crop(lambda box, hs: cell(crop(x, box), hs), size, generator=gen)
    f_sub, h_sub = sampler(hl)
    u_crop = column_sums(f_sub(h_sub), h_sub).detach()
    return sampler.last_box, u_crop, crop(u_full, sampler.last_box)


@pytest.mark.parametrize("gala", [False, True])
def test_spatial_crop_sums_exact_beyond_margin_without_norm(gala):
    """norm='none': the crop's column sums are the exact ones 2R positions from inner sides
    (R = 2 for k = 3; with the authors' GALA, two more 3x3 convolutions: R = 4)."""
    cell, x, h = hgru_state("none", gala=gala, variant="less_softplus" if gala else "kappa_omega")
    margin = SpatialCrop.margin(cell.kernel_size, convs=4 if gala else 2)
    assert margin == (8 if gala else 4)
    boxes = set()
    for seed in range(4):
        box, u_crop, u_exact = crop_and_exact_sums(cell, x, h, seed, size=20 if gala else 16)
        boxes.add(box)
        d = side_distance(box, (24, 24))
        inside, band = d >= margin, d == margin - 1
        assert inside.sum() >= (16 if gala else 64)
        torch.testing.assert_close(
            u_crop[..., inside], u_exact[..., inside], rtol=1e-12, atol=1e-14
        )
        # the margin is tight: one position nearer the inner sides it no longer holds
        # (through GALA's saturated gate the far reach is weak, but present)
        assert (u_crop[..., band] - u_exact[..., band]).abs().max() > (1e-11 if gala else 1e-9)
    assert any(b[0] == 0 or b[1] == 0 or b[0] + b[2] == 24 or b[1] + b[3] == 24 for b in boxes)


def test_spatial_crop_sums_of_a_dilated_cell_exact_beyond_the_margin_of_its_span():
    """A dilated cell (d = 2, k = 3): the margin of the taps' span d (k - 1) + 1 = 5 (R = 4)."""
    cell, x, h = hgru_state("none", dilation=2)
    margin = SpatialCrop.margin(cell.dilation * (cell.kernel_size - 1) + 1)
    assert margin == 8
    for seed in range(4):
        box, u_crop, u_exact = crop_and_exact_sums(cell, x, h, seed, size=20)
        inside = side_distance(box, (24, 24)) >= margin
        assert inside.sum() >= 16
        torch.testing.assert_close(
            u_crop[..., inside], u_exact[..., inside], rtol=1e-12, atol=1e-14
        )
        # the undilated margin (4) is not enough: the crop differs inside it
        near = (side_distance(box, (24, 24)) >= 4) & ~inside
        assert (u_crop[..., near] - u_exact[..., near]).abs().max() > 1e-9


def test_spatial_crop_sums_with_groupnorm_are_approximate():
    """norm='GN': crop statistics replace the map's, so no position is exact, but interior
    ones are close."""
    cell, x, h = hgru_state("GN")
    margin = SpatialCrop.margin(cell.kernel_size)
    worst = 0.0
    for seed in range(4):
        box, u_crop, u_exact = crop_and_exact_sums(cell, x, h, seed)
        inside = side_distance(box, (24, 24)) >= margin
        rel = ((u_crop - u_exact).abs() / u_exact.abs())[..., inside]
        assert rel.max() > 1e-9  # not exact
        worst = max(worst, float(rel.max()))
    assert worst < 2e-2, worst  # observed 3.4e-3 (see the lcp module docstring)


def test_spatial_crop_penalty_and_gradients():
    cell, x, h = hgru_state("GN")
    xl = x.clone().requires_grad_()
    sampler = SpatialCrop(
        lambda box, hs: cell(crop(xl, box), hs), 10, generator=torch.Generator().manual_seed(3)
    )
    hl = h.clone().requires_grad_()
    f_sub, h_sub = sampler(hl)
    box = sampler.last_box
    assert box[2:] == (10, 10) and 0 <= box[0] <= 14 and 0 <= box[1] <= 14
    assert torch.equal(h_sub, h[..., box[0] : box[0] + 10, box[1] : box[1] + 10])
    u = column_sums(f_sub(h_sub), h_sub)
    tau = median_tau(u)
    pen, h_next = lipschitz_penalty(f_sub, h_sub, tau)
    assert h_next.shape == (2, 8, 10, 10)
    # the penalty is mean(relu(u - tau)^2) of the window's column sums
    hc = crop(h, box).clone().requires_grad_()
    ref = penalty_from_sums(column_sums(cell(crop(x, box), hc), hc), tau)
    torch.testing.assert_close(pen, ref, rtol=1e-12, atol=1e-14)
    g_exc, g_inh, g_gate, gx, gh = torch.autograd.grad(
        pen, [cell.w_exc.weight, cell.w_inh.weight, cell.gate.weight, xl, hl]
    )
    assert g_exc.abs().sum() > 0 and g_inh.abs().sum() > 0 and g_gate.abs().sum() > 0
    assert gx.abs().sum() > 0 and gh.abs().sum() > 0
    # only the window's drive and state receive gradient
    outside = torch.ones(24, 24, dtype=torch.bool)
    outside[box[0] : box[0] + 10, box[1] : box[1] + 10] = False
    assert gx[..., outside].abs().max() == 0 and gh[..., outside].abs().max() == 0


def test_spatial_crop_sizes_and_errors():
    step = lambda box, hs: hs  # noqa: E731
    assert spatial_crop(step, 4)(torch.zeros(1, 2, 6, 9))[1].shape == (1, 2, 4, 4)
    assert spatial_crop(step, 7)(torch.zeros(1, 2, 6, 9))[1].shape == (1, 2, 6, 7)  # clipped to H
    sampler = spatial_crop(step, 50)
    assert sampler(torch.zeros(0, 2, 6, 9))[1].shape == (0, 2, 6, 9) and sampler.last_box == (
        0,
        0,
        6,
        9,
    )
    seen = set()
    gen = torch.Generator().manual_seed(0)
    sampler = spatial_crop(step, 2, gen)
    for _ in range(40):
        sampler(torch.zeros(1, 1, 3, 4))
        seen.add(sampler.last_box[:2])
    assert seen == {(t, c) for t in range(2) for c in range(3)}  # every corner that fits
    for bad in (0, -1, 2.0, True, None, "16"):
        with pytest.raises(ValueError, match="lcp_crop"):
            SpatialCrop(step, bad)
    with pytest.raises(ValueError, match="h_prev.shape"):
        spatial_crop(step, 2)(torch.zeros(5))


def test_equilibrium_with_spatial_crop():
    cell, x, _ = hgru_state("none")
    calls = []

    def f(hs):
        calls.append(tuple(hs.shape[-2:]))
        return cell(x, hs)

    def f_crop(box, hs):
        calls.append(tuple(hs.shape[-2:]))
        return cell(crop(x, box), hs)

    sampler = SpatialCrop(f_crop, 12, generator=torch.Generator().manual_seed(1))
    res = equilibrium(
        f, torch.zeros_like(x), mode="crbp", steps=3, lcp_tau=0.05, lcp_subsample=sampler
    )
    assert calls == [(24, 24)] * 3 + [(12, 12)] and res.steps == 3
    with torch.no_grad():
        h_prev = cell(x, cell(x, torch.zeros_like(x)))
    hc = crop(h_prev, sampler.last_box).clone().requires_grad_()
    ref = penalty_from_sums(column_sums(cell(crop(x, sampler.last_box), hc), hc), 0.05)
    assert ref > 0
    torch.testing.assert_close(res.lcp, ref, rtol=1e-12, atol=1e-14)
    res.lcp.backward()
    assert cell.w_exc.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- spectral kind


def dense_map(gain, symmetric=False, n=36):
    """A tanh map on (1, 4, 3, 3) states whose weight has spectral radius ``gain``."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(n, n, generator=g, dtype=f64)
    if symmetric:
        weight = weight + weight.T
    weight *= gain / torch.linalg.eigvals(weight).abs().max()
    weight.requires_grad_()

    def step(x, h):
        return torch.tanh((weight @ h.flatten()).view_as(h) + x)

    x = torch.randn(1, 4, 3, 3, generator=g, dtype=f64)
    h = torch.rand(1, 4, 3, 3, generator=g, dtype=f64)
    return step, weight, x, h


def spectral_radius(step, x, h):
    jac = jacobian(lambda s: step(x, s), h).reshape(h.numel(), h.numel())
    return torch.linalg.eigvals(jac).abs().max().item()


def test_spectral_growth_after_the_forward_iteration_is_the_spectral_radius():
    """The forward iteration is a power iteration on J: after enough steps the growth along
    its last difference is the dense Jacobian's spectral radius at that state (J has real
    eigenvalues here: diag(tanh') W with W symmetric), and it agrees with
    ``cell_diagnostics``' ``adjoint_growth`` (power iteration on J^T). After one step, from
    an unaligned direction, it is not."""
    step, weight, x, h0 = dense_map(0.9, symmetric=True)
    f = lambda s: step(x, s)  # noqa: E731
    # 50 steps: aligned ((0.53 / 0.62)^50 ~ 4e-4) while the difference is still far above
    # round-off (residual ~1e-11; at 120 steps it is round-off and the estimate is noise)
    res = equilibrium(f, h0, mode="crbp", steps=50, lcp_kind="spectral")
    state = h0.detach()
    for _ in range(49):  # h_{T-1}, where the penalised step starts
        state = f(state).detach()
    radius = spectral_radius(step, x, state)
    assert 0.5 < radius < 1
    assert res.lcp_growth == pytest.approx(radius, rel=1e-3)
    diag = cell_diagnostics(step, x, state, power_iters=400)["adjoint_growth"]
    assert res.lcp_growth == pytest.approx(diag, rel=1e-3)
    first = equilibrium(f, h0, mode="crbp", steps=1, lcp_kind="spectral").lcp_growth
    assert abs(first - spectral_radius(step, x, h0)) > 0.05


def dense_spectral_penalty(f, h, difference, tau):
    """relu(max_b ||J_b v_b|| - tau)^2 from the dense Jacobian of each row (the step is
    separable over rows), differentiable in f's params; also the row growths."""
    growths = []
    for b in range(h.shape[0]):
        row = lambda s, b=b: f(torch.cat([h[:b], s[None], h[b + 1 :]]))[b]  # noqa: E731
        n = h[b].numel()
        J = jacobian(row, h[b], create_graph=True).reshape(n, n)
        d = difference[b].flatten()
        growths.append((J @ (d / d.norm())).norm())
    growths = torch.stack(growths)
    return torch.clamp(growths.max() - tau, min=0).square(), growths


@pytest.mark.parametrize("mode", ["crbp", "cbptt"])
def test_spectral_penalty_value_and_gradient_match_dense_jacobian(tanh_case, mode):
    W, U, x, h = tanh_case
    params = [t.clone().requires_grad_() for t in (W, U, x)]
    f = tanh_step(*params)
    difference = (f(h) - h).detach()  # steps=1: the penalised step starts from h
    _, growths = dense_spectral_penalty(f, h, difference, 0.0)
    tau = growths.detach().mean().item()  # between the rows: one penalised, one not
    assert growths.min() < tau < growths.max()
    ref, growths = dense_spectral_penalty(f, h, difference, tau)
    grads_ref = torch.autograd.grad(ref, params)

    res = equilibrium(f, h, mode=mode, steps=1, lcp_tau=tau, lcp_kind="spectral")
    assert res.lcp.item() == pytest.approx(ref.item(), rel=1e-10) and ref.item() > 0
    assert res.lcp_growth == pytest.approx(growths.max().item(), rel=1e-10)
    for g, g_ref in zip(torch.autograd.grad(res.lcp, params), grads_ref):
        torch.testing.assert_close(g, g_ref)
        assert g.abs().max() > 0
    # spectral_penalty itself, with a difference that has a history (it is ignored)
    penalty, growth = spectral_penalty(f, h, f(h) - h, tau)
    assert growth == pytest.approx(growths.max().item(), rel=1e-10)
    torch.testing.assert_close(torch.autograd.grad(penalty, params[0])[0], grads_ref[0])


def test_spectral_penalty_is_zero_below_tau_and_for_empty_zero_or_constant_steps(tanh_case):
    W, U, x, h = tanh_case
    W = W.clone().requires_grad_()
    f = tanh_step(W, U, x)
    penalty, growth = spectral_penalty(f, h, f(h) - h, 1.0)
    assert 0 < growth < 1.0 and penalty.item() == 0.0  # ||W|| < 1 and tanh' <= 1
    (g,) = torch.autograd.grad(penalty, W, allow_unused=True)
    assert g is None or (torch.isfinite(g).all() and g.abs().max() == 0)
    penalty, growth = spectral_penalty(tanh_step(W, U, x[:0]), h[:0], h[:0], 0.1)
    assert penalty.item() == 0.0 and growth == 0.0
    # a zero difference (an exact fixed point) gives no direction: growth 0
    penalty, growth = spectral_penalty(f, h, torch.zeros_like(h), 0.1)
    assert penalty.item() == 0.0 and growth == 0.0
    # a step that ignores its state: J = 0
    penalty, growth = spectral_penalty(lambda s: W.sum() + 0 * s.detach(), h, h, 0.1)
    assert penalty.item() == 0.0 and growth == 0.0


def test_row_directions_are_unit_rows_and_keep_zero_rows():
    d = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    torch.testing.assert_close(row_directions(d), torch.tensor([[0.6, 0.8], [0, 0], [0, -1.0]]))
    assert row_directions(d.half()).dtype == torch.float16


def test_spectral_penalty_on_a_row_subsample_uses_only_those_rows():
    torch.manual_seed(0)
    cell = HGRUCell(4, norm="none", gate_bias_range=(1.0, 3.0)).double()
    x = torch.randn(5, 4, 4, 4, dtype=f64)
    h0 = torch.rand(5, 4, 4, 4, dtype=f64)
    sampler = batch_subsample(lambda idx, h: cell(x.index_select(0, idx), h), 2)
    res = equilibrium(
        lambda h: cell(x, h), h0, mode="crbp", steps=1, lcp_kind="spectral", lcp_subsample=sampler
    )
    rows = sampler.last_index
    f_rows = lambda s: cell(x[rows], s)  # noqa: E731
    _, growths = dense_spectral_penalty(f_rows, h0[rows], (f_rows(h0[rows]) - h0[rows]).detach(), 0)
    assert res.lcp_growth == pytest.approx(growths.max().item(), rel=1e-10)


def test_spectral_penalty_with_batch_norm_is_the_coupled_steps_product():
    """Batch norm couples the rows through its statistics: the growth is the exact product
    of the whole batch's Jacobian with the row-normalised difference (dense reference), and
    its gradient exists (forward-mode AD: batch norm has no third derivative)."""
    torch.manual_seed(0)
    cell = HGRUCell(3, norm="BN", variant="pathfinder", gate_bias_range=(1.0, 3.0)).double()
    x = torch.randn(2, 3, 4, 4, dtype=f64)
    h = torch.rand(2, 3, 4, 4, dtype=f64)
    f = lambda s: cell(x, s)  # noqa: E731
    difference = (f(h) - h).detach()
    v = row_directions(difference)
    J = jacobian(f, h).reshape(h.numel(), h.numel())
    jv = (J @ v.flatten()).view_as(h)
    growths = jv.flatten(1).norm(dim=1)
    assert (J.view(2, 48, 2, 48)[0, :, 1].abs().max()) > 0  # the rows are coupled
    penalty, growth = spectral_penalty(f, h, difference, 0.0)
    assert growth == pytest.approx(growths.max().item(), rel=1e-10)
    assert penalty.item() == pytest.approx(growths.max().square().item(), rel=1e-10)
    grads = torch.autograd.grad(penalty, [cell.w_exc.weight, cell.norm_exc.weight])
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
