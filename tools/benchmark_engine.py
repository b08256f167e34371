#!/usr/bin/env python
"""Memory and time of one training step of the hGRU refiner under each training arm.

For every arm (``--arms``, comma-separated, the grammar of ``crbp_panoptic.crbp.parse_arm``:
``bptt:1``, ``crbp:20``, ``crbp:20:sub0.25`` for a penalty on a quarter of the batch rows,
``crbp:20:sub2`` on two rows, ``crbp:20:crop16`` on a random 16x16 window) this runs one
forward + backward of ``RecurrentRefiner`` on random drive features and prints a markdown
table: bytes autograd saves, CUDA peak memory, wall and CPU seconds per step, the final
residual, the Neumann terms used and the penalty (``crbp_panoptic/experiments/
engine_benchmark.py``).

Two scales: the mask head (ROIs x C x 14 x 14) and an FPN level (images x C x H x W).
Defaults are scaled down to run in about two minutes on two CPU cores; ``--full`` uses the
paper's sizes (256 ROIs x 256 ch x 14 x 14; 2 images x 256 ch x 200 x 304, the P2 level of
an 800 x 1216 input), which needs a GPU.

Example::

    python tools/benchmark_engine.py --out engine_benchmark.md
    python tools/benchmark_engine.py --full --device cuda --memory-fraction 0.9
    python tools/benchmark_engine.py --compile --out engine_compile.md  # torch.compile lever
"""

import argparse
import math
import sys

import torch

from crbp_panoptic.crbp import HGRUCell, parse_arm
from crbp_panoptic.experiments import engine_benchmark as eb
from crbp_panoptic.experiments.machine import machine_info
from crbp_panoptic.experiments.report import publish


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default=",".join(eb.DEFAULT_ARMS), help="comma-separated arms")
    p.add_argument("--scales", default="mask,fpn", help="comma-separated subset of mask,fpn")
    p.add_argument("--full", action="store_true", help="the paper's sizes (see above)")
    p.add_argument("--channels", type=int, default=None, help="C (default 64, 256 with --full)")
    p.add_argument("--rois", type=int, default=None, help="mask-head ROIs (32, 256 with --full)")
    p.add_argument("--roi-size", type=int, default=14)
    p.add_argument("--images", type=int, default=2, help="FPN batch size")
    p.add_argument("--fpn-hw", default=None, help="FPN level HxW (48x64, 200x304 with --full)")
    p.add_argument("--num-groups", type=int, default=32, help="GroupNorm groups (made to divide C)")
    p.add_argument("--gala", action="store_true", help="GALA attention in the cell")
    p.add_argument("--neumann-steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=1, help="timed steps per arm (fastest kept)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--memory-fraction", type=float, default=None, help="CUDA memory fraction cap")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--compile",
        action="store_true",
        help="instead: time one inference step eager and through torch.compile",
    )
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)
    try:
        args.arm_list = [parse_arm(a) for a in args.arms.split(",") if a.strip()]
    except ValueError as e:
        p.error(str(e))
    if any(not a.recurrent for a in args.arm_list):
        p.error(f"--arms {args.arms}: the refiner alone has no feedforward arm")
    args.scale_list = [s.strip() for s in args.scales.split(",") if s.strip()]
    for s in args.scale_list:
        if s not in ("mask", "fpn"):
            p.error(f"--scales contains {s!r}; choose from ['fpn', 'mask']")
    hw = args.fpn_hw or ("200x304" if args.full else "48x64")
    try:
        args.hw = tuple(int(v) for v in hw.lower().split("x"))
        assert len(args.hw) == 2
    except (ValueError, AssertionError):
        p.error(f"--fpn-hw {hw!r}; write HxW, e.g. 48x64")
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and args.memory_fraction is not None:
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, device)
    channels = args.channels or (256 if args.full else 64)
    rois = args.rois or (256 if args.full else 32)
    all_shapes = eb.shapes(channels, rois, args.roi_size, args.images, args.hw)
    if args.compile:
        return _compile_report(args, channels, {s: all_shapes[s] for s in args.scale_list})
    rows = eb.benchmark(
        args.arm_list,
        {s: all_shapes[s] for s in args.scale_list},
        num_groups=args.num_groups,
        gala=args.gala,
        neumann_steps=args.neumann_steps,
        repeats=args.repeats,
        device=device,
        seed=args.seed,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    m = machine_info(str(device))
    where = m["gpu"] or f"CPU ({m['cpu']}, {m['torch_threads']} threads)"
    groups = math.gcd(args.num_groups, channels)
    header = (
        f"Engine benchmark: hGRU (C={channels}, GN groups={groups}, gala={args.gala}), "
        f"K={args.neumann_steps} Neumann terms, one training step (forward + backward), "
        f"torch {m['torch']}, {where}."
    )
    return publish(eb.table(rows, header), args.out)


def _compile_report(args, channels, scale_shapes) -> str:
    groups = math.gcd(args.num_groups, channels)
    torch.manual_seed(args.seed)
    cell = HGRUCell(channels, num_groups=groups, gala=args.gala).eval()
    rows = [(s, shape, eb.compiled_step(cell, shape)) for s, shape in scale_shapes.items()]
    m = machine_info("cpu")
    header = (
        f"hGRU step (C={channels}, GN groups={groups}, gala={args.gala}) eager and through "
        f"torch.compile, inference, torch {m['torch']}, CPU ({m['cpu']}, "
        f"{m['torch_threads']} threads); CPU time per step, the fastest of 5 x 10 calls."
    )
    return publish(eb.compile_table(rows, header), args.out)


if __name__ == "__main__":
    main()
