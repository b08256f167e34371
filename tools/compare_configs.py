#!/usr/bin/env python
"""Train and compare Panoptic FPN configs over seeds, evaluated at and past their trained steps.

What to compare (logic: crbp_panoptic/experiments/runner.py), one of:

  --suite quick|longrange|quick_mask
                                  a declared comparison (crbp_panoptic/experiments/suites.py):
                                  the feedforward config trained once (the warm-up,
                                  <output>/warmup; --warmup-weights: an existing one), then
                                  its arms (ff, bptt:1, bptt:3, crbp:T) each --iterations
                                  further from it; --feedforward-config / --recurrent-config replace
                                  the suite's (the recurrent one must recur where it does)
  --configs A.yaml B.yaml ...     each config trained as it says
  --config-file C --arms A B ...  one recurrent config under several training rules
                                  (crbp_panoptic.crbp.parse_arm: bptt:3, crbp:10, ...)

Every arm trains for every --seeds value (tools/train_net.py in a child process), is
evaluated at the end of training (T test steps) and again, if recurrent, at m x T for every
--test-steps-multiples m and at every --test-steps count (TEST_TOL 0: exactly that many).
--residual-images N also steps the recurrent modules of each trained model on N test images
and records the residual ||h_t - h_(t-1)|| / ||h_t|| and the drift ||h_t - h_T|| / ||h_T||
for t = 1 .. 2 x the largest T. Writes <output>/summary.json (after every run; a rerun
reuses finished runs), summary.md and pq_vs_steps.png. Trailing KEY VALUE pairs override
every config.

    python tools/compare_configs.py --suite quick --seeds 0 1 2 --output output/suite_quick
    python tools/compare_configs.py --config-file \\
        configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml \\
        --arms bptt:3 crbp:10 --seeds 0 --iterations 300 --test-steps 1 2 3 5 8 9 10 15 20 30 \\
        --residual-images 4 --output output/stability_quick

Time of the suites, an estimate (2 threads; docs/results/speed_cpu.md, longrange.md): quick
(warm-up 300, then 400 per arm) about 42 minutes, longrange (warm-up 1000, then 300 per arm)
about 51 minutes, of which about 15 s per child (22 children) is start-up and evaluation.
"""

import argparse
import dataclasses
import shlex
import sys

from crbp_panoptic.experiments.runner import Plan, config_arms, plan_suite, rule_arms, run_plan
from crbp_panoptic.experiments.suites import SUITES, get_suite

# Flags of one way only (dest -> flag).
_SUITE_ONLY = {
    "warmup_iterations": "--warmup-iterations",
    "warmup_weights": "--warmup-weights",
    "feedforward_config": "--feedforward-config",
    "recurrent_config": "--recurrent-config",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--suite", help=f"a declared comparison: {', '.join(sorted(SUITES))}")
    what.add_argument("--configs", nargs="+", metavar="FILE", help="config files, as they are")
    what.add_argument("--config-file", metavar="FILE", help="one recurrent config, with --arms")
    p.add_argument("--arms", nargs="+", help="training rules of --config-file: bptt:3 crbp:10")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="SEED values")
    p.add_argument(
        "--test-steps-multiples",
        nargs="+",
        type=int,
        default=None,
        help="evaluate recurrent arms at TEST_STEPS = m x T (default: the suite's, or 1 3)",
    )
    p.add_argument("--test-steps", nargs="+", type=int, default=(), help="and at these counts")
    p.add_argument("--iterations", type=int, help="training iterations of every arm")
    p.add_argument("--residual-images", type=int, default=0, help="residual curves on N images")
    p.add_argument(
        "--output",
        "--output-dir",
        dest="output",
        help="folder of the runs and summary.json (default: output/suite_<suite> or "
        "output/compare)",
    )
    suite = p.add_argument_group("--suite only")
    suite.add_argument("--warmup-iterations", type=int, help="iterations of the warm-up")
    suite.add_argument("--warmup-weights", help="start every arm from this checkpoint")
    suite.add_argument("--feedforward-config", help="replace the suite's feedforward config")
    suite.add_argument("--recurrent-config", help="replace the suite's recurrent config")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if not args.suite:
        used = [flag for dest, flag in _SUITE_ONLY.items() if getattr(args, dest) is not None]
        if used:
            p.error(f"{', '.join(used)} can only be used with --suite")
    if bool(args.arms) != bool(args.config_file):
        p.error("--arms and --config-file go together (one recurrent config, several rules)")
    return p, args


def main(argv=None):
    p, args = parse_args(argv)
    command = "python tools/compare_configs.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    common = dict(test_steps=args.test_steps, residual_images=args.residual_images)
    try:
        if args.suite:
            suite = get_suite(args.suite)
            replace = {"feedforward_config": args.feedforward_config}
            replace["recurrent_config"] = args.recurrent_config
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
                **common,
            )
        else:
            if args.configs:
                arms, name = config_arms(args.configs, args.opts), "configs"
            else:
                arms, name = rule_arms(args.config_file, args.arms, args.opts), "rules"
            plan = Plan(
                name,
                arms,
                args.seeds,
                args.output or "output/compare",
                iterations=args.iterations,
                multiples=args.test_steps_multiples or (1, 3),
                opts=args.opts,
                **common,
            )
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    try:
        summary = run_plan(plan, command=command, log=lambda m: print(m, flush=True))
    except (ValueError, RuntimeError) as e:  # a warm-up that failed or does not fit the arms
        print(f"compare_configs.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    with open(f"{plan.output_dir}/summary.md") as f:
        print(f.read())
    return summary


if __name__ == "__main__":
    main()
