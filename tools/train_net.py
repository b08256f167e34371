#!/usr/bin/env python
"""Train or evaluate a (recurrent) Panoptic FPN, the Detectron2 way.

    python tools/train_net.py \
        --config-file configs/COCO-PanopticSegmentation/panoptic_crbp_fpn_R_50_1x.yaml \
        --num-gpus 8 [--resume] [--eval-only MODEL.WEIGHTS path/to/model.pth] [KEY VALUE ...]

Multi-machine: add --num-machines N --machine-rank R --dist-url tcp://HOST:PORT on each.
Without CUDA it runs on the CPU (--num-gpus then counts CPU processes). --eval-only needs
trained weights (MODEL.WEIGHTS, or the last checkpoint with --resume) that fit the model;
--eval-only --random-weights evaluates an untrained model instead.
"""

import sys

from detectron2.engine import default_argument_parser

import crbp_panoptic  # noqa: F401  (registers the C-RBP backbone, mask head and datasets)
from crbp_panoptic.engine import launch, setup, train_or_evaluate
from crbp_panoptic.engine.trainer import CheckpointReadError

__all__ = ["argument_parser", "main", "setup"]


def argument_parser():
    """Detectron2's ``default_argument_parser`` plus ``--random-weights``."""
    parser = default_argument_parser()
    parser.description = __doc__.splitlines()[0]
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="with --eval-only: evaluate an untrained model (no MODEL.WEIGHTS)",
    )
    return parser


def main(args):
    """Detectron2's ``main(args)``: see :func:`crbp_panoptic.engine.train_or_evaluate`."""
    try:
        return train_or_evaluate(args)
    except CheckpointReadError as e:  # --resume with a damaged last checkpoint
        sys.exit(f"train_net.py: {e}")


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
