"""``DefaultTrainer`` with the evaluators of a panoptic dataset; nothing else differs."""
import os

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from crbp_panoptic.data.checks import prepare_dataset

__all__ = ["Trainer", "build_evaluator", "has_fast_coco_eval"]


def has_fast_coco_eval():
    """bool: whether Detectron2's compiled COCOeval is present (absent in the pure-Python build)."""
    import detectron2._C as d2_c

    return hasattr(d2_c, "COCOevalAccumulate")


def build_evaluator(cfg, dataset_name, output_folder=None):
    """Detectron2's evaluators for ``dataset_name``, chosen by its ``evaluator_type``.

    For a panoptic ("separated") dataset: semantic segmentation (mIoU), COCO box/mask
    AP and panoptic quality (PQ), as Detectron2's own ``tools/train_net.py`` does. The
    COCO evaluation falls back to pycocotools' COCOeval when the compiled one is absent.
    """
    prepare_dataset(dataset_name)  # synthetic data: the evaluators read its files now
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
    evaluators = []
    if evaluator_type in ("sem_seg", "coco_panoptic_seg"):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type in ("coco", "coco_panoptic_seg"):
        evaluators.append(
            COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=has_fast_coco_eval())
        )
    if evaluator_type == "coco_panoptic_seg":
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if not evaluators:
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); "
            "supported: 'coco', 'sem_seg', 'coco_panoptic_seg'"
        )
    return DatasetEvaluators(evaluators)


class Trainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer`` with :func:`build_evaluator`."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)
