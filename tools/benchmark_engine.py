#!/usr/bin/env python
"""Memory and time of one training step of the hGRU refiner under each gradient mode.

For every configuration (``mode-steps``, optionally ``-subF`` for a penalty on a
fraction ``F`` (with a dot, ``sub0.25``) or a count ``F`` (``sub2``) of the batch
rows, or ``-cropS`` for a penalty on a random ``S x S`` window of positions,
``crop16``) this runs one forward + backward of ``RecurrentRefiner`` on random
drive features and reports:

* bytes autograd saves for backward (distinct storages packed through
  ``torch.autograd.graph.saved_tensors_hooks``, over the forward and the penalty);
* on CUDA, the peak of ``torch.cuda.max_memory_allocated`` over forward and
  backward, above what was allocated before the step (optionally under
  ``torch.cuda.set_per_process_memory_fraction``);
* wall seconds and process CPU seconds (all threads) per step, the fastest of
  ``--repeats``; on a shared machine CPU seconds are the less disturbed measure;
* the final forward residual, Neumann terms used and the penalty value.

Two scales: the mask head (ROIs x C x 14 x 14) and an FPN level (images x C x H x W).
Defaults are scaled down to run in about two minutes on two CPU cores; ``--full``
uses the paper's sizes (256 ROIs x 256 ch x 14 x 14; 2 images x 256 ch x 200 x 304,
the P2 level of an 800 x 1216 input) which needs a GPU.

Example::

    python tools/benchmark_engine.py --out engine_benchmark.md
    python tools/benchmark_engine.py --full --device cuda --memory-fraction 0.9
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from crbp_panoptic.crbp import MODES, HGRUCell, RecurrentRefiner  # noqa: E402
from crbp_panoptic.crbp.memory import SavedTensorBytes  # noqa: E402

DEFAULT_CONFIGS = (
    "bptt-1,bptt-3,bptt-5,bptt-10,rbp-20,crbp-5,crbp-20,crbp-40,crbp-20-sub0.25,crbp-20-sub2,crbp-20-crop16"
)


def parse_config(text: str) -> Tuple[str, int, Dict[str, Any]]:
    """Parse ``MODE-STEPS[-subF|-cropS]`` into ``(mode, steps, cheap-penalty kwargs)``.

    ``"crbp-20"`` -> ``("crbp", 20, {})``; ``"crbp-20-sub0.25"`` ->
    ``("crbp", 20, {"lcp_subsample": 0.25})`` (a fraction of the batch rows);
    ``"crbp-20-sub2"`` -> ``{"lcp_subsample": 2}`` (a count of rows);
    ``"crbp-20-crop16"`` -> ``{"lcp_crop": 16}`` (a 16 x 16 window).
    """
    parts = text.strip().split("-")
    try:
        mode, steps = parts[0], int(parts[1])
        cheap: Dict[str, Any] = {}
        if len(parts) == 3 and parts[2].startswith("sub"):
            value = parts[2][3:]
            cheap["lcp_subsample"] = float(value) if "." in value else int(value)
        elif len(parts) == 3 and parts[2].startswith("crop"):
            cheap["lcp_crop"] = int(parts[2][4:])
            if cheap["lcp_crop"] < 1:
                raise ValueError
        if len(parts) > 3 or (len(parts) == 3 and not cheap):
            raise ValueError
    except (IndexError, ValueError):
        raise ValueError(
            f"config={text!r}; use MODE-STEPS[-subFRACTION|-subCOUNT|-cropSIDE], e.g. crbp-20-sub0.25, crbp-20-crop16"
        )
    if mode not in MODES:
        raise ValueError(f"config={text!r}: mode={mode!r}; choose from {sorted(MODES)}")
    return mode, steps, cheap


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(
    cell: HGRUCell,
    x: torch.Tensor,
    mode: str,
    steps: int,
    cheap: Dict[str, Any],
    neumann_steps: int,
    repeats: int,
) -> Dict[str, object]:
    device = x.device
    refiner = RecurrentRefiner(cell=cell, mode=mode, steps=steps, neumann_steps=neumann_steps, **cheap)
    refiner.train()
    times: List[float] = []
    cpu_times: List[float] = []
    saved, peak = 0, None
    for rep in range(repeats):
        cell.zero_grad(set_to_none=True)
        x.grad = None
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        hooks = SavedTensorBytes()
        t0, c0 = time.perf_counter(), time.process_time()
        if rep == 0:
            with hooks:
                out = refiner(x)
                lcp = refiner.last_result.lcp
        else:
            out = refiner(x)
            lcp = refiner.last_result.lcp
        loss = out.float().square().mean() + lcp
        loss.backward()
        sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        if rep == 0:
            saved = hooks.bytes
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) - base
        res = refiner.last_result
        del out, lcp, loss
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


def fmt_mb(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated (default {DEFAULT_CONFIGS})")
    parser.add_argument("--scales", default="mask,fpn", help="comma-separated subset of mask,fpn")
    parser.add_argument("--full", action="store_true", help="paper sizes (256 ROIs x 256 ch; 2 x 256 x 200 x 304)")
    parser.add_argument("--channels", type=int, default=None, help="C (default 64, or 256 with --full)")
    parser.add_argument("--rois", type=int, default=None, help="mask-head ROIs (default 32, 256 with --full)")
    parser.add_argument("--roi-size", type=int, default=14)
    parser.add_argument("--images", type=int, default=2, help="FPN batch size")
    parser.add_argument("--fpn-hw", default=None, help="FPN level HxW (default 48x64, 200x304 with --full)")
    parser.add_argument("--num-groups", type=int, default=32, help="GroupNorm groups (reduced to divide C)")
    parser.add_argument("--gala", action="store_true", help="GALA attention in the cell")
    parser.add_argument("--neumann-steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per config (the fastest is reported)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--memory-fraction", type=float, default=None, help="CUDA per-process memory fraction")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = parser.parse_args(argv)

    try:
        configs = [(c.strip(), parse_config(c)) for c in args.configs.split(",") if c.strip()]
    except ValueError as e:
        parser.error(str(e))
    scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    for s in scales:
        if s not in ("mask", "fpn"):
            parser.error(f"--scales contains {s!r}; choose from ['fpn', 'mask']")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and args.memory_fraction is not None:
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, device)
    channels = args.channels or (256 if args.full else 64)
    rois = args.rois or (256 if args.full else 32)
    hw = args.fpn_hw or ("200x304" if args.full else "48x64")
    fh, fw = (int(v) for v in hw.lower().split("x"))
    groups = math.gcd(args.num_groups, channels)
    shapes = {"mask": (rois, channels, args.roi_size, args.roi_size), "fpn": (args.images, channels, fh, fw)}

    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    header = (
        f"Engine benchmark: hGRU (C={channels}, GN groups={groups}, gala={args.gala}), "
        f"K={args.neumann_steps} Neumann terms, one training step (forward + backward), "
        f"torch {torch.__version__}, {machine}.\n\n"
        "| scale | input | config | saved MB | saved / rbp-20 | peak MB (CUDA) | wall s / step | CPU s / step "
        "| residual | Neumann terms | LCP |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    # one small warm-up step so the first configuration does not pay one-time costs
    torch.manual_seed(args.seed)
    warm_cell = HGRUCell(channels, num_groups=groups, gala=args.gala).to(device)
    run_config(warm_cell, torch.randn(2, channels, 8, 8, device=device, requires_grad=True), "crbp", 2, {}, 2, 1)
    for scale in scales:
        shape = shapes[scale]
        torch.manual_seed(args.seed)
        cell = HGRUCell(channels, num_groups=groups, gala=args.gala).to(device)
        x = torch.randn(shape, device=device, requires_grad=True)
        results = []
        for name, (mode, steps, cheap) in configs:
            r = run_config(cell, x, mode, steps, cheap, args.neumann_steps, args.repeats)
            results.append((name, r))
            print(f"[{scale}] {name}: saved {fmt_mb(r['saved'])} MB, {r['time']:.2f} s", file=sys.stderr, flush=True)
        ref = next((r["saved"] for n, r in results if n == "rbp-20"), None)
        for name, r in results:
            ratio = f"{r['saved'] / ref:.2f}" if ref else "-"
            neumann = f"{r['neumann']}" + (" (cut)" if r["cut"] else "")
            rows.append(
                f"| {scale} | {'x'.join(map(str, shape))} | {name} | {fmt_mb(r['saved'])} | {ratio} | "
                f"{fmt_mb(r['peak'])} | {r['time']:.2f} | {r['cpu']:.2f} | {r['residual']:.1e} | {neumann} "
                f"| {r['lcp']:.2e} |"
            )
    table = header + "\n".join(rows) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w") as fh_out:
            fh_out.write(table)
    return table


if __name__ == "__main__":
    main()
