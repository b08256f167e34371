#!/usr/bin/env python
"""The main job on the built-in synthetic data (what `make demo` runs).

Trains a C-RBP Panoptic FPN from scratch on the synthetic COCO-panoptic train split
(generated under $DETECTRON2_DATASETS on first use), evaluates it on the held-out val
split with Detectron2's evaluators (the PQ table is printed by COCOPanopticEvaluator),
and writes panoptic overlays of a few val images (ground truth | prediction) with
Detectron2's Visualizer.

    python tools/demo.py [--config-file CONFIG] [--output-dir DIR] [--num-vis N] [KEY VALUE ...]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor, default_argument_parser
from detectron2.utils.visualizer import Visualizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_net  # noqa: E402  (tools/train_net.py: setup() and main())

from crbp_panoptic import add_crbp_config  # noqa: E402

DEFAULT_CONFIG = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


def write_overlays(cfg, weights, out_dir, num_images):
    """Save ground truth | prediction panoptic overlays of the first val images as PNGs."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    predictor = DefaultPredictor(cfg)  # loads cfg.MODEL.WEIGHTS
    dataset = cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(dataset)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for record in DatasetCatalog.get(dataset)[:num_images]:
        image = read_image(record["file_name"], format="RGB")
        truth = Visualizer(image, metadata, scale=3.0).draw_dataset_dict(record).get_image()
        seg, segments = predictor(image[:, :, ::-1])["panoptic_seg"]  # the model takes BGR
        pred = Visualizer(image, metadata, scale=3.0).draw_panoptic_seg_predictions(seg.cpu(), segments)
        panel = np.concatenate([truth, np.full((truth.shape[0], 4, 3), 255, np.uint8), pred.get_image()], 1)
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png")
        Image.fromarray(panel).save(path)
        paths.append(path)
    return paths


def read_final_metrics(path, prefix):
    """The evaluation results the trainer logged to ``metrics.json``, without ``prefix``."""
    with open(path) as f:
        records = [json.loads(line) for line in f if prefix in line]
    if not records:
        raise RuntimeError(f"{path}: no '{prefix}*' results; did the evaluation run?")
    return {k[len(prefix):]: v for k, v in records[-1].items() if k.startswith(prefix)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output-dir", default="output/demo")
    parser.add_argument("--num-vis", type=int, default=4, help="val images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)

    train_args = default_argument_parser().parse_args(
        ["--config-file", args.config_file, "OUTPUT_DIR", args.output_dir, *args.opts]
    )
    start = time.perf_counter()
    train_net.main(train_args)  # trains, then evaluates once (Detectron2's EvalHook)
    train_eval_s = time.perf_counter() - start
    pq = read_final_metrics(os.path.join(args.output_dir, "metrics.json"), "panoptic_seg/")

    cfg = get_cfg()
    add_crbp_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(train_args.opts)
    cfg.MODEL.DEVICE = cfg.MODEL.DEVICE if torch.cuda.is_available() else "cpu"
    overlays = write_overlays(cfg, os.path.join(args.output_dir, "model_final.pth"),
                              os.path.join(args.output_dir, "overlays"), args.num_vis)

    print(f"\n== crbp_panoptic demo: {args.config_file}")
    print(f"{'':8}{'PQ':>8}{'SQ':>8}{'RQ':>8}")
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        print(f"{name:8}{pq['PQ' + suffix]:8.2f}{pq['SQ' + suffix]:8.2f}{pq['RQ' + suffix]:8.2f}")
    print(f"train + evaluation: {train_eval_s / 60:.1f} min; overlays: {os.path.dirname(overlays[0])}/")


if __name__ == "__main__":
    main()
