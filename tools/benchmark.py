#!/usr/bin/env python
"""Benchmark training memory and speed: the whole model, the hGRU alone, trained runs.

``--task`` picks what is measured (in ``crbp_panoptic/experiments/``) and the report that
``--output`` gets:

* ``train``: every C-RBP configuration (``--placements`` x ``--arms`` and ``--cheap-arms``)
  next to the stock Panoptic FPN, random weights and data: training memory and s/iter,
  inference s/image at T, 2T steps and early stopping (``benchmark.md/.json/.png``). COCO's
  sizes by default, for a GPU; ``KEY VALUE`` pairs apply to every configuration.
* ``engine``: one training step of the hGRU per arm on a mask-head and an FPN-level drive
  (``engine.md``); the paper's sizes: ``--channels 256 --rois 256 --fpn-hw 200x304``.
* ``trained``: finished runs (``--feedforward DIR``, ``--run NAME=DIR``): inference and
  training cost of each speed lever and PQ, ratios to the feedforward run (``speed.md``).

Example::

    python tools/benchmark.py --task train --device cpu --depth 18 --size 192 288 --batch 1 \\
        --instances 16 --detections 20 --iters 2 --warmup 1 --output output/benchmark_cpu \\
        MODEL.FPN.OUT_CHANNELS 64 MODEL.ROI_MASK_HEAD.CONV_DIM 64 MODEL.CRBP.NUM_GROUPS 16
"""

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import torch

from crbp_panoptic.crbp import parse_arm
from crbp_panoptic.experiments import benchmark as bench
from crbp_panoptic.experiments import engine_benchmark as eb
from crbp_panoptic.experiments.machine import machine_info
from crbp_panoptic.experiments.report import publish, render

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "COCO-PanopticSegmentation"
#: Each task's defaults for the options several tasks share (None in the parser).
DEFAULTS = {
    "train": dict(size=[800, 1216], iters=5, arms=bench.DEFAULT_ARMS),
    "engine": dict(images=2, repeats=1, arms=eb.DEFAULT_ARMS, neumann_steps=15),
    "trained": dict(images=12, iters=6),
}
#: Arguments that define a ``train`` measurement: in the report's settings and every spec.
MEASURE_KEYS = ("device", "size", "batch", "instances", "iters", "mem_iters", "warmup")
MEASURE_KEYS += ("infer_iters", "infer_warmup", "test_tol", "detections")


def _shape(text):
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: write sizes joined by x, e.g. 48x64")
    return shape


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--task", required=True, choices=tuple(DEFAULTS))
    add("--output", "--out", default="output/benchmark", help="folder of the report")
    add("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    add("--threads", type=int, default=None, help="torch threads (0 = torch's default)")
    add("--seed", type=int, default=0)
    add("--arms", nargs="+", default=None, metavar="ARM", help="train, engine: arms")
    add("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="train: image size")
    add("--images", type=int, default=None, help="engine: FPN batch; trained: images")
    add("--iters", type=int, default=None, help="train, trained: timed training iterations")
    add("--repeats", type=int, default=None, help="engine: timed repeats")
    add("--neumann-steps", type=int, default=None, help="engine: Neumann terms K")
    add("--memory-fraction", type=float, default=None, help="CUDA memory cap (train: 0.25)")
    add("opts", nargs=argparse.REMAINDER, help="train: KEY VALUE options of every configuration")
    g = p.add_argument_group("--task train").add_argument
    g("--placements", nargs="+", default=["fpn", "mask"], choices=["fpn", "mask"])
    g("--cheap-arms", nargs="*", default=[f"{k}={v}" for k, v in bench.DEFAULT_CHEAP_ARMS.items()])
    g("--list", action="store_true", help="print the plan and exit")
    g("--depth", type=int, default=None, help="MODEL.RESNETS.DEPTH (default: the YAML's 50)")
    g("--batch", type=int, default=2, help="images per training iteration")
    g("--instances", type=int, default=64, help="random instances per image")
    g("--mem-iters", type=int, default=3, help="CPU: memory iterations (least growth kept)")
    g("--warmup", type=int, default=3, help="untimed training iterations first")
    g("--infer-iters", type=int, default=3, help="timed images per inference variant")
    g("--infer-warmup", type=int, default=1, help="untimed images per inference variant")
    g("--test-tol", type=float, default=1e-3, help="MODEL.CRBP.TEST_TOL of early stopping")
    g("--detections", type=int, default=100, help="forced detections (0 = the model's own)")
    g("--lr", type=float, default=0.0, help="SOLVER.BASE_LR (0: same weights every step)")
    g("--memory-cap-gib", type=float, default=None, help="CUDA cap in GiB (any card)")
    g("--in-process", action="store_true", help="CPU: no child processes (memory indicative)")
    g("--time-budget", type=float, default=0, help="s; later configurations skipped (0 = none)")
    g = p.add_argument_group("--task engine").add_argument
    g("--scales", nargs="+", default=["mask", "fpn"], choices=["mask", "fpn"])
    g("--channels", type=int, default=64, help="C")
    g("--rois", type=int, default=32, help="mask-head ROIs")
    g("--roi-size", type=int, default=14)
    g("--fpn-hw", type=_shape, default=(48, 64), help="FPN level HxW")
    g("--num-groups", type=int, default=32, help="GroupNorm groups (made to divide C)")
    g("--gala", action="store_true", help="GALA attention in the cell")
    g = p.add_argument_group("--task trained").add_argument
    g("--feedforward", metavar="DIR", help="the feedforward run the ratios refer to")
    g("--run", action="append", default=[], metavar="NAME=DIR", help="a recurrent run")
    g("--no-pq", action="store_true", help="time only; skip the evaluations")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    for key, value in DEFAULTS[args.task].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.threads = args.threads or 0
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.opts and args.task != "train":
        p.error(f"KEY VALUE options {args.opts} are taken by --task train only")
    if len(args.opts) % 2:
        p.error(f"config options need KEY VALUE pairs; got {args.opts}")
    if args.memory_fraction is not None and not 0 < args.memory_fraction <= 1:
        p.error(f"--memory-fraction={args.memory_fraction}; must lie in (0, 1]")
    for k in ("iters", "repeats", "images", "mem_iters", "batch", "infer_iters"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    try:
        args.arm_list = [parse_arm(a) for a in args.arms or ()]
        args.cheap = bench.parse_cheap_arms(args.cheap_arms) if args.task == "train" else {}
    except ValueError as e:
        p.error(str(e))
    if args.task == "engine" and any(not a.recurrent for a in args.arm_list):
        p.error(f"--arms {' '.join(args.arms)}: the refiner alone has no feedforward arm")
    args.runs = dict(r.partition("=")[::2] for r in args.run)
    if args.task == "trained" and not args.feedforward:
        p.error("--task trained needs --feedforward DIR")
    if any(not k or not v for k, v in args.runs.items()):
        p.error(f"--run {args.run}: write NAME=DIR")
    return args


def train(args, command, out):
    runs = bench.plan(args.placements, args.arm_list, args.cheap)
    if args.list:
        for placement, arm in runs:
            opts = " ".join(str(v) for v in arm.config_opts())
            print(f"{placement:4s} {arm.name:18s} {bench.series(arm):18s} {opts}")
        return []
    cuda = args.device.startswith("cuda")
    settings = {k: getattr(args, k) for k in MEASURE_KEYS + ("lr", "opts", "placements")}
    settings.update(
        arms=[a.name for a in args.arm_list] + [a.name for v in args.cheap.values() for a in v],
        isolated=not (cuda or args.in_process),
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        command=command,
    )
    if cuda:
        fraction = 0.25 if args.memory_fraction is None else args.memory_fraction
        settings.update(bench.prepare_cuda(args.device, fraction, args.memory_cap_gib))
    machine = machine_info(args.device)
    base = {k: getattr(args, k) for k in MEASURE_KEYS + ("seed", "threads")}
    base.update(
        opts=bench.common_opts(args.device, args.lr, args.detections, args.depth),
        user_opts=args.opts,
    )
    results = bench.run(
        runs, base, CONFIG_DIR, out, machine, settings, in_process=args.in_process,
        time_budget=args.time_budget,
    )  # fmt: skip
    where = machine["gpu"] or machine["cpu"]
    title = f"{where}: {args.size[0]}x{args.size[1]}, batch {args.batch}, {args.device}"
    bench.plot(results, args.placements, out / "benchmark.png", title)
    print((out / "benchmark.md").read_text())
    print(f"wrote {out}/benchmark.md, .json, .png in {settings['total_s']:.0f} s")
    return results


def engine(args, command, out):
    device = torch.device(args.device)
    if device.type == "cuda" and args.memory_fraction is not None:
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, device)
    shapes = eb.shapes(args.channels, args.rois, args.roi_size, args.images, args.fpn_hw)
    rows = eb.benchmark(
        args.arm_list, {s: shapes[s] for s in args.scales}, num_groups=args.num_groups,
        gala=args.gala, neumann_steps=args.neumann_steps, repeats=args.repeats, device=device,
        seed=args.seed, log=lambda m: print(m, file=sys.stderr, flush=True),
    )  # fmt: skip
    legend = (
        f"hGRU (C={args.channels}, GN groups {eb.groups(args.num_groups, args.channels)}, gala "
        f"{args.gala}), K={args.neumann_steps} Neumann terms, one training step (forward + "
        "backward); saved: the bytes autograd saves; times: the fastest of the repeats."
    )
    body = [legend, ""] + eb.table(rows)
    return publish(
        render("Engine benchmark", command, machine_info(str(device)), body), out / "engine.md"
    )


def trained(args, command, out):
    from crbp_panoptic.experiments import speed

    try:
        for path in [args.feedforward, *args.runs.values()]:
            speed.check_run_dir(path)
    except FileNotFoundError as e:
        sys.exit(str(e))
    report = speed.measure_runs(
        args.runs, args.feedforward, args.images, args.iters, with_pq=not args.no_pq
    )
    report["machine"] = machine_info("cpu")
    text = render("Speed of trained models", command, report["machine"], speed.markdown(report))
    return publish(text, out / "speed.md", report)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    if not (args.task == "train" and args.list):
        out.mkdir(parents=True, exist_ok=True)
    command = "python tools/benchmark.py " + " ".join(shlex.quote(a) for a in argv)
    return globals()[args.task](args, command, out)


if __name__ == "__main__":
    main()
