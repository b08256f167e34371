"""crbp_panoptic: contractor recurrent back-propagation (C-RBP) for Detectron2.

The package layout is described in the README ("Layout").
"""

import importlib.util

from .config import add_crbp_config

# Importing the Detectron2 wiring fills Detectron2's registries (backbone, mask head,
# meta-architecture, synthetic datasets). The torch-only floors work without Detectron2.
if importlib.util.find_spec("detectron2") is not None:
    from . import data, modeling  # noqa: F401  (registers)

__all__ = ["add_crbp_config"]
