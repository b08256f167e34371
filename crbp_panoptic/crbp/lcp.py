"""Lipschitz-coefficient penalty (LCP).

For one step ``h_next = f(h_prev)`` with Jacobian ``J = d h_next / d h_prev``,
the penalty is::

    u       = 1^T J                      # column sums: one VJP with an all-ones vector
    penalty = mean(relu(u - tau) ** 2)   # mean over every element of u

``u`` is built with ``create_graph=True`` so the penalty is differentiable: its
gradient reaches the parameters and captured inputs of ``f`` (and ``h_prev``'s
own history, if it has one). Pushing the column sums below ``tau < 1`` keeps the
step locally contractive, which is what makes RBP's Neumann series converge.

Cheap variant (``batch_subsample``): evaluate the penalty on a random subset of
batch rows. When ``f`` is separable over the batch (convolutions, per-sample
GroupNorm, elementwise ops -- true of the hGRU), ``J`` is block diagonal, so the
column sums of row ``b`` depend only on row ``b``: the subset's ``u`` values are
*exactly* those rows' values in the full ``u``. Sampling rows uniformly without
replacement, the subset penalty is an unbiased estimate of the full mean, and
the double-backward memory and time shrink with the subset.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "BatchSubsample",
    "batch_subsample",
    "column_sums",
    "lipschitz_penalty",
    "penalty_from_sums",
    "step_penalty",
]


def check_tau(tau: float, name: str = "lcp_tau") -> float:
    """Validate the penalty threshold: a finite real number > 0."""
    ok = isinstance(tau, (int, float)) and not isinstance(tau, bool)
    if not ok or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"{name}={tau!r}; must be a finite number > 0 (the paper uses 0.9)")
    return float(tau)


def column_sums(h_next: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
    """``u = 1^T J`` for a recorded step, differentiable (``create_graph=True``).

    Args:
        h_next: output of the step, shape S_out, with history back to ``h_prev``.
        h_prev: the step's input state, shape S (must require grad).

    Returns:
        ``u`` with the shape of ``h_prev``; zeros if ``h_next`` does not depend on it.
    """
    (u,) = torch.autograd.grad(
        h_next,
        h_prev,
        torch.ones_like(h_next),
        create_graph=True,
        retain_graph=True,
        allow_unused=True,
    )
    return torch.zeros_like(h_prev) if u is None else u


def penalty_from_sums(u: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean(relu(u - tau)^2)`` in at least float32; 0 (not NaN) for an empty ``u``."""
    if u.dtype not in (torch.float32, torch.float64):
        u = u.float()
    return F.relu(u - tau).pow(2).sum() / max(u.numel(), 1)


def step_penalty(h_next: torch.Tensor, h_prev: torch.Tensor, tau: float) -> torch.Tensor:
    """LCP of an already recorded step (reuses its graph; ``f`` is not re-evaluated).

    Args:
        h_next: output of the step, shape S.
        h_prev: input state of the step, shape S, requiring grad.
        tau: threshold on the column sums.

    Returns:
        0-dim penalty tensor (float32 or float64) with a graph to ``f``'s parameters.
    """
    return penalty_from_sums(column_sums(h_next, h_prev), tau)


def lipschitz_penalty(
    f: Callable[[torch.Tensor], torch.Tensor], h_prev: torch.Tensor, tau: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Evaluate one step and its LCP.

    Args:
        f: step function, shape S -> shape S.
        h_prev: state to linearise at, shape S. If it does not require grad it
            is treated as a constant (a detached leaf is made for the VJP).
        tau: threshold on the column sums.

    Returns:
        ``(penalty, h_next)``: the 0-dim penalty and ``f(h_prev)`` (shape S).
    """
    if not h_prev.requires_grad:
        h_prev = h_prev.detach().requires_grad_()
    h_next = f(h_prev)
    return step_penalty(h_next, h_prev, tau), h_next


def _rows_for(size: Union[int, float], bsz: int) -> int:
    if isinstance(size, float):
        return min(bsz, math.ceil(size * bsz))
    return min(bsz, size)


def check_subsample_size(size: Union[int, float, None], name: str = "lcp_subsample") -> None:
    """Validate a batch-subsample size: None, a fraction in (0, 1], or a count >= 1."""
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise ValueError(f"{name}={size!r}; use None (exact), a float fraction in (0, 1] or an int count >= 1")
    if isinstance(size, float) and not (0.0 < size <= 1.0):
        raise ValueError(f"{name}={size!r}; a float is a fraction of batch rows and must lie in (0, 1]")
    if isinstance(size, int) and size < 1:
        raise ValueError(f"{name}={size!r}; an int is a count of batch rows and must be >= 1")


class BatchSubsample:
    """Pick random batch rows for a cheap LCP (see the module docstring).

    Use as the ``lcp_subsample`` option of :func:`~crbp_panoptic.crbp.equilibrium`.

    Args:
        step_on_rows: ``(index, h_rows) -> next h_rows``: the step function
            applied to the batch rows ``index`` (a LongTensor, shape (n,)) of the
            state, e.g. ``lambda idx, h: cell(x[idx], h)``.
        size: fraction of rows (float in (0, 1], rounded up) or a row count (int >= 1).
        generator: optional ``torch.Generator`` for the row choice (defaults to
            torch's global RNG, so every DDP rank draws its own rows).

    Attributes:
        last_index: rows chosen by the last call (LongTensor, sorted), or None.
    """

    def __init__(
        self,
        step_on_rows: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        size: Union[int, float],
        generator: Optional[torch.Generator] = None,
    ):
        check_subsample_size(size)
        if size is None:
            raise ValueError("lcp_subsample=None; BatchSubsample needs a fraction or a count")
        self.step_on_rows = step_on_rows
        self.size = size
        self.generator = generator
        self.last_index: Optional[torch.Tensor] = None

    def __call__(self, h_prev: torch.Tensor) -> Tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        """Choose rows of ``h_prev`` (shape (B, ...)).

        Returns:
            ``(f_sub, h_sub)``: ``h_sub = h_prev[index]`` (shape (n, ...)), keeping
            ``h_prev``'s history, and ``f_sub(h) = step_on_rows(index, h)``.
        """
        bsz = h_prev.shape[0]
        n = _rows_for(self.size, bsz)
        gen_device = self.generator.device if self.generator is not None else "cpu"
        index = torch.randperm(bsz, generator=self.generator, device=gen_device)[:n]
        index = index.sort().values.to(h_prev.device)
        self.last_index = index
        step = self.step_on_rows
        return (lambda h_sub: step(index, h_sub)), h_prev.index_select(0, index)


def batch_subsample(
    step_on_rows: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    size: Union[int, float],
    generator: Optional[torch.Generator] = None,
) -> BatchSubsample:
    """Functional alias of :class:`BatchSubsample` (same arguments)."""
    return BatchSubsample(step_on_rows, size, generator)
