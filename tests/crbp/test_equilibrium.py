"""equilibrium(): gradients against dense implicit-function-theorem references, RBP
identities, memory scaling, the Neumann guard, options and edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from crbp_panoptic.crbp import MODES, NEUMANN_STOPS, HGRUCell, equilibrium, rbp_adjoint
from crbp_panoptic.crbp.memory import SavedTensorBytes
from crbp_panoptic.crbp.rbp import neumann_adjoint

f64 = torch.float64


# --------------------------------------------------------------------------- problems
# A problem is (step(params, h), params dict, state shape). Params include the
# captured input "x": gradients must reach it like any parameter.


def tanh_problem(seed=0, bsz=2, n=5, m=3, norm=0.5):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, n, generator=g, dtype=f64)
    W = W * (norm / torch.linalg.matrix_norm(W, 2))  # ||W||_2 = norm < 1: contraction
    params = {
        "W": W,
        "U": torch.randn(n, m, generator=g, dtype=f64),
        "x": torch.randn(bsz, m, generator=g, dtype=f64),
    }
    step = lambda p, h: torch.tanh(h @ p["W"].T + p["x"] @ p["U"].T)  # noqa: E731
    return step, params, (bsz, n)


def conv_problem(seed=0, bsz=1, c=2, size=4):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, c, 3, 3, generator=g, dtype=f64)
    w = w * (0.5 / (w.abs().sum() / c))  # sum |w| / c bounds the operator norm: <= 0.5
    params = {
        "w": w,
        "b": torch.randn(c, generator=g, dtype=f64) * 0.1,
        "x": torch.randn(bsz, c, size, size, generator=g, dtype=f64),
    }
    step = lambda p, h: torch.tanh(F.conv2d(h, p["w"], p["b"], padding=1) + p["x"])  # noqa: E731
    return step, params, (bsz, c, size, size)


def hgru_problem(seed=0, **cell_kwargs):
    torch.manual_seed(seed)
    # A short chronos horizon (update gate at least ~1/3 open) so 60 steps reach 1e-12.
    cell = HGRUCell(8, num_groups=4, gate_bias_range=(1.0, 2.0), **cell_kwargs).double()
    with torch.no_grad():  # move off the symmetric init: a generic cell
        for p in cell.parameters():
            p.add_(0.1 * torch.randn_like(p))
    params = {k: v.detach().clone() for k, v in cell.named_parameters()}
    params["x"] = torch.randn(1, 8, 5, 5, dtype=f64)

    def step(p, h):
        weights = {k: v for k, v in p.items() if k != "x"}
        return torch.func.functional_call(cell, weights, (p["x"], h))

    return step, params, (1, 8, 5, 5)


def hgru_coco_problem(seed=0):
    """The authors' COCO cell: less_softplus with their GALA gate."""
    return hgru_problem(seed, variant="less_softplus", gala=True)


PROBLEMS = {
    "tanh": tanh_problem,
    "conv": conv_problem,
    "hgru": hgru_problem,
    "hgru_coco": hgru_coco_problem,
}


def fixed_point_of(step, params, shape, iters=400):
    with torch.no_grad():
        h = torch.zeros(shape, dtype=f64)
        for _ in range(iters):
            h = step(params, h)
    return h


def ift_reference(step, params, shape, cot):
    """Exact gradient of L = <cot, h*> by dense Jacobians: (I - J)^T a = cot, grad = J_p^T a."""
    h_star = fixed_point_of(step, params, shape)
    n = h_star.numel()
    J = jacobian(lambda h: step(params, h), h_star).reshape(n, n)
    assert torch.linalg.matrix_norm(J, 2) < 0.95, "test problem must be contractive"
    a = torch.linalg.solve((torch.eye(n, dtype=f64) - J).T, cot.reshape(n))
    names = list(params)
    J_p = jacobian(
        lambda *ps: step(dict(zip(names, ps)), h_star),
        tuple(params[k] for k in names),
        vectorize=True,
    )
    return {k: (a @ jp.reshape(n, -1)).reshape(params[k].shape) for k, jp in zip(names, J_p)}


def leaf_params(params):
    return {k: v.detach().clone().requires_grad_() for k, v in params.items()}


# --------------------------------------------------------------------------- (a) IFT


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_gradients_match_implicit_function_theorem(problem, mode):
    step, params, shape = PROBLEMS[problem]()
    T = 150  # steps and Neumann terms: every problem settles below 1e-12 well before
    cot = torch.randn(shape, dtype=f64, generator=torch.Generator().manual_seed(1))
    ref = ift_reference(step, params, shape, cot)
    p = leaf_params(params)
    res = equilibrium(
        lambda h: step(p, h), torch.zeros(shape, dtype=f64), mode=mode, steps=T, neumann_steps=T
    )
    assert res.steps == T and res.residual < 1e-12
    grads = torch.autograd.grad((cot * res.state).sum(), list(p.values()))
    for name, got in zip(p, grads):
        torch.testing.assert_close(
            got, ref[name], rtol=1e-8, atol=1e-10, msg=f"{problem}/{mode}/{name}"
        )
    if mode in ("rbp", "crbp"):
        assert res.backward_info["neumann_cut"] is False
        assert res.backward_info["neumann_terms"] == T


def test_anderson_forward_with_rbp_matches_ift():
    step, params, shape = tanh_problem()
    cot = torch.ones(shape, dtype=f64)
    ref = ift_reference(step, params, shape, cot)
    p = leaf_params(params)
    res = equilibrium(
        lambda h: step(p, h),
        torch.zeros(shape, dtype=f64),
        mode="rbp",
        steps=40,
        neumann_steps=60,
        solver="anderson",
    )
    grads = torch.autograd.grad(res.state.sum(), list(p.values()))
    for name, got in zip(p, grads):
        torch.testing.assert_close(got, ref[name], rtol=1e-8, atol=1e-10)


def test_truncated_bptt_is_off_at_few_steps():
    """Sanity of the reference: BPTT with few steps is measurably *not* the IFT gradient."""
    step, params, shape = tanh_problem(norm=0.9)
    cot = torch.ones(shape, dtype=f64)
    ref = ift_reference(step, params, shape, cot)
    p = leaf_params(params)
    res = equilibrium(lambda h: step(p, h), torch.zeros(shape, dtype=f64), mode="bptt", steps=3)
    (gW,) = torch.autograd.grad(res.state.sum(), [p["W"]])
    assert (gW - ref["W"]).abs().max() > 1e-3


# --------------------------------------------------------------------------- (b) linear identity


@pytest.mark.parametrize("K", [0, 1, 5])
def test_rbp_equals_truncated_bptt_on_linear_map(K):
    """For f(h) = A h + B x with fixed point h* = (I - A)^{-1} B x, RBP with K Neumann
    terms gives, for every theta in {A, B, x}, (df/dtheta|h*)^T sum_{k=0..K} (A^T)^k g.
    BPTT over K + 1 steps from h0 = h* (constant) visits h* at every step and gives the
    same sum, so the two gradients are identical (up to float64 rounding)."""
    gen = torch.Generator().manual_seed(3)
    n, m, bsz = 6, 4, 3
    A = torch.randn(n, n, generator=gen, dtype=f64)
    A = 0.7 * A / torch.linalg.matrix_norm(A, 2)
    B = torch.randn(n, m, generator=gen, dtype=f64)
    x = torch.randn(bsz, m, generator=gen, dtype=f64)
    cot = torch.randn(bsz, n, generator=gen, dtype=f64)
    h_star = torch.linalg.solve(torch.eye(n, dtype=f64) - A, (x @ B.T).T).T

    def grads(mode, steps, K=0):
        p = [t.clone().requires_grad_() for t in (A, B, x)]
        f = lambda h: h @ p[0].T + p[2] @ p[1].T  # noqa: E731
        res = equilibrium(f, h_star.clone(), mode=mode, steps=steps, neumann_steps=K)
        return torch.autograd.grad((cot * res.state).sum(), p), res

    g_rbp, res = grads("rbp", steps=3, K=K)
    g_bptt, _ = grads("bptt", steps=K + 1)
    assert res.backward_info["neumann_terms"] == K
    for a, b in zip(g_rbp, g_bptt):
        assert (a - b).abs().max() < 1e-10


# --------------------------------------------------------------------------- gradcheck


def test_gradcheck_rbp_function():
    """Finite differences of the whole forward (T = 80 steps, contraction 0.3) vs the RBP
    backward with 80 Neumann terms: equal to gradcheck's tolerance."""
    step, params, shape = tanh_problem(norm=0.3)
    W = params["W"].clone().requires_grad_()
    x = params["x"].clone().requires_grad_()

    def run(W, x):
        p = {"W": W, "U": params["U"], "x": x}
        h0 = torch.zeros(shape, dtype=f64)
        return equilibrium(lambda h: step(p, h), h0, mode="rbp", steps=80, neumann_steps=80).state

    assert torch.autograd.gradcheck(run, (W, x), eps=1e-6, atol=1e-6)


def test_rbp_adjoint_is_identity_forward():
    h_prev = torch.randn(3, 4, dtype=f64, requires_grad=True)
    h_next = torch.sin(h_prev)
    out = rbp_adjoint(h_next, h_prev, neumann_steps=2)
    assert torch.equal(out, h_next)


# --------------------------------------------------------------------------- (d) memory


def saved_bytes(fn):
    """Bytes of distinct storages autograd saves for backward while running fn()."""
    with SavedTensorBytes() as saved:
        out = fn()
    return saved.bytes, out


@pytest.fixture(scope="module")
def small_cell():
    torch.manual_seed(0)
    return HGRUCell(8, num_groups=4), torch.randn(4, 8, 6, 6)


def _memory(cell, x, mode, steps, **options):
    def run():
        res = equilibrium(
            lambda h: cell(x, h), torch.zeros_like(x), mode=mode, steps=steps, **options
        )
        return res

    nbytes, res = saved_bytes(run)
    (res.state.sum() + res.lcp).backward()  # and the graph is usable
    return nbytes


def test_saved_memory_flat_for_rbp_linear_for_bptt(small_cell):
    cell, x = small_cell
    mem = {(m, t): _memory(cell, x, m, t) for m in MODES for t in (2, 4, 8)}
    for mode in ("rbp", "crbp"):
        assert mem[(mode, 2)] == mem[(mode, 4)] == mem[(mode, 8)], mode
    for mode in ("bptt", "cbptt"):
        d1 = mem[(mode, 4)] - mem[(mode, 2)]
        d2 = mem[(mode, 8)] - mem[(mode, 4)]
        assert d1 > 0 and abs(d2 - 2 * d1) <= 0.01 * d2, (mode, d1, d2)
    # one tracked step: RBP saves no more than two-step BPTT
    assert mem[("rbp", 8)] < mem[("bptt", 2)]


def test_subsampled_penalty_saves_less(small_cell):
    from crbp_panoptic.crbp import batch_subsample

    cell, x = small_cell
    exact = _memory(cell, x, "crbp", 4)
    rbp = _memory(cell, x, "rbp", 4)
    sub = _memory(
        cell,
        x,
        "crbp",
        4,
        lcp_subsample=batch_subsample(lambda i, h: cell(x.index_select(0, i), h), 1),
    )
    assert rbp < sub < exact


# --------------------------------------------------------------------------- (e) guard


def test_neumann_guard_on_non_contractive_map():
    x = torch.randn(3, 4, dtype=f64, requires_grad=True)
    res = equilibrium(
        lambda h: 2.0 * h + x, torch.zeros(3, 4, dtype=f64), mode="rbp", steps=5, neumann_steps=10
    )
    (gx,) = torch.autograd.grad(res.state.sum(), [x])
    assert torch.isfinite(gx).all()
    info = res.backward_info
    assert info["neumann_cut"] is True and info["neumann_terms"] == 0
    torch.testing.assert_close(gx, torch.ones_like(x))  # only the g term survives: a = g


def test_neumann_guard_keeps_last_good_sum():
    """Terms shrink once, then grow: the sum keeps g + J^T g and records the cut."""
    x = torch.randn(2, 3, dtype=f64, requires_grad=True)
    M = torch.zeros(3, 3, dtype=f64)
    M[1, 0], M[2, 1] = 0.5, 3.0  # f(h) = h M + x, so the VJP is v -> v M^T
    res = equilibrium(
        lambda h: h @ M + x, torch.zeros(2, 3, dtype=f64), mode="rbp", steps=3, neumann_steps=5
    )
    g = torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=f64)
    (gx,) = torch.autograd.grad((g * res.state).sum(), [x])
    # v1 = g M^T = 0.5 e1 (shrinks), v2 = v1 M^T = 1.5 e2 (grows: rejected)
    torch.testing.assert_close(gx, g + g @ M.T)
    info = res.backward_info
    assert info["neumann_cut"] is True and info["neumann_terms"] == 1
    assert info["neumann_residual"] == pytest.approx(0.5 * math.sqrt(2) / math.sqrt(2 * 1.25))


def test_neumann_tol_stops_early():
    step, params, shape = tanh_problem(norm=0.5)
    p = leaf_params(params)
    res = equilibrium(
        lambda h: step(p, h),
        torch.zeros(shape, dtype=f64),
        mode="rbp",
        steps=40,
        neumann_steps=50,
        neumann_tol=1e-4,
    )
    res.state.sum().backward()
    info = res.backward_info
    assert 0 < info["neumann_terms"] < 50 and not info["neumann_cut"]
    assert info["neumann_residual"] <= 1e-4
    assert info["neumann_stop"] == "tolerance"


@pytest.mark.parametrize(
    "scale, max_terms, tol, stop, terms",
    [
        (0.5, 6, 0.0, "cap", 6),  # shrinking terms, no tolerance: all 6
        (0.5, 0, 0.0, "cap", 0),  # no term beyond g: the one-step gradient
        (0.5, 40, 1e-3, "tolerance", 9),  # 0.5^9 <= 1e-3 * (2 - 0.5^9) < 0.5^8
        (1.5, 6, 0.0, "guard", 0),  # the first term grows: rejected
        (0.0, 6, 0.0, "zero", 1),  # J = 0: the second term is exactly zero
    ],
)
def test_neumann_stop_names_why_the_series_ended(scale, max_terms, tol, stop, terms):
    g = torch.ones(2, 3, dtype=f64)
    a, info = neumann_adjoint(lambda v: scale * v, g, max_terms, tol)
    assert info["neumann_stop"] == stop and stop in NEUMANN_STOPS
    assert info["neumann_terms"] == terms
    assert info["neumann_cut"] is (stop == "guard")
    torch.testing.assert_close(a, g * sum(scale**k for k in range(terms + 1)))


# --------------------------------------------------------------------------- (f) autocast


@pytest.mark.parametrize("mode", ["crbp", "bptt", "cbptt", "rbp"])
def test_autocast_bf16(mode):
    torch.manual_seed(0)
    cell = HGRUCell(16, num_groups=4)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = equilibrium(
            lambda h: cell(x, h), torch.zeros_like(x), mode=mode, steps=4, lcp_tau=0.2
        )
    loss = res.state.float().square().mean() + res.lcp
    loss.backward()
    assert torch.isfinite(res.state).all() and torch.isfinite(res.lcp)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in cell.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# --------------------------------------------------------------------------- steps, options


class Counter:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, h):
        self.calls += 1
        return self.f(h)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("grad", [False, True])
def test_runs_exactly_steps(mode, grad):
    step, params, shape = tanh_problem()
    p = leaf_params(params) if grad else params
    f = Counter(lambda h: step(p, h))
    with torch.set_grad_enabled(grad):
        res = equilibrium(f, torch.zeros(shape, dtype=f64), mode=mode, steps=7)
    assert f.calls == 7 and res.steps == 7  # the exact penalty reuses the tracked step
    if not grad or mode in ("bptt", "rbp"):
        assert res.lcp.item() == 0 and res.lcp.dtype == f64 and res.lcp.dim() == 0
    assert res.state.requires_grad == grad


@pytest.mark.parametrize("mode", MODES)
def test_nothing_requires_grad_means_plain_iteration(mode):
    step, params, shape = tanh_problem()
    res = equilibrium(lambda h: step(params, h), torch.zeros(shape, dtype=f64), mode=mode, steps=4)
    assert not res.state.requires_grad and res.lcp.item() == 0 and res.lcp.grad_fn is None


@pytest.mark.parametrize("mode", ["bptt", "rbp"])
def test_forward_tol_stops_early(mode):
    step, params, shape = tanh_problem()
    p = leaf_params(params)
    f = Counter(lambda h: step(p, h))
    res = equilibrium(f, torch.zeros(shape, dtype=f64), mode=mode, steps=200, forward_tol=1e-8)
    assert res.steps == f.calls < 200
    assert res.residual < 1e-8 and len(res.trace) == res.steps
    with torch.no_grad():
        res = equilibrium(f, torch.zeros(shape, dtype=f64), mode=mode, steps=200, forward_tol=1e-8)
    assert res.steps < 200 and res.residual < 1e-8


def test_anderson_converges_in_fewer_steps():
    """Slow linear contraction (eigenvalues in [-0.5, 0.97]): plain iteration needs ~560
    steps to a relative residual of 1e-9, Anderson (m=5) a fraction of that."""
    gen = torch.Generator().manual_seed(0)
    n = 20
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=f64))
    A = Q @ torch.diag(torch.linspace(-0.5, 0.97, n, dtype=f64)) @ Q.T
    x = torch.randn(4, n, generator=gen, dtype=f64)
    f = lambda h: h @ A.T + x  # noqa: E731
    h_star = torch.linalg.solve(torch.eye(n, dtype=f64) - A, x.T).T
    with torch.no_grad():
        fp = equilibrium(f, torch.zeros(4, n, dtype=f64), mode="crbp", steps=1000, forward_tol=1e-9)
        aa = equilibrium(
            f,
            torch.zeros(4, n, dtype=f64),
            mode="crbp",
            steps=1000,
            forward_tol=1e-9,
            solver="anderson",
            anderson_m=5,
        )
    assert aa.residual < 1e-9 and aa.steps < fp.steps / 3, (aa.steps, fp.steps)
    torch.testing.assert_close(aa.state, h_star, atol=1e-6, rtol=0)
    torch.testing.assert_close(fp.state, h_star, atol=1e-6, rtol=0)


def test_argument_errors():
    h0 = torch.zeros(2, 3)
    f = lambda h: h  # noqa: E731
    with pytest.raises(ValueError, match=r"mode='foo'.*\['bptt', 'cbptt', 'crbp', 'rbp'\]"):
        equilibrium(f, h0, mode="foo", steps=3)
    with pytest.raises(ValueError, match="steps=0"):
        equilibrium(f, h0, mode="rbp", steps=0)
    with pytest.raises(ValueError, match="neumann_steps=-1"):
        equilibrium(f, h0, mode="rbp", steps=2, neumann_steps=-1)
    for tau in (0.0, -1.0, float("nan"), True, "0.9"):
        with pytest.raises(ValueError, match="lcp_tau"):
            equilibrium(f, h0, mode="crbp", steps=2, lcp_tau=tau)
    with pytest.raises(TypeError, match="neumann_step_count"):
        equilibrium(f, h0, mode="rbp", steps=2, neumann_step_count=3)
    with pytest.raises(ValueError, match=r"solver='newton'.*anderson"):
        equilibrium(f, h0, mode="rbp", steps=2, solver="newton")
    with pytest.raises(ValueError, match="forward_tol"):
        equilibrium(f, h0, mode="rbp", steps=2, forward_tol=-1)
    with pytest.raises(ValueError, match="anderson_m"):
        equilibrium(f, h0, mode="rbp", steps=2, anderson_m=3)
    with pytest.raises(ValueError, match="lcp_subsample"):
        equilibrium(f, h0, mode="crbp", steps=2, lcp_subsample=0.5)
    with pytest.raises(ValueError, match=r"lcp_kind='jacobi'; choose from \['colsum'"):
        equilibrium(f, h0, mode="crbp", steps=2, lcp_kind="jacobi")
    with pytest.raises(ValueError, match=r"lcp_reduction='sum'; with lcp_kind='spectral'.*'mean'"):
        equilibrium(f, h0, mode="crbp", steps=2, lcp_kind="spectral", lcp_reduction="sum")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['lcp_vector'\]"):
        equilibrium(f, h0, mode="crbp", steps=2, lcp_kind="spectral", lcp_vector=None)
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="solver='anderson'.*bptt"):
        equilibrium(lambda h: h * w, h0, mode="bptt", steps=2, solver="anderson")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("problem", ["tanh", "hgru"])
def test_empty_batch(mode, problem):
    step, params, shape = PROBLEMS[problem]()
    params["x"] = params["x"][:0]
    p = leaf_params(params)
    res = equilibrium(
        lambda h: step(p, h), torch.zeros((0,) + shape[1:], dtype=f64), mode=mode, steps=3
    )
    assert res.state.shape == (0,) + shape[1:]
    assert res.residual == 0.0 and res.lcp.item() == 0.0 and not math.isnan(res.lcp.item())
    (res.state.sum() + res.lcp).backward()
    for name, t in p.items():
        assert t.grad is None or torch.isfinite(t.grad).all(), name


def test_less_softplus_update_gate_gets_no_task_gradient_at_the_fixed_point():
    """In the authors' COCO cell h' = h + g2 (h~ - h): at an exact fixed point h~ = h, so
    the exact (implicit-function) gradient of a loss on h* is zero for U2 and b2. Our
    kappa/omega cell has an outer softplus, h* != h~, and its gate does get a gradient."""
    cot = torch.randn(1, 8, 5, 5, dtype=f64, generator=torch.Generator().manual_seed(1))
    ref = ift_reference(*hgru_coco_problem(), cot)
    assert ref["gate.weight"].abs().max() < 1e-12 and ref["gate.bias"].abs().max() < 1e-12
    assert ref["w_exc.weight"].abs().max() > 1e-3
    ref = ift_reference(*hgru_problem(), cot)
    assert ref["gate.weight"].abs().max() > 1e-4
