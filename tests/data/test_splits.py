"""The split writer: exact COCO panoptic format, byte-identical determinism, atomic writes,
the on-disk cache (kept, regenerated when stale, refused when it differs) and the registry
of data kinds."""

import dataclasses
import filecmp
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from crbp_panoptic.data import (
    CABLE_CATEGORIES,
    CATEGORIES,
    GENERATOR_VERSION,
    KINDS,
    SplitSpec,
    ensure_split,
    generate_split,
    kind_generator,
    panoptic_to_semantic,
    register_kind,
    render_cables_sample,
    render_sample,
    rle_to_mask,
    split_paths,
)

from tests.data.common import NUM_IMAGES, SIZE, STUFF_IDS, THING_IDS, load_json, validate


def _files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


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
    pan, inst = load_json(p.panoptic_json), load_json(p.instances_json)
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
    assert load_json(p.marker) == {
        "generator_version": GENERATOR_VERSION,
        "split": "train",
        "num_images": NUM_IMAGES,
        "image_size": list(SIZE),
        "seed": 0,
    }


def test_pngs_agree_with_json(split_dir):
    """Read back with panopticapi: ids, areas and boxes; semantic labels; void is sparse."""
    from panopticapi.utils import rgb2id

    p = split_paths(split_dir)
    pan = load_json(p.panoptic_json)
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
        np.testing.assert_array_equal(
            sem, panoptic_to_semantic(ids, ann["segments_info"], CATEGORIES)
        )
        void += (ids == 0).sum()
        total += ids.size
    assert void / total < 0.02


def test_instances_agree_with_panoptic_segments(split_dir):
    """Each instance's RLE (decoded by pycocotools) is exactly one thing segment."""
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    p = split_paths(split_dir)
    pan = load_json(p.panoptic_json)
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
            np.testing.assert_array_equal(rle_to_mask(inst["segmentation"]), mask)
            matched.add(seg_id)
        assert matched == set(things)


def test_every_nonempty_small_split_has_things_and_stuff(tmp_path):
    for split in ("train", "val"):
        d = generate_split(str(tmp_path / split), split, 1, (32, 32), 3)
        stats = validate(d)
        assert stats["thing_segments"] and stats["stuff_segments"]


def test_failure_mid_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = render_sample

    def failing(index, *args, **kwargs):
        calls.append(index)
        if index == 2:
            raise RuntimeError("simulated crash")
        return real(index, *args, **kwargs)

    monkeypatch.setitem(KINDS, "shapes", dataclasses.replace(KINDS["shapes"], render=failing))
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


def _read(path, mode="r"):
    with open(path, mode) as f:
        return json.load(f) if mode == "r" else f.read()


def _write_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f)


def test_an_older_cables_split_is_regenerated_on_first_use(tmp_path):
    """A split written by an earlier version of the generator is a stale cache: the
    request regenerates it, also where the sizes changed with the version (as those of
    ``synthetic_longrange_*`` did). A newer version or another kind stays an error."""
    d = str(tmp_path / "s")
    ensure_split(d, "val", 2, (48, 48), 0, kind="cables")
    p = split_paths(d)
    fresh_json = _read(p.panoptic_json, "rb")
    marker = _read(p.marker)
    for old in (
        dict(marker, kind_version=marker["kind_version"] - 1),
        dict(marker, kind_version=marker["kind_version"] - 1, num_images=5),
    ):
        _write_json(old, p.marker)
        with open(p.panoptic_json, "w") as f:
            f.write("written by the old generator")
        assert ensure_split(d, "val", 2, (48, 48), 0, kind="cables") == d
        assert _read(p.marker) == marker
        assert _read(p.panoptic_json, "rb") == fresh_json
        assert validate(d, check_pixels=True)["images"] == 2
        assert os.listdir(tmp_path) == ["s"]  # no temporary directory left behind

    for kept in (
        dict(marker, kind_version=marker["kind_version"] + 1),  # newer: refuse, keep
        {k: v for k, v in marker.items() if k not in ("kind", "kind_version")},  # shapes
    ):
        _write_json(kept, p.marker)
        with pytest.raises(ValueError, match="other parameters"):
            ensure_split(d, "val", 2, (48, 48), 0, kind="cables")
        assert _read(p.marker) == kept


def test_shapes_marker_is_unchanged_and_kinds_do_not_mix(tmp_path):
    assert "kind" not in SplitSpec().to_json()  # splits written before kinds still match
    assert SplitSpec().to_json()["generator_version"] == GENERATOR_VERSION
    assert SplitSpec(kind="cables").to_json()["kind"] == "cables"
    d = str(tmp_path / "s")
    ensure_split(d, "val", 1, (48, 48), 0, kind="cables")
    with pytest.raises(ValueError, match="kind"):
        ensure_split(d, "val", 1, (48, 48), 0)
    with pytest.raises(ValueError, match="kind='wires'"):
        SplitSpec(kind="wires")


def _digests(d):
    """sha256 of a split's files: of their bytes, and of their content (JSON bytes, decoded
    pixels of the images), which does not depend on the JPEG and PNG encoders' versions."""
    raw, content = hashlib.sha256(), hashlib.sha256()
    for rel in _files(d):
        with open(os.path.join(d, rel), "rb") as f:
            data = f.read()
        raw.update(rel.encode() + b"\0" + data)
        if rel.endswith(".json"):
            content.update(rel.encode() + b"\0" + data)
        else:
            with Image.open(os.path.join(d, rel)) as im:
                a = np.asarray(im)
                mode = im.mode
            content.update(rel.encode() + b"\0" + f"{mode}{a.shape}{a.dtype}".encode())
            content.update(a.tobytes())
    return raw.hexdigest(), content.hexdigest()


# Tiny splits of each kind, and the digests of what version 1 of the writer (shapes) and
# version 4 of the cables wrote for them, with Pillow 13.0.0 and numpy 2.4.6: any change of
# a generated file changes them (and must come with a version bump, so caches regenerate).
_REFERENCE = {
    "shapes": (
        ("val", 3, (48, 40), 1),
        "4cf6e6c93bfcdfd71c1b9d66d726d74e95cc879d1dac50abec257fcbada6c04b",
        "66da120ae68c0e0367b0471bf8ad7e6544484ae8c42ecf8795228a246f93b1e9",
    ),
    "cables": (
        ("train", 2, (64, 64), 0),
        "f84bb27aa7ab94d110c0137652cecea65995402e3d1394f5b792d57c03fa8c72",
        "e514a76c56d7b160d683c7fa3186327c29da541e7da0c09f16a3fd3c6d8a355f",
    ),
}
_REFERENCE_VERSIONS = ("13.0.0", "2.4.6")


@pytest.mark.parametrize("kind", sorted(_REFERENCE))
def test_generated_files_are_those_of_the_reference(tmp_path, kind):
    import PIL

    args, raw, content = _REFERENCE[kind]
    d = ensure_split(str(tmp_path / kind), *args, kind=kind)
    got_raw, got_content = _digests(d)
    assert got_content == content
    if (PIL.__version__, np.__version__) == _REFERENCE_VERSIONS:
        assert got_raw == raw  # byte for byte, with the encoders of the reference
    assert (GENERATOR_VERSION, SplitSpec(kind=kind).to_json().get("kind_version")) == (
        1,
        {"shapes": None, "cables": 4}[kind],
    )


def test_kinds_register_themselves_and_are_checked():
    assert list(KINDS) == ["shapes", "cables"]
    assert kind_generator("shapes") == (CATEGORIES, render_sample)
    assert kind_generator("cables") == (CABLE_CATEGORIES, render_cables_sample)
    with pytest.raises(ValueError, match=r"kind='wires': use one of \['shapes', 'cables'\]"):
        kind_generator("wires")
    with pytest.raises(ValueError, match="'cables' is registered already"):
        register_kind("cables", CABLE_CATEGORIES, render_cables_sample, 5)
    with pytest.raises(ValueError, match="'wires': version=None"):
        register_kind("wires", CABLE_CATEGORIES, render_cables_sample)
    assert "wires" not in KINDS


def test_a_registered_kind_is_written_with_its_version(tmp_path, monkeypatch):
    def render(index, split, image_size, seed):
        return render_cables_sample(index, split, image_size, seed)

    monkeypatch.delitem(KINDS, "wires", raising=False)
    try:
        register_kind("wires", CABLE_CATEGORIES, render, version=2)
        d = generate_split(str(tmp_path / "w"), "val", 1, (48, 48), 0, kind="wires")
        marker = load_json(split_paths(d).marker)
        assert (marker["kind"], marker["kind_version"]) == ("wires", 2)
        assert validate(d)["images"] == 1
    finally:
        KINDS.pop("wires", None)
