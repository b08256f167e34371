"""The main job on the built-in synthetic data: train, evaluate PQ, draw overlays."""

import os
import time
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

from .results import read_results

__all__ = ["pq_table", "run_demo", "write_overlays"]


def write_overlays(cfg, weights: str, out_dir: str, num_images: int) -> List[str]:
    """Save ground truth | prediction panoptic overlays of the first test images as PNGs.

    Args:
        cfg: the config the model was trained with (``DATASETS.TEST[0]`` is drawn).
        weights: the checkpoint to load.
        out_dir: created if needed; one ``<image name>.png`` per image.
        num_images: how many images, from the first.

    Returns:
        list[str]: the paths written.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor
    from detectron2.utils.visualizer import Visualizer

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
        pred = (
            Visualizer(image, metadata, scale=3.0)
            .draw_panoptic_seg_predictions(seg.cpu(), segments)
            .get_image()
        )
        gap = np.full((truth.shape[0], 4, 3), 255, np.uint8)
        name = os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png"
        path = os.path.join(out_dir, name)
        Image.fromarray(np.concatenate([truth, gap, pred], 1)).save(path)
        paths.append(path)
    return paths


def pq_table(pq: Dict[str, float]) -> str:
    """PQ, SQ, RQ for All, Things, Stuff (``pq``: the ``panoptic_seg`` results) as text."""
    lines = [f"{'':8}{'PQ':>8}{'SQ':>8}{'RQ':>8}"]
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        lines.append(
            f"{name:8}{pq['PQ' + suffix]:8.2f}{pq['SQ' + suffix]:8.2f}{pq['RQ' + suffix]:8.2f}"
        )
    return "\n".join(lines)


def run_demo(config_file, output_dir: str, num_vis: int = 4, opts: Sequence[str] = ()) -> Dict:
    """Train ``config_file`` into ``output_dir`` (evaluated once at the end), then draw overlays.

    Returns:
        dict: ``pq`` (the final ``panoptic_seg`` results), ``overlays`` (paths) and
        ``seconds`` (training and evaluation).
    """
    from detectron2.engine import default_argument_parser

    from .setup import setup_cfg, train_or_evaluate

    train_args = default_argument_parser().parse_args(
        ["--config-file", str(config_file), "OUTPUT_DIR", output_dir, *opts]
    )
    start = time.perf_counter()
    train_or_evaluate(train_args)  # trains, then evaluates once (Detectron2's EvalHook)
    seconds = time.perf_counter() - start
    pq = read_results(output_dir).get("panoptic_seg")
    if pq is None:
        raise RuntimeError(f"{output_dir}/log.txt holds no panoptic evaluation")
    cfg = setup_cfg(config_file, train_args.opts)
    overlays = write_overlays(
        cfg,
        os.path.join(output_dir, "model_final.pth"),
        os.path.join(output_dir, "overlays"),
        num_vis,
    )
    return {"pq": pq, "overlays": overlays, "seconds": seconds}
