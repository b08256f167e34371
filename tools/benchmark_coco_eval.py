#!/usr/bin/env python
"""Time COCO box/mask AP with pycocotools, faster-coco-eval (and Detectron2's C++ COCOeval).

Generates a synthetic split (cached under --data-dir), derives detections from its ground
truth, evaluates them with each installed backend and prints (or writes) a Markdown report.

    python tools/benchmark_coco_eval.py [--images 300] [--size 256] [--repeats 3] [--out FILE]
"""

import argparse
import json
import os
import shlex
import sys

from crbp_panoptic.data import ensure_split, split_paths
from crbp_panoptic.evaluation import BACKENDS, has_detectron2_cocoeval, has_faster_coco_eval
from crbp_panoptic.evaluation.benchmark import (
    benchmark_backends,
    format_report,
    perturbed_detections,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--images", type=int, default=300, help="synthetic val images")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per backend (best kept)")
    parser.add_argument(
        "--false-positives",
        type=float,
        default=20.0,
        help="expected false positives per image (a detector outputs up to 100)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the detections' perturbations")
    parser.add_argument(
        "--data-dir", default="output/coco_eval_benchmark", help="where the split is cached"
    )
    parser.add_argument("--out", help="write the Markdown report here (default: print it)")
    args = parser.parse_args(argv)
    if not has_faster_coco_eval():
        sys.exit("faster-coco-eval is not installed: pip install faster-coco-eval")

    split_dir = os.path.join(args.data_dir, f"val_{args.images}_{args.size}px")
    ensure_split(split_dir, "val", args.images, (args.size, args.size), 0)
    with open(split_paths(split_dir).instances_json) as f:
        coco_json = json.load(f)
    results = perturbed_detections(coco_json, seed=args.seed, false_positive=args.false_positives)
    backends = [b for b in BACKENDS if b != "detectron2" or has_detectron2_cocoeval()]
    report = benchmark_backends(coco_json, results, backends[::-1], repeats=args.repeats)
    command = "python tools/benchmark_coco_eval.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    text = format_report(
        report,
        command.strip(),
        f"synthetic val split, {args.images} images of "
        f"{args.size}x{args.size}, {len(coco_json['annotations'])} objects",
        len(results),
    )
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
