"""RecurrentRefiner: step counts per phase, penalty plumbing, validation."""

import copy

import pytest
import torch
from torch import nn

from crbp_panoptic.crbp import MODES, EquilibriumResult, HGRUCell, RecurrentRefiner, parse_arm
from crbp_panoptic.crbp.lcp import column_sums, crop, penalty_from_sums
from crbp_panoptic.crbp.memory import SavedTensorBytes


def make(**kw):
    torch.manual_seed(0)
    kw.setdefault("num_groups", 4)
    return RecurrentRefiner(8, **kw)


@pytest.mark.parametrize("mode", MODES)
def test_train_and_eval_steps(mode):
    ref = make(mode=mode, steps=4, test_steps=9)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    out = ref(x)
    res = ref.last_result
    assert isinstance(res, EquilibriumResult) and out.shape == x.shape
    assert res.steps == 4 and res.mode == mode
    assert ref.last_lcp_sample is None  # exact penalty (or none)
    assert not res.state.requires_grad  # stored result does not pin the forward graph
    (out.sum() + res.lcp).backward()
    assert x.grad is not None and all(p.grad is not None for p in ref.parameters())
    ref.eval()
    with torch.no_grad():
        ref(x)
    assert ref.last_result.steps == 9 and ref.last_result.lcp.item() == 0.0


def test_test_steps_default_and_test_tol():
    ref = make(mode="crbp", steps=5)
    ref.eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        ref(x)
        assert ref.last_result.steps == 5
        ref.test_steps, ref.test_tol = 200, 1e-4
        ref(x)
    assert ref.last_result.steps < 200 and ref.last_result.residual < 1e-4


def test_anderson_at_test_time_agrees():
    ref = make(mode="bptt", steps=3, test_steps=200, test_tol=1e-6, test_solver="anderson")
    ref.eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        aa = ref(x)
        steps_aa = ref.last_result.steps
        ref.test_solver = "fixed_point"
        fp = ref(x)
    torch.testing.assert_close(aa, fp, atol=1e-4, rtol=0)
    assert steps_aa <= ref.last_result.steps


@pytest.mark.parametrize("kind,tau", [("colsum", 0.1), ("spectral", 0.01)])
def test_penalty_reaches_loss_and_changes_gradient(kind, tau):
    """With a small tau the penalty of either kind is active: adding it changes the cell's
    gradient."""
    ref = make(mode="crbp", steps=4, lcp_tau=tau, lcp_kind=kind)
    x = torch.randn(2, 8, 6, 6)
    out = ref(x)
    lcp = ref.last_result.lcp
    assert lcp.item() > 0 and lcp.requires_grad
    p = ref.cell.w_exc.weight
    (g_task,) = torch.autograd.grad(out.sum(), [p], retain_graph=True)
    (g_total,) = torch.autograd.grad(out.sum() + lcp, [p])
    assert (g_total - g_task).abs().max() > 1e-6
    assert ref.last_result.backward_info["neumann_terms"] == 15


@pytest.mark.parametrize("sub", [0.5, 1, 3])
def test_lcp_subsample(sub):
    ref = make(mode="crbp", steps=3, lcp_tau=0.1, lcp_subsample=sub)
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    out = ref(x)
    lcp = ref.last_result.lcp
    assert lcp.item() > 0
    assert ref.last_lcp_sample.shape == (2 if sub == 0.5 else sub,)
    (out.mean() + lcp).backward()
    assert torch.isfinite(x.grad).all() and ref.cell.w_inh.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["crbp", "cbptt"])
def test_lcp_crop_crops_drive_and_state_alike(mode):
    ref = make(mode=mode, steps=3, lcp_tau=0.1, lcp_crop=6).double()
    x = torch.randn(2, 8, 10, 12, dtype=torch.float64, requires_grad=True)
    out = ref(x)
    lcp = ref.last_result.lcp
    box = ref.last_lcp_sample
    assert box[2:] == (6, 6) and 0 <= box[0] <= 4 and 0 <= box[1] <= 6
    # manual: the exact penalty of the step on the cropped drive and cropped h_{T-1}
    with torch.no_grad():
        h_prev = ref.cell(x, ref.cell(x, torch.zeros_like(x)))
    hc = crop(h_prev, box).clone().requires_grad_()
    manual = penalty_from_sums(column_sums(ref.cell(crop(x.detach(), box), hc), hc), 0.1)
    assert manual.item() > 0
    torch.testing.assert_close(lcp, manual, rtol=1e-12, atol=1e-14)
    (out.mean() + lcp).backward()
    assert torch.isfinite(x.grad).all() and ref.cell.w_inh.weight.grad.abs().sum() > 0


def test_lcp_crop_gradient_reaches_cell_and_cropped_drive():
    ref = make(mode="crbp", steps=3, lcp_tau=0.1, lcp_crop=5)
    x = torch.randn(1, 8, 9, 9, requires_grad=True)
    ref(x)
    top, left, hc, wc = ref.last_lcp_sample
    lcp = ref.last_result.lcp
    grads = torch.autograd.grad(
        lcp, [x, ref.cell.w_exc.weight, ref.cell.gate.weight, ref.cell.alpha]
    )
    assert all(g.abs().sum() > 0 for g in grads)
    outside = torch.ones(9, 9, dtype=torch.bool)
    outside[top : top + hc, left : left + wc] = False
    assert grads[0][..., outside].abs().max() == 0  # only the window's drive enters the penalty


def saved_bytes(fn):
    """Bytes of distinct storages autograd saves for backward while running fn()."""
    with SavedTensorBytes() as saved:
        fn()
    return saved.bytes


def test_lcp_crop_saves_little_more_than_rbp():
    x = torch.randn(1, 8, 32, 32)
    mem = {}
    for name, kw in {"rbp": {"mode": "rbp"}, "crbp": {}, "crop": {"lcp_crop": 8}}.items():
        ref = make(steps=3, **kw)
        mem[name] = saved_bytes(lambda: ref(x))
    # an 8 x 8 window is 1/16 of the positions: the double backward's extra is ~1/16 of exact's
    assert mem["rbp"] < mem["crop"] < mem["crbp"]
    assert mem["crop"] - mem["rbp"] < 0.15 * (mem["crbp"] - mem["rbp"]), mem
    assert mem["crop"] < 1.15 * mem["rbp"], mem  # observed 1.12 (exact crbp: 2.06)


def test_empty_batch():
    ref = make(mode="crbp", steps=3, lcp_subsample=0.25)
    x = torch.zeros(0, 8, 6, 6, requires_grad=True)
    out = ref(x)
    assert out.shape == (0, 8, 6, 6) and ref.last_result.lcp.item() == 0.0
    (out.sum() + ref.last_result.lcp).backward()


def test_custom_cell():
    class Damped(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(0.5))

        def forward(self, x, h):
            return self.w * h + x

    ref = RecurrentRefiner(cell=Damped(), mode="rbp", steps=60, neumann_steps=60)
    x = torch.ones(1, 2, 3, 3)
    out = ref(x)
    torch.testing.assert_close(out, 2 * x)  # h* = x / (1 - w)
    out.sum().backward()
    # dh*/dw = x / (1 - w)^2 = 4 per element, 18 elements
    torch.testing.assert_close(ref.cell.w.grad, torch.tensor(72.0), rtol=1e-4, atol=0)


def test_validation():
    with pytest.raises(ValueError, match="mode='foo'"):
        make(mode="foo")
    with pytest.raises(ValueError, match="steps=0"):
        make(steps=0)
    with pytest.raises(ValueError, match="test_steps=-1"):
        make(test_steps=-1)
    with pytest.raises(ValueError, match="lcp_subsample=1.5"):
        make(lcp_subsample=1.5)
    with pytest.raises(ValueError, match="lcp_crop=-1"):
        make(lcp_crop=-1)
    with pytest.raises(ValueError, match="lcp_crop=2.5"):
        make(lcp_crop=2.5)
    with pytest.raises(ValueError, match="lcp_crop=16; choose at most one cheap penalty"):
        make(lcp_subsample=0.5, lcp_crop=16)
    with pytest.raises(ValueError, match="lcp_tau"):
        make(lcp_tau=0)
    with pytest.raises(ValueError, match="test_solver='newton'"):
        make(test_solver="newton")
    with pytest.raises(ValueError, match=r"lcp_kind='power'; choose from \['colsum', 'spectral'\]"):
        make(lcp_kind="power")
    with pytest.raises(ValueError, match="lcp_reduction='sum'; with lcp_kind='spectral'"):
        make(lcp_kind="spectral", lcp_reduction="sum")
    with pytest.raises(ValueError, match="neumann_steps=-1"):
        make(neumann_steps=-1)
    with pytest.raises(ValueError, match="solver='anderson'; with mode='bptt'"):
        make(mode="bptt", solver="anderson")
    with pytest.raises(ValueError, match="exactly one"):
        RecurrentRefiner()
    with pytest.raises(ValueError, match="exactly one"):
        RecurrentRefiner(8, cell=HGRUCell(8, num_groups=4))
    with pytest.raises(ValueError, match="num_groups=32"):
        RecurrentRefiner(8)
    make(mode="rbp", solver="anderson")  # fine: the iterations are not differentiated


def test_spectral_refiner_penalises_the_growth_along_its_last_difference():
    """Training calls penalise ``relu(max_b ||(J v)_b|| - tau)^2`` at ``h_{T-1}`` with
    ``v_b`` the unit rows of ``h_T - h_{T-1}`` (checked with explicit per-row VJPs of the
    transposed product: ``||J v||^2 = <J^T J v, v>``); eval calls compute no growth; the
    refiner keeps no state between calls."""
    ref = make(mode="crbp", steps=3, lcp_kind="spectral", lcp_tau=0.05, norm="GN", num_groups=4)
    before = set(ref.state_dict())
    x = torch.randn(2, 8, 5, 5)
    ref(x)
    with torch.no_grad():
        h1 = ref.cell(x, torch.zeros_like(x))
        h2 = ref.cell(x, h1)
        d = ref.cell(x, h2) - h2
    v = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    growths = []
    for b in range(2):  # GroupNorm is separable over rows: row b's product is its own
        h = h2[b : b + 1].clone().requires_grad_()
        out = ref.cell(x[b : b + 1], h)
        u = torch.zeros_like(out, requires_grad=True)
        (jt_u,) = torch.autograd.grad(out, h, u, create_graph=True)
        (jv,) = torch.autograd.grad(jt_u, u, v[b : b + 1])
        growths.append(jv.norm().item())
    assert ref.last_result.lcp_growth == pytest.approx(max(growths), rel=1e-4)
    expected = (max(growths) - 0.05) ** 2
    assert ref.last_result.lcp.item() == pytest.approx(expected, rel=1e-4)
    assert set(ref.state_dict()) == before and not list(ref.buffers())
    ref.eval()
    with torch.no_grad():
        ref(x)
    assert ref.last_result.lcp_growth is None
    colsum = make(mode="crbp", steps=1)
    colsum(x)
    assert colsum.last_result.lcp_growth is None


@pytest.mark.parametrize("arm", ["crbp:6:k0", "rbp:6:k0"])
def test_one_step_arm_gradient_is_the_one_step_gradient(arm):
    """k0: the same forward, and the gradient of the last step alone from h_{T-1} held
    fixed, computed here without the engine."""
    torch.manual_seed(0)
    cell = HGRUCell(8, num_groups=4, gate_bias_range=(1.0, 5.0)).double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    target = torch.randn_like(x)
    ref = RecurrentRefiner(cell=copy.deepcopy(cell), **parse_arm(arm).refiner_kwargs())
    x_ref = x.clone().requires_grad_()
    ((ref(x_ref) - target).square().sum()).backward()  # the task loss only
    assert ref.neumann_steps == 0
    assert ref.last_result.backward_info["neumann_terms"] == 0
    assert ref.last_result.backward_info["neumann_stop"] == "cap"

    x_one = x.clone().requires_grad_()
    with torch.no_grad():
        h = torch.zeros_like(x)
        for _ in range(5):
            h = cell(x, h)
    ((cell(x_one, h) - target).square().sum()).backward()
    torch.testing.assert_close(x_ref.grad, x_one.grad)
    for (name, p), q in zip(ref.cell.named_parameters(), cell.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)

    # with its Neumann terms the same arm's gradient differs: k0 is not a no-op
    full = RecurrentRefiner(cell=copy.deepcopy(cell), **parse_arm(arm[:-3]).refiner_kwargs())
    x_full = x.clone().requires_grad_()
    ((full(x_full) - target).square().sum()).backward()
    assert full.last_result.backward_info["neumann_terms"] > 0
    assert (x_full.grad - x_one.grad).abs().max() > 1e-6
