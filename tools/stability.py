#!/usr/bin/env python
"""Stability picture: PQ and the recurrent residual when a model runs past its trained steps.

Trains every arm (``--arms``, default ``bptt:3 crbp:10``; the grammar of
``crbp_panoptic.crbp.parse_arm``) from ``--config-file`` into ``<output-dir>/<arm>/``
(reusing a ``model_final.pth`` already there; ``--skip-train``: never train), then
evaluates PQ (All / Things / Stuff) on the val split at every test-step count of a grid
(``--test-steps``; default 1, 2, 3, 5, 8, 10, ... up to 2x the largest STEPS, plus every
arm's STEPS and 2 x STEPS) and records the relative residual ``||h_t - h_{t-1}|| / ||h_t||``
and the drift ``||h_t - h_T|| / ||h_T||`` of every recurrent module for t = 1 .. 2x the
largest STEPS (method: ``crbp_panoptic/experiments/stability.py``).

Writes ``stability.md`` (tables headed by the machine), ``stability.json`` (everything) and
``stability.png`` (PQ vs test steps; residual vs t, log scale) to ``--output-dir`` and
prints the tables. The JSON and markdown are rewritten after every arm.

    python tools/stability.py [--config-file CONFIG] [--arms bptt:3 crbp:10] [--iters 300] \\
        [--output-dir output/stability] [--test-steps 1 2 5 10 20] [--residual-images 4] \\
        [--skip-train] [KEY VALUE ...]

Trailing ``KEY VALUE`` pairs are config overrides for training (and so for evaluation:
evaluation reads the config the arm was trained with, ``<arm dir>/config.yaml``).
"""

import argparse
import os

import torch

from crbp_panoptic.crbp import parse_arm
from crbp_panoptic.experiments import stability

DEFAULT_CONFIG = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument(
        "--arms",
        nargs="+",
        default=list(stability.DEFAULT_ARMS),
        metavar="MODE:STEPS",
        help="models to compare (default: %(default)s)",
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=300,
        help="training iterations per arm (LR decay rescaled); 0 = the config's",
    )
    parser.add_argument("--output-dir", default="output/stability")
    parser.add_argument(
        "--test-steps",
        type=int,
        nargs="+",
        default=None,
        help="test-step grid (default: 1..2x the largest STEPS)",
    )
    parser.add_argument(
        "--residual-images", type=int, default=4, help="val images for the residual curves"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)"
    )
    parser.add_argument(
        "--skip-train",
        action="store_true",
        help="only evaluate: every arm's model_final.pth must exist",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    try:
        args.arm_list = [parse_arm(a) for a in args.arms]
    except ValueError as e:
        parser.error(str(e))
    if any(not a.recurrent for a in args.arm_list):
        parser.error(f"--arms {args.arms}: 'ff' has no recurrent steps to run past")
    if len(set(args.arm_list)) != len(args.arm_list):
        parser.error(f"--arms {args.arms}: duplicate arm")
    if args.iters < 0 or args.residual_images < 1:
        parser.error("--iters must be >= 0 and --residual-images >= 1")
    if args.test_steps is not None and min(args.test_steps) < 1:
        parser.error("--test-steps must be >= 1")
    if len(args.opts) % 2:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    report = stability.run(
        args.config_file,
        args.arm_list,
        args.output_dir,
        opts=args.opts,
        iters=args.iters,
        test_steps=args.test_steps,
        residual_images=args.residual_images,
        skip_train=args.skip_train,
        log=lambda m: print(m, flush=True),
    )
    stability.plot(report, os.path.join(args.output_dir, "stability.png"))
    print("\n" + stability.markdown(report))
    print(
        f"[stability] wrote {args.output_dir}/stability.md, stability.json, stability.png "
        f"in {report['wall_seconds'] / 60:.1f} min",
        flush=True,
    )
    return report


if __name__ == "__main__":
    main()
