"""Data: a synthetic COCO-panoptic generator (``synthetic``, numpy + Pillow only) and its
Detectron2 registration (``datasets``)."""
import importlib.util

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
    "CATEGORIES",
    "PanopticFormatError",
    "SplitSpec",
    "datasets_root",
    "ensure_split",
    "generate_split",
    "panoptic_to_semantic",
    "render_sample",
    "split_paths",
    "synthetic_split_dir",
    "validate_panoptic_split",
]

# Importing ``datasets`` registers the synthetic datasets (synthetic_panoptic_{train,val,
# tiny_train,tiny_val}, each as ``*_separated`` and ``*_stuffonly``) in Detectron2's
# catalogs; nothing is generated until first use. The generator works without Detectron2.
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
