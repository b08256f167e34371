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
import os

from crbp_panoptic.experiments.demo import pq_table, run_demo

DEFAULT_CONFIG = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output-dir", default="output/demo")
    parser.add_argument("--num-vis", type=int, default=4, help="val images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    result = run_demo(args.config_file, args.output_dir, args.num_vis, args.opts)
    print(f"\n== crbp_panoptic demo: {args.config_file}")
    print(pq_table(result["pq"]))
    overlay_dir = os.path.join(args.output_dir, "overlays")
    print(f"train + evaluation: {result['seconds'] / 60:.1f} min; overlays: {overlay_dir}/")


if __name__ == "__main__":
    main()
