"""tools/predict.py, crbp_panoptic.engine.predictor/inputs: outputs decode, inputs checked first,
nothing overwritten, images of any bit depth and size read as the model sees them."""

import errno
import json
import os
import re
import stat

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from crbp_panoptic.data import CATEGORIES, generate_split, rgb2id, synthetic_panoptic_metadata
from crbp_panoptic.engine.inputs import (
    InputError,
    collect_images,
    config_keys,
    read_rgb,
    split_inputs_and_opts,
)
from crbp_panoptic.engine.predictor import (
    OutputError,
    PanopticCategories,
    _replace_into,
    predict_to_files,
    segments_record,
)

from tests.tiny import CONFIGS, TINY, load_tool, tiny_cfg

CONFIG_NAME = "Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"
CONFIG = str(CONFIGS / CONFIG_NAME)
TINY_OPTS = [str(v) for v in TINY]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the tiny model, as training writes it."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg(CONFIG_NAME))
    save_dir = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(model, save_dir=str(save_dir)).save("model_final")
    return str(save_dir / "model_final.pth")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three synthetic 64x64 JPEGs."""
    split_dir = generate_split(
        str(tmp_path_factory.mktemp("predict") / "val"), "val", 3, (64, 64), 0
    )
    return split_dir + "/images"


@pytest.fixture(scope="module")
def predicted(images, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict_out") / "out"
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
            "MODEL.WEIGHTS",
            weights,
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


def _config_keys():
    from detectron2.config import get_cfg

    from crbp_panoptic.config import add_crbp_config

    cfg = get_cfg()
    add_crbp_config(cfg)
    return config_keys(cfg)


def test_trailing_overrides_are_split_from_inputs(images):
    keys = _config_keys()
    assert {"MODEL.WEIGHTS", "MODEL.CRBP.STEPS", "OUTPUT_DIR", "TEST.EVAL_PERIOD"} <= set(keys)
    inputs, opts = split_inputs_and_opts(
        [images, "a.jpg", "MODEL.WEIGHTS", "m.pth", "DATASETS.TEST", "()", "OUTPUT_DIR", "o"],
        keys,
    )
    assert inputs == [images, "a.jpg"]
    assert opts == ["MODEL.WEIGHTS", "m.pth", "DATASETS.TEST", "()", "OUTPUT_DIR", "o"]


@pytest.mark.parametrize(
    "inputs, opts",
    [
        (["TEST.*"], ["MODEL.WEIGHTS", "m.pth"]),  # a pattern whose first part is a config key
        (["a.jpg", "TEST.jpg"], ["MODEL.WEIGHTS", "m.pth"]),  # a missing file named like one
        (["MODEL.png", "INPUT.jpg"], []),
        (["MODEL.WEIGHT", "m.pth"], []),  # not a key: both are (missing) inputs
    ],
)
def test_inputs_named_like_config_keys_stay_inputs(inputs, opts):
    assert split_inputs_and_opts(inputs + opts, _config_keys()) == (inputs, opts)


def test_predict_reads_an_input_named_like_a_config_key(images, weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.open(f"{images}/val_000000.jpg").save("TEST.png")
    out = tmp_path / "predicted"
    argv = ["--config-file", CONFIG, "--input", "TEST.*", "--output", str(out), "--no-progress"]
    result = load_tool("predict").main([*argv, *TINY_OPTS, "MODEL.WEIGHTS", weights])
    assert [a["image_id"] for a in result["annotations"]] == ["TEST"]
    assert (out / "TEST_panoptic.png").is_file()
    # A missing input named like a key is a missing input, and a mistyped key is told apart.
    assert "input 'TEST.jpg': no such file" in _run(tmp_path, "TEST.jpg")
    assert "'MODEL.WEIGHT': no such file and not a config key" in _run(tmp_path, "MODEL.WEIGHT")


def test_missing_config_file_is_named(images, tmp_path):
    out = tmp_path / "out"
    argv = ["--config-file", str(tmp_path / "nope.yaml"), "--input", images, "--output", str(out)]
    with pytest.raises(SystemExit, match="nope.yaml'?: no such file"):
        load_tool("predict").main(argv)
    assert not out.exists()


# Outputs: checked before the model loads, never replacing an input, written with the umask.


def _no_model(monkeypatch):
    """Fail the test if the tool gets as far as building a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the outputs were checked")

    monkeypatch.setattr("detectron2.engine.DefaultPredictor", refuse)


def _predict_argv(out, *inputs):
    return ["--config-file", CONFIG, "--input", *map(str, inputs), "--output", str(out)]


def test_an_output_that_would_replace_an_input_is_refused(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    shot = tmp_path / "shot.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(shot)
    before = shot.read_bytes()
    with pytest.raises(SystemExit) as e:
        load_tool("predict").main([*_predict_argv(tmp_path, shot), *TINY_OPTS])
    assert f"overlay of '{shot}' would be written to '{shot}', replacing the input" in str(e.value)
    assert shot.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["shot.png"]


@pytest.mark.parametrize(
    "names, first, second, clash",
    [
        (
            ["x.png", "x_panoptic.jpg"],
            "the id map of '{in}/x.png'",
            "the overlay of '{in}/x_panoptic.jpg'",
            "x_panoptic.png",
        ),
        (
            ["predictions.jpg"],
            "the run's predictions",
            "the segments of '{in}/predictions.jpg'",
            "predictions.json",
        ),
    ],
)
def test_outputs_that_would_collide_are_refused_naming_both(
    tmp_path, monkeypatch, names, first, second, clash
):
    _no_model(monkeypatch)
    (tmp_path / "in").mkdir()
    for name in names:
        Image.new("RGB", (32, 32)).save(tmp_path / "in" / name)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        load_tool("predict").main([*_predict_argv(out, tmp_path / "in"), *TINY_OPTS])
    message = str(e.value)
    for part in (first, second):
        assert part.replace("{in}", str(tmp_path / "in")) in message, message
    assert f"would both be written to '{out / clash}'" in message
    assert not out.exists()


def test_an_output_folder_that_is_a_file_is_named_before_the_model_loads(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    taken = tmp_path / "taken"
    taken.write_text("a file")
    for out, expected in (
        (taken, f"output folder '{taken}' is a file, not a folder"),
        (taken / "out", f"cannot create the output folder '{taken / 'out'}': '{taken}' is a file"),
    ):
        with pytest.raises(SystemExit) as e:
            load_tool("predict").main([*_predict_argv(out, image), *TINY_OPTS])
        assert str(e.value) == f"predict.py: {expected}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_an_unwritable_output_folder_is_named_before_the_model_loads(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for out, expected in (
            (locked, f"output folder '{locked}' is not writable"),
            (locked / "out", f"output folder '{locked / 'out'}': '{locked}' is not writable"),
        ):
            with pytest.raises(SystemExit, match=expected):
                load_tool("predict").main([*_predict_argv(out, image), *TINY_OPTS])
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_outputs_follow_the_umask(images, weights, tmp_path, umask):
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        load_tool("predict").main(
            [
                *_predict_argv(out, f"{images}/val_000000.jpg"),
                "--no-progress",
                *TINY_OPTS,
                "MODEL.WEIGHTS",
                weights,
            ]
        )
    finally:
        os.umask(old)
    files = sorted(os.listdir(out))
    assert files == [
        "predictions.json",
        "val_000000.json",
        "val_000000.png",
        "val_000000_panoptic.png",
    ]
    assert {stat.S_IMODE((out / f).stat().st_mode) for f in files} == {0o666 & ~umask}


def test_a_failed_write_names_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "x.png"

    def full_disk(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError, match=f"cannot write '{target}': No space left on device"):
        _replace_into(str(target), full_disk)
    assert os.listdir(tmp_path) == []


# Weights: a trained model, or random weights on request.


def test_predict_refuses_to_run_without_weights(images, tmp_path):
    message = _run(tmp_path, f"{images}/val_000000.jpg")  # tests/tiny.py sets MODEL.WEIGHTS ""
    assert "MODEL.WEIGHTS is empty" in message and "--random-weights" in message
    missing = tmp_path / "nope.pth"
    argv = _predict_argv(tmp_path / "out", f"{images}/val_000000.jpg")
    with pytest.raises(SystemExit, match=f"MODEL.WEIGHTS '{missing}': no such file"):
        load_tool("predict").main([*argv, *TINY_OPTS, "MODEL.WEIGHTS", str(missing)])
    assert not (tmp_path / "out").exists()


def _recording_predictor(cfg, seen):
    from detectron2.engine import DefaultPredictor

    predictor = DefaultPredictor(cfg)  # random weights: tests/tiny.py sets MODEL.WEIGHTS ""

    def predict(image):
        seen.append(image.copy())
        return predictor(image)

    return predict


def _predict_recorded(tmp_path, path, *opts):
    cfg = tiny_cfg(CONFIG_NAME, *opts)
    cfg.freeze()
    seen = []
    out = tmp_path / "out"
    result = predict_to_files(
        cfg, collect_images([str(path)]), str(out), False, _recording_predictor(cfg, seen)
    )
    (annotation,) = result["annotations"]
    return seen[0], out, annotation["image_id"]


def test_the_predictor_is_given_bgr_whatever_the_input_format(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (250, 20, 5)).save(path)
    for fmt in ("BGR", "RGB"):  # DefaultPredictor takes BGR and converts to INPUT.FORMAT
        seen, _, _ = _predict_recorded(tmp_path / fmt, path, "INPUT.FORMAT", fmt)
        assert seen[0, 0].tolist() == [5, 20, 250]


# Images: any bit depth scaled to 8 bits, large ones shrunk to what the model sees.


def _ramp16():
    """A 64x64 16-bit ramp above 8-bit values (PIL saturates all of it), and its 8-bit scaling."""
    values = np.linspace(256, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    return values, np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def test_a_16_bit_png_reaches_the_predictor_scaled_not_white(tmp_path):
    values, expected = _ramp16()
    path = tmp_path / "depth16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    seen, out, name = _predict_recorded(tmp_path, path)
    assert not (seen == 255).all()
    for c in range(3):
        np.testing.assert_array_equal(seen[:, :, c], expected)
    assert (out / f"{name}_panoptic.png").is_file()


def _save_mode(path, values, mode):
    Image.frombytes(mode, values.shape[::-1], values.tobytes()).save(path)


@pytest.mark.parametrize(
    "mode, make",
    [
        ("I;16B", lambda v: v.astype(">u2")),
        ("I", lambda v: v.astype(np.int32)),
        ("F", lambda v: (v / 65535).astype(np.float32)),
    ],
)
def test_high_bit_depth_modes_are_scaled_by_their_depth(tmp_path, mode, make):
    values, expected = _ramp16()
    path = tmp_path / "image.tif"
    _save_mode(path, make(values), mode)
    assert Image.open(path).mode == mode
    image, size = read_rgb(str(path))
    assert size == (64, 64) and image.dtype == np.uint8
    assert np.abs(image[:, :, 0].astype(int) - expected).max() <= (1 if mode == "F" else 0)
    assert collect_images([str(path)]) == [str(path)]


def test_a_16_bit_rgb_png_keeps_its_colours(tmp_path):
    values, _ = _ramp16()
    rgb16 = np.stack([values, 65535 - values, values // 2], axis=-1)
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), rgb16[:, :, ::-1])  # OpenCV writes BGR
    image, _ = read_rgb(str(path))
    assert np.abs(image.astype(int) - rgb16.astype(int) * 255 // 65535).max() <= 1


@pytest.mark.parametrize(
    "mode, values, message",
    [
        (
            "F",
            np.full((8, 8), 300.0, np.float32),
            "float image (PIL mode 'F') with values from 300",
        ),
        (
            "I",
            np.full((8, 8), 70000, np.int32),
            "(PIL mode 'I') with values from 70000 to 70000, beyond 16 bits",
        ),
    ],
)
def test_high_bit_depth_images_without_a_known_range_are_refused(tmp_path, mode, values, message):
    path = tmp_path / "odd.tif"
    _save_mode(path, values, mode)
    with pytest.raises(
        InputError, match=re.escape(f"input '{path}': ") + ".*" + re.escape(message)
    ):
        collect_images([str(path)])


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_a_large_image_is_shrunk_to_the_test_size_as_it_is_read(tmp_path, suffix):
    path = tmp_path / f"large.{suffix}"
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, 2000:] = (250, 40, 10)
    Image.fromarray(big).save(path)
    seen, out, name = _predict_recorded(tmp_path, path)
    assert seen.shape == (96, 128, 3)  # INPUT.MIN/MAX_SIZE_TEST 128 of the synthetic configs
    assert np.abs(seen[:, 96:].astype(int) - [10, 40, 250]).max() <= 8  # BGR, right half
    record = json.loads((out / f"{name}.json").read_text())
    assert (record["height"], record["width"]) == (96, 128)
    assert (record["image_height"], record["image_width"]) == (3000, 4000)
    assert Image.open(out / f"{name}_panoptic.png").size == (128, 96)
    assert Image.open(out / f"{name}.png").size == (128, 96)


def test_the_exif_orientation_is_applied_before_shrinking(tmp_path):
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated by 90 degrees: portrait
    Image.new("RGB", (400, 300), (0, 200, 0)).save(path, exif=exif)
    image, size = read_rgb(str(path), (128, 128))
    assert size == (400, 300) and image.shape == (128, 96, 3)
    small, size = read_rgb(str(path), (800, 1333))  # smaller than the test size: kept
    assert size == (400, 300) and small.shape == (400, 300, 3)
