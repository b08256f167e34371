"""Data: synthetic COCO-panoptic generators (``synthetic``: compact shapes; ``longrange``:
long thin crossing cables; numpy + Pillow only) and their Detectron2 registration
(``datasets``)."""

import importlib.util

from .longrange import CABLE_CATEGORIES, box_sharing, render_cables_sample
from .synthetic import (
    CATEGORIES,
    PanopticFormatError,
    SplitSpec,
    datasets_root,
    ensure_split,
    generate_split,
    panoptic_to_semantic,
    render_sample,
    split_paths,
    synthetic_split_dir,
    validate_panoptic_split,
)

__all__ = [
    "CABLE_CATEGORIES",
    "CATEGORIES",
    "PanopticFormatError",
    "SplitSpec",
    "box_sharing",
    "datasets_root",
    "ensure_split",
    "generate_split",
    "panoptic_to_semantic",
    "render_cables_sample",
    "render_sample",
    "split_paths",
    "synthetic_split_dir",
    "validate_panoptic_split",
]

# Importing ``datasets`` registers the synthetic datasets (synthetic_panoptic_{train,val,
# tiny_train,tiny_val} and synthetic_longrange_{train,val}, each as ``*_separated`` and
# ``*_stuffonly``) in Detectron2's catalogs; nothing is generated until first use. The
# generators work without Detectron2.
if importlib.util.find_spec("detectron2") is not None:
    from .datasets import (  # noqa: F401  (registers)
        DEFAULT_DATASETS,
        ensure_generated,
        register_synthetic_panoptic,
        synthetic_panoptic_metadata,
        unregister_synthetic_panoptic,
        validate_dataset,
    )

    __all__ += [
        "DEFAULT_DATASETS",
        "ensure_generated",
        "register_synthetic_panoptic",
        "synthetic_panoptic_metadata",
        "unregister_synthetic_panoptic",
        "validate_dataset",
    ]
