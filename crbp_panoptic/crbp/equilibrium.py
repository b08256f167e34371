"""Run a recurrent step to (approximate) equilibrium under one of four gradient modes.

====== ==================================================== ============ =====
mode   forward                                              backward     LCP
====== ==================================================== ============ =====
bptt   ``steps`` steps, all recorded                        autograd     no
cbptt  same                                                 autograd     yes
rbp    ``steps - 1`` steps unrecorded, 1 recorded step      Neumann RBP  no
crbp   same                                                 Neumann RBP  yes
====== ==================================================== ============ =====

The penalty (:mod:`.lcp`; the paper's column sums, or with ``lcp_kind="spectral"`` the
growth of ``J`` along the forward's last difference) is taken at the last step
``h_T = f(h_{T-1})``. In the RBP
modes it reuses that step's graph; in ``cbptt`` ``h_{T-1}`` lies inside the
unrolled graph, so the penalty's gradient also flows back through it.

Memory: ``bptt``/``cbptt`` keep every step's activations (O(T)); ``rbp``/``crbp``
keep one step's (O(1) in T). Under ``torch.no_grad()``, or when nothing ``f``
uses requires grad, every mode just iterates and the penalty is zero.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable, Dict, List, Optional

import torch

from .lcp import lipschitz_penalty, spectral_penalty, step_penalty
from .options import MODES, PENALISED_MODES, UNROLLED_MODES, check_refiner_args
from .rbp import rbp_adjoint
from .solvers import get_solver, relative_residual

__all__ = ["MODES", "OPTIONS", "EquilibriumResult", "equilibrium"]


#: Optional keyword options of :func:`equilibrium` and their defaults.
OPTIONS: Dict[str, Any] = {
    "forward_tol": 0.0,  # relative residual for early stopping (0 = run all steps)
    "solver": "fixed_point",  # forward solver, a key of SOLVERS
    "anderson_m": None,  # Anderson history size (solver="anderson" only; default 5)
    "neumann_tol": 0.0,  # relative tolerance of the Neumann series (0 = all terms)
    # None (exact LCP) or h_prev -> (f_sub, h_sub): a BatchSubsample or a SpatialCrop
    "lcp_subsample": None,
    # "mean" or "sum" of the penalty over the state's elements (see LCP_REDUCTIONS)
    "lcp_reduction": "mean",
    # "colsum" (the paper's column sums) or "spectral" (growth of J, see LCP_KINDS)
    "lcp_kind": "colsum",
}


@dataclasses.dataclass
class EquilibriumResult:
    """Output of :func:`equilibrium`.

    Attributes:
        state: the last state ``h_T`` (shape of ``h0``).
        lcp: 0-dim tensor, the *unweighted* Lipschitz penalty (reduced as the
            ``lcp_reduction`` option says); a zero tensor on
            ``h0``'s device/dtype for ``bptt``/``rbp`` and whenever no gradient is
            recorded.
        steps: evaluations of ``f`` in the state trajectory (the subsampled
            penalty's extra partial evaluation is not counted).
        residual: ``||h_T - h_{T-1}|| / ||h_T||`` of the last step (0 for an empty
            batch).
        mode: the gradient mode used.
        trace: forward residual history (per step when ``forward_tol > 0``).
        backward_info: filled by the RBP backward when it runs:
            ``neumann_terms`` (int), ``neumann_cut`` (bool, stopped by the
            divergence guard), ``neumann_residual`` (float, size of the last
            accepted term relative to the sum) and ``neumann_stop`` (str, why the
            series stopped, one of :data:`~crbp_panoptic.crbp.rbp.NEUMANN_STOPS`). Empty
            otherwise.
        lcp_growth: with ``lcp_kind="spectral"``, the largest row growth ``||(J v)_b||`` of
            the penalised step (a float, see :func:`~crbp_panoptic.crbp.lcp.spectral_penalty`);
            None otherwise or when no penalty was computed.
    """

    state: torch.Tensor
    lcp: torch.Tensor
    steps: int
    residual: float
    mode: str
    trace: List[float] = dataclasses.field(default_factory=list)
    backward_info: Dict[str, Any] = dataclasses.field(default_factory=dict)
    lcp_growth: Optional[float] = None


def check_arguments(
    mode: str,
    steps: int,
    neumann_steps: int,
    lcp_tau: float,
    options: Dict[str, Any],
) -> Dict[str, Any]:
    """Validate :func:`equilibrium`'s arguments; return the options with defaults.

    Raises:
        ValueError: an invalid value (named, with the allowed choices).
        TypeError: unknown option names (named, with the valid ones).
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; valid options are {sorted(OPTIONS)}")
    opts = {**OPTIONS, **options}
    # Any solver is valid here (the unrolled modes reject Anderson only when recording), so
    # the solver is checked with the rule of an evaluation solver.
    check_refiner_args(
        mode=mode,
        steps=steps,
        neumann_steps=neumann_steps,
        lcp_tau=lcp_tau,
        forward_tol=opts["forward_tol"],
        neumann_tol=opts["neumann_tol"],
        test_solver=opts["solver"],
        lcp_reduction=opts["lcp_reduction"],
        lcp_kind=opts["lcp_kind"],
        **({} if opts["anderson_m"] is None else {"anderson_m": opts["anderson_m"]}),
    )
    if opts["anderson_m"] is not None and opts["solver"] != "anderson":
        raise ValueError(f"anderson_m={opts['anderson_m']!r} only applies to solver='anderson'")
    sub = opts["lcp_subsample"]
    if sub is not None and not callable(sub):
        raise ValueError(
            f"lcp_subsample={sub!r}; must be None or a callable h_prev -> (f_sub, h_sub) "
            "(see crbp_panoptic.crbp.batch_subsample, crbp_panoptic.crbp.spatial_crop)"
        )
    return opts


def _needs_grad_beyond(out: torch.Tensor, leaf: torch.Tensor) -> bool:
    """Whether ``out``'s history reaches anything requiring grad other than ``leaf``.

    Walks ``out``'s autograd graph and stops at the first leaf (parameter or
    input) that is not ``leaf``, or at the first node upstream of a captured
    non-leaf input. Cost: the nodes of one step when nothing else requires grad.
    """
    if out.grad_fn is None:
        return out.requires_grad and out is not leaf
    stack, seen = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes only
        if variable is not None:
            if variable is not leaf:
                return True
            continue
        stack.extend(child for child, _ in node.next_functions)
    return False


def equilibrium(
    f: Callable[[torch.Tensor], torch.Tensor],
    h0: torch.Tensor,
    *,
    mode: str,
    steps: int,
    neumann_steps: int = 15,
    lcp_tau: float = 0.9,
    check: bool = True,
    **options: Any,
) -> EquilibriumResult:
    """Iterate ``h_{t+1} = f(h_t)`` from ``h0`` and attach the mode's gradient.

    Args:
        f: step function, state (shape S) -> next state (shape S). It closes over
            its inputs and parameters; gradients reach whatever it uses.
        h0: initial state, shape S (e.g. (B, C, H, W); B may be 0). In the RBP
            modes the result does not depend on ``h0`` (no gradient reaches it).
        mode: one of :data:`MODES`.
        steps: number of steps ``T >= 1`` (exactly this many unless stopped early).
        neumann_steps: maximum Neumann terms ``K >= 0`` of the RBP backward.
        lcp_tau: penalty threshold ``tau > 0`` on the Jacobian column sums (or, with
            ``lcp_kind="spectral"``, on the growth of ``J^T``).
        check: validate the arguments (False: the caller validated them once, e.g.
            :class:`~crbp_panoptic.crbp.RecurrentRefiner` when it was built).
        **options: see :data:`OPTIONS`:

            * ``forward_tol`` (float, 0): stop once the relative residual is below
              it (``steps`` is then a maximum). In the RBP modes the unrecorded
              iterations stop early and one recorded step follows.
            * ``solver`` ("fixed_point"): forward solver from :data:`SOLVERS`;
              ``"anderson"`` is for the unrecorded iterations only (RBP modes, or
              any mode without grad) since BPTT through Anderson mixing is not
              the gradient of the recurrence.
            * ``anderson_m`` (int, 5): Anderson history size.
            * ``neumann_tol`` (float, 0): stop the Neumann series once a term is
              below this fraction of the sum.
            * ``lcp_subsample`` (None): a callable ``h_prev -> (f_sub, h_sub)``
              (:func:`~crbp_panoptic.crbp.lcp.batch_subsample`: random batch rows,
              exact per row; :func:`~crbp_panoptic.crbp.lcp.spatial_crop`: a
              random window of positions, approximate); the penalty
              is then ``mean(relu(1^T df_sub/dh_sub - tau)^2)``, computed on the
              subset with one extra partial evaluation. ``h_prev`` is ``h_{T-1}``
              as the mode has it: a detached leaf in ``rbp``/``crbp``, inside the
              unrolled graph in ``cbptt``.
            * ``lcp_reduction`` ("mean"): ``"sum"`` multiplies the (mean) penalty by the
              number of elements of the state ``h_{T-1}``: the sum over every element for
              the exact penalty, an unbiased estimate of it for a row subsample (the
              authors' COCO model weighted such a sum). Column sums only.
            * ``lcp_kind`` ("colsum"): ``"spectral"`` penalises
              ``relu(max_b ||(J v)_b|| - tau)^2`` with ``v_b`` the unit rows of
              ``h_T - h_{T-1}`` (:func:`~crbp_panoptic.crbp.lcp.spectral_penalty`): one
              Jacobian-vector product with a graph. With ``lcp_subsample`` it is taken on
              the sample.

    Returns:
        :class:`EquilibriumResult`.

    Raises:
        ValueError: invalid mode, counts, tolerance or solver (named, with choices).
        TypeError: unknown option names.
    """
    opts = (
        check_arguments(mode, steps, neumann_steps, lcp_tau, options)
        if check
        else {**OPTIONS, **options}
    )
    solver = get_solver(opts["solver"])
    if opts["solver"] == "anderson":
        m = opts["anderson_m"] if opts["anderson_m"] is not None else 5
        solve = partial(solver, m=m)
    else:
        solve = solver
    tol = opts["forward_tol"]
    zero = h0.new_zeros(())

    if not torch.is_grad_enabled():
        state, info = solve(f, h0, steps, tol)
        return EquilibriumResult(state, zero, info.steps, info.residual, mode, info.trace)

    if mode in UNROLLED_MODES:
        if opts["solver"] != "fixed_point":
            raise ValueError(
                f"solver={opts['solver']!r} cannot be differentiated through with mode={mode!r}; "
                "use solver='fixed_point' in training (any solver works under torch.no_grad())"
            )
        h_prev, info = solve(f, h0, steps - 1, tol)
        made_leaf = mode == "cbptt" and not h_prev.requires_grad
        if made_leaf:
            # Only when nothing upstream records (e.g. steps == 1 from a constant
            # h0): the penalty still needs a tensor to differentiate against.
            h_prev = h_prev.detach().requires_grad_()
        h_next = f(h_prev)
        tracked = _needs_grad_beyond(h_next, h_prev) if made_leaf else h_next.requires_grad
    else:
        with torch.no_grad():
            h_prev, info = solve(f, h0, steps - 1, tol)
        h_prev = h_prev.detach().requires_grad_()
        h_next = f(h_prev)
        tracked = _needs_grad_beyond(h_next, h_prev)

    residual = float(relative_residual(h_next, h_prev))
    trace = info.trace + [residual] if tol > 0 else [residual]
    n_steps = info.steps + 1
    if not tracked:
        return EquilibriumResult(h_next.detach(), zero, n_steps, residual, mode, trace)

    lcp, growth = zero, None
    if mode in PENALISED_MODES:
        sample = opts["lcp_subsample"]
        if opts["lcp_kind"] == "spectral":
            step, inp, difference = f, h_prev, h_next.detach() - h_prev.detach()
            if sample is not None:
                step, inp = sample(h_prev)
                with torch.no_grad():
                    difference = step(inp) - inp
            lcp, growth = spectral_penalty(step, inp, difference, lcp_tau)
        elif sample is None:
            lcp = step_penalty(h_next, h_prev, lcp_tau)
        else:
            f_sub, h_sub = sample(h_prev)
            lcp, _ = lipschitz_penalty(f_sub, h_sub, lcp_tau)
        if opts["lcp_reduction"] == "sum":
            lcp = lcp * h_prev.numel()

    result = EquilibriumResult(h_next, lcp, n_steps, residual, mode, trace)
    result.lcp_growth = growth
    if mode not in UNROLLED_MODES:
        result.state = rbp_adjoint(
            h_next, h_prev, neumann_steps, opts["neumann_tol"], result.backward_info
        )
    return result
