"""Evaluating trained models: PQ at a chosen number of test steps, and logged metrics."""

import json
import os
from typing import Dict, List, Optional

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.modeling import build_model

from ..data import prepare_dataset
from ..engine import Trainer, setup_cfg

__all__ = [
    "PQ_KEYS",
    "evaluate_pq",
    "first_test_inputs",
    "load_model",
    "logged_pq",
    "read_final_metrics",
    "config_at_test_steps",
]

#: The panoptic-quality figures reported: All, Things, Stuff.
PQ_KEYS = ("PQ", "PQ_th", "PQ_st")


def read_final_metrics(path: str, prefix: str = "panoptic_seg/") -> Dict[str, float]:
    """The last evaluation results a trainer logged to ``metrics.json``, keys without ``prefix``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: no line of ``path`` holds a ``prefix*`` key (no evaluation ran).
    """
    with open(path) as f:
        records = [json.loads(line) for line in f if prefix in line]
    if not records:
        raise RuntimeError(f"{path}: no '{prefix}*' results; did the evaluation run?")
    return {k[len(prefix) :]: v for k, v in records[-1].items() if k.startswith(prefix)}


def logged_pq(output_dir: str) -> Optional[float]:
    """The last ``panoptic_seg/PQ`` in ``<output_dir>/metrics.json``; None if there is none."""
    try:
        return read_final_metrics(os.path.join(output_dir, "metrics.json")).get("PQ")
    except (FileNotFoundError, RuntimeError):
        return None


def config_at_test_steps(output_dir: str, test_steps: int):
    """The config a run was trained with (``<output_dir>/config.yaml``), set to run exactly
    ``test_steps`` recurrent steps at test time (``TEST_STEPS`` = t, ``TEST_TOL`` = 0), frozen."""
    cfg = setup_cfg(os.path.join(output_dir, "config.yaml"))
    cfg.MODEL.CRBP.TEST_STEPS = int(test_steps)
    cfg.MODEL.CRBP.TEST_TOL = 0.0
    cfg.freeze()
    return cfg


def load_model(cfg, weights: str):
    """``build_model(cfg)`` with ``weights`` loaded, in eval mode."""
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    model.eval()
    return model


def evaluate_pq(cfg, model) -> Dict[str, float]:
    """PQ (All, Things, Stuff) of ``model`` on ``cfg.DATASETS.TEST`` (the first one's figures)."""
    evaluators = []
    for name in cfg.DATASETS.TEST:
        prepare_dataset(name)
        evaluators.append(COCOPanopticEvaluator(name))  # output_dir=None: a temporary dir
    results = Trainer.test(cfg, model, evaluators=evaluators)
    if "panoptic_seg" in results:
        pq = results["panoptic_seg"]
    else:
        pq = next(iter(results.values()))["panoptic_seg"]
    return {k: float(pq[k]) for k in PQ_KEYS}


def first_test_inputs(cfg, num_images: int) -> List[dict]:
    """The first ``num_images`` inference inputs of ``cfg.DATASETS.TEST[0]``'s test loader."""
    loader = Trainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    items: List[dict] = []
    for batch in loader:
        items.extend(batch)
        if len(items) >= num_images:
            break
    return items[:num_images]
