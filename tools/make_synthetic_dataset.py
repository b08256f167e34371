#!/usr/bin/env python
"""Generate (or check) a split of the synthetic COCO-panoptic dataset.

    python tools/make_synthetic_dataset.py --split val --num-images 12 --image-size 128 128
    python tools/make_synthetic_dataset.py --kind cables --name synthetic_longrange_val \
        --split val --num-images 100
    python tools/make_synthetic_dataset.py --split val --num-images 4 --output /tmp/val4

writes the split into the folder ``--output``, by default
``<root>/synthetic_panoptic/<name>/`` (default name ``synthetic_panoptic_<split>``, the name
Detectron2 knows it by; layout in ``crbp_panoptic/data/splits.py``). Not needed for
training: registered datasets are generated on first use. An existing split with the same
parameters is kept; one with other parameters is an error unless ``--overwrite``. For
``--kind cables`` it also prints how much grouping the split asks for
(``crbp_panoptic.data.split_statistics``). ``--preview PNG`` draws the first images above
their panoptic labels.
"""

import argparse
import json
import os
import shutil
import sys

from crbp_panoptic.data import (
    KINDS,
    ensure_split,
    split_paths,
    split_statistics,
    synthetic_split_dir,
    validate_panoptic_split,
    write_preview,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="the split's folder (default: <root>/synthetic_panoptic/<name>, where the "
        "registered dataset <name> is read from)",
    )
    p.add_argument(
        "--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)"
    )
    p.add_argument("--split", default="train", help="split name; part of the seed (default: train)")
    p.add_argument(
        "--name",
        default=None,
        help="dataset name = folder name under the root (default: synthetic_panoptic_<split>)",
    )
    p.add_argument("--num-images", type=int, default=48, help="number of images (default: 48)")
    p.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=[128, 128],
        metavar="H [W]",
        help="image height and width; one number for a square (default: 128 128)",
    )
    p.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    p.add_argument(
        "--kind",
        choices=list(KINDS),
        default="shapes",
        help="shapes (compact objects) or cables (long crossing curves)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="delete an existing split directory first"
    )
    p.add_argument(
        "--preview",
        default=None,
        metavar="PNG",
        help="also write the first --preview-images images above their panoptic labels here",
    )
    p.add_argument(
        "--preview-images", type=int, default=8, help="images in the preview (default: 8)"
    )
    args = p.parse_args(argv)
    if len(args.image_size) not in (1, 2):
        p.error(f"--image-size takes 1 or 2 numbers, got {args.image_size}")
    if args.preview_images < 1:
        p.error(f"--preview-images {args.preview_images}: need at least 1")
    if args.preview is not None and not os.path.isdir(os.path.dirname(args.preview) or "."):
        p.error(f"--preview {args.preview}: its directory does not exist")
    return args


def main(argv=None):
    args = parse_args(argv)
    size = tuple(args.image_size) * (2 if len(args.image_size) == 1 else 1)
    name = args.name or f"synthetic_panoptic_{args.split}"
    split_dir = os.path.abspath(args.output or synthetic_split_dir(name, args.root))
    if args.overwrite and os.path.lexists(split_dir):
        shutil.rmtree(split_dir)
    existed = os.path.isdir(split_dir)
    try:
        ensure_split(split_dir, args.split, args.num_images, size, args.seed, args.kind)
    except ValueError as e:
        print(f"error: {e} (or pass --overwrite)", file=sys.stderr)
        return 1
    p = split_paths(split_dir)
    stats = validate_panoptic_split(
        p.panoptic_json,
        p.panoptic_dir,
        p.image_dir,
        p.sem_seg_dir,
        p.instances_json,
        check_pixels=True,
    )
    print(f"{'kept' if existed else 'wrote'} {split_dir}: {json.dumps(stats)}")
    if args.kind == "cables":
        print(f"grouping: {json.dumps(split_statistics(split_dir))}")
    if args.preview is not None:
        print(f"preview: {write_preview(split_dir, args.preview, args.preview_images)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
