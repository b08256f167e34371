"""The long-range (cables) synthetic data: format, determinism, crossing instances, names."""

import json
import os

import numpy as np
import pytest

from crbp_panoptic.data.longrange import CABLE_CATEGORIES, box_sharing, render_cables_sample
from crbp_panoptic.data.synthetic import (
    SplitSpec,
    ensure_split,
    generate_split,
    render_sample,
    split_paths,
    validate_panoptic_split,
)

SIZE = (96, 112)  # H != W catches transposed masks
NUM_IMAGES = 6
THING_IDS = {c["id"] for c in CABLE_CATEGORIES if c["isthing"]}


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cables") / "val"
    return generate_split(str(out), "val", NUM_IMAGES, SIZE, 0, kind="cables")


def _validate(d, **kw):
    p = split_paths(d)
    return validate_panoptic_split(
        p.panoptic_json, p.panoptic_dir, p.image_dir, p.sem_seg_dir, p.instances_json, **kw
    )


def test_cables_render_is_deterministic():
    a, b = render_cables_sample(2, "train", SIZE, 7), render_cables_sample(2, "train", SIZE, 7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    assert a.segments_info == b.segments_info
    for other in (
        render_cables_sample(2, "train", SIZE, 8),
        render_cables_sample(2, "val", SIZE, 7),
        render_sample(2, "train", SIZE, 7),
    ):  # not the shapes image either
        assert not np.array_equal(a.image, other.image)


def test_cables_split_passes_the_format_checks_pixel_for_pixel(split_dir):
    stats = _validate(split_dir, check_pixels=True)
    assert stats["images"] == NUM_IMAGES
    assert stats["images_without_things"] == 0
    assert stats["thing_segments"] >= 3 * NUM_IMAGES and stats["stuff_segments"] >= NUM_IMAGES
    p = split_paths(split_dir)
    with open(p.panoptic_json) as f:
        pan = json.load(f)
    assert pan["categories"] == [dict(c) for c in CABLE_CATEGORIES]
    assert [c["name"] for c in pan["categories"] if c["isthing"]] == ["cable", "rope"]
    with open(p.marker) as f:
        assert json.load(f)["kind"] == "cables"


def test_same_parameters_give_identical_files(split_dir, tmp_path):
    again = generate_split(str(tmp_path / "again"), "val", NUM_IMAGES, SIZE, 0, kind="cables")
    for sub in (
        "panoptic.json",
        "instances.json",
        "images/val_000004.jpg",
        "panoptic/val_000004.png",
        "panoptic_stuff/val_000004.png",
    ):
        with open(os.path.join(split_dir, sub), "rb") as f1:
            with open(os.path.join(again, sub), "rb") as f2:
                assert f1.read() == f2.read(), sub


def test_instance_boxes_hold_other_instances_of_the_same_class():
    """The point of the data: a box alone does not say which pixels are its instance."""
    n = same = other = 0
    for i in range(12):
        s = render_cables_sample(i, "train", (128, 128), 0)
        counts = box_sharing(s.panoptic, s.segments_info)
        n, same, other = n + counts[0], same + counts[1], other + counts[2]
    assert n >= 36
    assert same / n >= 0.6, (same, n)
    assert other / n >= 0.9, (other, n)


def test_cables_are_thin_long_and_cut_by_crossings():
    from scipy import ndimage

    fill, split = [], 0
    for i in range(8):
        s = render_cables_sample(i, "val", (128, 128), 0)
        for seg in s.segments_info:
            if seg["category_id"] not in THING_IDS:
                continue
            _, _, bw, bh = seg["bbox"]
            assert max(bw, bh) >= 30, seg  # long: spans a quarter of the image or more
            fill.append(seg["area"] / (bw * bh))
            split += ndimage.label(s.panoptic == seg["id"])[1] > 1
    # Thin curves fill a small part of their boxes (a compact shape fills 50-80%).
    assert np.median(fill) < 0.3, np.median(fill)
    assert split >= 5  # cables on top cut others into pieces of one instance


def test_shapes_marker_is_unchanged_and_kinds_do_not_mix(tmp_path):
    assert "kind" not in SplitSpec().to_json()  # splits written before kinds still match
    assert SplitSpec(kind="cables").to_json()["kind"] == "cables"
    d = str(tmp_path / "s")
    ensure_split(d, "val", 1, (48, 48), 0, kind="cables")
    with pytest.raises(ValueError, match="kind"):
        ensure_split(d, "val", 1, (48, 48), 0)
    with pytest.raises(ValueError, match="kind='wires'"):
        SplitSpec(kind="wires")


def test_longrange_datasets_are_registered_with_their_own_classes(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from crbp_panoptic.data import (
        DEFAULT_DATASETS,
        register_synthetic_panoptic,
        unregister_synthetic_panoptic,
    )

    for split in ("train", "val"):
        for suffix, kind in (("_separated", "coco_panoptic_seg"), ("_stuffonly", "sem_seg")):
            name = f"synthetic_longrange_{split}{suffix}"
            assert name in DatasetCatalog.list()
            meta = MetadataCatalog.get(name).as_dict()
            assert meta["evaluator_type"] == kind
            assert meta["thing_classes"] == ["cable", "rope"]
            assert meta["stuff_classes"] == ["things", "sky", "water", "ground"]
        assert DEFAULT_DATASETS[f"synthetic_longrange_{split}"]["kind"] == "cables"
    name = f"synthetic_longrange_test_{tmp_path.name}"
    register_synthetic_panoptic(
        name,
        root=str(tmp_path),
        split="val",
        num_images=2,
        image_size=(64, 64),
        seed=0,
        kind="cables",
    )
    try:
        dicts = DatasetCatalog.get(name + "_separated")  # generates and checks
        assert len(dicts) == 2
        assert {a["category_id"] for d in dicts for a in d["annotations"]} <= {0, 1}
        assert all(len(d["annotations"]) >= 3 for d in dicts)
    finally:
        unregister_synthetic_panoptic(name)
