"""Memory and time of one training step of the hGRU refiner alone, per training arm.

Torch only (no Detectron2). For an arm (:func:`~crbp_panoptic.crbp.parse_arm`: ``bptt:1``,
``crbp:20``, ``crbp:20:sub0.25``, ``crbp:20:crop16``), :func:`time_step` runs forward +
backward of a :class:`~crbp_panoptic.crbp.RecurrentRefiner` on a random drive and reports:

* bytes autograd saves for backward (:class:`~crbp_panoptic.crbp.memory.SavedTensorBytes`,
  over the forward and the penalty);
* on CUDA, the peak of ``torch.cuda.max_memory_allocated`` over forward and backward,
  above what was allocated before the step;
* wall seconds and process CPU seconds (all threads) per step, the fastest of ``repeats``;
* the final forward residual, the Neumann terms used and the penalty value.

Two scales (:func:`shapes`): the mask head (ROIs x C x 14 x 14) and an FPN level
(images x C x H x W).
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..crbp import Arm, HGRUCell, RecurrentRefiner
from .measure import Clock, SavedTensorBytes

__all__ = [
    "DEFAULT_ARMS",
    "REFERENCE_ARM",
    "benchmark",
    "compile_table",
    "compiled_step",
    "shapes",
    "table",
    "time_step",
]

DEFAULT_ARMS = (
    "bptt:1",
    "bptt:3",
    "bptt:5",
    "bptt:10",
    "rbp:20",
    "crbp:5",
    "crbp:20",
    "crbp:40",
    "crbp:20:sub0.25",
    "crbp:20:sub2",
    "crbp:20:crop16",
)
#: The saved-bytes ratio column divides by this arm's figure (when it ran).
REFERENCE_ARM = "rbp:20"


def _one_step(refiner, x, record: bool):
    """Forward (saved tensors counted when ``record``) + penalty + backward."""
    hooks = SavedTensorBytes()
    if record:
        with hooks:
            out = refiner(x)
            lcp = refiner.last_result.lcp
    else:
        out = refiner(x)
        lcp = refiner.last_result.lcp
    loss = out.float().square().mean() + lcp
    loss.backward()
    return hooks.bytes


def time_step(
    cell: HGRUCell, x: torch.Tensor, arm: Arm, neumann_steps: int, repeats: int = 1
) -> Dict:
    """One training step of ``cell`` under ``arm``, ``repeats`` times; figures of the first
    (memory) and the fastest (time).

    Args:
        cell: the hGRU cell (its gradients are reset before each step).
        x (Tensor): the drive, (B, C, H, W), ``requires_grad``.
        arm: a recurrent arm.
        neumann_steps: K, the RBP backward's Neumann terms.
        repeats: timed steps.

    Returns:
        dict: ``saved`` (bytes), ``peak`` (CUDA bytes or None), ``time``, ``cpu`` (seconds),
        ``residual``, ``neumann`` (terms used or "-"), ``cut`` (bool), ``lcp`` (float).
    """
    device = x.device
    cuda = device.type == "cuda"
    refiner = RecurrentRefiner(cell=cell, **arm.refiner_kwargs(neumann_steps=neumann_steps))
    refiner.train()
    times: List[float] = []
    cpu_times: List[float] = []
    saved, peak, base = 0, None, 0
    for rep in range(repeats):
        cell.zero_grad(set_to_none=True)
        x.grad = None
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        with Clock(cuda) as clock:
            nbytes = _one_step(refiner, x, record=rep == 0)
        times.append(clock.seconds)
        cpu_times.append(clock.cpu_seconds)
        if rep == 0:
            saved = nbytes
            if cuda:
                peak = torch.cuda.max_memory_allocated(device) - base
    res = refiner.last_result
    return {
        "saved": saved,
        "peak": peak,
        "time": min(times),
        "cpu": min(cpu_times),
        "residual": res.residual,
        "neumann": res.backward_info.get("neumann_terms", "-"),
        "cut": res.backward_info.get("neumann_cut", False),
        "lcp": res.lcp.item(),
    }


def shapes(
    channels: int, rois: int, roi_size: int, images: int, fpn_hw: Tuple[int, int]
) -> Dict[str, Tuple[int, ...]]:
    """The drive shape of each scale: ``mask`` (rois, C, s, s) and ``fpn`` (images, C, H, W)."""
    return {"mask": (rois, channels, roi_size, roi_size), "fpn": (images, channels, *fpn_hw)}


def benchmark(
    arms: Sequence[Arm],
    scale_shapes: Dict[str, Tuple[int, ...]],
    *,
    num_groups: int = 32,
    gala: bool = False,
    neumann_steps: int = 15,
    repeats: int = 1,
    device="cpu",
    seed: int = 0,
    log=None,
) -> List[Tuple[str, Tuple[int, ...], Arm, Dict]]:
    """:func:`time_step` for every scale and arm, one seeded cell and drive per scale.

    A small warm-up step first, so that the first arm does not pay one-time costs.
    ``num_groups`` is reduced to divide the channel count.

    Returns:
        list of ``(scale, shape, arm, figures)``.
    """
    device = torch.device(device)
    channels = next(iter(scale_shapes.values()))[1]
    groups = math.gcd(num_groups, channels)
    torch.manual_seed(seed)
    warm = HGRUCell(channels, num_groups=groups, gala=gala).to(device)
    warm_x = torch.randn(2, channels, 8, 8, device=device, requires_grad=True)
    time_step(warm, warm_x, Arm("crbp", 2), 2)
    rows = []
    for scale, shape in scale_shapes.items():
        torch.manual_seed(seed)
        cell = HGRUCell(channels, num_groups=groups, gala=gala).to(device)
        x = torch.randn(shape, device=device, requires_grad=True)
        for arm in arms:
            r = time_step(cell, x, arm, neumann_steps, repeats)
            rows.append((scale, tuple(shape), arm, r))
            if log is not None:
                log(f"[{scale}] {arm.name}: saved {_mib(r['saved'])} MiB, {r['time']:.2f} s")
    return rows


def _mib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def table(rows, header: str) -> str:
    """The markdown table of :func:`benchmark`'s rows under a one-paragraph ``header``."""
    lines = [
        header,
        "",
        "| scale | input | arm | saved MiB | saved / RBP-20 | peak MiB (CUDA) | wall s / step "
        "| CPU s / step | residual | Neumann terms | LCP |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    refs = {scale: r["saved"] for scale, _, arm, r in rows if arm.name == REFERENCE_ARM}
    for scale, shape, arm, r in rows:
        ref = refs.get(scale)
        ratio = f"{r['saved'] / ref:.2f}" if ref else "-"
        neumann = f"{r['neumann']}" + (" (cut)" if r["cut"] else "")
        lines.append(
            f"| {scale} | {'x'.join(map(str, shape))} | {arm.name} | {_mib(r['saved'])} | {ratio} "
            f"| {_mib(r['peak'])} | {r['time']:.2f} | {r['cpu']:.2f} | {r['residual']:.1e} "
            f"| {neumann} | {r['lcp']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def _time_calls(fn, x, h, repeats: int) -> float:
    """Fastest CPU seconds of ``repeats`` batches of 10 calls, per call."""
    best = math.inf
    with torch.no_grad():
        for _ in range(repeats):
            with Clock() as clock:
                for _ in range(10):
                    fn(x, h)
            best = min(best, clock.cpu_seconds / 10)
    return best


def compiled_step(cell: HGRUCell, shape: Tuple[int, ...], repeats: int = 5) -> Dict:
    """One inference step of ``cell`` eager and through ``torch.compile``, on a random drive.

    Returns:
        dict: ``eager`` and ``compiled`` (CPU seconds per step, the fastest of ``repeats``),
        ``compile_seconds`` (wall time of the first compiled call) and ``error`` (None, or
        why ``torch.compile`` failed; then ``compiled`` is None).
    """
    x, h = torch.randn(shape), torch.rand(shape)
    out = {"eager": _time_calls(cell, x, h, repeats), "compiled": None}
    out.update(compile_seconds=None, error=None)
    try:
        compiled = torch.compile(cell)
        with Clock() as clock, torch.no_grad():
            compiled(x, h)
    except Exception as e:  # no C++ compiler, unsupported platform, ...
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return out
    out["compile_seconds"] = clock.seconds
    out["compiled"] = _time_calls(compiled, x, h, repeats)
    return out


def compile_table(rows, header: str) -> str:
    """Markdown table of ``(scale, shape, compiled_step figures)`` rows."""
    lines = [
        header,
        "",
        "| scale | input | eager ms / step | compiled ms / step | compiled / eager "
        "| first compiled call s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for scale, shape, r in rows:
        size = "x".join(map(str, shape))
        if r["compiled"] is None:
            lines.append(f"| {scale} | {size} | {r['eager'] * 1e3:.2f} | {r['error']} | - | - |")
            continue
        lines.append(
            f"| {scale} | {size} | {r['eager'] * 1e3:.2f} | {r['compiled'] * 1e3:.2f} | "
            f"{r['compiled'] / r['eager']:.2f} | {r['compile_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"
