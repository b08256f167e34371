"""Training entry points: the trainer with panoptic evaluators and a CPU-capable launch."""
from .launch import launch
from .trainer import Trainer, build_evaluator

__all__ = ["Trainer", "build_evaluator", "launch"]
