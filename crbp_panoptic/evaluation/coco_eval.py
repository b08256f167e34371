"""COCO box and mask AP with one of three COCOeval implementations, the fastest available.

* ``"detectron2"``: Detectron2's ``COCOeval_opt`` (C++ ``evaluateImg``/``accumulate``);
  present only when Detectron2 was built with its C++ extension.
* ``"faster_coco_eval"``: the ``faster-coco-eval`` package's ``COCOeval_faster`` (C++,
  a PyPI wheel; independent of how Detectron2 was installed).
* ``"pycocotools"``: the official pure-Python ``COCOeval``.

All three give the same 12 summary statistics (``tests/evaluation/test_coco_eval.py``
compares them on the synthetic data). :class:`CRBPCOCOEvaluator` is Detectron2's
``COCOEvaluator`` with the implementation chosen by :func:`default_backend`.
"""

import contextlib
import copy
import importlib.util
import io
import itertools
import json
import logging
import os
import time
from typing import Optional, Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.utils.file_io import PathManager

__all__ = [
    "BACKENDS",
    "CRBPCOCOEvaluator",
    "default_backend",
    "evaluate_coco",
    "has_detectron2_cocoeval",
    "has_faster_coco_eval",
]

BACKENDS = ("detectron2", "faster_coco_eval", "pycocotools")

logger = logging.getLogger(__name__)


def has_detectron2_cocoeval() -> bool:
    """bool: whether Detectron2's compiled COCOeval is present.

    Detectron2 built without its C++ extension either has no ``detectron2._C`` at all
    (upstream main: an ImportError) or, with ``tools/install_detectron2.py``, a stand-in
    module without the compiled functions.
    """
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return hasattr(_C, "COCOevalAccumulate")


def has_faster_coco_eval() -> bool:
    """bool: whether the ``faster-coco-eval`` package is importable."""
    return importlib.util.find_spec("faster_coco_eval") is not None


def default_backend() -> str:
    """str: the fastest installed backend, in the order of :data:`BACKENDS`."""
    if has_detectron2_cocoeval():
        return "detectron2"
    return "faster_coco_eval" if has_faster_coco_eval() else "pycocotools"


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is known and installed, else raise ValueError/ImportError."""
    if backend not in BACKENDS:
        raise ValueError(f"COCO evaluation backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "detectron2" and not has_detectron2_cocoeval():
        raise ImportError(
            "backend 'detectron2' needs Detectron2's C++ extension (detectron2._C with "
            "COCOevalAccumulate), which this install lacks; use 'faster_coco_eval' or 'pycocotools'"
        )
    if backend == "faster_coco_eval" and not has_faster_coco_eval():
        raise ImportError("backend 'faster_coco_eval' needs `pip install faster-coco-eval`")
    return backend


def load_ground_truth(dataset, backend: str):
    """A COCO API object of ``backend`` for a COCO-format dataset.

    Args:
        dataset (str or dict): path of a COCO instances JSON, or its parsed contents.
        backend: one of :data:`BACKENDS`.
    """
    check_backend(backend)
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO
    else:
        from pycocotools.coco import COCO
    if not isinstance(dataset, str):
        dataset = copy.deepcopy(dataset)  # both COCO classes keep (and index) the dict
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(dataset, str) or backend == "faster_coco_eval":
            return COCO(dataset)
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        return coco


def evaluate_coco(
    coco_gt,
    results: Sequence[dict],
    iou_type: str,
    backend: str,
    img_ids: Optional[Sequence[int]] = None,
    max_dets=(1, 10, 100),
    timings: Optional[dict] = None,
):
    """Run COCOeval (evaluate, accumulate, summarize) on COCO-format results.

    Args:
        coco_gt: the ground truth, from :func:`load_ground_truth` with the same ``backend``
            (for ``"detectron2"``, a pycocotools COCO).
        results: COCO results (``image_id``, ``category_id`` in dataset ids, ``score``,
            ``bbox`` [x, y, w, h] and/or ``segmentation`` RLE); not modified. Non-empty.
        iou_type: ``"bbox"`` or ``"segm"``; for ``"segm"`` boxes are dropped from the
            results, so areas (small/medium/large) are mask areas, as Detectron2 does.
        backend: one of :data:`BACKENDS`.
        img_ids: evaluate only these images (None: all).
        max_dets: three detection limits; the last one other than 100 selects
            Detectron2's ``COCOevalMaxDets`` (pycocotools) whatever ``backend`` says.
        timings: if given, filled with the seconds of ``"loadRes"``, ``"evaluate"`` and
            ``"accumulate"`` (accumulate + summarize).

    Returns:
        the COCOeval object; its ``stats`` holds the 12 summary values and ``eval``
        the precision array (T, R, K, A, M) that ``COCOEvaluator`` tabulates per class.
    """
    check_backend(backend)
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type={iou_type!r}; choose 'bbox' or 'segm'")
    if not results:
        raise ValueError("no results to evaluate (COCOeval cannot handle an empty list)")
    results = copy.deepcopy(list(results))
    if iou_type == "segm":
        for r in results:
            r.pop("bbox", None)
    max_dets = list(max_dets)
    clock = [time.perf_counter()]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        coco_dt = coco_gt.loadRes(results)
        clock.append(time.perf_counter())
        if max_dets[2] != 100:
            coco_eval = COCOevalMaxDets(coco_gt, coco_dt, iou_type)
        elif backend == "faster_coco_eval":
            from faster_coco_eval import COCOeval_faster

            coco_eval = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=print)
        elif backend == "detectron2":
            from detectron2.evaluation.fast_eval_api import COCOeval_opt

            coco_eval = COCOeval_opt(coco_gt, coco_dt, iou_type)
        else:
            coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        coco_eval.params.maxDets = max_dets
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        coco_eval.evaluate()
        clock.append(time.perf_counter())
        coco_eval.accumulate()
        coco_eval.summarize()
        clock.append(time.perf_counter())
    if timings is not None:
        timings.update(zip(("loadRes", "evaluate", "accumulate"), np.diff(clock).tolist()))
    logger.debug("COCOeval (%s, %s):\n%s", backend, iou_type, printed.getvalue())
    coco_eval.stats = coco_eval.stats[:12]  # faster-coco-eval appends extra metrics
    return coco_eval


class CRBPCOCOEvaluator(COCOEvaluator):
    """Detectron2's ``COCOEvaluator`` with a selectable COCOeval implementation.

    Box and mask AP are computed by :func:`evaluate_coco` with ``backend`` (default:
    :func:`default_backend`, so ``faster_coco_eval`` where Detectron2 has no C++
    extension). Everything else -- result collection, the id mapping back to the
    dataset's category ids, ``coco_instances_results.json``, the per-class tables -- is
    ``COCOEvaluator``'s. Keypoint tasks are left to ``COCOEvaluator`` itself.
    """

    def __init__(
        self,
        dataset_name,
        tasks=None,
        distributed=True,
        output_dir=None,
        *,
        backend: Optional[str] = None,
        **kwargs,
    ):
        """
        Args:
            dataset_name, tasks, distributed, output_dir, kwargs: as ``COCOEvaluator``
                (``use_fast_impl`` is derived from ``backend``).
            backend: one of :data:`BACKENDS` or None for :func:`default_backend`.
        """
        self._backend = check_backend(backend or default_backend())
        kwargs["use_fast_impl"] = self._backend == "detectron2"
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)
        self._coco_api_backend = None  # the ground truth in faster-coco-eval's COCO, lazily

    @property
    def backend(self) -> str:
        """str: the COCOeval implementation in use."""
        return self._backend

    def _ground_truth(self):
        if self._backend != "faster_coco_eval":
            return self._coco_api
        if self._coco_api_backend is None:
            self._coco_api_backend = load_ground_truth(self._coco_api.dataset, self._backend)
        return self._coco_api_backend

    def _eval_predictions(self, predictions, img_ids=None):
        results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(results)
        if "keypoints" in tasks:
            return super()._eval_predictions(predictions, img_ids)
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if id_map:
            to_dataset = {v: k for k, v in id_map.items()}
            for r in results:
                if r["category_id"] not in to_dataset:
                    raise ValueError(
                        f"a prediction has class {r['category_id']}; the dataset's classes are "
                        f"0..{len(to_dataset) - 1}"
                    )
                r["category_id"] = to_dataset[r["category_id"]]
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(results))
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        self._logger.info(f"Evaluating predictions with COCOeval from {self._backend} ...")
        for task in sorted(tasks):
            coco_eval = None
            if results:
                coco_eval = evaluate_coco(
                    self._ground_truth(),
                    results,
                    task,
                    self._backend,
                    img_ids=img_ids,
                    max_dets=self._max_dets_per_image,
                )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )
