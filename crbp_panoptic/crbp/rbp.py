"""Recurrent back-propagation (RBP): the adjoint backward of one tracked step.

RBP runs ``T - 1`` steps without autograd, detaches ``h_{T-1}`` and records one
step ``h_T = f(h_{T-1})``. :func:`rbp_adjoint` wraps ``h_T`` in an identity whose
backward replaces the incoming gradient ``g = dL/dh_T`` by the solution of the
adjoint equation ``a = g + J^T a`` (``J = df/dh`` at ``h_{T-1}``), approximated
by the truncated Neumann series ``a = sum_{k=0..K} (J^T)^k g`` built from
vector-Jacobian products through the recorded step. Autograd then carries
``a`` through that same step into the parameters and captured inputs of ``f``.

At a fixed point this is the implicit-function-theorem gradient truncated at
``K`` terms; for a linear map it is exactly truncated BPTT over ``K + 1`` steps
started at the fixed point.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from .solvers import _norm

__all__ = ["NEUMANN_STOPS", "neumann_adjoint", "rbp_adjoint"]

_EPS = 1e-12

#: Why a Neumann series stopped: it ran ``max_terms`` terms (``cap``; also when
#: ``max_terms`` is 0), a term fell below the relative tolerance (``tolerance``), the
#: divergence guard rejected a growing or non-finite term (``guard``), or a term was
#: exactly zero so every later one is too (``zero``).
NEUMANN_STOPS = ("cap", "tolerance", "guard", "zero")


def neumann_adjoint(
    vjp: Callable[[torch.Tensor], torch.Tensor],
    g: torch.Tensor,
    max_terms: int,
    tol: float = 0.0,
) -> Tuple[torch.Tensor, Dict[str, object]]:
    """Truncated Neumann series ``a = sum_{k=0..K} (J^T)^k g`` with a divergence guard.

    Term ``v_0 = g``, ``v_{k+1} = vjp(v_k) = J^T v_k``. The loop stops

    * after ``max_terms`` terms beyond ``g`` (``K = max_terms``);
    * when a term grows (``||v_{k+1}|| > ||v_k||``) or is not finite: that term is
      rejected, the sum so far is kept and ``cut`` is recorded (the series of a
      non-contractive step would otherwise blow up or turn into NaN);
    * when ``tol > 0`` and ``||v_k|| <= tol * ||a||`` (converged).

    Each term's norm is read on the host (one sync per term) to decide.

    Args:
        vjp: ``v -> J^T v``, same shape and dtype as ``g``.
        g: incoming gradient, any shape.
        max_terms: ``K >= 0``.
        tol: relative tolerance (0 = run all ``K`` terms unless cut).

    Returns:
        ``(a, info)`` with ``a`` shaped like ``g`` and
        ``info = {"neumann_terms": int, "neumann_cut": bool, "neumann_residual": float,
        "neumann_stop": str}`` where ``neumann_terms`` counts accepted terms beyond ``g``,
        ``neumann_residual = ||v_last accepted|| / ||a||`` and ``neumann_stop`` is the
        reason the loop ended (:data:`NEUMANN_STOPS`; ``neumann_cut`` is
        ``neumann_stop == "guard"``).
    """
    acc_dtype = torch.float64 if g.dtype == torch.float64 else torch.float32
    a = g.to(acc_dtype, copy=True)
    v = g
    v_norm = float(_norm(v))
    terms, stop = 0, "cap"
    for k in range(1, max_terms + 1):
        if v_norm == 0.0:  # exact: every further term is zero
            stop = "zero"
            break
        v_new = vjp(v)
        new_norm = float(_norm(v_new))
        if not math.isfinite(new_norm) or new_norm > v_norm:
            stop = "guard"
            break
        a += v_new.to(acc_dtype)
        v, v_norm, terms = v_new.to(g.dtype), new_norm, k
        if tol > 0 and v_norm <= tol * float(_norm(a)):
            stop = "tolerance"
            break
    a_norm = float(_norm(a))
    info = {
        "neumann_terms": terms,
        "neumann_cut": stop == "guard",
        "neumann_residual": v_norm / (a_norm + _EPS) if a_norm > 0 else 0.0,
        "neumann_stop": stop,
    }
    return a.to(g.dtype), info


class _RBPAdjoint(torch.autograd.Function):
    """Identity on ``h_next``; backward solves the adjoint with a Neumann series."""

    @staticmethod
    def forward(ctx, h_next, h_prev, max_terms, tol, info):
        # Both tensors are inputs, so unpacking returns them with their autograd
        # history: the backward can take VJPs through the recorded step.
        ctx.save_for_backward(h_next, h_prev)
        ctx.max_terms, ctx.tol, ctx.info = max_terms, tol, info
        return h_next.view_as(h_next)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        h_next, h_prev = ctx.saved_tensors

        def vjp(v: torch.Tensor) -> torch.Tensor:
            (out,) = torch.autograd.grad(
                h_next, h_prev, v.to(h_next.dtype), retain_graph=True, allow_unused=True
            )
            return torch.zeros_like(h_prev) if out is None else out

        a, stats = neumann_adjoint(vjp, grad, ctx.max_terms, ctx.tol)
        if ctx.info is not None:
            ctx.info.update(stats)
        return a, None, None, None, None


_rbp_adjoint = _RBPAdjoint.apply


def rbp_adjoint(
    h_next: torch.Tensor,
    h_prev: torch.Tensor,
    neumann_steps: int,
    neumann_tol: float = 0.0,
    info: Optional[Dict[str, object]] = None,
) -> torch.Tensor:
    """Attach the RBP adjoint backward to one recorded step ``h_next = f(h_prev)``.

    Args:
        h_next: output of the tracked step, shape S, with autograd history.
        h_prev: the detached state the step started from (a leaf with
            ``requires_grad=True``), shape S.
        neumann_steps: ``K``, the maximum number of Neumann terms beyond ``g``.
        neumann_tol: stop the series once ``||v_k|| <= tol * ||a||`` (0 = off).
        info: optional dict filled in by the backward with ``neumann_terms``,
            ``neumann_cut``, ``neumann_residual`` and ``neumann_stop`` (see
            :func:`neumann_adjoint`). ``neumann_steps = 0`` gives the one-step
            ("Jacobian-free") gradient: ``g`` itself enters the recorded step.

    Returns:
        A tensor equal to ``h_next`` (shape S) whose gradient ``g`` is replaced by
        ``a = sum_{k<=K} (J^T)^k g`` before it enters the tracked step, so
        parameters and captured inputs of ``f`` receive ``a^T df/dtheta``.
        Not twice differentiable.
    """
    return _rbp_adjoint(h_next, h_prev, int(neumann_steps), float(neumann_tol), info)
