#!/usr/bin/env python
"""Analyze models built from configs: parameters, multiply-adds, activations, structure.

Each ``--config-file`` may carry overrides, ``PATH[::KEY=VALUE...]``; trailing ``KEY VALUE``
pairs apply to every config; random weights, on the CPU. ``--tasks``: ``parameter``
(trainable and all, backbone + FPN, mask head, recurrent); ``flop`` (multiply-adds per
``--size`` image: backbone + FPN, its recurrent modules at exactly their test steps, the other
heads, the mask head at each ``--rois`` detections; ratios to the first config);
``activation`` (fvcore's count, millions); ``structure`` (the model as PyTorch prints it).
Without ``--config-file``: the COCO R-50 variants of ``docs/results/macs_coco.md``::

    python tools/analyze_model.py --tasks parameter flop --output output/analysis
"""

import argparse
import os

import torch

from crbp_panoptic.experiments.measure import config_macs, count_macs, parameter_counts
from crbp_panoptic.experiments.report import markdown_table, publish

COCO = "configs/COCO-PanopticSegmentation/"
FPN_FULL = "::MODEL.CRBP.FPN_CHANNELS=0::MODEL.CRBP.NUM_GROUPS=32"
DEFAULT = [
    COCO + "panoptic_fpn_R_50_1x.yaml",
    COCO + "panoptic_crbp_mask_R_50_1x.yaml",
    COCO + "panoptic_crbp_mask_R_50_1x.yaml::MODEL.CRBP.TEST_STEPS=10",
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml",
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml::MODEL.CRBP.FPN_LEVELS=['p4','p5']",
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml" + FPN_FULL,
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml::MODEL.CRBP.FPN_LEVELS=['p4','p5']" + FPN_FULL,
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml::MODEL.CRBP.FPN_LEVELS=['p2','p3','p4','p5']" + FPN_FULL,
]
TASKS = ("parameter", "flop", "activation", "structure")


def parse_variant(text: str):
    """``PATH[::KEY=VALUE...]`` -> (path, [KEY, VALUE, ...]); ValueError names a bad pair."""
    path, *pairs = text.split("::")
    opts = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--config-file {text!r}: override {pair!r} must be KEY=VALUE")
        opts += [key, value]
    return path, opts


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", nargs="+", default=DEFAULT, metavar="PATH[::KEY=VALUE]")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=["parameter"])
    p.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    p.add_argument("--rois", type=int, nargs="+", default=[10, 100], help="flop: detections")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--output", "--out", default=None, help="also write TASK.md in this folder")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE options for every config")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    try:
        args.variants = [parse_variant(c) for c in args.config_file]
    except ValueError as e:
        p.error(str(e))
    if len(args.opts) % 2:
        p.error(f"config options need KEY VALUE pairs; got {args.opts}")
    if min(args.size) < 32 or min(args.rois) < 1:
        p.error("--size must be >= 32 px and --rois >= 1")
    return args


def build(path, opts):
    """The config (early stopping off, CPU, random weights) and its model, in eval mode."""
    from detectron2.modeling import build_model

    from crbp_panoptic.engine import setup_cfg

    base = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.CRBP.TEST_TOL", 0.0]
    cfg = setup_cfg(path, base + list(opts))
    return cfg, build_model(cfg).eval()


def _name(path, opts):
    return path.split("/")[-1] + "".join(f" {k}={v}" for k, v in zip(opts[::2], opts[1::2]))


def parameter_table(rows) -> list:
    head = ["config", "trainable", "all", "backbone (+FPN), all", "mask head", "recurrent"]
    keys = ("trainable", "total", "backbone", "mask_head", "recurrent")
    return markdown_table(head, [[name] + [f"{c[k]:,}" for k in keys] for name, c in rows])


def flop_table(rows, size, rois) -> list:
    def total(r, n):
        return r["backbone"] + r["recurrent"] + r["heads"] + r["mask"][n]

    head = ["config", "steps", "backbone + FPN", "recurrent in backbone", "other heads"]
    for n in rois:
        head += [f"mask head, {n} det.", f"total, {n} det.", "x first"]
    table = []
    for name, r in rows:
        cells = [name, r["steps"]] + [
            f"{r[k] / 1e9:.3g}" for k in ("backbone", "recurrent", "heads")
        ]
        for n in rois:
            t, first = total(r, n), total(rows[0][1], n)
            cells += [f"{r['mask'][n] / 1e9:.3g}", f"{t / 1e9:.3g}", f"{t / first:.2f}"]
        table.append(cells)
    return [
        f"GMAC per {size[0]}x{size[1]} image (random weights; recurrent modules run exactly "
        "their test steps; mask head for the given number of detections).",
        "",
    ] + markdown_table(head, table)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {t: [] for t in args.tasks}
    for path, opts in args.variants:
        cfg, model = build(path, opts + list(args.opts))
        name = _name(path, opts)
        if "parameter" in results:
            results["parameter"].append((name, parameter_counts(model)))
        if "flop" in results:
            results["flop"].append((name, config_macs(model, cfg, tuple(args.size), args.rois)))
        if "activation" in results:
            image = {"image": torch.zeros(3, *args.size), "height": args.size[0]}
            count = count_macs(model, ([dict(image, width=args.size[1])],), "activation")[0]
            results["activation"].append([name, f"{count / 1e6:.3g}"])
        if "structure" in results:
            results["structure"].append(f"## {name}\n\n```\n{model}\n```\n")
    texts = {
        "parameter": parameter_table,
        "flop": lambda r: flop_table(r, args.size, args.rois),
        "activation": lambda r: markdown_table(["config", "activations (M)"], r),
        "structure": lambda r: r,
    }
    if args.output:
        os.makedirs(args.output, exist_ok=True)
    for task, rows in results.items():
        path = f"{args.output}/{task}.md" if args.output else None
        publish("\n".join(texts[task](rows)) + "\n", path)
    return results


if __name__ == "__main__":
    main()
