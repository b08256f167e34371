#!/usr/bin/env python
"""This engine against torchdeq's implicit differentiation: one training step of the hGRU.

Checks that torchdeq's IFT and this engine's RBP give the same parameter gradients at a
fixed point, then measures peak allocated memory and time of one training step for
torchdeq's IFT (default and ``hook_ift``) and this engine's RBP, C-RBP (exact penalty)
and C-RBP with the penalty on a quarter of the rows, on a mask-head-sized and an
FPN-level-sized drive (method: ``crbp_panoptic/experiments/torchdeq_benchmark.py``).
torchdeq is not a dependency; install it for this script only::

    pip install torchdeq==0.1.0 --no-deps
    python tools/benchmark_torchdeq.py --out docs/results/torchdeq_cpu.md
"""

import argparse

import torch

from crbp_panoptic.experiments import torchdeq_benchmark as tb
from crbp_panoptic.experiments.machine import machine_info
from crbp_panoptic.experiments.report import publish


def _shape(text):
    try:
        shape = tuple(int(v) for v in text.split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write BxCxHxW, e.g. 32x64x14x14")
    return shape


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--shapes",
        type=_shape,
        nargs="+",
        default=[(32, 64, 14, 14), (2, 64, 48, 64)],
        help="drive shapes BxCxHxW (default: 32 ROIs of 14x14, an FPN level of 2 images)",
    )
    p.add_argument("--steps", type=int, default=20, help="forward steps T")
    p.add_argument("--neumann-steps", type=int, default=15, help="adjoint terms K")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per arm")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="also write the markdown report here")
    args = p.parse_args(argv)
    if args.steps < 2 or args.neumann_steps < 1 or args.repeats < 1:
        p.error("--steps must be >= 2, --neumann-steps and --repeats >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info("cpu")
    parts = [
        "# This engine vs torchdeq's IFT: one training step of the hGRU",
        "",
        f"Machine: {machine['cpu']} ({machine['cpu_count']} cores), torch {machine['torch']}, "
        f"{args.threads} thread(s). Peak MiB: bytes torch allocated during the step, above "
        "the start (profiler memory events).",
    ]
    for shape in args.shapes:
        result = tb.compare(
            shape,
            steps=args.steps,
            neumann_steps=args.neumann_steps,
            repeats=args.repeats,
            log=lambda m: print(m, flush=True),
        )
        parts += ["", tb.table(result)]
    publish("\n".join(parts), args.out)


if __name__ == "__main__":
    main()
