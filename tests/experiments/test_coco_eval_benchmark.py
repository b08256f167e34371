"""crbp_panoptic.experiments.coco_eval_benchmark: COCOeval backends timed on synthetic
detections (their statistics agree; tests/evaluation checks the backends themselves)."""

import json

import numpy as np
import pytest

from crbp_panoptic.data import generate_split, split_paths
from crbp_panoptic.experiments.coco_eval_benchmark import (
    benchmark_backends,
    format_report,
    perturbed_detections,
)


@pytest.fixture(scope="module")
def val_json(tmp_path_factory):
    """The synthetic val split's COCO instances (6 images of 96x96, seed 0)."""
    split_dir = generate_split(str(tmp_path_factory.mktemp("coco") / "val"), "val", 6, (96, 96), 0)
    with open(split_paths(split_dir).instances_json) as f:
        return json.load(f)


def test_perturbed_detections_repeat_with_their_seed_and_miss_some_objects(val_json):
    first = perturbed_detections(val_json, seed=0, false_positive=0.0, duplicate=0.0)
    assert first == perturbed_detections(val_json, seed=0, false_positive=0.0, duplicate=0.0)
    assert first != perturbed_detections(val_json, seed=1, false_positive=0.0, duplicate=0.0)
    assert 0 < len(first) <= len(val_json["annotations"])
    image_ids = {im["id"] for im in val_json["images"]}
    assert all(
        d["image_id"] in image_ids and isinstance(d["segmentation"]["counts"], str) for d in first
    )


def test_benchmark_reports_time_and_identical_stats(val_json):
    pytest.importorskip("faster_coco_eval")
    results = perturbed_detections(val_json)
    report = benchmark_backends(val_json, results, ["pycocotools", "faster_coco_eval"], repeats=1)
    for iou_type in ("bbox", "segm"):
        np.testing.assert_allclose(
            report["faster_coco_eval"]["stats"][iou_type],
            report["pycocotools"]["stats"][iou_type],
            rtol=0,
            atol=1e-12,
        )
        assert all(r["seconds"][iou_type] > 0 for r in report.values())
    text = format_report(report, "python tools/benchmark.py --task coco_eval", "data", len(results))
    assert "Identical to pycocotools (|difference| <= 1e-12) for every backend: True." in text
    assert "| faster_coco_eval | " in text and "torch " in text  # the machine line
