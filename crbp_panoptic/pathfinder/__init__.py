"""Pathfinder contour tracing (PF-SEG): the paper's first experiment, torch only.

* :mod:`.generator` -- procedural images of dashed curved paths that never touch, a
  marker dot and the target mask (the contour touching the dot); deterministic from
  a seed, cached on disk by the hash of its parameters.
* :mod:`.model` -- fixed Gabor energy front end (with a drive gain), one hGRU layer
  run to equilibrium by the engine (any gradient mode), norm + 1x1 readout; loss,
  IoU and pooled counts.
* :mod:`.train` -- train / evaluate arms against the floors; :mod:`.report` -- the
  summary ``metrics.json`` and table (``tools/train_pathfinder.py`` is the CLI).
"""

from .generator import (
    INK,
    CachedPathfinder,
    PathfinderConfig,
    PathfinderDataset,
    cached_arrays,
    connected_to_dot,
    generate,
    save_examples,
    write_cache,
)
from .model import GaborEnergy, PathfinderNet, confusion, gabor_bank, iou_f1, segmentation_loss

__all__ = [
    "INK",
    "CachedPathfinder",
    "GaborEnergy",
    "PathfinderConfig",
    "PathfinderDataset",
    "PathfinderNet",
    "cached_arrays",
    "confusion",
    "connected_to_dot",
    "gabor_bank",
    "generate",
    "iou_f1",
    "save_examples",
    "segmentation_loss",
    "write_cache",
]
