"""``DefaultTrainer`` with the evaluators of a panoptic dataset; nothing else differs."""

import os
import random

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.evaluation import COCOPanopticEvaluator, DatasetEvaluators, SemSegEvaluator
from detectron2.utils import comm

from crbp_panoptic.data.checks import prepare_dataset
from crbp_panoptic.evaluation import CRBPCOCOEvaluator

__all__ = ["RNGStateHook", "Trainer", "build_evaluator"]


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

    Detectron2 checkpoints model, optimizer, scheduler and iteration; the RNG streams
    (ROI and anchor sampling, augmentation) restart from the seed. With this hook a
    single-process run that is stopped and resumed draws the same random numbers as an
    uninterrupted one. In multi-process runs only rank 0's state is saved, so there each
    rank keeps its own fresh stream (Detectron2's behaviour). The data sampler's position
    is not saved: it restarts its (seeded) order on resume, as in Detectron2.
    """

    # Plain types and tensors only: torch.load(weights_only=True) must read the checkpoint.
    def state_dict(self):
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state):
        if comm.get_world_size() > 1:
            return
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class Trainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with :func:`build_evaluator` and :class:`RNGStateHook`."""

    def build_hooks(self):
        return super().build_hooks() + [RNGStateHook()]

    # Detectron2 0.6's DefaultTrainer checkpoints neither the optimizer (momentum) nor its
    # learning rate, so a resumed run restarts SGD cold; later Detectron2 versions save
    # them under "_trainer", as done here when the installed version does not.
    def state_dict(self):
        ret = super().state_dict()
        ret.setdefault("_trainer", self._trainer.state_dict())
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict and "load_state_dict" not in vars(DefaultTrainer):
            self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_train_loader(cls, cfg):
        loader = super().build_train_loader(cfg)
        # A torch DataLoader draws its worker base seed from the global RNG when its iterator
        # is created, i.e. in the first iteration of every (resumed) run. A generator of its
        # own, seeded now, keeps that draw out of the stream that RNGStateHook restores.
        for candidate in (loader, getattr(loader, "dataset", None)):
            if isinstance(candidate, torch.utils.data.DataLoader):
                seed = int(torch.randint(2**62, ()).item())
                candidate.generator = torch.Generator().manual_seed(seed)
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)
