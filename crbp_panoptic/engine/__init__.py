"""Training entry points: the trainer with panoptic evaluators, a CPU-capable launch, and the
one config builder (:func:`setup_cfg`) every tool uses."""

from .launch import launch
from .setup import setup, setup_cfg, train_or_evaluate
from .trainer import Trainer, build_evaluator

__all__ = ["Trainer", "build_evaluator", "launch", "setup", "setup_cfg", "train_or_evaluate"]
