"""tests/evaluation/detections.py: the synthetic detections the COCOeval tests score."""

import json

import pytest

from crbp_panoptic.data import generate_split, split_paths

from tests.evaluation.detections import perturbed_detections


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
