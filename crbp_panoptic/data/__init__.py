"""Data: synthetic COCO-panoptic datasets and their Detectron2 registration.

One job per module:

* :mod:`.coco_format` -- the COCO panoptic format: segment ids as RGB, RLE masks, semantic
  labels, the JSON and PNG files;
* :mod:`.splits` -- writing a split and keeping it on disk (generated on first use,
  regenerated when stale), and the registry of the kinds of data a split may show;
* :mod:`.scene` -- what every kind shares: an image's random stream, the stuff background;
* :mod:`.shapes` -- the quick data (kind ``"shapes"``): compact squares, discs, triangles;
* :mod:`.longrange` -- the long-range data (kind ``"cables"``): long crossing cables, and
  how much grouping a split asks for;
* :mod:`.validate` -- checking any COCO panoptic split against its files;
* :mod:`.preview` -- a picture of a split's first images and labels;
* :mod:`.datasets` -- the synthetic datasets in Detectron2's catalogs, and the checks a
  trainer runs before it starts (needs Detectron2; the rest needs only numpy and Pillow).

Import names from this package.
"""

import importlib.util

from .coco_format import (
    PanopticFormatError,
    id2rgb,
    load_json,
    mask_to_rle,
    panoptic_to_semantic,
    read_png,
    rgb2id,
    rle_to_mask,
    segment_record,
    write_json,
)
from .preview import write_preview
from .scene import STUFF_CATEGORIES, Sample, paint_stuff, sample_rng
from .splits import (
    DEFAULT_KIND,
    GENERATOR_VERSION,
    KINDS,
    DataKind,
    SplitPaths,
    SplitSpec,
    datasets_root,
    ensure_split,
    generate_split,
    kind_generator,
    register_kind,
    split_paths,
    synthetic_split_dir,
)
from .validate import validate_panoptic_split

# The kinds of data, imported for registration: each registers itself with .splits, the
# default kind first.
# isort: off
from .shapes import CATEGORIES, render_sample
from .longrange import (
    CABLE_CATEGORIES,
    box_class_mask_iou,
    box_sharing,
    cable_curve,
    render_cables_sample,
    split_statistics,
)
# isort: on

__all__ = [
    "CABLE_CATEGORIES",
    "CATEGORIES",
    "DEFAULT_KIND",
    "GENERATOR_VERSION",
    "KINDS",
    "STUFF_CATEGORIES",
    "DataKind",
    "PanopticFormatError",
    "Sample",
    "SplitPaths",
    "SplitSpec",
    "box_class_mask_iou",
    "box_sharing",
    "cable_curve",
    "datasets_root",
    "ensure_split",
    "generate_split",
    "id2rgb",
    "kind_generator",
    "load_json",
    "mask_to_rle",
    "paint_stuff",
    "panoptic_to_semantic",
    "read_png",
    "register_kind",
    "render_cables_sample",
    "render_sample",
    "rgb2id",
    "rle_to_mask",
    "sample_rng",
    "segment_record",
    "split_paths",
    "split_statistics",
    "synthetic_split_dir",
    "validate_panoptic_split",
    "write_json",
    "write_preview",
]

# Importing ``datasets`` registers the synthetic datasets (synthetic_panoptic_{train,val,
# tiny_train,tiny_val} and synthetic_longrange_{train,val}, each as ``*_separated`` and
# ``*_stuffonly``) in Detectron2's catalogs; nothing is generated until first use. The
# generators work without Detectron2.
if importlib.util.find_spec("detectron2") is not None:
    from .datasets import (  # noqa: F401  (registers)
        DEFAULT_DATASETS,
        check_datasets,
        ensure_generated,
        prepare_dataset,
        register_synthetic_panoptic,
        synthetic_panoptic_metadata,
        unregister_synthetic_panoptic,
        validate_dataset,
    )

    __all__ += [
        "DEFAULT_DATASETS",
        "check_datasets",
        "ensure_generated",
        "prepare_dataset",
        "register_synthetic_panoptic",
        "synthetic_panoptic_metadata",
        "unregister_synthetic_panoptic",
        "validate_dataset",
    ]
