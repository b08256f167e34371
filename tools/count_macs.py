#!/usr/bin/env python
"""Multiply-adds per image of each config: what a recurrent placement costs at least.

Each argument is a config, optionally with overrides: ``PATH[::KEY=VALUE...]``. The first
is the reference of the ratios (the feedforward model). Counts use random weights, one
``--size`` image and exactly ``MODEL.CRBP.TEST_STEPS`` (else ``STEPS``) recurrent steps;
the mask head is counted apart for each number of detections in ``--rois`` (method:
``crbp_panoptic/experiments/macs.py``).

    python tools/count_macs.py                      # the COCO R-50 configs at 800x1216
    python tools/count_macs.py --size 128 128 --rois 5 20 -- \\
        configs/Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml \\
        "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml::MODEL.CRBP.FPN_CHANNELS=32"
"""

import argparse

import torch

from crbp_panoptic.experiments.macs import config_macs, parse_variant
from crbp_panoptic.experiments.report import publish

COCO = "configs/COCO-PanopticSegmentation/"
DEFAULT = [
    COCO + "panoptic_fpn_R_50_1x.yaml",
    COCO + "panoptic_crbp_mask_R_50_1x.yaml",
    COCO + "panoptic_crbp_mask_R_50_1x.yaml::MODEL.CRBP.TEST_STEPS=10",
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml",
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml::MODEL.CRBP.FPN_LEVELS=['p4','p5']",
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml::MODEL.CRBP.FPN_CHANNELS=0::MODEL.CRBP.NUM_GROUPS=32",
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml::MODEL.CRBP.FPN_LEVELS=['p4','p5']"
    "::MODEL.CRBP.FPN_CHANNELS=0::MODEL.CRBP.NUM_GROUPS=32",
    COCO + "panoptic_crbp_fpn_R_50_1x.yaml::MODEL.CRBP.FPN_LEVELS=['p2','p3','p4','p5']"
    "::MODEL.CRBP.FPN_CHANNELS=0::MODEL.CRBP.NUM_GROUPS=32",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("configs", nargs="*", default=DEFAULT, help="PATH[::KEY=VALUE...]")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    p.add_argument("--rois", type=int, nargs="+", default=[10, 100], help="detections")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    try:
        args.variants = [parse_variant(c) for c in args.configs]
    except ValueError as e:
        p.error(str(e))
    if min(args.size) < 32 or min(args.rois) < 1:
        p.error("--size must be >= 32 px and --rois >= 1")
    return args


def _name(path, opts):
    return path.split("/")[-1] + "".join(f" {k}={v}" for k, v in zip(opts[::2], opts[1::2]))


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [
        (_name(p, o), config_macs(p, o, tuple(args.size), args.rois)) for p, o in args.variants
    ]
    ref = results[0][1]

    def total(r, rois):
        return r["backbone"] + r["recurrent"] + r["heads"] + r["mask"][rois]

    per_rois = " | ".join(f"mask head, {r} det. | total, {r} det. | x first" for r in args.rois)
    lines = [
        f"GMAC per {args.size[0]}x{args.size[1]} image (random weights; recurrent modules run "
        "exactly their test steps; mask head for the given number of detections).",
        "",
        f"| config | steps | backbone + FPN | recurrent in backbone | other heads | {per_rois} |",
        "|---|---:|---:|---:|---:|" + "---:|---:|---:|" * len(args.rois),
    ]
    for name, r in results:
        cells = []
        for rois in args.rois:
            t, mask = total(r, rois), r["mask"][rois]
            cells.append(f"{mask / 1e9:.3g} | {t / 1e9:.3g} | {t / total(ref, rois):.2f}")
        gmac = [r[k] / 1e9 for k in ("backbone", "recurrent", "heads")]
        lines.append(
            f"| {name} | {r['steps']} | "
            + " | ".join(f"{v:.3g}" for v in gmac)
            + " | "
            + " | ".join(cells)
            + " |"
        )
    publish("\n".join(lines) + "\n", args.out)
    return results


if __name__ == "__main__":
    main()
