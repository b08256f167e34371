#!/usr/bin/env python
"""Train a mask-head suite's heads alone, on its warm-up's frozen ROI features at the true boxes.

Isolates the mask head (crbp_panoptic/experiments/head_probe.py): the suite's warm-up model
is frozen; each arm's head (the stock head for ff, the recurrent head under each training
rule) learns on the ROIAlign features of every training thing at its true box, with the
suite's schedule, optimizer and loss, and is scored on the test split's things (IoU of the
28 x 28 mask with the cropped true mask, beside the grouping-free mask). With
--train-boxes proposals the heads train, as in a Panoptic FPN run, on RPN proposals matched
to the things rather than on their true boxes. Writes
<output>/probe.{md,json} and probe_iou.png; finished runs are kept in <output>/probe_runs/
and reused, so calls with other --arms / --seeds can share one --output and a last call
with all of them writes the joint table. Trailing KEY VALUE pairs override every config.

    python tools/probe_mask_heads.py --suite longrange --seeds 0 1 --iterations 600 \\
        --warmup-weights output/suite_longrange/warmup/model_final.pth \\
        --output output/probe_longrange SOLVER.BASE_LR 0.05

(KEY VALUE pairs come after the last option that takes several values.)
"""

import argparse
import os
import shlex
import sys

from crbp_panoptic.experiments.head_probe import BOXES, markdown, plot, probe_plan
from crbp_panoptic.experiments.machine import machine_info
from crbp_panoptic.experiments.report import publish, render
from crbp_panoptic.experiments.runner import plan_suite
from crbp_panoptic.experiments.suites import SUITES, get_suite


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    masks = sorted(n for n, s in SUITES.items() if s.placement == "mask_head")
    p.add_argument("--suite", required=True, help=f"a mask-head suite: {', '.join(masks)}")
    p.add_argument("--warmup-weights", required=True, help="the suite's warm-up model_final.pth")
    p.add_argument("--arms", nargs="+", help="of the suite's arms (default: all of them)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="SEED values")
    p.add_argument("--iterations", type=int, help="per head (default: the suite's)")
    p.add_argument("--batch-rois", type=int, default=64, help="training ROIs per iteration")
    p.add_argument("--evals", type=int, default=8, help="scored points along training")
    p.add_argument("--train-boxes", choices=BOXES, default="true",
                   help="where the training ROIs lie: each thing's true box, or one RPN "
                   "proposal matched to it (the test ROIs: true boxes)")  # fmt: skip
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    try:
        suite = get_suite(args.suite)
        plan = plan_suite(suite, args.seeds, args.output, iterations=args.iterations,
                          warmup_weights=args.warmup_weights, opts=args.opts)  # fmt: skip
        if args.arms:
            names = [a.name for a in plan.arms]
            unknown = [a for a in args.arms if a not in names]
            if unknown:
                raise ValueError(
                    f"--arms {unknown}: not arms of suite {suite.name!r}; allowed: {names}"
                )
            plan.runs = [r for r in plan.runs if r.arm in args.arms]
        probe = probe_plan(plan, batch_rois=args.batch_rois, evals=args.evals,
                           train_boxes=args.train_boxes)  # fmt: skip
    except (OSError, ValueError) as e:
        p.error(str(e))
    command = "python tools/probe_mask_heads.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    probe["command"] = command
    png = plot(probe, os.path.join(plan.output_dir, "probe_iou.png"))
    text = render(
        f"Mask heads on frozen warm-up features: suite {suite.name}",
        command,
        machine_info("cpu"),
        markdown(probe) + ["", f"![test IoU against the iteration]({os.path.basename(png)})"],
    )
    publish(text, os.path.join(plan.output_dir, "probe.md"), data=probe)
    return probe


if __name__ == "__main__":
    main()
