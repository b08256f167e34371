#!/usr/bin/env python
"""Panoptic segmentation of image files with a trained model (Detectron2's demo, for files).

    python tools/predict.py --config-file CONFIG --input PATH [PATH ...] --output DIR \
        [KEY VALUE ...]        (e.g. MODEL.WEIGHTS output/model_final.pth)

PATH: image files, glob patterns ("dir/*.jpg", quoted) or directories. Every input is
checked before anything is written. For each image NAME, DIR gets NAME.png (overlay),
NAME_panoptic.png (segment ids, panopticapi RGB encoding) and NAME.json (segments);
DIR/predictions.json holds all of them in the COCO panoptic results format.
"""

import argparse
import sys

from crbp_panoptic.engine import setup_cfg
from crbp_panoptic.engine.inputs import InputError, collect_images, split_inputs_and_opts
from crbp_panoptic.engine.predictor import predict_to_files


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="image files, glob patterns or directories",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    # argparse hands trailing KEY VALUE pairs to --input: move them to opts.
    from detectron2.config import get_cfg

    args.input, extra = split_inputs_and_opts(args.input, get_cfg().keys())
    args.opts = extra + args.opts
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        paths = collect_images(args.input)
        cfg = setup_cfg(args.config_file, args.opts)
        cfg.freeze()
    except (InputError, FileNotFoundError) as e:
        sys.exit(f"predict.py: {e}")
    result = predict_to_files(cfg, paths, args.output, progress=not args.no_progress)
    print(f"{len(result['annotations'])} image(s) -> {args.output}/ (predictions.json)")
    return result


if __name__ == "__main__":
    main()
