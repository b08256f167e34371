#!/usr/bin/env python
"""Parameter counts of the stock Panoptic FPN and both recurrent placements, from their YAMLs.

python tools/count_params.py [CONFIG ...]
"""

import argparse

from detectron2.modeling import build_model

import crbp_panoptic  # noqa: F401  (registers)
from crbp_panoptic.engine import setup_cfg

DEFAULT = [
    "configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml",
    "configs/COCO-PanopticSegmentation/panoptic_crbp_mask_R_50_1x.yaml",
    "configs/COCO-PanopticSegmentation/panoptic_crbp_fpn_R_50_1x.yaml",
]


def count(module):
    return sum(p.numel() for p in module.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    print("| config | whole model | backbone (+FPN) | mask head |")
    print("|---|---:|---:|---:|")
    for path in args.configs:
        model = build_model(setup_cfg(path, ["MODEL.DEVICE", "cpu"]))
        print(
            f"| {path.split('/')[-1]} | {count(model):,} | {count(model.backbone):,} "
            f"| {count(model.roi_heads.mask_head):,} |"
        )


if __name__ == "__main__":
    main()
