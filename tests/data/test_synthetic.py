"""The synthetic COCO-panoptic generator: determinism, exact format, checks, atomicity."""

import filecmp
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from crbp_panoptic.data import synthetic
from crbp_panoptic.data.synthetic import (
    CATEGORIES,
    PanopticFormatError,
    ensure_split,
    generate_split,
    panoptic_to_semantic,
    render_sample,
    split_paths,
    validate_panoptic_split,
)

SIZE = (64, 80)  # H != W catches transposed masks
NUM_IMAGES = 9  # image 3 has no things
THING_IDS = {c["id"] for c in CATEGORIES if c["isthing"]}
STUFF_IDS = [c["id"] for c in CATEGORIES if not c["isthing"]]


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "train"
    return generate_split(str(out), "train", NUM_IMAGES, SIZE, 0)


def _load(path):
    with open(path) as f:
        return json.load(f)


def _files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


def _validate(d, **kw):
    p = split_paths(d)
    return validate_panoptic_split(
        p.panoptic_json, p.panoptic_dir, p.image_dir, p.sem_seg_dir, p.instances_json, **kw
    )


def test_render_is_deterministic():
    a, b = render_sample(5, "train", SIZE, 7), render_sample(5, "train", SIZE, 7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    assert a.segments_info == b.segments_info
    for other in (render_sample(5, "train", SIZE, 8), render_sample(5, "val", SIZE, 7)):
        assert not np.array_equal(a.image, other.image)


def test_same_parameters_give_identical_files(split_dir, tmp_path):
    again = generate_split(str(tmp_path / "again"), "train", NUM_IMAGES, SIZE, 0)
    files = _files(split_dir)
    assert files == _files(again)
    _, mismatch, errors = filecmp.cmpfiles(split_dir, again, files, shallow=False)
    assert not mismatch and not errors
    other = generate_split(str(tmp_path / "other"), "train", NUM_IMAGES, SIZE, 1)
    assert not filecmp.cmp(
        split_paths(split_dir).panoptic_json, split_paths(other).panoptic_json, shallow=False
    )


def test_layout_and_coco_fields(split_dir):
    p = split_paths(split_dir)
    pan, inst = _load(p.panoptic_json), _load(p.instances_json)
    assert len(pan["images"]) == len(pan["annotations"]) == NUM_IMAGES
    assert pan["categories"] == [dict(c) for c in CATEGORIES]
    assert {c["id"] for c in inst["categories"]} == THING_IDS
    assert inst["images"] == pan["images"]
    for im, ann in zip(pan["images"], pan["annotations"]):
        assert set(im) == {"id", "file_name", "width", "height"}
        assert (im["height"], im["width"]) == SIZE and ann["image_id"] == im["id"]
        stem = os.path.splitext(im["file_name"])[0]
        assert ann["file_name"] == stem + ".png"
        with Image.open(os.path.join(p.image_dir, im["file_name"])) as jpg:
            assert (jpg.format, jpg.mode, jpg.size) == ("JPEG", "RGB", SIZE[::-1])
        with Image.open(os.path.join(p.sem_seg_dir, stem + ".png")) as sem:
            assert sem.mode == "L"
        for seg in ann["segments_info"]:
            assert set(seg) == {"id", "category_id", "iscrowd", "bbox", "area"}
    assert _load(p.marker) == {
        "generator_version": synthetic.GENERATOR_VERSION,
        "split": "train",
        "num_images": NUM_IMAGES,
        "image_size": list(SIZE),
        "seed": 0,
    }


def test_id_encoding_matches_panopticapi():
    from panopticapi.utils import id2rgb, rgb2id

    ids = np.random.default_rng(0).integers(0, 256**3, (7, 5))
    rgb = synthetic.id2rgb(ids)
    np.testing.assert_array_equal(rgb, id2rgb(ids))
    np.testing.assert_array_equal(synthetic.rgb2id(rgb), ids)
    np.testing.assert_array_equal(rgb2id(rgb), ids)


def test_pngs_agree_with_json(split_dir):
    """Read back with panopticapi: ids, areas and boxes; semantic labels; void is sparse."""
    from panopticapi.utils import rgb2id

    p = split_paths(split_dir)
    pan = _load(p.panoptic_json)
    stuff_label = {cid: i + 1 for i, cid in enumerate(STUFF_IDS)}
    void = total = 0
    for ann in pan["annotations"]:
        ids = rgb2id(np.asarray(Image.open(os.path.join(p.panoptic_dir, ann["file_name"]))))
        sem = np.asarray(Image.open(os.path.join(p.sem_seg_dir, ann["file_name"])))
        assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
        expected_sem = np.full(ids.shape, 255)
        for seg in ann["segments_info"]:
            mask = ids == seg["id"]
            ys, xs = np.nonzero(mask)
            assert seg["area"] == mask.sum()
            assert seg["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            cid = seg["category_id"]
            expected_sem[mask] = 0 if cid in THING_IDS else stuff_label[cid]
        np.testing.assert_array_equal(sem, expected_sem)
        np.testing.assert_array_equal(sem, panoptic_to_semantic(ids, ann["segments_info"]))
        void += (ids == 0).sum()
        total += ids.size
    assert void / total < 0.02


def test_instances_agree_with_panoptic_segments(split_dir):
    """Each instance's RLE (decoded by pycocotools) is exactly one thing segment."""
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    p = split_paths(split_dir)
    pan = _load(p.panoptic_json)
    coco = COCO(p.instances_json)
    from panopticapi.utils import rgb2id

    for ann in pan["annotations"]:
        ids = rgb2id(np.asarray(Image.open(os.path.join(p.panoptic_dir, ann["file_name"]))))
        things = {s["id"]: s for s in ann["segments_info"] if s["category_id"] in THING_IDS}
        insts = coco.loadAnns(coco.getAnnIds(imgIds=[ann["image_id"]]))
        assert len(insts) == len(things)
        matched = set()
        for inst in insts:
            mask = coco.annToMask(inst).astype(bool)
            seg_id = int(np.bincount(ids[mask]).argmax())
            seg = things[seg_id]
            np.testing.assert_array_equal(mask, ids == seg_id)
            rle = coco.annToRLE(inst)
            assert inst["category_id"] == seg["category_id"] and inst["iscrowd"] == 0
            assert inst["area"] == seg["area"] == mask_util.area(rle)
            assert inst["bbox"] == seg["bbox"] == mask_util.toBbox(rle).tolist()
            np.testing.assert_array_equal(synthetic.rle_to_mask(inst["segmentation"]), mask)
            matched.add(seg_id)
        assert matched == set(things)


def test_content_things_stuff_empty_images_and_occlusion(split_dir):
    stats = _validate(split_dir)
    assert stats["thing_segments"] > 0 and stats["stuff_segments"] > 0
    assert stats["images_without_things"] == 1  # image 3
    pan = _load(split_paths(split_dir).panoptic_json)
    cats = {s["category_id"] for a in pan["annotations"] for s in a["segments_info"]}
    assert THING_IDS <= cats and len(cats & set(STUFF_IDS)) >= 2
    # Occlusion: somewhere two things touch (4-neighbours with different thing ids).
    touching = False
    for i in range(NUM_IMAGES):
        s = render_sample(i, "train", SIZE, 0)
        is_thing = np.isin(s.panoptic // 1000, list(THING_IDS))
        pan = s.panoptic
        for a, b, ta, tb in (
            (pan[1:], pan[:-1], is_thing[1:], is_thing[:-1]),
            (pan[:, 1:], pan[:, :-1], is_thing[:, 1:], is_thing[:, :-1]),
        ):
            touching |= bool((ta & tb & (a != b)).any())
    assert touching


def test_every_nonempty_small_split_has_things_and_stuff(tmp_path):
    for split in ("train", "val"):
        d = generate_split(str(tmp_path / split), split, 1, (32, 32), 3)
        stats = _validate(d)
        assert stats["thing_segments"] and stats["stuff_segments"]


@pytest.mark.parametrize(
    "corruption",
    [
        "invalid_json",
        "segment_absent_from_png",
        "wrong_area",
        "missing_png",
        "wrong_semantic",
        "instances_area",
    ],
)
def test_corrupt_file_is_named(split_dir, tmp_path, corruption):
    d = str(tmp_path / "copy")
    shutil.copytree(split_dir, d)
    p = split_paths(d)
    pan = _load(p.panoptic_json)
    ann = pan["annotations"][1]
    png = os.path.join(p.panoptic_dir, ann["file_name"])
    if corruption == "invalid_json":
        with open(p.panoptic_json, "a") as f:
            f.write("}")
        culprit, error = p.panoptic_json, PanopticFormatError
    elif corruption in ("segment_absent_from_png", "wrong_area"):
        seg = ann["segments_info"][0]
        if corruption == "wrong_area":
            seg["area"] += 1
        else:
            seg["id"] += 7
        with open(p.panoptic_json, "w") as f:
            json.dump(pan, f)
        culprit, error = png, PanopticFormatError
    elif corruption == "missing_png":
        os.remove(png)
        culprit, error = png, FileNotFoundError
    elif corruption == "wrong_semantic":
        culprit = os.path.join(p.sem_seg_dir, ann["file_name"])
        sem = np.asarray(Image.open(culprit)).copy()
        sem[0, 0] = 7
        Image.fromarray(sem).save(culprit)
        error = PanopticFormatError
    else:
        inst = _load(p.instances_json)
        inst["annotations"][0]["area"] += 3
        with open(p.instances_json, "w") as f:
            json.dump(inst, f)
        culprit, error = p.instances_json, PanopticFormatError
    with pytest.raises(error) as info:
        _validate(d)
    assert culprit in str(info.value)


def test_failure_mid_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = synthetic.render_sample

    def failing(index, *args, **kwargs):
        calls.append(index)
        if index == 2:
            raise RuntimeError("simulated crash")
        return real(index, *args, **kwargs)

    monkeypatch.setattr(synthetic, "render_sample", failing)
    target = tmp_path / "datasets" / "split"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_split(str(target), "train", 4, (32, 32), 0)
    assert calls == [0, 1, 2]
    assert not target.exists()
    assert os.listdir(target.parent) == []  # the temporary directory is gone too


def test_ensure_split_keeps_matching_and_rejects_mismatched(tmp_path):
    d = str(tmp_path / "s")
    ensure_split(d, "val", 2, (32, 32), 0)
    stamp = os.stat(split_paths(d).panoptic_json).st_mtime_ns
    ensure_split(d, "val", 2, (32, 32), 0)  # no-op
    assert os.stat(split_paths(d).panoptic_json).st_mtime_ns == stamp
    with pytest.raises(ValueError, match="num_images") as info:
        ensure_split(d, "val", 3, (32, 32), 0)
    assert d in str(info.value)
    os.remove(split_paths(d).marker)
    with pytest.raises(ValueError, match="generation.json") as info:
        ensure_split(d, "val", 2, (32, 32), 0)
    assert d in str(info.value)
    with pytest.raises(FileExistsError):
        generate_split(d, "val", 2, (32, 32), 0)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="image_size"):
        render_sample(0, "train", (16, 64))
    with pytest.raises(ValueError, match="split"):
        render_sample(0, "train/val")
