"""The step-by-step dynamics of a trained model's recurrent modules, recorded at inference.

:func:`record_dynamics` is a context manager: while it is active, every
:class:`~crbp_panoptic.crbp.RecurrentRefiner` of a model (in eval mode) also iterates its
own cell ``h_t = cell(x, h_{t-1})`` from ``h_0 = 0`` for a chosen number of steps, on the
drive ``x`` that a forward pre-hook captures, and keeps every state. The model's output
is untouched (the refiner still runs its own ``test_steps``). The recorded states can be
read out for display: a channel summary for FPN levels, the mask logits of the top
detections for the recurrent mask head (:func:`mask_head_readout`).

The recorded trajectory is the plain fixed-point iteration, step by step; it ends at the
refiner's own output when the refiner runs fixed-point steps without an early stop
(``test_solver`` "fixed_point", ``test_tol`` 0: the defaults), which the tests check.
"""

import contextlib
import dataclasses
from functools import partial
from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch import nn

from crbp_panoptic.crbp import RecurrentRefiner
from crbp_panoptic.crbp.trajectory import capture_inputs, trajectory

__all__ = [
    "Trajectory",
    "channel_summary",
    "mask_head_readout",
    "record_dynamics",
    "trained_steps",
]


@dataclasses.dataclass
class Trajectory:
    """The states of one refiner call.

    Attributes:
        name: the refiner's module name in the model.
        states: ``h_1 .. h_N``, each (B, C, H, W), detached, on the CPU.
        residuals: ``||h_t - h_{t-1}|| / ||h_t||`` for t = 1..N (h_0 = 0, so the first is 1).
        trained_steps: the steps the refiner runs at test time (``test_steps or steps``).
    """

    name: str
    states: List[torch.Tensor]
    residuals: List[float]
    trained_steps: int


def trained_steps(refiner: RecurrentRefiner) -> int:
    """int: the number of steps ``refiner`` runs in eval mode."""
    return refiner.test_steps or refiner.steps


@contextlib.contextmanager
def record_dynamics(
    model: nn.Module, steps: Optional[int] = None
) -> Iterator[Dict[str, List[Trajectory]]]:
    """Record every recurrent module's trajectory while the block runs.

    Args:
        model: a model containing :class:`RecurrentRefiner` modules.
        steps: steps to record (None: each refiner's own test steps); may exceed them,
            to see whether the state stays at its equilibrium.

    Yields:
        dict: refiner name -> list of :class:`Trajectory`, one per call in eval mode
        (a Panoptic FPN calls each FPN refiner and the mask head refiner once per batch).

    Raises:
        ValueError: the model has no recurrent module, or ``steps`` < 1.
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps={steps}; must be >= 1")
    refiners = [(n, m) for n, m in model.named_modules() if isinstance(m, RecurrentRefiner)]
    if not refiners:
        raise ValueError(f"{type(model).__name__} has no RecurrentRefiner to record")
    names = {m: n for n, m in refiners}

    def record(module: RecurrentRefiner, x: torch.Tensor) -> Optional[Trajectory]:
        if module.training:
            return None
        n = steps or trained_steps(module)
        tr = trajectory(partial(module.cell, x), torch.zeros_like(x), n, keep_states=True)
        states = [h.cpu() for h in tr.states]
        return Trajectory(names[module], states, tr.residuals, trained_steps(module))

    with capture_inputs(refiners, record) as records:
        yield records


def channel_summary(state: torch.Tensor) -> torch.Tensor:
    """The per-position L2 norm over channels: (B, C, H, W) -> (B, H, W)."""
    return state.float().norm(dim=1)


def mask_head_readout(head: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The part of a :class:`~crbp_panoptic.modeling.CRBPMaskHead` after its refiner.

    Returns:
        a function: state (R, C, S, S) -> mask logits (R, num_classes, 2S, 2S), as
        ``CRBPMaskHead.layers`` computes them from the equilibrium.
    """

    @torch.no_grad()
    def readout(h: torch.Tensor) -> torch.Tensor:
        param = next(head.parameters())
        h = head.mask_recurrent_norm(h.to(device=param.device, dtype=param.dtype))
        return head.predictor(head.deconv_relu(head.deconv(h))).cpu()

    return readout
