"""Checks run before training starts, so a missing dataset fails in seconds, not hours."""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from .datasets import ensure_generated
from .synthetic import datasets_root

__all__ = ["check_datasets", "prepare_dataset"]

# Metadata keys under which Detectron2's COCO registrations record their files.
_PATH_KEYS = ("image_root", "json_file", "panoptic_root", "panoptic_json", "sem_seg_root")


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
