"""COCOeval backends: identical statistics, backend selection without Detectron2's C++ ops."""

import json
import sys

import numpy as np
import pytest

pytest.importorskip("detectron2")

from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402

from crbp_panoptic.data import (  # noqa: E402
    generate_split,
    register_synthetic_panoptic,
    split_paths,
    unregister_synthetic_panoptic,
)
from crbp_panoptic.evaluation import (  # noqa: E402
    CRBPCOCOEvaluator,
    default_backend,
    evaluate_coco,
    has_detectron2_cocoeval,
)
from crbp_panoptic.evaluation.coco_eval import load_ground_truth  # noqa: E402

from tests.evaluation.detections import perturbed_detections  # noqa: E402


@pytest.fixture(scope="module")
def val_json(tmp_path_factory):
    """The synthetic val split's COCO instances (12 images of 128x128, seed 0)."""
    split_dir = generate_split(
        str(tmp_path_factory.mktemp("coco") / "val"), "val", 12, (128, 128), 0
    )
    with open(split_paths(split_dir).instances_json) as f:
        return json.load(f)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_faster_coco_eval_gives_pycocotools_stats(val_json, iou_type, seed):
    pytest.importorskip("faster_coco_eval")
    results = perturbed_detections(val_json, seed=seed)
    stats = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        stats[backend] = evaluate_coco(
            load_ground_truth(val_json, backend), results, iou_type, backend
        ).stats
    assert len(stats["pycocotools"]) == len(stats["faster_coco_eval"]) == 12
    np.testing.assert_allclose(stats["faster_coco_eval"], stats["pycocotools"], rtol=0, atol=1e-12)
    assert 0.1 < stats["pycocotools"][0] < 0.95  # the perturbations make AP neither 0 nor 1


def _to_contiguous(results, metadata):
    """Detections as Detectron2's model outputs number them (contiguous class ids)."""
    id_map = metadata.thing_dataset_id_to_contiguous_id
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(dict(r, category_id=id_map[r["category_id"]]))
    return [{"image_id": k, "instances": v} for k, v in sorted(by_image.items())]


def test_evaluator_backends_agree_with_detectron2s_evaluator(tmp_path):
    pytest.importorskip("faster_coco_eval")
    name = f"synthetic_cocoeval_{tmp_path.name}"
    register_synthetic_panoptic(
        name, root=str(tmp_path), split="val", num_images=6, image_size=(96, 96)
    )
    try:
        ds = name + "_separated"
        meta = MetadataCatalog.get(ds)
        with open(meta.json_file) as f:
            results = perturbed_detections(json.load(f), seed=3)
        predictions = _to_contiguous(results, meta)
        reference = COCOEvaluator(ds, distributed=False, use_fast_impl=False)
        reference._results = {}
        reference._eval_predictions(predictions)
        for backend in ("pycocotools", "faster_coco_eval"):
            evaluator = CRBPCOCOEvaluator(
                ds, distributed=False, output_dir=str(tmp_path / backend), backend=backend
            )
            evaluator._results = {}
            evaluator._eval_predictions(_to_contiguous(results, meta))
            assert evaluator._results.keys() == reference._results.keys() == {"bbox", "segm"}
            for task, metrics in reference._results.items():
                assert evaluator._results[task] == pytest.approx(metrics, abs=1e-9, nan_ok=True), (
                    backend,
                    task,
                )
            with open(tmp_path / backend / "coco_instances_results.json") as f:
                written = json.load(f)
            assert {r["category_id"] for r in written} <= set(
                meta.thing_dataset_id_to_contiguous_id
            )
        assert reference._results["segm"]["AP"] > 10
    finally:
        unregister_synthetic_panoptic(name)


def test_without_detectron2_extension_the_fast_backend_is_faster_coco_eval(monkeypatch):
    import detectron2

    monkeypatch.delattr(detectron2, "_C", raising=False)
    monkeypatch.setitem(sys.modules, "detectron2._C", None)  # upstream main without C++ ops
    assert not has_detectron2_cocoeval()
    expected = "faster_coco_eval" if _installed("faster_coco_eval") else "pycocotools"
    assert default_backend() == expected


def test_unknown_or_missing_backend_is_named():
    with pytest.raises(ValueError, match="'fast'.*choose from"):
        CRBPCOCOEvaluator("any", backend="fast")
    if not has_detectron2_cocoeval():
        with pytest.raises(ImportError, match="C\\+\\+ extension"):
            CRBPCOCOEvaluator("any", backend="detectron2")


def _installed(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None
