#!/usr/bin/env python
"""Train and compare Panoptic FPN configs over seeds, evaluated at and past their trained steps.

What to compare (crbp_panoptic/experiments/runner.py), one of:

  --suite quick|longrange|quick_mask
                                  a declared comparison (experiments/suites.py): the
                                  feedforward config trained once (<output>/warmup, or
                                  --warmup-weights), then each arm (ff, bptt:1, crbp:T, ...)
                                  --iterations further from it
  --configs A.yaml B.yaml ...     each config trained as it says
  --config-file C --arms A B ...  one recurrent config under several training rules
  --merge DIR DIR ...             join the summaries of several calls of one comparison
                                  (e.g. seeds run side by side from one warm-up) into --output
  --rescore DIR                   evaluate the finished runs of DIR again, with the trailing
                                  KEY VALUE overrides (e.g. another DATASETS.TEST), into
                                  --output; nothing is trained

--jobs N trains N runs at a time after the warm-up, each child (the warm-up's too) with its
share of the cores as OMP_NUM_THREADS unless that is set; summary.json keeps the plan's order.
A suite's arms can also run side by side as separate calls: calls with --arms (a subset of the
suite's) into one --output, each with --warmup-weights of a finished warm-up, then the call
without --arms, which reuses their runs and reports them together. A run folder that another
call is training is locked (<folder>.lock): a second call leaves it alone and reports that run
as failed (the warm-up: stops), so side-by-side calls without --warmup-weights do not train one
warm-up twice.

Every arm trains for every --seeds value (tools/train_net.py in a child process) and is
evaluated at T test steps, and if recurrent at m x T (--test-steps-multiples) and at every
--test-steps count; --residual-images N records the residual and drift curves of each
trained model. Writes <output>/summary.json (a rerun reuses finished runs), summary.md and
pq_vs_steps.png. Trailing KEY VALUE pairs override every config.

    python tools/compare_configs.py --suite quick --seeds 0 1 2 --output output/suite_quick

Time on a 2-core CPU (docs/results/suite_*.md): quick 52 min on the clock with --jobs 2 (91 min
of runs, summed, plus a 5-min warm-up) when it tested on the 12 val images, plus 11 min to
evaluate its runs on the 500 test images it now uses (--rescore); longrange 152 min of runs
(three calls side by side: 51 min each) plus an 11-min warm-up.
"""

import argparse
import dataclasses
import shlex
import sys

from crbp_panoptic.experiments.rescore import rescore_summary
from crbp_panoptic.experiments.runner import (
    Plan,
    config_arms,
    merge_summaries,
    plan_suite,
    rule_arms,
    run_plan,
)
from crbp_panoptic.experiments.suites import SUITES, get_suite

_SUITE_ONLY = ("warmup_iterations", "warmup_weights", "feedforward_config", "recurrent_config")


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
    what.add_argument("--merge", nargs="+", metavar="DIR", help="output folders to join")
    what.add_argument("--rescore", metavar="DIR", help="a comparison's folder to evaluate again")
    arms_help = "rules of --config-file (bptt:3 crbp:10), or which of the --suite's arms to run"
    p.add_argument("--arms", nargs="+", help=arms_help)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="SEED values")
    m_help = "evaluate recurrent arms at TEST_STEPS = m x T (default: the suite's, or 1 3)"
    p.add_argument("--test-steps-multiples", nargs="+", type=int, default=None, help=m_help)
    p.add_argument("--test-steps", nargs="+", type=int, default=(), help="and at these counts")
    p.add_argument("--iterations", type=int, help="training iterations of every arm")
    p.add_argument("--residual-images", type=int, default=0, help="residual curves on N images")
    jobs_help = "runs trained at a time after the warm-up (default 1), each on its cores' share"
    p.add_argument("--jobs", type=int, default=1, help=jobs_help)
    out_help = "folder of the runs and summary.json (default: output/suite_<suite>, output/compare)"
    p.add_argument("--output", "--output-dir", dest="output", help=out_help)
    suite = p.add_argument_group("--suite only")
    suite.add_argument("--warmup-iterations", type=int, help="iterations of the warm-up")
    suite.add_argument("--warmup-weights", help="start every arm from this checkpoint")
    suite.add_argument("--feedforward-config", help="replace the suite's feedforward config")
    suite.add_argument("--recurrent-config", help="replace the suite's recurrent config")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if not args.suite:
        used = ["--" + k.replace("_", "-") for k in _SUITE_ONLY if getattr(args, k) is not None]
        if used:
            p.error(f"{', '.join(used)} can only be used with --suite")
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: expected an integer >= 1 (runs trained at a time)")
    if args.merge and not args.output:
        p.error("--merge needs --output, the folder of the joined summary")
    if args.rescore and not args.output:
        p.error("--rescore needs --output, the folder of the new evaluations")
    if args.config_file and not args.arms:
        p.error("--config-file needs --arms (one recurrent config, several rules)")
    if args.rescore and (args.test_steps or args.test_steps_multiples or args.iterations):
        p.error("--rescore evaluates the runs at their recorded test steps; it trains nothing")
    if args.arms and not (args.config_file or args.suite):
        p.error("--arms goes with --config-file (its rules) or --suite (a subset of its arms)")
    return p, args


def main(argv=None):
    p, args = parse_args(argv)
    command = "python tools/compare_configs.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    if args.merge:
        try:
            summary = merge_summaries(args.merge, args.output, command)
        except ValueError as e:
            p.error(str(e))
        with open(f"{args.output}/summary.md") as f:
            print(f.read())
        return summary
    if args.rescore:
        try:
            summary = rescore_summary(
                args.rescore, args.output, args.opts, command=command, jobs=args.jobs
            )
        except ValueError as e:
            p.error(str(e))
        with open(f"{args.output}/summary.md") as f:
            print(f.read())
        return summary
    common = dict(test_steps=args.test_steps, residual_images=args.residual_images)
    common.update(iterations=args.iterations, opts=args.opts)
    try:
        if args.suite:
            suite = get_suite(args.suite)
            replace = {"feedforward_config": args.feedforward_config}
            replace["recurrent_config"] = args.recurrent_config
            suite = dataclasses.replace(suite, **{k: v for k, v in replace.items() if v})
            plan = plan_suite(
                suite, args.seeds, args.output or f"output/suite_{suite.name}",
                warmup_iterations=args.warmup_iterations, warmup_weights=args.warmup_weights,
                multiples=args.test_steps_multiples, arms=args.arms, **common,
            )  # fmt: skip
        else:
            if args.configs:
                arms, name = config_arms(args.configs, args.opts), "configs"
            else:
                arms, name = rule_arms(args.config_file, args.arms, args.opts), "rules"
            multiples = args.test_steps_multiples or (1, 3)
            output = args.output or "output/compare"
            plan = Plan(name, arms, args.seeds, output, multiples=multiples, **common)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    try:
        log = lambda m: print(m, flush=True)  # noqa: E731
        summary = run_plan(plan, command=command, log=log, jobs=args.jobs)
    except (ValueError, RuntimeError) as e:  # a warm-up that failed or does not fit the arms
        print(f"compare_configs.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    with open(f"{plan.output_dir}/summary.md") as f:
        print(f.read())
    return summary


if __name__ == "__main__":
    main()
