#!/usr/bin/env python
"""Panoptic segmentation of image files with a trained model (Detectron2's demo, for files).

    python tools/predict.py --config-file CONFIG --input PATH [PATH ...] --output DIR \
        [--random-weights] [KEY VALUE ...]     (e.g. MODEL.WEIGHTS output/model_final.pth)

PATH: image files, glob patterns ("dir/*.jpg", quoted) or directories. KEY VALUE config
overrides come last, with full key names; whatever precedes them is an input, even a name
like TEST.jpg. For each image NAME, DIR gets NAME.png (overlay), NAME_panoptic.png (segment
ids, panopticapi RGB encoding) and NAME.json (segments); DIR/predictions.json holds all of
them in the COCO panoptic results format.

Everything is checked before the model is loaded, and nothing is overwritten by surprise:
inputs that cannot be read, a DIR that is a file or not writable, two inputs whose outputs
would have the same name (x.png and x_panoptic.jpg, an input named predictions.*, or the
same name in two folders) and an output that would replace an input (DIR is an input's
folder) are errors naming the files; rename the input or choose another DIR. Files are
written with the permissions of the umask.

MODEL.WEIGHTS must be a checkpoint that fits the model (only the recurrent modules' own
weights may be missing, as in a stock Detectron2 checkpoint); --random-weights runs an
untrained model instead. 16-bit images are scaled to 8 bits. An image larger than the
model's test size (INPUT.MIN_SIZE_TEST short side, INPUT.MAX_SIZE_TEST long side at most)
is shrunk to it when read; its outputs have that size.
"""

import argparse
import re
import sys

from crbp_panoptic.engine import setup_cfg
from crbp_panoptic.engine.checkpoint import WeightsError
from crbp_panoptic.engine.inputs import (
    InputError,
    collect_images,
    config_keys,
    split_inputs_and_opts,
)
from crbp_panoptic.engine.predictor import RUN_FILE, OutputError, predict_to_files

# What a mistyped override key looks like (MODEL.WEIGHT); an image path rarely does.
_KEY_LIKE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="image files, glob patterns or directories",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="run an untrained model (without MODEL.WEIGHTS), e.g. to test a setup",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    # argparse hands trailing KEY VALUE pairs to --input: move them to opts.
    from detectron2.config import get_cfg

    from crbp_panoptic.config import add_crbp_config

    cfg = get_cfg()
    add_crbp_config(cfg)
    args.input, extra = split_inputs_and_opts(args.input, config_keys(cfg))
    args.opts = extra + args.opts
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        paths = collect_images(args.input)
    except InputError as e:
        typo = [p for p in args.input if _KEY_LIKE.match(p) and repr(p) in str(e)]
        hint = " and not a config key either (overrides: KEY VALUE pairs after the inputs)"
        sys.exit(f"predict.py: {e}{hint if typo else ''}")
    try:
        cfg = setup_cfg(args.config_file, args.opts)
        cfg.freeze()
        result = predict_to_files(
            cfg,
            paths,
            args.output,
            progress=not args.no_progress,
            random_weights=args.random_weights,
        )
    except (FileNotFoundError, OutputError, WeightsError) as e:
        sys.exit(f"predict.py: {e}")
    print(f"{len(result['annotations'])} image(s) -> {args.output}/ ({RUN_FILE})")
    return result


if __name__ == "__main__":
    main()
