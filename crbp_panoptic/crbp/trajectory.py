"""Step a cell from a state and watch it settle: the one trajectory helper (torch only).

:func:`iterate` runs ``h_t = step(h_{t-1})`` without a graph and yields, per step, the state
and its relative residual ``||h_t - h_{t-1}|| / ||h_t||``
(:func:`~crbp_panoptic.crbp.solvers.relative_residual`); :func:`trajectory` keeps them and
adds the drift ``||h_t - h_T|| / ||h_T||`` from a reference step ``T``.
:func:`capture_inputs` records what modules receive, to step their cells afterwards (or
right away) on the same input.
"""

import contextlib
import dataclasses
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .solvers import relative_residual

__all__ = ["Trajectory", "capture_inputs", "iterate", "trajectory"]


@dataclasses.dataclass
class Trajectory:
    """What :func:`trajectory` recorded.

    Attributes:
        residuals: ``||h_t - h_{t-1}|| / ||h_t||`` for t = 1..N.
        drift: ``||h_t - h_T|| / ||h_T||`` for t = 1..N (empty without a reference step).
        states: ``h_1 .. h_N``, detached (empty unless kept).
    """

    residuals: List[float]
    drift: List[float]
    states: List[torch.Tensor]


def iterate(
    step: Callable[[torch.Tensor], torch.Tensor], h0: torch.Tensor, steps: int
) -> Iterator[Tuple[int, torch.Tensor, float]]:
    """Yield ``(t, h_t, ||h_t - h_{t-1}|| / ||h_t||)`` for t = 1..steps, without a graph.

    Args:
        step: the map ``h -> h'`` (e.g. ``functools.partial(cell, x)``).
        h0: the state to start from.
        steps: number of steps (>= 0).
    """
    h = h0
    for t in range(1, steps + 1):
        with torch.no_grad():
            new = step(h).detach()
        yield t, new, float(relative_residual(new, h))
        h = new


def trajectory(
    step: Callable[[torch.Tensor], torch.Tensor],
    h0: torch.Tensor,
    steps: int,
    ref_step: Optional[int] = None,
    keep_states: bool = False,
) -> Trajectory:
    """Run :func:`iterate` for ``steps`` steps and record residuals and drift.

    Args:
        ref_step: T of the drift, 1 <= T <= steps (None: no drift).
        keep_states: keep every state in the result.

    Raises:
        ValueError: ``ref_step`` outside 1..steps.
    """
    if ref_step is not None and not 1 <= ref_step <= steps:
        raise ValueError(f"ref_step={ref_step}; must lie in 1..steps={steps}")
    residuals, states = [], []
    for _t, h, res in iterate(step, h0, steps):
        residuals.append(res)
        states.append(h)
    drift = []
    if ref_step is not None:
        ref = states[ref_step - 1]
        drift = [float(relative_residual(ref, h)) for h in states]
    return Trajectory(residuals, drift, states if keep_states else [])


@contextlib.contextmanager
def capture_inputs(
    modules: Iterable[Tuple[str, nn.Module]],
    record: Optional[Callable[[nn.Module, torch.Tensor], object]] = None,
) -> Iterator[Dict[str, list]]:
    """While the block runs, record every call's first positional input of each module.

    Args:
        modules: ``(name, module)`` pairs (e.g. ``model.named_modules()`` filtered).
        record: what to keep of a call, ``record(module, x)``; None results are not kept.
            Default: ``x`` detached.

    Yields:
        dict: name -> list of what was kept, one item per call. The hooks go on exit.
    """
    record = record or (lambda module, x: x.detach())
    out: Dict[str, list] = {}
    handles = []
    for name, module in modules:
        calls = out.setdefault(name, [])

        def hook(mod, args, _calls=calls):
            item = record(mod, args[0])
            if item is not None:
                _calls.append(item)

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield out
    finally:
        for handle in handles:
            handle.remove()
