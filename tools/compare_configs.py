#!/usr/bin/env python
"""Train and compare Panoptic FPN configs over seeds: a declared suite, or any configs.

A suite (``--suite``, tables in ``crbp_panoptic/experiments/suites.py``)::

    python tools/compare_configs.py --suite quick --seeds 0 1 2 --output output/suite_quick
    python tools/compare_configs.py --suite longrange --seeds 0 1 2 --output output/suite_longrange

``quick`` compares the recurrent FPN (``panoptic_crbp_fpn_R_18_quick.yaml``) with the
feedforward model (``panoptic_fpn_R_18_quick.yaml``) on the quick synthetic data;
``longrange`` the recurrent mask head (``longrange_panoptic_crbp_mask_R_18.yaml``) with the
stock head (``longrange_panoptic_fpn_R_18.yaml``) on the long-range data. The feedforward
config is trained once (the warm-up, ``<output>/warmup``, reused by every arm, seed and
rerun; ``--warmup-weights`` starts from an existing checkpoint instead); then every arm
(``ff``, ``bptt:1``, ``bptt:3``, ``crbp:T``) trains ``--iterations`` further iterations from
it for every seed, and the recurrent arms are evaluated at T and 3T test steps. Writes
``<output>/summary.json`` (after every run; a rerun reuses finished runs), ``summary.md``
and ``pq_vs_steps.png``. ``--feedforward-config`` / ``--recurrent-config`` replace the
suite's configs (the recurrent one must recur where the suite's does).

Time, an estimate (the suites have not been run at these budgets). Per training iteration
of batch 4 on the 2-core machine with two threads: about 0.40 s feedforward, and for the
recurrent FPN 0.42 s BPTT-1, 0.45 s BPTT-3, 0.47 s C-RBP-10 (its iteration costs 1.17x the
feedforward one, docs/results/speed_cpu.md); for the mask head 0.45 / 0.50 / 1.2 s
(300-iteration runs took 2.3, 2.7 and 6.2 minutes for feedforward, BPTT-3 and C-RBP-10,
docs/results/longrange.md). About 15 s per child process for start-up and evaluation
(22 children: warm-up, 12 runs, 9 evaluations at 3T), 330 s in all:

* quick, warm-up 300 then 400 per arm: 2 + 3 x 400 x 1.74 s + 5.5 min = about 42 minutes;
* longrange, warm-up 1000 then 300 per arm: 7 + 3 x 300 x 2.57 s + 5.5 min = about 51
  minutes (its 100 val images make each evaluation longer than on the quick data);

within 75 minutes with room for a busy machine (a rerun with the warm-up cached saves its
minutes). Run with ``OMP_NUM_THREADS=2``; ``--iterations`` and ``--warmup-iterations``
change the budgets.

Any configs (``--configs``; logic in ``crbp_panoptic/experiments/seeds.py``)::

    python tools/compare_configs.py \\
        --configs configs/Synthetic-PanopticSegmentation/longrange_panoptic_fpn_R_18.yaml \\
                  configs/Synthetic-PanopticSegmentation/longrange_panoptic_crbp_mask_R_18.yaml \\
                  configs/Synthetic-PanopticSegmentation/longrange_panoptic_bptt3_mask_R_18.yaml \\
        --seeds 0 1 2 --test-steps-multiples 1 3 --output output/longrange \\
        --report docs/results/longrange.md [KEY VALUE ...]

Each config is trained per seed by ``tools/train_net.py`` (a child process), evaluated on
its ``DATASETS.TEST`` at the end of training and, for recurrent configs, again with
``MODEL.CRBP.TEST_STEPS`` = m x STEPS for every other multiple m. The first config is the
baseline of the per-seed differences. Writes ``<output>/report.json`` (after every run; a
rerun reuses finished runs) and ``<output>/report.md``; ``--report`` also writes the
markdown there (under ``--title``). ``--probe`` adds the mask head alone on ground-truth
boxes (``mask_probe``: mask IoU, leak onto crossing instances).

In both modes trailing ``KEY VALUE`` pairs override every config; ``--output-dir`` is
another name for ``--output``.
"""

import argparse
import dataclasses
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
from crbp_panoptic.experiments.suites import SUITES, get_suite, plan_suite, run_suite

# Flags of one mode only (dest -> flag), rejected in the other.
_SUITE_ONLY = {
    "iterations": "--iterations",
    "warmup_iterations": "--warmup-iterations",
    "warmup_weights": "--warmup-weights",
    "feedforward_config": "--feedforward-config",
    "recurrent_config": "--recurrent-config",
}
_CONFIGS_ONLY = {
    "report": "--report",
    "title": "--title",
    "no_train": "--no-train",
    "probe": "--probe",
    "probe_seeds": "--probe-seeds",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--suite", help=f"a declared comparison: {', '.join(sorted(SUITES))}")
    mode.add_argument("--configs", nargs="+", help="config files; first = baseline")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="SEED values")
    p.add_argument(
        "--test-steps-multiples",
        nargs="+",
        type=int,
        default=None,
        help="evaluate recurrent configs at TEST_STEPS = m x STEPS (default: 1 3)",
    )
    p.add_argument(
        "--output",
        "--output-dir",
        dest="output",
        default=None,
        help="runs and summary.json / report.json (default: output/suite_<suite> or "
        "output/compare)",
    )
    suite = p.add_argument_group("--suite only")
    suite.add_argument("--iterations", type=int, help="iterations of every arm after the warm-up")
    suite.add_argument("--warmup-iterations", type=int, help="iterations of the warm-up")
    suite.add_argument(
        "--warmup-weights", help="start every arm from this warm-up checkpoint (no warm-up run)"
    )
    suite.add_argument("--feedforward-config", help="replace the suite's feedforward config")
    suite.add_argument("--recurrent-config", help="replace the suite's recurrent config")
    configs = p.add_argument_group("--configs only")
    configs.add_argument("--report", default=None, help="also write the markdown report here")
    configs.add_argument(
        "--title",
        default=None,
        help="heading of the --report page",
    )
    configs.add_argument(
        "--no-train",
        action="store_true",
        help="run nothing; report the runs and evaluations already in --output",
    )
    configs.add_argument(
        "--probe",
        action="store_true",
        help="also run the mask head alone on ground-truth boxes (mask_probe)",
    )
    configs.add_argument(
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
    wrong = _CONFIGS_ONLY if args.suite else _SUITE_ONLY
    used = [flag for dest, flag in wrong.items() if getattr(args, dest) not in (None, False)]
    if used:
        p.error(f"{', '.join(used)} cannot be used with {'--suite' if args.suite else '--configs'}")
    return p, args


def main(argv=None):
    p, args = parse_args(argv)
    command = "python tools/compare_configs.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    if args.suite:
        return _suite(p, args, command)
    output = args.output or "output/compare"
    report = run_sweep(
        args.configs,
        args.seeds,
        args.test_steps_multiples or [1, 3],
        output,
        opts=args.opts,
        command=command,
        train=not args.no_train,
    )
    text = markdown(report) + "\n" + curves_markdown(report) + "\n" + dynamics_markdown(report)
    if args.probe:
        run_probes(report, output, seeds=args.probe_seeds)
        text += "\n" + probe_markdown(report)
    with open(os.path.join(output, "report.md"), "w") as f:
        f.write(text)
    if args.report:
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        title = args.title or "Feedforward vs recurrent configs over seeds"
        with open(args.report, "w") as f:
            f.write(f"# {title}\n\n{text}")
    print(text)


def _suite(p, args, command):
    try:
        suite = get_suite(args.suite)
        replace = {
            "feedforward_config": args.feedforward_config,
            "recurrent_config": args.recurrent_config,
        }
        suite = dataclasses.replace(suite, **{k: v for k, v in replace.items() if v})
        plan = plan_suite(
            suite,
            args.seeds,
            args.output or f"output/suite_{suite.name}",
            iterations=args.iterations,
            warmup_iterations=args.warmup_iterations,
            warmup_weights=args.warmup_weights,
            multiples=args.test_steps_multiples,
            opts=args.opts,
        )
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    try:
        summary = run_suite(plan, command=command)
    except (ValueError, RuntimeError) as e:  # a warm-up that failed or does not fit the arms
        print(f"compare_configs.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    with open(os.path.join(plan.output_dir, "summary.md")) as f:
        print(f.read())
    return summary


if __name__ == "__main__":
    main()
