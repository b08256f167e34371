#!/usr/bin/env python
"""Training memory and speed of every C-RBP configuration next to the feedforward Panoptic FPN.

Each configuration is a placement's COCO YAML (``--placements``: ``fpn`` = recurrent FPN
backbone, ``mask`` = recurrent mask head) with a training arm (``--arms``: ``bptt:1``,
``crbp:20``, ...; the stock Panoptic FPN, FF, always runs first: the ratios need it) plus,
on one placement only, the arms of ``--cheap-arms`` (default: the mask head's penalty on a
quarter of the ROIs, ``mask=crbp:20:sub0.25``; the FPN's on a random 32x32 window per
level, ``fpn=crbp:20:crop32``). ``--list`` prints the plan. What is measured and how:
``crbp_panoptic/experiments/benchmark.py``.

Writes ``benchmark.md`` (a markdown table headed by the machine and the settings),
``benchmark.json`` (everything measured) and ``benchmark.png`` (memory, time per iteration
and per image against the step count) to ``--out``; the table and the JSON are rewritten
after every configuration.

Defaults (R-50, 800x1216, batch 2) are the COCO setting, for a GPU
(``tools/gpu_benchmark.sh``). A CPU run with a smaller model and input (R-18, 64 FPN
channels; ``--opts`` comes last, it takes the rest of the line)::

    python tools/benchmark.py --device cpu --depth 18 --size 192 288 --batch 1 \\
        --instances 16 --detections 20 --iters 2 --warmup 1 --infer-iters 1 \\
        --infer-warmup 1 --out output/benchmark_cpu \\
        --opts MODEL.FPN.OUT_CHANNELS 64 MODEL.ROI_MASK_HEAD.CONV_DIM 64 \\
               MODEL.SEM_SEG_HEAD.CONVS_DIM 64 MODEL.CRBP.NUM_GROUPS 16

Weights: random init, and the SGD step uses ``--lr`` 0 by default, so every iteration does
a full step's work on the same weights (random data would make a random-init model
diverge). ``--opts MODEL.WEIGHTS path.pth`` loads a trained checkpoint into every
configuration run (select the matching one with ``--placements`` and ``--arms``), and
``--detections 0`` then keeps its own box predictor.

Data: every image has ``--instances`` random boxes with elliptic masks and coarse random
semantic labels. A random-init RPN finds few positives beyond the ground-truth boxes that
Detectron2 appends to the proposals, so the mask head trains on about ``--instances`` ROIs
per image; a trained RPN gives it up to 128. The default of 64 puts the mask head's training
load in that range. At inference every test image brings ``--detections`` forced boxes to
the mask head (0 = leave the random-init predictor alone).
"""

import argparse
import datetime
import sys
from pathlib import Path

import torch

from crbp_panoptic.crbp import parse_arm
from crbp_panoptic.experiments import benchmark as bench
from crbp_panoptic.experiments.machine import machine_info

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "COCO-PanopticSegmentation"


#: Arguments that define a measurement: in the report's settings and every run's spec.
MEASURE_KEYS = (
    "device",
    "size",
    "batch",
    "instances",
    "iters",
    "mem_iters",
    "warmup",
    "infer_iters",
    "infer_warmup",
    "test_tol",
    "detections",
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda[:N] (default: cuda when available)",
    )
    p.add_argument(
        "--placements",
        nargs="+",
        default=list(bench.PLACEMENT_YAMLS),
        choices=list(bench.PLACEMENT_YAMLS),
    )
    p.add_argument(
        "--arms",
        nargs="+",
        default=list(bench.DEFAULT_ARMS),
        metavar="ARM",
        help="MODE:STEPS[:subF|:cropS] run on every placement (default: %(default)s)",
    )
    p.add_argument(
        "--cheap-arms",
        nargs="*",
        metavar="PLACEMENT=ARM",
        default=[f"{p}={a}" for p, a in bench.DEFAULT_CHEAP_ARMS.items()],
        help="arms run on one placement only (default: %(default)s)",
    )
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--depth", type=int, default=None, help="MODEL.RESNETS.DEPTH (default 50)")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=2, help="images per training iteration")
    p.add_argument("--instances", type=int, default=64, help="random instances per image")
    p.add_argument("--iters", type=int, default=5, help="timed training iterations")
    p.add_argument(
        "--mem-iters",
        type=int,
        default=3,
        help="CPU: memory-pass iterations after the timed ones (least growth kept)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed training iterations first")
    p.add_argument("--infer-iters", type=int, default=3, help="timed images per variant")
    p.add_argument("--infer-warmup", type=int, default=1, help="untimed images per variant")
    p.add_argument(
        "--test-tol",
        type=float,
        default=bench.DEFAULT_TEST_TOL,
        help="MODEL.CRBP.TEST_TOL of the early-stopping inference",
    )
    p.add_argument(
        "--detections",
        type=int,
        default=100,
        help="forced detections per test image (0 = the random-init classifier's)",
    )
    p.add_argument("--lr", type=float, default=0.0, help="SOLVER.BASE_LR (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument(
        "--mem-fraction",
        type=float,
        default=0.25,
        help="CUDA: torch.cuda.set_per_process_memory_fraction cap",
    )
    p.add_argument(
        "--mem-cap-gib",
        type=float,
        default=None,
        help="CUDA: the cap in GiB instead (same on any card)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="CPU: every configuration in this process (memory only indicative)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=0,
        help="seconds; configurations not started by then are skipped (0 = no limit)",
    )
    p.add_argument("--out", default="output/benchmark", help="folder for benchmark.md/.json/.png")
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="KEY VALUE ... config options applied to every configuration (last)",
    )
    args = p.parse_args(argv)
    if len(args.opts) % 2:
        p.error(f"--opts needs KEY VALUE pairs; got {args.opts}")
    if not 0 < args.mem_fraction <= 1:
        p.error(f"--mem-fraction={args.mem_fraction}; must lie in (0, 1]")
    if min(args.iters, args.mem_iters, args.infer_iters, args.batch) < 1:
        p.error("--iters, --mem-iters, --infer-iters and --batch must be >= 1")
    try:
        args.arm_list = [parse_arm(a) for a in args.arms]
        args.cheap = bench.parse_cheap_arms(args.cheap_arms)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    runs = bench.plan(args.placements, args.arm_list, args.cheap)
    if args.list:
        for placement, arm in runs:
            opts = " ".join(bench.arm_opts(arm))
            print(f"{placement:4s} {arm.name:18s} {bench.series(arm):18s} {opts}")
        return []
    cuda = args.device.startswith("cuda")
    settings = {k: getattr(args, k) for k in MEASURE_KEYS + ("lr", "opts", "placements")}
    settings.update(
        arms=[a.name for a in args.arm_list]
        + [a.name for arms in args.cheap.values() for a in arms],
        isolated=not (cuda or args.in_process),
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        command="python tools/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    if cuda:
        settings.update(bench.prepare_cuda(args.device, args.mem_fraction, args.mem_cap_gib))
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.device)
    base_spec = {k: getattr(args, k) for k in MEASURE_KEYS + ("seed", "threads")}
    base_spec.update(
        opts=bench.common_opts(args.device, args.lr, args.detections, args.depth),
        user_opts=args.opts,
    )
    results = bench.run(
        runs,
        base_spec,
        CONFIG_DIR,
        out_dir,
        machine,
        settings,
        in_process=args.in_process,
        time_budget=args.time_budget,
    )
    title = (
        f"{machine['gpu'] or machine['cpu']}: {args.size[0]}x{args.size[1]}, "
        f"batch {args.batch}, {args.device}"
    )
    bench.plot(results, args.placements, out_dir / "benchmark.png", title)
    print((out_dir / "benchmark.md").read_text())
    print(
        f"wrote {out_dir}/benchmark.md, benchmark.json, benchmark.png "
        f"in {settings['total_s']:.0f} s"
    )
    return results


if __name__ == "__main__":
    print("Command Line Args:", sys.argv[1:], flush=True)
    main()
