"""A module that runs a recurrent cell to equilibrium: the one refiner every placement shares."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from .diagnostics import cell_diagnostics
from .equilibrium import EquilibriumResult, equilibrium
from .hgru import HGRUCell
from .lcp import BatchSubsample, SpatialCrop, crop
from .options import PENALISED_MODES, check_refiner_args

__all__ = ["RecurrentRefiner"]


def _step_on_rows(cell: nn.Module, x: torch.Tensor, index: torch.Tensor, h: torch.Tensor):
    return cell(x.index_select(0, index), h)


def _step_on_crop(cell: nn.Module, x: torch.Tensor, box, h: torch.Tensor):
    return cell(crop(x, box), h)


class RecurrentRefiner(nn.Module):
    """Refine a feature map by running ``h <- cell(x, h)`` from ``h0 = 0`` to equilibrium.

    ``forward(x)`` calls :func:`~crbp_panoptic.crbp.equilibrium` with
    ``f(h) = cell(x, h)``: ``steps``/``forward_tol``/``solver`` in training,
    ``test_steps``/``test_tol``/``test_solver`` in eval mode. The result of the
    last call is kept in :attr:`last_result` so a parent module can add the
    (unweighted) penalty ``last_result.lcp`` to its losses and log diagnostics.

    Args:
        channels: C; builds ``HGRUCell(channels, **cell_kwargs)``. Give either
            this or ``cell``.
        cell: a module ``(x, h) -> h'`` (all (B, C, H, W)) to use instead.
        mode: gradient mode, one of :data:`~crbp_panoptic.crbp.MODES`.
        steps: training steps T >= 1.
        test_steps: eval steps (0 = same as ``steps``).
        neumann_steps: maximum Neumann terms K of the RBP backward.
        neumann_tol: relative tolerance of the Neumann series (0 = all K terms).
        lcp_tau: penalty threshold tau in (0, 1] on the Jacobian column sums.
        lcp_reduction: ``"mean"`` or ``"sum"`` of the penalty over the state's elements
            (:data:`~crbp_panoptic.crbp.LCP_REDUCTIONS`; ``"mean"`` only with the spectral
            kind, whose penalty acts on the largest row growth).
        lcp_kind: ``"colsum"`` (the paper's column sums) or ``"spectral"``: the growth
            ``||(J v)_b||`` of each row along the forward's last difference, penalised above
            tau (:func:`~crbp_panoptic.crbp.lcp.spectral_penalty`).
        lcp_subsample: None (exact penalty), a float fraction in (0, 1] or an int
            count of batch rows (ROIs, images) on which the penalty is evaluated
            (see :class:`~crbp_panoptic.crbp.lcp.BatchSubsample`; exact per-row
            values, unbiased for the mean, less double-backward memory).
        lcp_crop: 0 (off) or the side S of a random S x S window of positions
            (clipped to the map) on which the penalty is evaluated, the drive
            cropped the same way (see :class:`~crbp_panoptic.crbp.lcp.SpatialCrop`:
            for maps with few rows, e.g. FPN levels; an approximation -- exact
            only beyond a margin from the window's inner sides and without
            GroupNorm -- with double-backward memory that scales with
            S^2; a window as large as the map costs more than the exact
            penalty). Excludes ``lcp_subsample``.
        forward_tol: training early-stop tolerance on the relative residual (0 = off).
        test_tol: eval early-stop tolerance (0 = off).
        solver: forward solver in training (``"anderson"`` only with rbp/crbp).
        test_solver: forward solver in eval (None = same as ``solver``).
        anderson_m: Anderson history size (used when a solver is ``"anderson"``).
        **cell_kwargs: passed to :class:`HGRUCell` (``kernel_size``, ``dilation``, ``norm``,
            ``num_groups``, ``gala``, ``variant``, ``norm_gain``, ``gate_bias_range``,
            ``gate_bias_init``)
            when ``channels`` is given; ``gate_bias_range`` defaults to
            ``(1, max(steps - 1, 1))``, the chronos init over the trained horizon.

    Every argument is validated here, once (:mod:`~crbp_panoptic.crbp.options`).

    Attributes:
        last_result: :class:`~crbp_panoptic.crbp.EquilibriumResult` of the last
            call (its ``state`` detached; ``lcp`` keeps its graph until the next
            call), or None before the first call.
        last_lcp_sample: what the last call's cheap penalty was evaluated on:
            the rows (LongTensor, ``lcp_subsample``) or the window
            ``(top, left, height, width)`` (``lcp_crop``); None when the
            penalty was exact or not computed.
        diagnose: set True to compute :func:`~crbp_panoptic.crbp.cell_diagnostics` at
            the equilibrium of each call (one extra step and VJP) into
            :attr:`last_diagnostics`; the training loop turns it on periodically.
        last_diagnostics: dict of the last diagnosed call, else None.
    """

    def __init__(
        self,
        channels: Optional[int] = None,
        *,
        cell: Optional[nn.Module] = None,
        mode: str = "crbp",
        steps: int = 20,
        test_steps: int = 0,
        neumann_steps: int = 15,
        neumann_tol: float = 0.0,
        lcp_tau: float = 0.9,
        lcp_reduction: str = "mean",
        lcp_kind: str = "colsum",
        lcp_subsample: Union[None, int, float] = None,
        lcp_crop: int = 0,
        forward_tol: float = 0.0,
        test_tol: float = 0.0,
        solver: str = "fixed_point",
        test_solver: Optional[str] = None,
        anderson_m: int = 5,
        **cell_kwargs: Any,
    ):
        super().__init__()
        if (channels is None) == (cell is None):
            raise ValueError(
                f"channels={channels!r}, cell={type(cell).__name__}; give exactly one of them"
            )
        if cell is not None and cell_kwargs:
            raise ValueError(
                f"cell_kwargs={sorted(cell_kwargs)} only apply when building an HGRUCell "
                "from channels"
            )
        if channels is not None:
            # Chronos gate init over the trained horizon unless asked otherwise.
            cell_kwargs.setdefault("gate_bias_range", (1.0, float(max(steps - 1, 1))))
        check_refiner_args(
            mode=mode,
            steps=steps,
            test_steps=test_steps,
            neumann_steps=neumann_steps,
            neumann_tol=neumann_tol,
            lcp_tau=lcp_tau,
            lcp_reduction=lcp_reduction,
            lcp_kind=lcp_kind,
            lcp_subsample=lcp_subsample,
            lcp_crop=lcp_crop,
            forward_tol=forward_tol,
            test_tol=test_tol,
            solver=solver,
            test_solver=test_solver,
            anderson_m=anderson_m,
            **({} if channels is None else {"channels": channels}),
            **cell_kwargs,
        )
        self.cell = cell if cell is not None else HGRUCell(channels, **cell_kwargs)
        self.mode, self.steps, self.test_steps = mode, steps, test_steps
        self.neumann_steps, self.neumann_tol = neumann_steps, float(neumann_tol)
        self.lcp_tau, self.lcp_reduction = float(lcp_tau), lcp_reduction
        self.lcp_kind = lcp_kind
        self.lcp_subsample, self.lcp_crop = lcp_subsample, lcp_crop
        self.forward_tol, self.test_tol = float(forward_tol), float(test_tol)
        self.solver, self.test_solver = solver, test_solver or solver
        self.anderson_m = anderson_m
        self.diagnose = False
        self.last_result: Optional[EquilibriumResult] = None
        self.last_lcp_sample: Union[None, torch.Tensor, Tuple[int, int, int, int]] = None
        self.last_diagnostics: Optional[Dict[str, float]] = None

    def _lcp_sampler(self, x: torch.Tensor) -> Union[None, BatchSubsample, SpatialCrop]:
        if self.mode not in PENALISED_MODES:
            return None
        if self.lcp_subsample is not None:
            return BatchSubsample(partial(_step_on_rows, self.cell, x), self.lcp_subsample)
        if self.lcp_crop:
            return SpatialCrop(partial(_step_on_crop, self.cell, x), self.lcp_crop)
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the cell to equilibrium.

        Args:
            x: drive, shape (B, C, H, W) (B may be 0).

        Returns:
            the final state ``h_T``, shape (B, C, H, W).
        """
        if self.training:
            steps, tol, solver = self.steps, self.forward_tol, self.solver
        else:
            steps, tol, solver = self.test_steps or self.steps, self.test_tol, self.test_solver
        options = {
            "forward_tol": tol,
            "solver": solver,
            "neumann_tol": self.neumann_tol,
            "lcp_reduction": self.lcp_reduction,
            "lcp_kind": self.lcp_kind,
        }
        if solver == "anderson":
            options["anderson_m"] = self.anderson_m
        sampler = self._lcp_sampler(x)
        if sampler is not None:
            options["lcp_subsample"] = sampler
        result = equilibrium(
            partial(self.cell, x),
            torch.zeros_like(x),
            mode=self.mode,
            steps=steps,
            neumann_steps=self.neumann_steps,
            lcp_tau=self.lcp_tau,
            check=False,  # validated once, when this module was built
            **options,
        )
        # Keep diagnostics and the penalty; drop the state's graph reference so a
        # stored result never holds the forward graph alive.
        self.last_result = dataclasses.replace(result, state=result.state.detach())
        # The sampler's closure holds the drive: keep only what it chose.
        self.last_lcp_sample = None
        if isinstance(sampler, BatchSubsample):
            self.last_lcp_sample = sampler.last_index
        elif isinstance(sampler, SpatialCrop):
            self.last_lcp_sample = sampler.last_box
        self.last_diagnostics = None
        if self.diagnose:
            self.last_diagnostics = cell_diagnostics(self.cell, x, result.state, self.lcp_tau)
        return result.state

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, steps={self.steps}, test_steps={self.test_steps or self.steps}, "
            f"neumann_steps={self.neumann_steps}, lcp_tau={self.lcp_tau}, "
            f"lcp_reduction={self.lcp_reduction!r}, lcp_kind={self.lcp_kind!r}, "
            f"lcp_subsample={self.lcp_subsample}, "
            f"lcp_crop={self.lcp_crop}"
        )
