"""Forward fixed-point solvers.

Every solver is a pure function with one contract::

    solver(f, z0, max_iter, tol) -> (z, info)

* ``f`` maps a state to the next state (same shape);
* ``max_iter`` is the number of evaluations of ``f`` allowed (0 returns ``z0``);
* ``tol`` is a relative-residual tolerance; ``tol == 0`` runs all ``max_iter``
  evaluations (the default everywhere: exactly the requested number of steps);
* ``z`` is always an *image* of ``f`` (``z = f(z')`` for the last evaluated
  ``z'``) unless ``max_iter == 0``, so every solver ends on the same manifold as
  plain iteration and a following tracked step ``f(z)`` means the same thing;
* ``info`` is a :class:`SolverInfo` (steps used, final residual, residual trace).

The relative residual of an evaluation ``z' -> f(z')`` is
``||f(z') - z'|| / (||f(z')|| + eps)`` over the whole tensor. Solvers do not
touch grad mode: the caller decides whether the iterations are recorded.

With ``tol > 0`` each step reads the residual back to the host to decide
whether to stop (one device synchronisation per step); with ``tol == 0`` only
the final residual is computed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Tuple

import torch

__all__ = [
    "SolverInfo",
    "SOLVERS",
    "anderson",
    "fixed_point",
    "get_solver",
    "relative_residual",
]

_EPS = 1e-12


@dataclasses.dataclass
class SolverInfo:
    """What a forward solver did.

    Attributes:
        steps: evaluations of ``f`` performed.
        residual: relative residual of the last evaluation (``inf`` if none ran).
        trace: relative residual after every step when ``tol > 0``; otherwise
            only the final residual (computing it per step costs a host sync).
    """

    steps: int
    residual: float
    trace: List[float] = dataclasses.field(default_factory=list)


def _norm(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of a whole tensor, accumulated in at least float32."""
    t = t.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return torch.linalg.vector_norm(t)


def relative_residual(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``||new - old|| / (||new|| + eps)`` as a 0-dim float tensor (no graph).

    Safe for zero and empty tensors (returns 0 for an empty batch).
    """
    new = new.detach()
    old = old.detach()
    if new.dtype != old.dtype:
        dtype = torch.promote_types(new.dtype, old.dtype)
        new, old = new.to(dtype), old.to(dtype)
    return _norm(new - old) / (_norm(new) + _EPS)


def fixed_point(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    max_iter: int,
    tol: float = 0.0,
) -> Tuple[torch.Tensor, SolverInfo]:
    """Plain iteration ``z_{k+1} = f(z_k)``.

    Args:
        f: step function, Tensor (any shape S) -> Tensor (shape S).
        z0: initial state, shape S.
        max_iter: maximum number of evaluations of ``f`` (>= 0).
        tol: stop as soon as the relative residual drops below ``tol`` (0 = never).

    Returns:
        ``(z, info)``: the last iterate (shape S) and a :class:`SolverInfo`.
    """
    z = z0
    if max_iter <= 0:
        return z, SolverInfo(steps=0, residual=math.inf, trace=[])
    trace: List[float] = []
    steps = 0
    prev = z
    for _ in range(max_iter):
        prev, z = z, f(z)
        steps += 1
        if tol > 0:
            res = float(relative_residual(z, prev))
            trace.append(res)
            if res < tol:
                return z, SolverInfo(steps=steps, residual=res, trace=trace)
    if trace:
        res = trace[-1]
    else:
        res = float(relative_residual(z, prev))
        trace.append(res)
    return z, SolverInfo(steps=steps, residual=res, trace=trace)


def anderson(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    max_iter: int,
    tol: float = 0.0,
    *,
    m: int = 5,
    lam: float = 1e-4,
    beta: float = 1.0,
) -> Tuple[torch.Tensor, SolverInfo]:
    """Anderson acceleration (type II) of ``z = f(z)``.

    Keeps the last ``m`` pairs ``(x_j, f(x_j))`` and proposes
    ``x = sum_j alpha_j (beta f(x_j) + (1 - beta) x_j)`` with the mixing weights
    ``alpha`` minimising ``||sum_j alpha_j (f(x_j) - x_j)||`` subject to
    ``sum_j alpha_j = 1`` (Tikhonov-regularised by ``lam``).

    The weights are solved per row of dim 0 when the state has a batch dim
    (``z0.dim() >= 2``): every sample (image, ROI) gets its own least-squares
    problem, which is right when ``f`` is separable over the batch and still a
    valid fixed-point iteration when it is not. A state with fewer than two
    dims is treated as a single system. The small linear solves run in
    float32/float64 whatever the state dtype.

    Args:
        f: step function, Tensor (shape S) -> Tensor (shape S).
        z0: initial state, shape S.
        max_iter: maximum number of evaluations of ``f`` (>= 0).
        tol: stop when the relative residual of an evaluation drops below it.
        m: history size (>= 1; ``m == 1`` is plain iteration with damping ``beta``).
        lam: ridge regularisation of the mixing least-squares problem, relative
            to the mean squared residual norm in the history.
        beta: mixing (damping) parameter in (0, 1].

    Returns:
        ``(z, info)``: ``z = f(x)`` for the last proposal ``x`` (shape S), and a
        :class:`SolverInfo` whose residual is that of the last evaluation.
    """
    if max_iter <= 0:
        return z0, SolverInfo(steps=0, residual=math.inf, trace=[])
    if z0.numel() == 0 or m <= 1:
        # Nothing to mix (empty batch) or no history: plain iteration.
        return fixed_point(f, z0, max_iter, tol)

    shape = z0.shape
    bsz = shape[0] if z0.dim() >= 2 else 1
    work = torch.float64 if z0.dtype == torch.float64 else torch.float32

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(bsz, -1).to(work)

    X = z0.new_zeros((bsz, m, z0.numel() // bsz), dtype=work)
    F = torch.zeros_like(X)
    trace: List[float] = []
    x = z0
    g = f(x)
    out_dtype = g.dtype
    X[:, 0], F[:, 0] = flat(x), flat(g)
    steps, res = 1, math.inf
    for k in range(1, max_iter):
        if tol > 0:
            res = float(relative_residual(g, x))
            trace.append(res)
            if res < tol:
                return g, SolverInfo(steps=steps, residual=res, trace=trace)
        n = min(k, m)
        G = F[:, :n] - X[:, :n]  # (B, n, D) residuals f(x_j) - x_j
        # Bordered system [[0, 1^T], [1, G G^T + lam I]] [nu; alpha] = [1; 0].
        H = torch.zeros(bsz, n + 1, n + 1, dtype=work, device=z0.device)
        H[:, 0, 1:] = 1
        H[:, 1:, 0] = 1
        GG = G @ G.transpose(1, 2)
        # Ridge relative to the residuals' scale: an absolute lam would dominate
        # GG^T (and stall the method) once the residuals are small.
        scale = GG.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(torch.finfo(work).tiny)
        H[:, 1:, 1:] = GG + (lam * scale)[:, None, None] * torch.eye(
            n, dtype=work, device=z0.device
        )
        rhs = torch.zeros(bsz, n + 1, 1, dtype=work, device=z0.device)
        rhs[:, 0] = 1
        alpha = torch.linalg.solve(H, rhs)[:, 1:]  # (B, n, 1)
        mixed = beta * (alpha * F[:, :n]).sum(1) + (1 - beta) * (alpha * X[:, :n]).sum(1)
        x = mixed.reshape(shape).to(out_dtype)
        g = f(x)
        steps += 1
        slot = k % m
        X[:, slot], F[:, slot] = flat(x), flat(g)
    res = float(relative_residual(g, x))
    trace.append(res)
    return g, SolverInfo(steps=steps, residual=res, trace=trace)


SOLVERS: Dict[str, Callable[..., Tuple[torch.Tensor, SolverInfo]]] = {
    "fixed_point": fixed_point,
    "anderson": anderson,
}


def get_solver(name: str) -> Callable[..., Tuple[torch.Tensor, SolverInfo]]:
    """Look up a forward solver by name.

    Raises:
        ValueError: naming the value and the valid choices.
    """
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"solver={name!r}; choose from {sorted(SOLVERS)}") from None
