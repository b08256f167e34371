"""Evaluation helpers: COCO box/mask AP with the fastest COCOeval that is installed."""

from .coco_eval import (
    BACKENDS,
    CRBPCOCOEvaluator,
    default_backend,
    evaluate_coco,
    has_detectron2_cocoeval,
    has_faster_coco_eval,
)

__all__ = [
    "BACKENDS",
    "CRBPCOCOEvaluator",
    "default_backend",
    "evaluate_coco",
    "has_detectron2_cocoeval",
    "has_faster_coco_eval",
]
