"""tools/predict.py, crbp_panoptic.engine.predictor/inputs: outputs decode, inputs checked first."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crbp_panoptic.data import CATEGORIES, synthetic_panoptic_metadata
from crbp_panoptic.data.synthetic import generate_split, rgb2id
from crbp_panoptic.engine.inputs import InputError, collect_images, split_inputs_and_opts
from crbp_panoptic.engine.predictor import PanopticCategories, segments_record

from tests.tiny import CONFIGS, TINY, load_tool

CONFIG = str(CONFIGS / "Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml")
TINY_OPTS = [str(v) for v in TINY]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three synthetic 64x64 JPEGs."""
    split_dir = generate_split(
        str(tmp_path_factory.mktemp("predict") / "val"), "val", 3, (64, 64), 0
    )
    return split_dir + "/images"


@pytest.fixture(scope="module")
def predicted(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict_out") / "out"
    torch.manual_seed(0)
    load_tool("predict").main(
        [
            "--config-file",
            CONFIG,
            "--input",
            images,
            "--output",
            str(out),
            "--no-progress",
            *TINY_OPTS,
        ]
    )
    return out


def test_outputs_decode_and_agree(images, predicted):
    names = ["val_000000", "val_000001", "val_000002"]
    categories = {c["id"]: c for c in CATEGORIES}
    for name in names:
        ids = rgb2id(np.asarray(Image.open(predicted / f"{name}_panoptic.png").convert("RGB")))
        record = json.loads((predicted / f"{name}.json").read_text())
        assert ids.shape == (record["height"], record["width"]) == (64, 64)
        segments = record["segments_info"]
        assert segments, name
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segments}
        for s in segments:
            assert s["area"] == int((ids == s["id"]).sum()) > 0
            category = categories[s["category_id"]]  # a dataset id, not a contiguous one
            assert (s["category"], s["isthing"]) == (category["name"], bool(category["isthing"]))
            assert (s["score"] is None) == (not s["isthing"])
        overlay = np.asarray(Image.open(predicted / f"{name}.png"))
        assert overlay.shape == (64, 64, 3)


def test_predictions_json_is_coco_panoptic_results(predicted):
    result = json.loads((predicted / "predictions.json").read_text())
    assert list(result) == ["annotations"]
    annotations = result["annotations"]
    assert [a["image_id"] for a in annotations] == ["val_000000", "val_000001", "val_000002"]
    for a in annotations:
        assert set(a) == {"image_id", "file_name", "segments_info"}
        assert (
            a["file_name"] == f"{a['image_id']}_panoptic.png"
            and (predicted / a["file_name"]).is_file()
        )
        per_image = json.loads((predicted / f"{a['image_id']}.json").read_text())["segments_info"]
        assert a["segments_info"] == [
            {k: v for k, v in s.items() if k != "category"} for s in per_image
        ]


def test_segments_map_contiguous_ids_to_dataset_ids():
    from detectron2.data.catalog import Metadata

    meta = Metadata(name="synthetic_meta_test", **synthetic_panoptic_metadata())
    seg = np.array([[1, 1, 2], [0, 2, 2]])
    info = [
        {"id": 1, "category_id": 2, "isthing": True, "score": 0.75, "instance_id": 0},
        {"id": 2, "category_id": 1, "isthing": False, "area": 3},
    ]
    out = segments_record(seg, info, PanopticCategories(meta))
    assert out == [
        {
            "id": 1,
            "category_id": 3,
            "category": "triangle",
            "isthing": True,
            "area": 2,
            "score": 0.75,
        },
        {"id": 2, "category_id": 92, "category": "sky", "isthing": False, "area": 3, "score": None},
    ]


def _run(tmp_path, *inputs):
    out = tmp_path / "out"
    argv = ["--config-file", CONFIG, "--input", *map(str, inputs), "--output", str(out), *TINY_OPTS]
    with pytest.raises(SystemExit) as e:
        load_tool("predict").main(argv)
    assert not out.exists()  # checked before anything was written
    return str(e.value)


def test_bad_inputs_are_named_before_anything_is_written(images, tmp_path):
    good = f"{images}/val_000000.jpg"
    missing = tmp_path / "missing.jpg"
    assert f"'{missing}': no such file" in _run(tmp_path, good, missing)
    fake = tmp_path / "notes.jpg"
    fake.write_text("not an image")
    assert f"'{fake}' is not a readable image" in _run(tmp_path, good, fake)
    truncated = tmp_path / "cut.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    assert f"'{truncated}' is not a readable image" in _run(tmp_path, good, truncated)


def test_directory_without_images_and_empty_glob_say_so(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert f"input directory '{empty}' has no images" in _run(tmp_path, empty)
    assert "matches no files" in _run(tmp_path, tmp_path / "*.png")


def test_collect_images_expands_globs_directories_and_rejects_clashing_names(images, tmp_path):
    assert collect_images([images]) == [f"{images}/val_00000{i}.jpg" for i in range(3)]
    assert collect_images([f"{images}/*1.jpg", f"{images}/val_000001.jpg"]) == [
        f"{images}/val_000001.jpg"
    ]
    other = tmp_path / "val_000001.png"
    Image.new("RGB", (8, 8)).save(other)
    with pytest.raises(InputError, match="share the name 'val_000001'"):
        collect_images([f"{images}/val_000001.jpg", str(other)])


def test_trailing_overrides_are_split_from_inputs(images):
    inputs, opts = split_inputs_and_opts(
        [images, "a.jpg", "MODEL.WEIGHTS", "m.pth", "OUTPUT_DIR", "o"],
        ["MODEL", "OUTPUT_DIR", "INPUT"],
    )
    assert inputs == [images, "a.jpg"] and opts == ["MODEL.WEIGHTS", "m.pth", "OUTPUT_DIR", "o"]


def test_missing_config_file_is_named(images, tmp_path):
    out = tmp_path / "out"
    argv = ["--config-file", str(tmp_path / "nope.yaml"), "--input", images, "--output", str(out)]
    with pytest.raises(SystemExit, match="nope.yaml'?: no such file"):
        load_tool("predict").main(argv)
    assert not out.exists()
