"""Residual and drift curves of the recurrent modules of a model, stepped past training.

For each :class:`~crbp_panoptic.crbp.RecurrentRefiner` of a model, the drive ``x`` it
received in one inference pass is captured, and its cell is stepped from ``h_0 = 0``:

* residual ``||h_t - h_{t-1}|| / ||h_t||`` (how far from a fixed point step t is),
* drift ``||h_t - h_T|| / ||h_T||`` (how far the state moved from the trained step T).
"""

import contextlib
from typing import Dict, List, Sequence, Tuple

import torch

from ..crbp.solvers import relative_residual
from ..modeling import recurrent_modules

__all__ = ["capture_drives", "relative_distance", "residual_curves", "residual_trajectory"]


def relative_distance(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``||a - ref|| / ||ref||`` (a 0-dim tensor; 0 when both are empty)."""
    diff = torch.linalg.vector_norm((a - ref).float())
    return diff / (torch.linalg.vector_norm(ref.float()) + 1e-12)


def residual_trajectory(
    cell, x: torch.Tensor, num_steps: int, ref_step: int
) -> Tuple[List[float], List[float]]:
    """Step ``h <- cell(x, h)`` from ``h_0 = 0`` for ``num_steps`` steps (no grad).

    Args:
        cell: a module ``cell(x, h) -> h'``; x, h: (B, C, H, W).
        x (Tensor): the drive, (B, C, H, W).
        num_steps (int): steps to run.
        ref_step (int): T of the drift, 1 <= T <= num_steps.

    Returns:
        (residual, drift): lists of ``num_steps`` floats, for t = 1..num_steps.

    Raises:
        ValueError: ``ref_step`` outside 1..num_steps.
    """
    if not 1 <= ref_step <= num_steps:
        raise ValueError(f"ref_step={ref_step} must lie in 1..num_steps={num_steps}")
    residual, states = [], []
    with torch.no_grad():
        h = torch.zeros_like(x)
        for _ in range(num_steps):
            h_new = cell(x, h)
            residual.append(float(relative_residual(h_new, h)))
            states.append(h_new)
            h = h_new
        ref = states[ref_step - 1]
        drift = [float(relative_distance(s, ref)) for s in states]
    return residual, drift


@contextlib.contextmanager
def capture_drives(model):
    """Record the drive ``x`` of every RecurrentRefiner call: yields ``{name: [x, ...]}``.

    The hooks are removed on exit.
    """
    drives: Dict[str, List[torch.Tensor]] = {}
    handles = []
    for name, module in recurrent_modules(model):
        drives[name] = []
        handles.append(
            module.register_forward_pre_hook(
                lambda mod, args, _name=name: drives[_name].append(args[0].detach())
            )
        )
    try:
        yield drives
    finally:
        for h in handles:
            h.remove()


def _accumulate(model, inputs, num_steps, ref_step):
    """Summed curves and counts per module over ``inputs`` (see :func:`residual_curves`)."""
    modules = dict(recurrent_modules(model))
    sums: Dict[str, Dict[str, list]] = {}
    counts: Dict[str, int] = {}
    for item in inputs:
        with torch.no_grad(), capture_drives(model) as drives:
            model([item])
        for name, xs in drives.items():
            for x in xs:
                if x.numel() == 0:
                    continue
                res, drift = residual_trajectory(modules[name].cell, x, num_steps, ref_step)
                acc = sums.setdefault(
                    name, {"residual": [0.0] * num_steps, "drift": [0.0] * num_steps}
                )
                acc["residual"] = [a + b for a, b in zip(acc["residual"], res)]
                acc["drift"] = [a + b for a, b in zip(acc["drift"], drift)]
                counts[name] = counts.get(name, 0) + 1
    return sums, counts


def residual_curves(
    model, inputs: Sequence[dict], num_steps: int, ref_step: int
) -> Dict[str, Dict]:
    """Per recurrent module of ``model``: the residual and drift curves, averaged over ``inputs``.

    Each input (a Detectron2 inference dict) is run alone through ``model`` in eval mode to
    capture the drives (the model's training mode is restored afterwards); modules that saw
    an empty drive (e.g. a mask head with no ROIs) skip that image.

    Returns:
        dict: ``{module: {"residual": [...], "drift": [...], "images": n}}``, plus ``"mean"``
        over the modules (modules with no drive at all are left out).
    """
    was_training = model.training
    model.eval()
    try:
        sums, counts = _accumulate(model, inputs, num_steps, ref_step)
    finally:
        model.train(was_training)
    out = {
        name: {key: [v / counts[name] for v in vals] for key, vals in acc.items()}
        | {"images": counts[name]}
        for name, acc in sums.items()
    }
    if out:
        n = len(out)
        out["mean"] = {
            key: [sum(out[m][key][t] for m in sums) / n for t in range(num_steps)]
            for key in ("residual", "drift")
        } | {"images": min(counts.values())}
    return out
