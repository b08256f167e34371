#!/usr/bin/env python
"""Export a (recurrent) Panoptic FPN to TorchScript by tracing, in Detectron2's export style.

    python tools/export_model.py --config-file CONFIG --output DIR \
        --format torchscript --export-method tracing [--steps N] [--sample-image IMAGE] \
        [--random-weights] [KEY VALUE ...]     (e.g. MODEL.WEIGHTS output/model_final.pth)

Writes DIR/model.ts. Each recurrent module runs a fixed number of steps in the trace
(--steps, default: the config's test steps). The traced module takes one (3, H, W) float
image as the model does (INPUT.FORMAT channels, resized like the test-time resize) and
returns the raw detections and semantic logits (see crbp_panoptic/engine/export.py);
the script checks them against the eager model on the sample image (default: a
synthetic one of INPUT.MIN_SIZE_TEST pixels). MODEL.WEIGHTS must be a checkpoint that fits
the model (only the recurrent modules' own weights may be missing, as in a stock Detectron2
checkpoint); --random-weights exports an untrained model instead.
"""

import argparse
import os
import sys

import numpy as np
import torch

from crbp_panoptic.engine import setup_cfg
from crbp_panoptic.engine.checkpoint import WeightsError, check_weights_given, load_trained_weights
from crbp_panoptic.engine.export import eager_raw_outputs, trace_panoptic, traced_outputs
from crbp_panoptic.engine.inputs import InputError, collect_images, read_rgb


def sample_image(cfg, path=None):
    """(3, H, W) float image tensor as the model takes it, resized for test."""
    from detectron2.data import transforms as T

    if path:
        image = read_rgb(path, (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))[0]
    else:
        from crbp_panoptic.data import render_sample

        size = cfg.INPUT.MIN_SIZE_TEST
        image = np.asarray(render_sample(0, "val", (size, size), seed=0).image)
    image = image[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))


def max_difference(a, b):
    """Largest absolute difference between eager and traced outputs (inf if shapes differ)."""
    pairs = [(a["sem_seg"], b["sem_seg"])]
    for key in a["instances"].get_fields():
        x, y = a["instances"].get(key), b["instances"].get(key)
        pairs.append((getattr(x, "tensor", x), getattr(y, "tensor", y)))
    if any(x.shape != y.shape for x, y in pairs):
        return float("inf")
    return max([(x.float() - y.float()).abs().max().item() for x, y in pairs if x.numel()] + [0.0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--format", choices=["torchscript"], default="torchscript")
    parser.add_argument(
        "--export-method",
        choices=["tracing"],
        default="tracing",
        help="scripting is not supported yet (see README)",
    )
    parser.add_argument("--steps", type=int, default=None, help="recurrent steps in the trace")
    parser.add_argument("--sample-image", help="image to trace with (default: synthetic)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="export an untrained model (without MODEL.WEIGHTS), e.g. to test a setup",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps {args.steps}: must be >= 1")
    try:
        if args.sample_image:
            collect_images([args.sample_image])
        cfg = setup_cfg(args.config_file, args.opts)
        cfg.freeze()
        weights = check_weights_given(cfg.MODEL.WEIGHTS, args.random_weights)
    except (InputError, FileNotFoundError, WeightsError) as e:
        sys.exit(f"export_model.py: {e}")

    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    try:
        load_trained_weights(model, weights)
    except WeightsError as e:
        sys.exit(f"export_model.py: {e}")
    image = sample_image(cfg, args.sample_image).to(cfg.MODEL.DEVICE)
    try:
        traced, adapter = trace_panoptic(model, image, args.steps)
    except RuntimeError as e:
        sys.exit(f"export_model.py: {e}")
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model.ts")
    traced.save(path)
    diff = max_difference(
        eager_raw_outputs(model, image, args.steps), traced_outputs(traced, adapter, image)
    )
    print(f"exported {path}; traced vs eager on the sample image: max |difference| {diff:.3g}")
    return path, diff


if __name__ == "__main__":
    main()
