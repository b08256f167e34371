"""Where a cell's dynamics sit: the state's spatial contrast and the Jacobian's column sums.

The LCP penalises column sums ``u = 1^T dF/dh`` above ``tau``. A cell whose column sums sit
far below ``tau`` forgets its state within a few steps (nearly feedforward); one whose sums
sit near ``tau`` integrates over many steps while staying contractive.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch

__all__ = ["cell_diagnostics"]

_QUANTILES = {"colsum_p10": 0.1, "colsum_p50": 0.5, "colsum_p90": 0.9}
# torch.quantile refuses very large inputs; a fixed-stride subset keeps it exact enough.
_MAX_QUANTILE_ELEMENTS = 1 << 22


def cell_diagnostics(
    cell: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    state: torch.Tensor,
    tau: float = 0.9,
    power_iters: int = 0,
) -> Dict[str, float]:
    """Diagnose one step ``h' = cell(x, h)`` at ``h = state``.

    Args:
        cell: the step, ``(x, h) -> h'`` with x, h, h' of shape (B, C, H, W).
        x: drive, shape (B, C, H, W).
        state: the state to linearise at (e.g. the equilibrium), shape (B, C, H, W).
        tau: the LCP threshold the column sums are compared with.
        power_iters: if > 0, also estimate ``adjoint_growth``, the factor by which the
            terms ``(J^T)^k g`` of the RBP backward's Neumann series grow (> 1) or shrink
            (< 1) per term: the geometric mean of ``||J^T v|| / ||v||`` over the second half
            of ``power_iters`` power iterations from a fixed random ``v``. For large
            ``power_iters`` it tends to the spectral radius of ``J``; the series converges
            only if it is below 1, whatever the column sums.

    Returns:
        dict of floats: ``contrast`` (mean over batch and channels of the spatial standard
        deviation of ``state``), ``contrast_rel`` (that over the mean absolute state),
        ``colsum_mean``, ``colsum_p10``, ``colsum_p50``, ``colsum_p90``, ``colsum_max``
        and ``frac_above_tau`` of the column sums ``u = 1^T dF/dh``, and
        ``adjoint_growth`` when ``power_iters > 0``. Empty input gives zeros.
    """
    if state.numel() == 0:
        empty = dict.fromkeys(
            (
                "contrast",
                "contrast_rel",
                "colsum_mean",
                *_QUANTILES,
                "colsum_max",
                "frac_above_tau",
            ),
            0.0,
        )
        if power_iters > 0:
            empty["adjoint_growth"] = 0.0
        return empty
    with torch.enable_grad():
        h = state.detach().requires_grad_()
        out = cell(x.detach(), h)
        (u,) = torch.autograd.grad(
            out, h, torch.ones_like(out), allow_unused=True, retain_graph=power_iters > 0
        )
        growth = _adjoint_growth(out, h, power_iters) if power_iters > 0 else None
    u = torch.zeros_like(h) if u is None else u.detach()
    state = state.detach().float()
    contrast = state.flatten(2).std(dim=2, unbiased=False).mean()
    flat = u.float().flatten()
    stride = max(1, flat.numel() // _MAX_QUANTILE_ELEMENTS)
    qs = torch.quantile(flat[::stride], torch.tensor(list(_QUANTILES.values())))
    stats = {
        "contrast": float(contrast),
        "contrast_rel": float(contrast / state.abs().mean().clamp_min(1e-12)),
        "colsum_mean": float(flat.mean()),
        **{name: float(q) for name, q in zip(_QUANTILES, qs)},
        "colsum_max": float(flat.max()),
        "frac_above_tau": float((flat > tau).float().mean()),
    }
    if growth is not None:
        stats["adjoint_growth"] = growth
    return stats


def _adjoint_growth(out: torch.Tensor, h: torch.Tensor, iters: int) -> float:
    """Per-term growth of ``v <- J^T v`` (power iteration through the recorded step)."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(h.shape, generator=gen, dtype=h.dtype).to(h.device)
    v = v / v.norm()
    log_ratios = []
    for k in range(iters):
        (w,) = torch.autograd.grad(out, h, v, retain_graph=k < iters - 1, allow_unused=True)
        norm = 0.0 if w is None else float(w.norm())
        if norm == 0.0 or not math.isfinite(norm):
            return norm  # J^T v vanished (growth 0) or overflowed (inf / nan)
        log_ratios.append(math.log(norm))  # ||v|| = 1 before each product
        v = w / norm
    tail = log_ratios[len(log_ratios) // 2 :]
    return math.exp(sum(tail) / len(tail))
