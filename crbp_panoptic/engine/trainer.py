"""``DefaultTrainer`` with the evaluators of a panoptic dataset, a mask-head learning-rate
factor, and a resume that continues exactly (random-number streams and the position in the
training data are checkpointed)."""

import contextlib
import functools
import logging
import os
import random
from typing import List, Optional

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import COCOPanopticEvaluator, DatasetEvaluators, SemSegEvaluator
from detectron2.utils import comm

from crbp_panoptic.data import prepare_dataset
from crbp_panoptic.evaluation import CRBPCOCOEvaluator

from .optimizer import build_optimizer
from .train_loader import ResumableTrainLoader, build_resumable_train_loader

__all__ = ["CheckpointReadError", "RNGStateHook", "Trainer", "build_evaluator", "preserved_rng"]

logger = logging.getLogger(__name__)


def build_evaluator(cfg, dataset_name, output_folder=None):
    """Detectron2's evaluators for ``dataset_name``, chosen by its ``evaluator_type``.

    For a panoptic ("separated") dataset: semantic segmentation (mIoU), COCO box/mask
    AP and panoptic quality (PQ), as Detectron2's own ``tools/train_net.py`` does. Box and
    mask AP use the fastest COCOeval installed: Detectron2's compiled one, else
    faster-coco-eval's, else pycocotools' (:class:`~crbp_panoptic.evaluation.CRBPCOCOEvaluator`).
    """
    prepare_dataset(dataset_name)  # synthetic data: the evaluators read its files now
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
    evaluators = []
    if evaluator_type in ("sem_seg", "coco_panoptic_seg"):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type in ("coco", "coco_panoptic_seg"):
        evaluators.append(CRBPCOCOEvaluator(dataset_name, output_dir=output_folder))
    if evaluator_type == "coco_panoptic_seg":
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if not evaluators:
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); "
            "supported: 'coco', 'sem_seg', 'coco_panoptic_seg'"
        )
    return DatasetEvaluators(evaluators)


class RNGStateHook(HookBase):
    """Checkpoints the random-number generators, so ``--resume`` continues the same run.

    Detectron2 checkpoints model, optimizer, scheduler and iteration; the generators
    (ROI and anchor sampling, the penalty's random ROIs or windows) would restart from the
    seed. This hook takes the state of Python's, NumPy's, torch's and CUDA's generators
    after every iteration that is checkpointed, in every process (gathered into the
    checkpoint, which the main process writes), and puts each process's back on resume.

    It must run after the hooks that draw random numbers in an iteration and before the
    checkpointer (:meth:`Trainer.build_hooks` puts it there); evaluation draws none from the
    training streams (:meth:`Trainer.build_hooks` isolates it).

    Args:
        checkpoint_period (int): ``SOLVER.CHECKPOINT_PERIOD``; the hook captures at the
            iterations the checkpointer saves (every period, and the last).
    """

    def __init__(self, checkpoint_period: int = 1):
        self.checkpoint_period = max(int(checkpoint_period), 1)
        self._states, self._captured_at = None, None

    # Plain types and tensors only: torch.load(weights_only=True) must read the checkpoint.
    @staticmethod
    def capture():
        """The state of this process's generators."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    @staticmethod
    def restore(state):
        """Set this process's generators to ``state`` (from :meth:`capture`)."""
        random.setstate(_as_tuple(state["python"]))
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self.checkpoint_period == 0 or it >= self.trainer.max_iter - 1:
            # Every process takes part, so the main one can checkpoint all their states.
            self._states, self._captured_at = comm.all_gather(self.capture()), it

    def state_dict(self):
        if self._states is None or self._captured_at != self.trainer.iter:
            return {"ranks": [self.capture()]}  # a save outside the schedule: this process's
        return {"ranks": self._states}

    def load_state_dict(self, state):
        states = state["ranks"] if "ranks" in state else [state]  # older: the main process's
        rank, world_size = comm.get_rank(), comm.get_world_size()
        if len(states) != world_size:
            logger.warning(
                "The checkpoint holds the random-number states of %d process(es), this run "
                "has %d: the generators continue from the seed, not from the checkpoint.",
                len(states),
                world_size,
            )
            return
        self.restore(states[rank])


def _as_tuple(value):
    """``random.setstate`` wants tuples; a checkpoint may give them back as lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextlib.contextmanager
def preserved_rng():
    """Leave Python's, NumPy's, torch's and CUDA's generators as they were before the block
    (what the block draws, e.g. an evaluation's data loader, is not taken from the training
    run's streams)."""
    state = RNGStateHook.capture()
    try:
        yield
    finally:
        RNGStateHook.restore(state)


class CheckpointReadError(RuntimeError):
    """The checkpoint named by ``OUTPUT_DIR/last_checkpoint`` cannot be read."""


def _other_checkpoints(output_dir: str, exclude: str) -> List[str]:
    """The ``.pth`` files of ``output_dir`` other than ``exclude``, newest name first."""
    try:
        names = os.listdir(output_dir)
    except OSError:
        return []
    skip = os.path.basename(exclude)
    return sorted(
        (
            n
            for n in names
            if n.endswith(".pth") and n != skip and os.path.isfile(os.path.join(output_dir, n))
        ),
        reverse=True,
    )


def _unreadable_checkpoint_error(output_dir: str, path: str, reason: str) -> CheckpointReadError:
    others = _other_checkpoints(output_dir, path)
    pointer = os.path.join(output_dir, "last_checkpoint")
    if os.path.isdir(path):
        lines = [f"--resume: {pointer} is empty; it names no checkpoint."]
    else:
        lines = [
            f"--resume: cannot read the last checkpoint {path} (named by {pointer}): {reason}."
        ]
    if others:
        lines += [
            f"Other checkpoints in {output_dir} (not checked): {', '.join(others)}.",
            f"To resume from one of them, write its file name into {pointer} "
            "(e.g. `echo " + others[0] + " > " + pointer + "`) and run again with --resume; "
            f"or start a new schedule from its weights with MODEL.WEIGHTS "
            f"{os.path.join(output_dir, others[0])} and without --resume.",
        ]
    else:
        lines.append(
            f"No other checkpoint (*.pth) is in {output_dir}: run without --resume to train "
            "from MODEL.WEIGHTS again."
        )
    return CheckpointReadError("\n".join(lines))


def _read_error(checkpointer, path: str) -> Optional[str]:
    """Why ``checkpointer`` cannot read ``path`` as it does when loading, or None if it can."""
    if os.path.isdir(path):  # last_checkpoint names no file
        return "last_checkpoint is empty"
    if not os.path.isfile(path):
        return "no such file"
    try:
        checkpointer._load_file(path)
    except Exception as e:  # whatever torch or pickle raise on a damaged file
        first = (str(e).strip().splitlines() or [""])[0]
        return f"{type(e).__name__}{': ' + first.rstrip('.') if first else ''}"
    return None


class Trainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with :func:`build_evaluator`, the mask-head learning-rate
    factor of :meth:`build_optimizer`, and an exact resume.

    ``resume_or_load(resume=True)`` continues an interrupted run as if it had not
    stopped: besides what Detectron2 restores (model, optimizer, scheduler, iteration), the
    random-number generators (:class:`RNGStateHook`) and the position in the training data
    (:class:`~crbp_panoptic.engine.train_loader.ResumableTrainLoader`). A last checkpoint
    that cannot be read is a :class:`CheckpointReadError` naming it and the others.
    """

    def build_hooks(self):
        hooks_ = super().build_hooks()
        for h in hooks_:
            if isinstance(h, d2_hooks.EvalHook):  # evaluation leaves the training RNG alone
                h._func = _without_rng_side_effects(h._func)
        # After the hooks that may draw random numbers in an iteration, before the
        # checkpointer (main process) or the evaluation (others).
        later = (d2_hooks.PeriodicCheckpointer, d2_hooks.EvalHook, d2_hooks.PeriodicWriter)
        at = next((i for i, h in enumerate(hooks_) if isinstance(h, later)), len(hooks_))
        hooks_.insert(at, RNGStateHook(self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return hooks_

    # Detectron2 0.6's DefaultTrainer checkpoints neither the optimizer (momentum) nor its
    # learning rate, so a resumed run restarts SGD cold; later Detectron2 versions save
    # them under "_trainer", as done here when the installed version does not.
    def state_dict(self):
        ret = super().state_dict()
        ret.setdefault("_trainer", self._trainer.state_dict())
        loader = self._trainer.data_loader
        if isinstance(loader, ResumableTrainLoader):
            ret["train_data"] = loader.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict and "load_state_dict" not in vars(DefaultTrainer):
            self._trainer.load_state_dict(state_dict["_trainer"])
        loader = self._trainer.data_loader
        if "train_data" in state_dict and isinstance(loader, ResumableTrainLoader):
            loader.load_state_dict(state_dict["train_data"])

    def resume_or_load(self, resume=True):
        """Detectron2's ``resume_or_load``, then the training data move to ``start_iter``.

        Raises:
            CheckpointReadError: ``resume`` and the last checkpoint is missing or damaged.
        """
        checkpoint = None
        if resume and self.checkpointer.has_checkpoint():
            checkpoint = self.checkpointer.get_checkpoint_file()
        try:
            super().resume_or_load(resume=resume)
        except Exception:
            reason = _read_error(self.checkpointer, checkpoint) if checkpoint is not None else None
            if reason is None:
                raise
            raise _unreadable_checkpoint_error(self.cfg.OUTPUT_DIR, checkpoint, reason) from None
        loader = self._trainer.data_loader
        if isinstance(loader, ResumableTrainLoader):
            loader.start_at(self.start_iter)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Detectron2's SGD; the ROI mask head learns at ``MODEL.CRBP.MASK_HEAD_LR_FACTOR``
        times the rate (:func:`~crbp_panoptic.engine.optimizer.build_optimizer`)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's training data (dataset, ``DatasetMapper``, sampler of the config)
        as a :class:`~crbp_panoptic.engine.train_loader.ResumableTrainLoader`."""
        return build_resumable_train_loader(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)


def _without_rng_side_effects(func):
    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        with preserved_rng():
            return func(*args, **kwargs)

    return wrapped
