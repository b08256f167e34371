"""One training step of the hGRU refiner alone, per training arm and drive shape (mask-head
ROIs, an FPN level): bytes autograd saves (forward and penalty), the CUDA peak, the fastest
seconds per step, the final residual, the Neumann terms used and the penalty."""

import contextlib
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..crbp import Arm, HGRUCell, RecurrentRefiner
from ..crbp.memory import SavedTensorBytes
from .measure import measure_step
from .report import markdown_table

DEFAULT_ARMS = ("bptt:1", "bptt:3", "bptt:5", "bptt:10", "rbp:20", "crbp:5", "crbp:20")
DEFAULT_ARMS += ("crbp:40", "crbp:20:sub0.25", "crbp:20:sub2", "crbp:20:crop16")
#: The saved-bytes ratio column divides by this arm's figure (when it ran).
REFERENCE_ARM = "rbp:20"


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
    """:func:`time_step` for every scale and arm (one seeded cell and drive per scale) after a
    small warm-up step; a list of ``(scale, shape, arm, figures)``."""
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
