#!/usr/bin/env python
"""Speed of trained models: inference and training cost of each recurrent run, and what
each lever (early stopping, Anderson, forward / Neumann tolerances, cheap penalty) buys.

Each ``--run NAME=DIR`` and the ``--feedforward DIR`` is a finished training run
(``DIR/config.yaml`` and ``DIR/model_final.pth``, as ``tools/train_net.py`` writes them);
every figure uses the run's own weights and data (method:
``crbp_panoptic/experiments/speed.py``). Times are ratios to the feedforward run measured
in the same process.

    python tools/benchmark_speed.py --feedforward output/speed/ff \\
        --run mask=output/speed/crbp_mask --run fpn=output/speed/crbp_fpn \\
        [--images 12] [--train-iters 6] [--no-pq] [--threads 2] [--output docs/results/speed_cpu]

Writes ``OUTPUT.md`` and ``OUTPUT.json`` and prints the tables.
"""

import argparse
import json
import os

import torch

from crbp_panoptic.experiments import speed
from crbp_panoptic.experiments.machine import machine_info
from crbp_panoptic.experiments.report import write_atomic


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--feedforward",
        required=True,
        metavar="DIR",
        help="the feedforward run the ratios refer to",
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a recurrent run (repeatable)",
    )
    parser.add_argument("--images", type=int, default=12, help="val images timed per setting")
    parser.add_argument("--train-iters", type=int, default=6, help="timed training iterations")
    parser.add_argument("--no-pq", action="store_true", help="time only; skip the evaluations")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--output", default="output/speed/speed", help="report path stem")
    args = parser.parse_args(argv)
    args.runs = {}
    for text in args.run:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            parser.error(f"--run {text!r}: write NAME=DIR")
        args.runs[name] = path
    try:
        for path in [args.feedforward, *args.runs.values()]:
            speed.check_run_dir(path)
    except FileNotFoundError as e:
        parser.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = speed.measure_runs(
        args.runs, args.feedforward, args.images, args.train_iters, with_pq=not args.no_pq
    )
    machine = machine_info("cpu")
    report["machine"] = machine
    command = "python tools/benchmark_speed.py " + " ".join(
        [f"--feedforward {args.feedforward}"]
        + [f"--run {r}" for r in args.run]
        + [f"--images {args.images}", f"--train-iters {args.train_iters}"]
    )
    header = [
        "# Speed of trained models",
        "",
        f"Machine: {machine['cpu']} ({machine['cpu_count']} cores), torch "
        f"{machine['torch']}, {machine['torch_threads']} threads.",
        "",
        f"Command: `{command}`",
    ]
    text = speed.markdown(report, header)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_atomic(args.output + ".md", text)
    write_atomic(args.output + ".json", json.dumps(report, indent=1))
    print(text)


if __name__ == "__main__":
    main()
