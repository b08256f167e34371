"""Registers the synthetic panoptic datasets with Detectron2.

Registration goes through Detectron2's own ``register_coco_panoptic_separated``, so a
dataset ``<name>`` appears as ``<name>_separated`` (instances + semantic labels, for
Panoptic FPN; evaluator type ``coco_panoptic_seg``) and ``<name>_stuffonly`` (semantic
labels only; ``sem_seg``), and flows through the COCO loaders, mappers and evaluators.

Importing this module registers, without generating anything:

* ``synthetic_panoptic_train``: split "train", 48 images of 128x128, seed 0;
* ``synthetic_panoptic_val``: split "val", 12 images of 128x128, seed 0;
* ``synthetic_panoptic_test``: split "test", 500 images of 128x128, seed 0 (1,285 things,
  where val's 27 cannot tell models apart by a PQ point or two);
* ``synthetic_panoptic_tiny_train``: split "train", 4 images of 64x64, seed 0 (for tests);
* ``synthetic_panoptic_tiny_val``: split "val", 4 images of 64x64, seed 0 (for tests);
* ``synthetic_longrange_train``: kind "cables" (long thin crossing cables, see
  :mod:`.longrange`), split "train", 1000 images of 128x128, seed 0;
* ``synthetic_longrange_val``: kind "cables", split "val", 100 images of 128x128, seed 0.

Each lives in ``<root>/synthetic_panoptic/<name>/`` (layout: :mod:`.splits`), where
``root`` is ``$DETECTRON2_DATASETS`` or ``./datasets``, read (and made absolute) when the
dataset is *registered*: for the defaults, at import. Tests that need another root
register their own dataset with an explicit ``root``.

Generation is lazy and atomic: the first ``DatasetCatalog.get`` of either name, the
first read of a file path in the metadata (``json_file``, ``panoptic_json``,
``panoptic_root``, ``sem_seg_root``, ``image_root`` -- which is what ``COCOEvaluator``
does at construction), or :func:`ensure_generated` writes the split if it is missing.
Every ``DatasetCatalog.get`` then checks the files (:func:`~.validate.validate_panoptic_split`,
pixel-exact) before Detectron2's loaders read them. A split on disk generated with
other parameters is an error (delete it to regenerate), never overwritten; one written
by an older version of the generator is regenerated.

Training on these datasets needs ``INPUT.MASK_FORMAT: "bitmask"`` (instance masks are
RLE), ``MODEL.ROI_HEADS.NUM_CLASSES: 3`` and ``MODEL.SEM_SEG_HEAD.NUM_CLASSES: 4``
(3 stuff classes + "things"); on the cables datasets ``MODEL.ROI_HEADS.NUM_CLASSES: 1``.

:func:`check_datasets` is what a trainer runs before it starts: every dataset of a config
registered, synthetic ones generated, the files of all of them present -- so a missing
dataset fails in seconds, not hours.
"""

import logging
import os
from typing import Dict, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import register_coco_panoptic_separated
from detectron2.utils import comm

from .splits import (
    SplitSpec,
    datasets_root,
    ensure_split,
    kind_generator,
    split_paths,
    synthetic_split_dir,
)
from .validate import validate_panoptic_split

__all__ = [
    "DEFAULT_DATASETS",
    "check_datasets",
    "datasets_root",
    "ensure_generated",
    "prepare_dataset",
    "register_synthetic_panoptic",
    "synthetic_panoptic_metadata",
    "synthetic_split_dir",
    "unregister_synthetic_panoptic",
    "validate_dataset",
]

logger = logging.getLogger(__name__)

DEFAULT_DATASETS = {
    "synthetic_panoptic_train": dict(split="train", num_images=48, image_size=(128, 128), seed=0),
    "synthetic_panoptic_val": dict(split="val", num_images=12, image_size=(128, 128), seed=0),
    "synthetic_panoptic_test": dict(split="test", num_images=500, image_size=(128, 128), seed=0),
    "synthetic_panoptic_tiny_train": dict(split="train", num_images=4, image_size=(64, 64), seed=0),
    "synthetic_panoptic_tiny_val": dict(split="val", num_images=4, image_size=(64, 64), seed=0),
    "synthetic_longrange_train": dict(
        split="train", num_images=1000, image_size=(128, 128), seed=0, kind="cables"
    ),
    "synthetic_longrange_val": dict(
        split="val", num_images=100, image_size=(128, 128), seed=0, kind="cables"
    ),
}
_SUFFIXES = ("_separated", "_stuffonly")
# Same colour for the "things" stuff class as Detectron2's COCO metadata.
_THINGS_STUFF_COLOR = [82, 18, 128]

# base name -> (split_dir, SplitSpec); a name is in here once fully registered.
_REGISTERED: Dict[str, Tuple[str, SplitSpec]] = {}
_CHECKED = set()  # base names whose split was found complete in this process


def synthetic_panoptic_metadata(kind: str = "shapes") -> dict:
    """Metadata in the form of Detectron2's ``coco_panoptic_separated`` builtin metadata.

    ``thing_*`` map the thing category ids (sorted) to 0, 1, ...; ``stuff_classes`` is
    ``["things"] + stuff names`` and ``stuff_dataset_id_to_contiguous_id`` maps each
    stuff id to 1..3 and the id 0 ("things") to 0, as the semantic PNGs are labelled.

    Args:
        kind (str): the split kind (``SplitSpec.kind``) whose categories to describe.
    """
    categories, _render = kind_generator(kind)
    things = [c for c in categories if c["isthing"]]
    stuff = [c for c in categories if not c["isthing"]]
    stuff_map = {c["id"]: i + 1 for i, c in enumerate(stuff)}
    stuff_map[0] = 0
    return {
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(c["color"]) for c in things],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "stuff_colors": [list(_THINGS_STUFF_COLOR)] + [list(c["color"]) for c in stuff],
    }


def _base_name(dataset_name: str) -> str:
    for suffix in _SUFFIXES:
        if dataset_name.endswith(suffix) and dataset_name[: -len(suffix)] in _REGISTERED:
            return dataset_name[: -len(suffix)]
    return dataset_name


# Metadata keys under which Detectron2's COCO registrations record their files.
_PATH_KEYS = ("image_root", "json_file", "panoptic_root", "panoptic_json", "sem_seg_root")


class _GeneratingMetadata(Metadata):
    """Metadata whose file paths generate the split when first read.

    Evaluators read these paths at construction (``COCOEvaluator`` opens ``json_file``),
    before any ``DatasetCatalog.get``; this keeps "generated on first use" true for them.
    """

    def __getattribute__(self, key):
        if key in _PATH_KEYS:
            d = object.__getattribute__(self, "__dict__")
            base = _base_name(d.get("name", ""))
            if key in d and base in _REGISTERED and base not in _CHECKED:
                ensure_generated(base, validate=False)
        return super().__getattribute__(key)


def register_synthetic_panoptic(
    name: str,
    root: Optional[str] = None,
    split: str = "train",
    num_images: int = 48,
    image_size=(128, 128),
    seed: int = 0,
    kind: str = "shapes",
) -> Tuple[str, str]:
    """Register ``<name>_separated`` and ``<name>_stuffonly``; generate nothing yet.

    Registering the same name again with the same parameters does nothing.

    Args:
        name (str): base dataset name (without ``_separated`` / ``_stuffonly``).
        root (str, optional): datasets root; default ``$DETECTRON2_DATASETS`` or
            ``./datasets``, read now. Data goes to ``<root>/synthetic_panoptic/<name>/``.
        split (str): split name; part of the seed and of the file names.
        num_images (int): number of images.
        image_size (tuple[int, int]): (H, W).
        seed (int): base seed.
        kind (str): what the images show, ``"shapes"`` or ``"cables"`` (``SplitSpec``).

    Returns:
        tuple[str, str]: the two registered dataset names.

    Raises:
        ValueError: ``name`` is registered with other parameters, or one of its two
            names is already taken by another dataset.
    """
    spec = SplitSpec(split, num_images, image_size, seed, kind)
    split_dir = synthetic_split_dir(name, root)
    names = tuple(name + s for s in _SUFFIXES)
    if name in _REGISTERED:
        if _REGISTERED[name] == (split_dir, spec):
            return names
        raise ValueError(
            f"synthetic dataset {name!r} is already registered as {_REGISTERED[name]}; "
            f"cannot re-register it as {(split_dir, spec)}"
        )
    taken = [n for n in names if n in DatasetCatalog.list() or n in MetadataCatalog.list()]
    if taken:
        raise ValueError(f"dataset name(s) {taken} are already registered")

    paths = split_paths(split_dir)
    for n in names:
        MetadataCatalog[n] = _GeneratingMetadata(name=n)
    register_coco_panoptic_separated(
        name,
        synthetic_panoptic_metadata(kind),
        image_root=paths.image_dir,
        panoptic_root=paths.panoptic_dir,
        panoptic_json=paths.panoptic_json,
        sem_seg_root=paths.sem_seg_dir,
        instances_json=paths.instances_json,
    )
    # Detectron2's loaders read the files directly; generate (and check) first.
    for n in names:
        load = DatasetCatalog[n]
        DatasetCatalog.remove(n)
        DatasetCatalog.register(n, _generate_then(name, load))
    _REGISTERED[name] = (split_dir, spec)
    return names


def _generate_then(base, load):
    def generate_then_load():
        ensure_generated(base)
        return load()

    return generate_then_load


def unregister_synthetic_panoptic(name: str) -> None:
    """Remove ``<name>_separated`` / ``<name>_stuffonly`` from Detectron2's catalogs
    (the files on disk stay)."""
    _REGISTERED.pop(name, None)
    _CHECKED.discard(name)
    for n in (name + s for s in _SUFFIXES):
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        if n in MetadataCatalog.list():
            MetadataCatalog.remove(n)


def ensure_generated(dataset_name: str, validate: bool = True) -> Optional[str]:
    """Generate a registered synthetic dataset if missing, and check its files.

    Call it before building evaluators that read the files. Accepts the base name or
    either registered name. Does nothing (returns None) for datasets this module did not
    register, so a trainer may call it for every dataset.

    Args:
        dataset_name (str): e.g. ``"synthetic_panoptic_val_separated"``.
        validate (bool): run :func:`~.validate.validate_panoptic_split` with pixel
            checks (cheap for these small splits).

    Returns:
        str or None: the split directory.

    Raises:
        ValueError: the directory holds data generated with other parameters;
            PanopticFormatError / FileNotFoundError: a file is corrupt or missing
            (the message names it).
    """
    base = _base_name(dataset_name)
    if base not in _REGISTERED:
        return None
    split_dir, spec = _REGISTERED[base]
    if not os.path.isdir(split_dir):
        logger.info(f"Generating synthetic panoptic dataset {base!r} ({spec}) in {split_dir}")
    ensure_split(split_dir, spec.split, spec.num_images, spec.image_size, spec.seed, spec.kind)
    _CHECKED.add(base)
    if validate:
        paths = split_paths(split_dir)
        validate_panoptic_split(
            paths.panoptic_json,
            paths.panoptic_dir,
            paths.image_dir,
            paths.sem_seg_dir,
            paths.instances_json,
            check_pixels=True,
        )
    return split_dir


def validate_dataset(dataset_name: str, check_pixels: bool = False) -> Optional[dict]:
    """Check the files of any registered COCO-panoptic dataset through its metadata.

    Synthetic datasets are generated first (if missing). Uses the metadata keys
    ``panoptic_json`` and ``panoptic_root`` (and, when present, ``image_root``,
    ``sem_seg_root``, ``json_file``); datasets without them are skipped (returns None).
    Without ``check_pixels`` the checks are cheap enough for full COCO.

    Returns:
        dict or None: the counts from :func:`~.validate.validate_panoptic_split`.
    """
    ensure_generated(dataset_name, validate=False)
    meta = MetadataCatalog.get(dataset_name)
    if meta.get("panoptic_json") is None or meta.get("panoptic_root") is None:
        return None
    return validate_panoptic_split(
        meta.panoptic_json,
        meta.panoptic_root,
        image_root=meta.get("image_root"),
        sem_seg_root=meta.get("sem_seg_root"),
        instances_json=meta.get("json_file"),
        check_pixels=check_pixels,
    )


def prepare_dataset(dataset_name):
    """Generate a synthetic dataset if it is missing (no-op for other datasets)."""
    ensure_generated(dataset_name, validate=False)


def check_datasets(dataset_names):
    """Check that every dataset is registered and its files exist; generate synthetic ones.

    Args:
        dataset_names (Iterable[str]): e.g. ``cfg.DATASETS.TRAIN + cfg.DATASETS.TEST``.

    Raises:
        KeyError: a name is not registered (the message lists the registered names).
        FileNotFoundError: files recorded in a dataset's metadata are missing (the message
            names them and ``$DETECTRON2_DATASETS``).
    """
    registered = set(DatasetCatalog.list())
    for name in dataset_names:
        if name not in registered:
            raise KeyError(
                f"dataset {name!r} (DATASETS.TRAIN / DATASETS.TEST) is not registered; "
                f"registered: {sorted(registered)}"
            )
        if comm.is_main_process():  # one writer; the other processes wait below
            prepare_dataset(name)
    comm.synchronize()
    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        missing = [
            f"{k}: {meta.get(k)}"
            for k in _PATH_KEYS
            if meta.get(k) is not None and not os.path.exists(meta.get(k))
        ]
        if missing:
            raise FileNotFoundError(
                f"dataset {name!r}: missing {'; '.join(missing)}. Detectron2 reads datasets from "
                f"$DETECTRON2_DATASETS (now {datasets_root()!r}); see INSTALL.md, 'Datasets'."
            )


def _register_defaults():
    for name, kwargs in DEFAULT_DATASETS.items():
        register_synthetic_panoptic(name, **kwargs)


_register_defaults()
