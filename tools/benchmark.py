#!/usr/bin/env python
"""Benchmark training memory and speed: the whole model, the hGRU alone, trained runs, COCOeval.

``--task`` picks what is measured (methods in ``crbp_panoptic/experiments/``); every task
writes its report into the ``--output`` folder and prints it:

* ``train``: every C-RBP configuration (``--placements`` x ``--arms``, plus each placement's
  ``--cheap-arms``) next to the stock Panoptic FPN, random weights and data: training memory
  and s/iter, inference s/image at T, 2T steps and with early stopping
  (``benchmark.md/.json/.png``; ``experiments/benchmark.py``). Defaults are COCO's (R-50,
  800x1216, batch 2) for a GPU (``tools/gpu_benchmark.sh``); trailing ``KEY VALUE`` pairs
  apply to every configuration. ``--list`` prints the plan.
* ``engine``: one training step of the hGRU refiner per arm on a mask-head and an FPN-level
  drive: saved bytes, CUDA peak, s/step (``engine.md``; ``experiments/engine_benchmark.py``).
  The paper's sizes: ``--channels 256 --rois 256 --fpn-hw 200x304`` (a GPU).
* ``compile``: one hGRU inference step eager and through torch.compile (``engine_compile.md``).
* ``torchdeq``: the refiner against torchdeq's IFT, gradients checked first
  (``torchdeq.md``; needs ``pip install torchdeq==0.1.0 --no-deps``).
* ``trained``: finished training runs (``--feedforward DIR``, ``--run NAME=DIR``, each with
  ``config.yaml`` and ``model_final.pth``): inference and training cost of each speed lever
  and PQ, ratios to the feedforward run (``speed.md/.json``; ``experiments/speed.py``).
* ``coco_eval``: box/mask AP with each installed COCOeval backend on detections derived from
  a synthetic split (``coco_eval.md``; ``experiments/coco_eval_benchmark.py``).

Examples::

    python tools/benchmark.py --task engine --repeats 2 --output output/engine
    python tools/benchmark.py --task train --device cpu --depth 18 --size 192 288 --batch 1 \\
        --instances 16 --detections 20 --iters 2 --warmup 1 --output output/benchmark_cpu \\
        MODEL.FPN.OUT_CHANNELS 64 MODEL.ROI_MASK_HEAD.CONV_DIM 64 MODEL.CRBP.NUM_GROUPS 16
"""

import argparse
import datetime
import json
import math
import os
import shlex
import sys
from pathlib import Path

import torch

from crbp_panoptic.crbp import parse_arm
from crbp_panoptic.experiments import benchmark as bench
from crbp_panoptic.experiments import engine_benchmark as eb
from crbp_panoptic.experiments.machine import describe, machine_info
from crbp_panoptic.experiments.report import publish, write_atomic

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "COCO-PanopticSegmentation"
TASKS = ("train", "engine", "compile", "torchdeq", "trained", "coco_eval")
#: Each task's defaults for the options several tasks share (None in the parser).
DEFAULTS = {
    "train": dict(size=[800, 1216], iters=5, arms=bench.DEFAULT_ARMS),
    "engine": dict(images=2, repeats=1, arms=eb.DEFAULT_ARMS, neumann_steps=15),
    "compile": dict(images=2),
    "torchdeq": dict(repeats=3, neumann_steps=15, threads=1, arms=eb.TORCHDEQ_ARMS),
    "trained": dict(images=12, iters=6),
    "coco_eval": dict(images=300, size=[256], repeats=3),
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
    add("--task", required=True, choices=TASKS)
    add("--output", "--out", default="output/benchmark", help="folder of the report")
    add("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    add("--threads", type=int, default=None, help="torch threads (0 = torch's default)")
    add("--seed", type=int, default=0)
    add("--arms", nargs="+", default=None, metavar="ARM", help="train, engine, torchdeq arms")
    add("--size", type=int, nargs="+", default=None, help="train: H W; coco_eval: image side")
    add("--images", type=int, default=None, help="engine: FPN batch; trained, coco_eval: images")
    add("--iters", type=int, default=None, help="train, trained: timed training iterations")
    add("--repeats", type=int, default=None, help="engine, torchdeq, coco_eval: timed repeats")
    add("--neumann-steps", type=int, default=None, help="engine, torchdeq: Neumann terms K")
    add("--memory-fraction", type=float, default=None, help="CUDA memory cap (train: 0.25)")
    g = p.add_argument_group("--task train").add_argument
    g("--placements", nargs="+", default=["fpn", "mask"], choices=["fpn", "mask"])
    g("--cheap-arms", nargs="*", default=["mask=crbp:20:sub0.25", "fpn=crbp:20:crop32"])
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
    g("opts", nargs=argparse.REMAINDER, help="KEY VALUE config options for every configuration")
    g = p.add_argument_group("--task engine, compile, torchdeq").add_argument
    g("--scales", nargs="+", default=["mask", "fpn"], choices=["mask", "fpn"])
    g("--channels", type=int, default=64, help="C")
    g("--rois", type=int, default=32, help="mask-head ROIs")
    g("--roi-size", type=int, default=14)
    g("--fpn-hw", type=_shape, default=(48, 64), help="FPN level HxW")
    g("--num-groups", type=int, default=32, help="GroupNorm groups (made to divide C)")
    g("--gala", action="store_true", help="GALA attention in the cell")
    g("--shapes", type=_shape, nargs="+", default=[(32, 64, 14, 14), (2, 64, 48, 64)])
    g("--steps", type=int, default=20, help="torchdeq: forward steps T")
    g = p.add_argument_group("--task trained").add_argument
    g("--feedforward", metavar="DIR", help="the feedforward run the ratios refer to")
    g("--run", action="append", default=[], metavar="NAME=DIR", help="a recurrent run")
    g("--no-pq", action="store_true", help="time only; skip the evaluations")
    g = p.add_argument_group("--task coco_eval").add_argument
    g("--false-positives", type=float, default=20.0, help="expected false positives per image")
    g("--data-dir", default="output/coco_eval_benchmark", help="where the split is cached")
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
    small = [k for k in ("iters", "repeats", "images", "mem_iters", "batch", "infer_iters")]
    small = [k for k in small if getattr(args, k) is not None and getattr(args, k) < 1]
    if small:
        p.error(f"--{small[0].replace('_', '-')} must be >= 1")
    if args.task == "torchdeq" and args.steps < 2:
        p.error(f"--steps={args.steps}; torchdeq needs >= 2")
    try:
        args.arm_list = [parse_arm(a.format(steps=args.steps)) for a in args.arms or ()]
        args.cheap = bench.parse_cheap_arms(args.cheap_arms) if args.task == "train" else {}
    except ValueError as e:
        p.error(str(e))
    if args.task in ("engine", "torchdeq") and any(not a.recurrent for a in args.arm_list):
        p.error(f"--arms {' '.join(args.arms)}: the refiner alone has no feedforward arm")
    if args.task == "train" and len(args.size) != 2:
        p.error(f"--size {args.size}: --task train takes H W")
    if args.task == "trained":
        if not args.feedforward:
            p.error("--task trained needs --feedforward DIR")
        args.runs = {}
        for text in args.run:
            name, sep, path = text.partition("=")
            if not sep or not name or not path:
                p.error(f"--run {text!r}: write NAME=DIR")
            args.runs[name] = path
    return args


def _command(argv):
    return "python tools/benchmark.py " + " ".join(shlex.quote(a) for a in argv)


def train(args, argv, out):
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
        command=_command(argv),
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


def engine(args, argv, out):
    from crbp_panoptic.crbp import HGRUCell

    device = torch.device(args.device)
    if device.type == "cuda" and args.memory_fraction is not None:
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, device)
    all_shapes = eb.shapes(args.channels, args.rois, args.roi_size, args.images, args.fpn_hw)
    scale_shapes = {s: all_shapes[s] for s in args.scales}
    groups = math.gcd(args.num_groups, args.channels)
    cell = f"hGRU (C={args.channels}, GN groups={groups}, gala={args.gala})"
    if args.task == "compile":
        torch.manual_seed(args.seed)
        hgru = HGRUCell(args.channels, num_groups=groups, gala=args.gala).eval()
        rows = [(s, shape, eb.compiled_step(hgru, shape)) for s, shape in scale_shapes.items()]
        header = (
            f"{cell} step eager and through torch.compile, inference, "
            f"{describe(machine_info('cpu'))}; CPU time per step, the fastest of 5 x 10 calls."
        )
        return publish(eb.compile_table(rows, header), out / "engine_compile.md")
    rows = eb.benchmark(
        args.arm_list, scale_shapes, num_groups=args.num_groups, gala=args.gala,
        neumann_steps=args.neumann_steps, repeats=args.repeats, device=device, seed=args.seed,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )  # fmt: skip
    header = (
        f"Engine benchmark: {cell}, K={args.neumann_steps} Neumann terms, one training step "
        f"(forward + backward), {describe(machine_info(str(device)))}."
    )
    return publish(eb.table(rows, header), out / "engine.md")


def torchdeq(args, argv, out):
    parts = [
        "# This engine vs torchdeq's IFT: one training step of the hGRU",
        "",
        f"Machine: {describe(machine_info('cpu'))}. Peak MiB: bytes torch allocated during the "
        "step, above the start (profiler memory events).",
    ]
    for shape in args.shapes:
        result = eb.compare(
            shape, steps=args.steps, neumann_steps=args.neumann_steps, repeats=args.repeats,
            arms=[a.name for a in args.arm_list], log=lambda m: print(m, flush=True),
        )  # fmt: skip
        parts += ["", eb.torchdeq_table(result)]
    return publish("\n".join(parts), out / "torchdeq.md")


def trained(args, argv, out):
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
    header = ["# Speed of trained models", "", f"Machine: {describe(report['machine'])}."]
    text = speed.markdown(report, header + ["", f"Command: `{_command(argv)}`"])
    write_atomic(str(out / "speed.json"), json.dumps(report, indent=1))
    return publish(text, out / "speed.md")


def coco_eval(args, argv, out):
    from crbp_panoptic.data import ensure_split, split_paths
    from crbp_panoptic.evaluation import BACKENDS, has_detectron2_cocoeval, has_faster_coco_eval
    from crbp_panoptic.experiments import coco_eval_benchmark as cb

    if not has_faster_coco_eval():
        sys.exit("faster-coco-eval is not installed: pip install faster-coco-eval")
    h, w = (args.size * 2)[:2]
    name = f"val_{args.images}_{h}px" if h == w else f"val_{args.images}_{h}x{w}px"
    split_dir = os.path.join(args.data_dir, name)
    ensure_split(split_dir, "val", args.images, (h, w), 0)
    with open(split_paths(split_dir).instances_json) as f:
        coco_json = json.load(f)
    results = cb.perturbed_detections(
        coco_json, seed=args.seed, false_positive=args.false_positives
    )
    backends = [b for b in BACKENDS if b != "detectron2" or has_detectron2_cocoeval()]
    report = cb.benchmark_backends(coco_json, results, backends[::-1], repeats=args.repeats)
    n = len(coco_json["annotations"])
    data = f"synthetic val split, {args.images} images of {h}x{w}, {n} objects"
    return publish(
        cb.format_report(report, _command(argv), data, len(results)), out / "coco_eval.md"
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    if not (args.task == "train" and args.list):
        out.mkdir(parents=True, exist_ok=True)
    task = {"train": train, "trained": trained, "torchdeq": torchdeq, "coco_eval": coco_eval}
    return task.get(args.task, engine)(args, argv, out)


if __name__ == "__main__":
    main()
