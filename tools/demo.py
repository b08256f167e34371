#!/usr/bin/env python
"""Train a C-RBP Panoptic FPN on the built-in synthetic data, report PQ, draw overlays.

What `make demo` runs. Trains from scratch on the synthetic COCO-panoptic train split
(generated under $DETECTRON2_DATASETS on first use), evaluates it on the held-out val
split with Detectron2's evaluators (the PQ table is printed by COCOPanopticEvaluator),
and writes panoptic overlays of a few val images (ground truth | prediction) with
Detectron2's Visualizer to <output>/overlays/.

    python tools/demo.py [--config-file CONFIG] [--output DIR] [--num-vis N] [KEY VALUE ...]
"""

import argparse
import os

from crbp_panoptic.engine.demo import pq_table, run_demo

DEFAULT_CONFIG = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument(
        "--output", "--output-dir", dest="output", default="output/demo", metavar="DIR"
    )
    parser.add_argument("--num-vis", type=int, default=4, help="val images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    result = run_demo(args.config_file, args.output, args.num_vis, args.opts)
    print(f"\n== crbp_panoptic demo: {args.config_file}")
    print(pq_table(result["pq"]))
    overlay_dir = os.path.join(args.output, "overlays")
    print(f"train + evaluation: {result['seconds'] / 60:.1f} min; overlays: {overlay_dir}/")


if __name__ == "__main__":
    main()
