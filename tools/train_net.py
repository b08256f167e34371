#!/usr/bin/env python
"""Train or evaluate a (recurrent) Panoptic FPN, the Detectron2 way.

    python tools/train_net.py --config-file configs/COCO-PanopticSegmentation/panoptic_crbp_fpn_R_50_1x.yaml \
        --num-gpus 8 [--resume] [--eval-only MODEL.WEIGHTS path/to/model.pth] [KEY VALUE ...]

Multi-machine: add --num-machines N --machine-rank R --dist-url tcp://HOST:PORT on each.
Without CUDA it runs on the CPU (--num-gpus then counts CPU processes).
"""
import logging

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup

import crbp_panoptic  # noqa: F401  (registers the C-RBP backbone, mask head and datasets)
from crbp_panoptic import add_crbp_config
from crbp_panoptic.data.checks import check_datasets
from crbp_panoptic.engine import Trainer, launch


def setup(args):
    cfg = get_cfg()
    add_crbp_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("crbp_panoptic").warning("CUDA is not available: MODEL.DEVICE=cpu")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    check_datasets(cfg.DATASETS.TEST if args.eval_only else cfg.DATASETS.TRAIN + cfg.DATASETS.TEST)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
