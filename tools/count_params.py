#!/usr/bin/env python
"""Parameter counts (trainable and all) of Panoptic FPN models, from their YAMLs.

python tools/count_params.py [CONFIG ...]

"Trainable" is what the paper counts (FrozenBN buffers aside, the stem and res2 are frozen by
MODEL.BACKBONE.FREEZE_AT); "all" includes the frozen parameters.
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


def count(module, trainable=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    print("| config | trainable | all | backbone (+FPN), all | mask head |")
    print("|---|---:|---:|---:|---:|")
    for path in args.configs:
        model = build_model(setup_cfg(path, ["MODEL.DEVICE", "cpu"]))
        print(
            f"| {path.split('/')[-1]} | {count(model, trainable=True):,} | {count(model):,} "
            f"| {count(model.backbone):,} | {count(model.roi_heads.mask_head):,} |"
        )


if __name__ == "__main__":
    main()
