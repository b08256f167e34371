#!/usr/bin/env python
"""Show how a trained model's recurrent modules settle, step by step, on one image.

    python tools/visualize_dynamics.py --config-file CONFIG --input IMAGE --output DIR \
        [--steps N] [--top K] [--random-weights] [KEY VALUE ...]
                                                  (e.g. MODEL.WEIGHTS model_final.pth)

For every recurrent module (FPN levels, mask head) DIR gets <module>_steps.png (the state
at each step: the channel norm of an FPN level, the mask probabilities of the K best
detections for the mask head), <module>.gif (the same, animated) and residuals.png /
residuals.json (||h_t - h_{t-1}|| / ||h_t|| per step). --steps N runs the cells for N
steps (default: the trained test steps), also past them; the prediction itself is the
trained model's. MODEL.WEIGHTS must be a checkpoint that fits the model (only the
recurrent modules' own weights may be missing, as in a stock Detectron2 checkpoint);
--random-weights shows an untrained model instead.
"""

import argparse
import sys

import numpy as np

from crbp_panoptic.engine import setup_cfg
from crbp_panoptic.engine.checkpoint import WeightsError
from crbp_panoptic.engine.dynamics import record_dynamics
from crbp_panoptic.engine.dynamics_figures import save_dynamics
from crbp_panoptic.engine.inputs import InputError, collect_images, read_rgb
from crbp_panoptic.engine.predictor import build_predictor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", required=True, metavar="IMAGE", help="one image file")
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps to run each cell (default: its trained test steps)",
    )
    parser.add_argument("--top", type=int, default=4, help="detections shown for the mask head")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="show an untrained model (without MODEL.WEIGHTS), e.g. to test a setup",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps {args.steps}: must be >= 1")
    if args.top < 1:
        parser.error(f"--top {args.top}: must be >= 1")
    try:
        paths = collect_images([args.input])
        if len(paths) != 1:
            raise InputError(f"--input {args.input!r} gives {len(paths)} images; give one")
        path = paths[0]
        cfg = setup_cfg(args.config_file, args.opts)
        cfg.freeze()
        predictor = build_predictor(cfg, args.random_weights)
    except (InputError, FileNotFoundError, WeightsError) as e:
        sys.exit(f"visualize_dynamics.py: {e}")

    image = read_rgb(path, (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))[0]
    try:
        with record_dynamics(predictor.model, args.steps) as records:
            outputs = predictor(np.ascontiguousarray(image[:, :, ::-1]))  # it takes BGR
    except ValueError as e:  # a model without recurrent modules
        sys.exit(f"visualize_dynamics.py: {e}")
    summary = save_dynamics(
        records, predictor.model, args.output, outputs.get("instances"), args.top
    )
    for name, info in summary.items():
        res = info["residuals"]
        where = info.get("skipped") or f"{info['grid']}, {info['gif']} ({info['frames']} frames)"
        print(f"{name}: residual {res[0]:.2e} -> {res[-1]:.2e} in {len(res)} steps; {where}")
    return summary


if __name__ == "__main__":
    main()
