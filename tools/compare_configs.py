#!/usr/bin/env python
"""Train configs over seeds and compare their PQ, also at multiples of the trained steps.

    python tools/compare_configs.py \\
        --configs configs/Synthetic-PanopticSegmentation/longrange_panoptic_fpn_R_18.yaml \\
                  configs/Synthetic-PanopticSegmentation/longrange_panoptic_crbp_mask_R_18.yaml \\
                  configs/Synthetic-PanopticSegmentation/longrange_panoptic_bptt3_mask_R_18.yaml \\
        --seeds 0 1 2 --test-steps-multiples 1 3 --output-dir output/longrange \\
        --report docs/results/longrange.md [KEY VALUE ...]

Each config is trained per seed by ``tools/train_net.py`` (a child process), evaluated on
its ``DATASETS.TEST`` at the end of training and, for recurrent configs, again with
``MODEL.CRBP.TEST_STEPS`` = m x STEPS for every other multiple m. The first config is the
baseline of the per-seed differences. Writes ``<output-dir>/report.json`` (after every
run; a rerun reuses finished runs) and ``<output-dir>/report.md``; ``--report`` also
writes the markdown there (under ``--title``). ``--probe`` adds the mask head alone on
ground-truth boxes (``mask_probe``: mask IoU, leak onto crossing instances). Trailing
``KEY VALUE`` pairs override every config. Logic: ``crbp_panoptic/experiments/seeds.py``.
"""

import argparse
import os
import shlex
import sys

from crbp_panoptic.experiments.seeds import (
    curves_markdown,
    dynamics_markdown,
    markdown,
    probe_markdown,
    run_probes,
    run_sweep,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", required=True, help="config files; first = baseline")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="SEED values")
    p.add_argument(
        "--test-steps-multiples",
        nargs="+",
        type=int,
        default=[1, 3],
        help="evaluate recurrent configs at TEST_STEPS = m x STEPS (default: 1 3)",
    )
    p.add_argument("--output-dir", default="output/compare", help="runs and report.json")
    p.add_argument("--report", default=None, help="also write the markdown report here")
    p.add_argument(
        "--title",
        default="Feedforward vs recurrent configs over seeds",
        help="heading of the --report page",
    )
    p.add_argument(
        "--no-train",
        action="store_true",
        help="run nothing; report the runs and evaluations already in --output-dir",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="also run the mask head alone on ground-truth boxes (mask_probe)",
    )
    p.add_argument(
        "--probe-seeds",
        nargs="+",
        type=int,
        default=None,
        help="seeds whose runs --probe examines (default: all)",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if len(args.opts) % 2:
        p.error(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    return args


def main(argv=None):
    args = parse_args(argv)
    command = "python tools/compare_configs.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    report = run_sweep(
        args.configs,
        args.seeds,
        args.test_steps_multiples,
        args.output_dir,
        opts=args.opts,
        command=command,
        train=not args.no_train,
    )
    text = markdown(report) + "\n" + curves_markdown(report) + "\n" + dynamics_markdown(report)
    if args.probe:
        run_probes(report, args.output_dir, seeds=args.probe_seeds)
        text += "\n" + probe_markdown(report)
    with open(os.path.join(args.output_dir, "report.md"), "w") as f:
        f.write(text)
    if args.report:
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        with open(args.report, "w") as f:
            f.write(f"# {args.title}\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()
