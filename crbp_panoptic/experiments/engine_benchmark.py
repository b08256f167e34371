"""One training step of the hGRU refiner alone: per training arm, and against torchdeq.

* :func:`benchmark`: for each arm (:func:`~crbp_panoptic.crbp.parse_arm`) and drive shape
  (:func:`shapes`: mask head ROIs x C x 14 x 14, an FPN level images x C x H x W), the bytes
  autograd saves (:class:`~crbp_panoptic.crbp.memory.SavedTensorBytes`, forward and
  penalty), the CUDA peak above the start, the fastest wall and CPU seconds per step,
  the final residual, the Neumann terms used and the penalty.
* :func:`compare`: torchdeq (not a dependency: ``pip install torchdeq==0.1.0 --no-deps``)
  runs the same algorithm as the ``rbp`` mode, but linearises the adjoint at ``h_T`` where
  this engine uses ``h_{T-1}``. It first checks in float64 at the fixed point that both
  give the same parameter gradients, then measures the peak allocated bytes and time of
  a step of torchdeq's IFT (default and ``hook_ift``) and of this engine's arms.
"""

import contextlib
import copy
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..crbp import Arm, HGRUCell, RecurrentRefiner, parse_arm
from ..crbp.memory import SavedTensorBytes
from .measure import measure_step
from .report import markdown_table

DEFAULT_ARMS = ("bptt:1", "bptt:3", "bptt:5", "bptt:10", "rbp:20", "crbp:5", "crbp:20")
DEFAULT_ARMS += ("crbp:40", "crbp:20:sub0.25", "crbp:20:sub2", "crbp:20:crop16")
#: The saved-bytes ratio column divides by this arm's figure (when it ran).
REFERENCE_ARM = "rbp:20"
#: This engine's arms against torchdeq (``{steps}`` filled in).
TORCHDEQ_ARMS = ("rbp:{steps}", "crbp:{steps}", "crbp:{steps}:sub0.25")


def _loss(state: torch.Tensor) -> torch.Tensor:
    return state.float().square().mean()


def _engine_step(refiner: RecurrentRefiner, x: torch.Tensor, saved: Optional[list] = None):
    """A training step of ``refiner`` on ``x``; with ``saved``, appends the bytes saved."""

    def step():
        with SavedTensorBytes() if saved is not None else contextlib.nullcontext() as hooks:
            out = refiner(x)
            lcp = refiner.last_result.lcp
        if saved is not None:
            saved.append(hooks.bytes)
        loss = _loss(out) + lcp
        loss.backward()
        return loss.detach()

    return step


def _refiner(cell, arm: Arm, neumann_steps: int) -> RecurrentRefiner:
    return RecurrentRefiner(cell=cell, **arm.refiner_kwargs(neumann_steps=neumann_steps)).train()


def time_step(cell: HGRUCell, x: torch.Tensor, arm: Arm, neumann_steps: int, repeats=1) -> Dict:
    """One training step of ``cell`` under ``arm``: its saved bytes, then ``repeats`` timed.

    Returns:
        dict: ``saved`` (bytes), ``peak`` (CUDA bytes or None), ``time``, ``cpu`` (the
        fastest seconds), ``residual``, ``neumann`` (terms used or "-"), ``cut``, ``lcp``.
    """
    cuda = x.device.type == "cuda"
    refiner, saved = _refiner(cell, arm, neumann_steps), []

    def zero():
        cell.zero_grad(set_to_none=True)
        x.grad = None

    zero()
    _engine_step(refiner, x, saved)()
    m = measure_step(
        _engine_step(refiner, x), iters=repeats, cuda=cuda,
        memory="allocated" if cuda else None, before_each=zero,
    )  # fmt: skip
    res = refiner.last_result
    return {
        "saved": saved[0], "peak": m.get("peak_bytes"), "time": m["fastest"],
        "cpu": m["fastest_cpu"], "residual": res.residual, "lcp": res.lcp.item(),
        "neumann": res.backward_info.get("neumann_terms", "-"),
        "cut": res.backward_info.get("neumann_cut", False),
    }  # fmt: skip


def shapes(channels: int, rois: int, roi_size: int, images: int, fpn_hw) -> Dict[str, Tuple]:
    """The drive shape of each scale: ``mask`` (rois, C, s, s) and ``fpn`` (images, C, H, W)."""
    return {"mask": (rois, channels, roi_size, roi_size), "fpn": (images, channels, *fpn_hw)}


def groups(num_groups: int, channels: int) -> int:
    """The GroupNorm groups a cell of ``channels`` gets: ``num_groups`` reduced to divide C."""
    return math.gcd(num_groups, channels)


def _cell(channels: int, num_groups: int, gala: bool = False, seed: int = 0) -> HGRUCell:
    torch.manual_seed(seed)
    return HGRUCell(channels, num_groups=groups(num_groups, channels), gala=gala)


def benchmark(
    arms: Sequence[Arm], scale_shapes: Dict[str, Tuple[int, ...]], *, num_groups: int = 32,
    gala: bool = False, neumann_steps: int = 15, repeats: int = 1, device="cpu", seed: int = 0,
    log=None,
) -> List[Tuple[str, Tuple[int, ...], Arm, Dict]]:  # fmt: skip
    """:func:`time_step` for every scale and arm, one seeded cell and drive per scale, after
    a small warm-up step (one-time costs).

    Returns:
        list of ``(scale, shape, arm, figures)``.
    """
    device = torch.device(device)
    channels = next(iter(scale_shapes.values()))[1]
    warm = _cell(channels, num_groups, gala, seed).to(device)
    time_step(warm, torch.randn(2, channels, 8, 8, device=device), Arm("crbp", 2), 2)
    rows = []
    for scale, shape in scale_shapes.items():
        cell = _cell(channels, num_groups, gala, seed).to(device)
        x = torch.randn(shape, device=device, requires_grad=True)
        for arm in arms:
            r = time_step(cell, x, arm, neumann_steps, repeats)
            rows.append((scale, tuple(shape), arm, r))
            if log is not None:
                log(f"[{scale}] {arm.name}: saved {_mib(r['saved'])} MiB, {r['time']:.2f} s")
    return rows


def table(rows) -> List[str]:
    """The markdown table of :func:`benchmark`'s rows."""
    refs = {scale: r["saved"] for scale, _, arm, r in rows if arm.name == REFERENCE_ARM}
    head = ["scale", "input", "arm", "saved MiB", f"saved / {REFERENCE_ARM}", "peak MiB (CUDA)"]
    head += ["wall s / step", "CPU s / step", "residual", "Neumann terms", "LCP"]
    return markdown_table(head, [
        (scale, _size(shape), arm.name, _mib(r["saved"]),
         f"{r['saved'] / refs[scale]:.2f}" if refs.get(scale) else "-", _mib(r["peak"]),
         f"{r['time']:.2f}", f"{r['cpu']:.2f}", f"{r['residual']:.1e}",
         f"{r['neumann']}" + (" (cut)" if r["cut"] else ""), f"{r['lcp']:.2e}")
        for scale, shape, arm, r in rows
    ])  # fmt: skip


def _mib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def _size(shape) -> str:
    return "x".join(map(str, shape))


def torchdeq_step(
    cell: HGRUCell, x: torch.Tensor, steps: int, neumann_steps: int, hook_ift: bool = False
) -> Callable[[], torch.Tensor]:
    """A training step of ``cell`` through torchdeq's IFT, as a callable returning the loss.

    ``steps - 1`` solver iterations without autograd plus the tracked step, and
    ``neumann_steps + 1`` adjoint iterations from zero, which sum the same ``K + 1`` terms
    as the engine's Neumann series; tolerances 0, so both run every step.
    """
    try:
        from torchdeq import get_deq
    except ImportError as e:
        raise ImportError(
            "torchdeq is not installed; it is needed for this comparison only: "
            "pip install torchdeq==0.1.0 --no-deps"
        ) from e
    deq = get_deq(
        ift=True, hook_ift=hook_ift, f_solver="fixed_point_iter", b_solver="fixed_point_iter",
        f_max_iter=steps - 1, b_max_iter=neumann_steps + 1, f_tol=0.0, b_tol=0.0,
    )  # fmt: skip
    deq.train()

    def step() -> torch.Tensor:
        z_out, _ = deq(lambda z: cell(x, z), torch.zeros_like(x))
        loss = _loss(z_out[-1])
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
    ours = _grads(cell, _engine_step(_refiner(cell, Arm("rbp", steps), neumann_steps), x))
    theirs = _grads(cell, torchdeq_step(cell, x, steps, neumann_steps))
    return max(float((t - o).norm() / o.norm().clamp_min(1e-30)) for o, t in zip(ours, theirs))


def compare(
    shape: Sequence[int], *, steps: int = 20, neumann_steps: int = 15,
    arms: Optional[Sequence[str]] = None, num_groups: int = 8, repeats: int = 3,
    check_steps: int = 150, seed: int = 0, log: Optional[Callable[[str], None]] = None,
) -> Dict:  # fmt: skip
    """Check gradients, then measure torchdeq's IFT and this engine's arms on one drive.

    Args:
        shape: the drive's shape (B, C, H, W).
        steps, neumann_steps: forward evaluations T and adjoint terms K of every arm.
        arms: this engine's arms, each with ``steps`` steps (default :data:`TORCHDEQ_ARMS`).
        num_groups: the cell's GroupNorm groups (reduced to divide C).
        repeats: timed steps per arm (the fastest is kept).
        check_steps: forward steps of the float64 gradient check (enough to converge).

    Returns:
        dict: ``shape``, ``steps``, ``neumann_steps``, ``check_steps``, ``gradient_gap``
        (float64, at ``check_steps``), ``gradient_gap_at_T`` (float32, at ``steps``) and
        ``rows`` (``(name, {"peak", "time", "cpu"})``, torchdeq's first).
    """
    parsed = [parse_arm(a.format(steps=steps)) for a in arms or TORCHDEQ_ARMS]
    wrong = [a.name for a in parsed if not a.recurrent or a.steps != steps]
    if wrong:
        raise ValueError(f"arms {wrong}: every arm must be recurrent with {steps} steps")
    cell = _cell(shape[1], num_groups, seed=seed).train()
    x = torch.randn(*shape)
    exact = gradient_gap(copy.deepcopy(cell).double(), x.double(), check_steps, neumann_steps)
    at_t = gradient_gap(cell, x, steps, neumann_steps)
    candidates = [
        ("torchdeq IFT", torchdeq_step(cell, x, steps, neumann_steps)),
        ("torchdeq IFT (hook_ift)", torchdeq_step(cell, x, steps, neumann_steps, True)),
    ]
    candidates += [(a.label, _engine_step(_refiner(cell, a, neumann_steps), x)) for a in parsed]
    rows = []
    for name, step in candidates:
        step()  # warm-up
        m = measure_step(
            step, iters=repeats, memory="allocated",
            before_each=lambda: cell.zero_grad(set_to_none=True),
        )  # fmt: skip
        rows.append(
            (name, {"peak": m["peak_bytes"], "time": m["fastest"], "cpu": m["fastest_cpu"]})
        )
        if log is not None:
            log(f"[{_size(shape)}] {name}: {rows[-1][1]}")
    return {
        "shape": list(shape), "steps": steps, "neumann_steps": neumann_steps,
        "check_steps": check_steps, "gradient_gap": exact, "gradient_gap_at_T": at_t, "rows": rows,
    }  # fmt: skip


def torchdeq_table(result: Dict) -> List[str]:
    """:func:`compare`'s result as a paragraph and a table, ratios to torchdeq's default IFT."""
    ref = result["rows"][0][1]
    x = "x torchdeq IFT"
    return [
        f"Drive {_size(result['shape'])}, {result['steps']} forward steps, "
        f"{result['neumann_steps']} adjoint terms. Largest relative difference of the "
        f"parameter gradients, torchdeq IFT vs this engine's RBP: "
        f"{result['gradient_gap']:.1e} at the fixed point (float64, "
        f"{result['check_steps']} forward steps), {result['gradient_gap_at_T']:.1e} after "
        f"{result['steps']} steps (the two linearise the step at consecutive iterates).",
        "",
    ] + markdown_table(
        ["arm", "peak MiB", x, "wall s / step", x, "CPU s / step", x],
        [
            (name, f"{r['peak'] / 2**20:.1f}", f"{r['peak'] / ref['peak']:.2f}", f"{r['time']:.3f}",
             f"{r['time'] / ref['time']:.2f}", f"{r['cpu']:.3f}", f"{r['cpu'] / ref['cpu']:.2f}")
            for name, r in result["rows"]
        ],
    )  # fmt: skip
