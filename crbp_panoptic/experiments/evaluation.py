"""Evaluating a trained model in this process: PQ, test inputs, and how its recurrent
modules settle (residual and drift curves)."""

from functools import partial
from typing import Dict, List, Sequence

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.modeling import build_model

from ..crbp.trajectory import capture_inputs, trajectory
from ..data import prepare_dataset
from ..engine import Trainer
from ..modeling import recurrent_modules

__all__ = ["PQ_KEYS", "evaluate_pq", "first_test_inputs", "load_model", "residual_curves"]

#: The panoptic-quality figures reported: All, Things, Stuff.
PQ_KEYS = ("PQ", "PQ_th", "PQ_st")


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
    pq = results.get("panoptic_seg") or next(iter(results.values()))["panoptic_seg"]
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


def residual_curves(model, inputs: Sequence[dict], num_steps: int, ref_step: int) -> Dict:
    """Per recurrent module: residual ``||h_t - h_{t-1}|| / ||h_t||`` and drift
    ``||h_t - h_T|| / ||h_T||`` (T = ``ref_step``) for t = 1..``num_steps`` from ``h_0 = 0``
    on the drive it received, averaged over ``inputs`` (each run alone, in eval mode; an
    empty drive, a mask head without ROIs, is skipped).

    Returns:
        dict: ``{module: {"residual": [...], "drift": [...], "images": n}}``, plus ``"mean"``
        over the modules that saw a drive.
    """
    modules = dict(recurrent_modules(model))
    sums: Dict[str, Dict[str, list]] = {}
    counts: Dict[str, int] = {}
    was_training = model.training
    model.eval()
    try:
        for item in inputs:
            with torch.no_grad(), capture_inputs(modules.items()) as drives:
                model([item])
            for name, xs in drives.items():
                for x in (x for x in xs if x.numel()):
                    cell = modules[name].cell
                    tr = trajectory(partial(cell, x), torch.zeros_like(x), num_steps, ref_step)
                    acc = sums.setdefault(
                        name, {"residual": [0.0] * num_steps, "drift": [0.0] * num_steps}
                    )
                    acc["residual"] = [a + b for a, b in zip(acc["residual"], tr.residuals)]
                    acc["drift"] = [a + b for a, b in zip(acc["drift"], tr.drift)]
                    counts[name] = counts.get(name, 0) + 1
    finally:
        model.train(was_training)
    out = {
        name: {key: [v / counts[name] for v in vals] for key, vals in acc.items()}
        | {"images": counts[name]}
        for name, acc in sums.items()
    }
    if out:
        out["mean"] = {
            key: [sum(out[m][key][t] for m in sums) / len(sums) for t in range(num_steps)]
            for key in ("residual", "drift")
        } | {"images": min(counts.values())}
    return out
