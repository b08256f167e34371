"""Pathfinder contour tracing (PF-SEG): the paper's first experiment, torch only.

* :mod:`.generator` -- procedural images of dashed curved paths, a marker dot and
  the target mask (the contour touching the dot); deterministic from a seed.
* :mod:`.model` -- fixed Gabor energy front end, one hGRU layer run to
  equilibrium by the engine (any gradient mode), GroupNorm + 1x1 readout; loss and IoU/F1.
* :mod:`.train` -- train / evaluate one arm (``tools/train_pathfinder.py`` is the CLI).
"""
from .generator import CachedPathfinder, PathfinderConfig, PathfinderDataset, generate, save_examples, write_cache
from .model import GaborEnergy, PathfinderNet, gabor_bank, iou_f1, segmentation_loss

__all__ = [
    "CachedPathfinder",
    "GaborEnergy",
    "PathfinderConfig",
    "PathfinderDataset",
    "PathfinderNet",
    "gabor_bank",
    "generate",
    "iou_f1",
    "save_examples",
    "segmentation_loss",
    "write_cache",
]
