"""The engine against torchdeq's implicit differentiation, on the same hGRU and drive.

torchdeq (Geng and Kolter, the reference DEQ library) is not a dependency: install it for
this comparison only (``pip install torchdeq==0.1.0 --no-deps``). Its IFT training step
runs the fixed-point solver without autograd, one tracked step at the solution, and a
fixed-point solve of the adjoint ``g = J^T g + dL/dz`` in the backward pass: the same
algorithm as this engine's ``rbp`` mode, with one difference away from a fixed point:
torchdeq linearises the step at ``h_T`` for the adjoint, this engine at ``h_{T-1}``.
:func:`compare` therefore first checks, in float64 with enough forward steps to reach the
fixed point, that the two give the same parameter gradients (same number of adjoint
terms), and reports how far apart they are at the benchmark's own ``T``; then it
measures one training step of each:

* torchdeq IFT (its default ``torch.autograd.Function`` form, and ``hook_ift``);
* this engine's ``rbp``, ``crbp`` (exact penalty) and ``crbp`` with a cheap penalty.

Figures per arm: peak bytes torch allocated during the step (forward, loss, penalty and
backward; :func:`~crbp_panoptic.experiments.measure.peak_allocated_bytes`) and the
fastest wall and CPU seconds of ``repeats`` steps.
"""

import copy
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..crbp import Arm, HGRUCell, RecurrentRefiner, parse_arm
from .measure import Clock, peak_allocated_bytes

__all__ = ["OUR_ARMS", "compare", "gradient_gap", "table", "torchdeq_step"]

#: This engine's arms in the comparison (the grammar of :func:`crbp.parse_arm`, with the
#: step count filled in).
OUR_ARMS = ("rbp:{steps}", "crbp:{steps}", "crbp:{steps}:sub0.25")


def _import_torchdeq():
    try:
        from torchdeq import get_deq
    except ImportError as e:
        raise ImportError(
            "torchdeq is not installed; it is needed for this comparison only: "
            "pip install torchdeq==0.1.0 --no-deps"
        ) from e
    return get_deq


def torchdeq_step(
    cell: HGRUCell, x: torch.Tensor, steps: int, neumann_steps: int, hook_ift: bool = False
) -> Callable[[], torch.Tensor]:
    """A training step of ``cell`` through torchdeq's IFT, as a callable that returns the loss.

    The steps match this engine's: ``steps - 1`` solver iterations without autograd plus
    the tracked step (``steps`` evaluations of the cell), and ``neumann_steps + 1``
    iterations of the adjoint solve from zero, which sum the same ``K + 1`` terms
    ``sum_{k<=K} (J^T)^k g`` as the engine's Neumann series. Tolerances are 0, so both
    run every step.
    """
    get_deq = _import_torchdeq()
    deq = get_deq(
        ift=True,
        hook_ift=hook_ift,
        f_solver="fixed_point_iter",
        b_solver="fixed_point_iter",
        f_max_iter=steps - 1,
        b_max_iter=neumann_steps + 1,
        f_tol=0.0,
        b_tol=0.0,
    )
    deq.train()

    def step() -> torch.Tensor:
        z_out, _ = deq(lambda z: cell(x, z), torch.zeros_like(x))
        loss = _loss(z_out[-1])
        loss.backward()
        return loss.detach()

    return step


def _loss(state: torch.Tensor) -> torch.Tensor:
    return state.float().square().mean()


def _engine_step(cell: HGRUCell, x: torch.Tensor, arm: Arm, neumann_steps: int):
    refiner = RecurrentRefiner(cell=cell, **arm.refiner_kwargs(neumann_steps=neumann_steps))
    refiner.train()

    def step() -> torch.Tensor:
        loss = _loss(refiner(x)) + refiner.last_result.lcp
        loss.backward()
        return loss.detach()

    return step


def _grads(cell: HGRUCell, step: Callable[[], torch.Tensor]) -> List[torch.Tensor]:
    cell.zero_grad(set_to_none=True)
    step()
    return [p.grad.clone() for p in cell.parameters()]


def gradient_gap(cell: HGRUCell, x: torch.Tensor, steps: int, neumann_steps: int) -> float:
    """Largest relative difference ``||g_torchdeq - g_rbp|| / ||g_rbp||`` over the cell's
    parameters, between torchdeq's IFT and this engine's ``rbp`` mode."""
    ours = _grads(cell, _engine_step(cell, x, Arm("rbp", steps), neumann_steps))
    theirs = _grads(cell, torchdeq_step(cell, x, steps, neumann_steps))
    return max(float((t - o).norm() / o.norm().clamp_min(1e-30)) for o, t in zip(ours, theirs))


def _measure(cell: HGRUCell, step: Callable[[], torch.Tensor], repeats: int) -> Dict:
    cell.zero_grad(set_to_none=True)
    peak = peak_allocated_bytes(step)
    wall, cpu = math.inf, math.inf
    for _ in range(repeats):
        cell.zero_grad(set_to_none=True)
        with Clock() as clock:
            step()
        wall, cpu = min(wall, clock.seconds), min(cpu, clock.cpu_seconds)
    return {"peak": peak, "time": wall, "cpu": cpu}


def compare(
    shape: Sequence[int],
    *,
    steps: int = 20,
    neumann_steps: int = 15,
    arms: Optional[Sequence[str]] = None,
    num_groups: int = 8,
    repeats: int = 3,
    check_steps: int = 150,
    seed: int = 0,
    log: Optional[Callable[[str], None]] = None,
) -> Dict:
    """Check gradients, then measure torchdeq's IFT and this engine's arms on one drive.

    Args:
        shape: the drive's shape (B, C, H, W) (ROIs or images).
        steps: forward evaluations of the cell (T) in every arm.
        neumann_steps: adjoint terms beyond ``g`` (K) in every arm.
        arms: this engine's arms, each with ``steps`` steps (default :data:`OUR_ARMS`).
        num_groups: the cell's GroupNorm groups (reduced to divide C).
        repeats: timed steps per arm (the fastest is kept).
        check_steps: forward steps of the float64 gradient check (enough to converge).

    Returns:
        dict: ``shape``, ``steps``, ``neumann_steps``, ``check_steps``,
        ``gradient_gap`` (float64, at ``check_steps``), ``gradient_gap_at_T`` (float32, at
        ``steps``) and ``rows`` (list of ``(name, figures)``, torchdeq's first).
    """
    torch.manual_seed(seed)
    channels = shape[1]
    cell = HGRUCell(channels, num_groups=math.gcd(num_groups, channels))
    cell.train()
    x = torch.randn(*shape)
    if arms is None:
        arms = [a.format(steps=steps) for a in OUR_ARMS]
    parsed = [parse_arm(a) for a in arms]
    wrong = [a.name for a in parsed if not a.recurrent or a.steps != steps]
    if wrong:
        raise ValueError(f"arms {wrong}: every arm must be recurrent with {steps} steps")
    exact = gradient_gap(copy.deepcopy(cell).double(), x.double(), check_steps, neumann_steps)
    at_t = gradient_gap(cell, x, steps, neumann_steps)
    candidates: List[Tuple[str, Callable]] = [
        ("torchdeq IFT", torchdeq_step(cell, x, steps, neumann_steps)),
        ("torchdeq IFT (hook_ift)", torchdeq_step(cell, x, steps, neumann_steps, True)),
    ]
    candidates += [(a.label, _engine_step(cell, x, a, neumann_steps)) for a in parsed]
    rows = []
    for name, step in candidates:
        step()  # warm-up
        rows.append((name, _measure(cell, step, repeats)))
        if log is not None:
            log(f"[{'x'.join(map(str, shape))}] {name}: {rows[-1][1]}")
    return {
        "shape": list(shape),
        "steps": steps,
        "neumann_steps": neumann_steps,
        "check_steps": check_steps,
        "gradient_gap": exact,
        "gradient_gap_at_T": at_t,
        "rows": rows,
    }


def table(result: Dict) -> str:
    """One markdown table of :func:`compare`'s result, ratios to torchdeq's default IFT."""
    rows = result["rows"]
    ref = rows[0][1]
    lines = [
        f"Drive {'x'.join(map(str, result['shape']))}, {result['steps']} forward steps, "
        f"{result['neumann_steps']} adjoint terms. Largest relative difference of the "
        f"parameter gradients, torchdeq IFT vs this engine's RBP: "
        f"{result['gradient_gap']:.1e} at the fixed point (float64, "
        f"{result['check_steps']} forward steps), {result['gradient_gap_at_T']:.1e} after "
        f"{result['steps']} steps (the two linearise the step at consecutive iterates).",
        "",
        "| arm | peak MiB | x torchdeq IFT | wall s / step | x torchdeq IFT | CPU s / step "
        "| x torchdeq IFT |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['peak'] / 2**20:.1f} | {r['peak'] / ref['peak']:.2f} | "
            f"{r['time']:.3f} | {r['time'] / ref['time']:.2f} | {r['cpu']:.3f} | "
            f"{r['cpu'] / ref['cpu']:.2f} |"
        )
    return "\n".join(lines) + "\n"
