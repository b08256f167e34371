"""One way to build a config, and the train-or-evaluate entry point of ``tools/train_net.py``.

Every tool and test builds its config with :func:`setup_cfg`, so the ``MODEL.CRBP`` keys,
the merge order and the CPU fallback are the same everywhere.
"""

import logging
import os
from typing import Sequence

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_setup

from ..config import add_crbp_config
from ..data import check_datasets
from .checkpoint import check_weights_given, load_trained_weights
from .trainer import Trainer

__all__ = ["setup", "setup_cfg", "train_or_evaluate"]

logger = logging.getLogger(__name__)


def setup_cfg(config_file, opts: Sequence = ()) -> CfgNode:
    """Detectron2's defaults, then ``MODEL.CRBP``, then ``config_file``, then ``opts``.

    A config asking for CUDA (``MODEL.DEVICE`` "cuda[:N]") where CUDA is unavailable runs
    on the CPU instead, with a warning.

    Args:
        config_file (str or Path): a YAML config (its ``_BASE_`` chain is followed).
        opts (sequence): ``KEY VALUE ...`` overrides, applied last (``merge_from_list``);
            values may be strings (decoded as YAML) or Python values.

    Returns:
        CfgNode: the config, not frozen.

    Raises:
        FileNotFoundError: ``config_file`` does not exist (named).
    """
    if not os.path.isfile(str(config_file)):
        raise FileNotFoundError(f"config file {str(config_file)!r}: no such file")
    cfg = get_cfg()
    add_crbp_config(cfg)
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def setup(args) -> CfgNode:
    """:func:`setup_cfg` from Detectron2's command-line ``args``, frozen, then ``default_setup``.

    Args:
        args: the namespace of ``detectron2.engine.default_argument_parser``.
    """
    cfg = setup_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def train_or_evaluate(args):
    """Train (then evaluate, as the trainer's hooks do), or only evaluate with ``--eval-only``.

    The datasets named by the config are checked before anything runs, so a missing file
    fails early with its path. ``--eval-only`` evaluates trained weights: those of the last
    checkpoint in ``OUTPUT_DIR`` with ``--resume`` (if there is one), else
    ``MODEL.WEIGHTS``, which must then be given and fit the model (see
    :mod:`crbp_panoptic.engine.checkpoint`); ``--random-weights`` (``args.random_weights``)
    evaluates an untrained model instead.

    Returns:
        dict: the evaluation results (``Trainer.test``'s, or the last of training).

    Raises:
        WeightsError: ``--eval-only`` without usable weights (the message names
            ``MODEL.WEIGHTS``).
    """
    cfg = setup(args)
    check_datasets(cfg.DATASETS.TEST if args.eval_only else cfg.DATASETS.TRAIN + cfg.DATASETS.TEST)
    if args.eval_only:
        saved = DetectionCheckpointer(None, save_dir=cfg.OUTPUT_DIR)  # finds the last one only
        if args.resume and saved.has_checkpoint():
            weights, source = saved.get_checkpoint_file(), "the last checkpoint"
        else:
            random_weights = getattr(args, "random_weights", False)
            weights, source = (
                check_weights_given(cfg.MODEL.WEIGHTS, random_weights),
                "MODEL.WEIGHTS",
            )
        model = Trainer.build_model(cfg)
        load_trained_weights(model, weights, source)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
