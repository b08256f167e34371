"""The long-range (cables) synthetic data: format, determinism, detection cues, and how
much grouping its masks need."""

import json
import os

import numpy as np
import pytest

from crbp_panoptic.data import (
    CABLE_CATEGORIES,
    SplitSpec,
    box_class_mask_iou,
    box_sharing,
    generate_split,
    render_cables_sample,
    render_sample,
    rgb2id,
    split_paths,
    split_statistics,
    validate_panoptic_split,
)

SIZE = (96, 112)  # H != W catches transposed masks
NUM_IMAGES = 6
THING_IDS = {c["id"] for c in CABLE_CATEGORIES if c["isthing"]}
STUFF_IDS = {c["id"] for c in CABLE_CATEGORIES if not c["isthing"]}


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cables") / "val"
    return generate_split(str(out), "val", NUM_IMAGES, SIZE, 0, kind="cables")


def _validate(d, **kw):
    p = split_paths(d)
    return validate_panoptic_split(
        p.panoptic_json, p.panoptic_dir, p.image_dir, p.sem_seg_dir, p.instances_json, **kw
    )


def _things(sample):
    return [s for s in sample.segments_info if s["category_id"] in THING_IDS]


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


def test_cables_split_passes_the_format_checks_with_things_and_stuff(split_dir):
    stats = _validate(split_dir, check_pixels=True)
    assert stats["images"] == NUM_IMAGES
    assert stats["images_without_things"] == 0
    assert stats["thing_segments"] >= 5 * NUM_IMAGES and stats["stuff_segments"] >= NUM_IMAGES
    p = split_paths(split_dir)
    with open(p.panoptic_json) as f:
        pan = json.load(f)
    assert pan["categories"] == [dict(c) for c in CABLE_CATEGORIES]
    assert [c["name"] for c in pan["categories"] if c["isthing"]] == ["cable"]
    assert [c["name"] for c in pan["categories"] if not c["isthing"]] == ["sky", "water", "ground"]
    for ann in pan["annotations"]:  # every image has both kinds of segment
        cats = {s["category_id"] for s in ann["segments_info"]}
        assert cats & THING_IDS and cats & STUFF_IDS, ann["file_name"]
    with open(p.marker) as f:
        marker = json.load(f)
    assert marker["kind"] == "cables"
    assert marker["kind_version"] == SplitSpec(kind="cables").to_json()["kind_version"]


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


def test_grouping_free_masks_match_at_most_half_of_a_cable(tmp_path):
    """The point of the data: "every pixel of the class in the true box" is no mask.

    Without grouping, a mask head that knows the true box and the class of every pixel
    gets a median IoU of at most 0.5, so only following the contour finds the instance.
    """
    d = generate_split(str(tmp_path / "val"), "val", 24, (128, 128), 0, kind="cables")
    stats = split_statistics(d)
    assert stats["things"] >= 24 * 5
    assert stats["box_class_iou_median"] <= 0.5, stats
    assert stats["box_class_iou_above_half"] < 0.5, stats
    assert stats["box_holds_same_class"] >= 0.9, stats
    assert stats["fragmented"] >= 0.3, stats  # crossings cut cables into pieces


def test_box_class_mask_iou_is_one_for_a_cable_alone_in_its_box():
    """The floor's definition: it only drops where another instance of the class enters."""
    s = render_cables_sample(0, "val", (128, 128), 0)
    things = _things(s)
    ious = box_class_mask_iou(s.panoptic, s.segments_info)
    assert len(ious) == len(things)
    keep = things[0]
    pan = np.where(np.isin(s.panoptic, [t["id"] for t in things[1:]]), 0, s.panoptic)
    assert box_class_mask_iou(pan, [keep]) == [1.0]
    assert min(ious) < 1.0


def test_plugs_mark_opposite_corners_of_every_box_and_are_never_covered():
    """Detection cue: a cable's two plugs are the extreme points of its box, fully visible,
    with a core colour that the two plugs of the cable share and no other cable has."""
    r = 2  # pixels around a plug centre that must be the cable's own (plug radius 4.5)
    for i in range(6):
        s = render_cables_sample(i, "train", (128, 128), 0)
        cores = []
        for seg in _things(s):
            x, y, bw, bh = seg["bbox"]
            assert min(bw, bh) >= 12 and max(bw, bh) >= 40, seg  # long, never a thin strip
            own = s.panoptic == seg["id"]
            inset = 4  # plug centre: about the plug radius inside the box corner
            xs, ys = (x + inset, x + bw - 1 - inset), (y + inset, y + bh - 1 - inset)
            diagonals = [((xs[0], ys[0]), (xs[1], ys[1])), ((xs[1], ys[0]), (xs[0], ys[1]))]
            found = [
                d
                for d in diagonals
                if all(own[cy - r : cy + r + 1, cx - r : cx + r + 1].all() for cx, cy in d)
            ]
            assert len(found) == 1, (i, seg)
            core = [
                s.image[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
                for cx, cy in found[0]
            ]
            assert np.abs(core[0] - core[1]).max() < 40, (i, seg, core)
            cores.append(core[0])
        for a in range(len(cores)):
            for b in range(a + 1, len(cores)):
                assert np.abs(cores[a] - cores[b]).max() > 60, (i, a, b)


def test_one_body_colour_per_image_far_from_the_stuff():
    """All cables of an image look alike (only the contour tells them apart), and they
    stand out from the stuff."""
    for i in range(6):
        s = render_cables_sample(i, "val", (128, 128), 0)
        things = _things(s)
        medians = np.array([np.median(s.image[s.panoptic == t["id"]], axis=0) for t in things])
        assert np.abs(medians - medians.mean(0)).max() < 30, (i, medians)
        stuff = np.isin(s.panoptic, [t["id"] for t in s.segments_info if t not in things])
        stuff_mean = s.image[stuff].mean(0)
        assert np.abs(medians.mean(0) - stuff_mean).max() > 60, (i, stuff_mean)


def test_instance_boxes_hold_other_instances():
    n = same = 0
    for i in range(12):
        s = render_cables_sample(i, "train", (128, 128), 0)
        counts = box_sharing(s.panoptic, s.segments_info)
        n, same = n + counts[0], same + counts[1]
    assert n >= 12 * 6
    assert same / n >= 0.9, (same, n)


def test_cables_are_thin_long_and_cut_by_crossings():
    from scipy import ndimage

    fill, split = [], 0
    for i in range(8):
        s = render_cables_sample(i, "val", (128, 128), 0)
        for seg in _things(s):
            _, _, bw, bh = seg["bbox"]
            fill.append(seg["area"] / (bw * bh))
            split += ndimage.label(s.panoptic == seg["id"])[1] > 1
    # Thin curves fill a small part of their boxes (a compact shape fills 50-80%).
    assert np.median(fill) < 0.3, np.median(fill)
    assert split >= 10  # cables on top cut others into pieces of one instance


@pytest.mark.parametrize("size", [(32, 32), (48, 80), (64, 64), (256, 256)])
def test_cables_render_at_other_sizes(size):
    s = render_cables_sample(0, "val", size, 0)
    assert s.image.shape == (*size, 3) and s.panoptic.shape == size
    assert len(_things(s)) >= 1


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
            assert meta["thing_classes"] == ["cable"]
            assert meta["stuff_classes"] == ["things", "sky", "water", "ground"]
        assert DEFAULT_DATASETS[f"synthetic_longrange_{split}"]["kind"] == "cables"
    assert DEFAULT_DATASETS["synthetic_longrange_train"]["num_images"] >= 400
    assert DEFAULT_DATASETS["synthetic_longrange_val"]["num_images"] >= 64
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
        assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0}
        assert all(len(d["annotations"]) >= 5 for d in dicts)
    finally:
        unregister_synthetic_panoptic(name)


def _tool():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "make_synthetic_dataset.py")
    spec = importlib.util.spec_from_file_location("make_synthetic_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_prints_the_grouping_statistics_and_draws_a_preview(tmp_path, capsys):
    from PIL import Image

    tool = _tool()
    png = str(tmp_path / "preview.png")
    args = ["--root", str(tmp_path), "--kind", "cables", "--name", "lr", "--split", "val"]
    args += ["--num-images", "3", "--image-size", "64", "--preview", png]
    assert tool.main(args) == 0
    out = capsys.readouterr().out
    grouping = json.loads(out.split("grouping: ")[1].splitlines()[0])
    d = os.path.join(str(tmp_path), "synthetic_panoptic", "lr")
    assert grouping == split_statistics(d)
    assert 0 < grouping["box_class_iou_median"] < 1 and grouping["box_holds_same_class"] > 0
    with Image.open(png) as im:
        grid = np.asarray(im.convert("RGB"))
    assert grid.shape == (2 * 64 + 2, 3 * (64 + 2), 3)  # three images above their labels
    with Image.open(os.path.join(d, "images", "val_000002.jpg")) as im:
        np.testing.assert_array_equal(grid[:64, 132:196], np.asarray(im))
    labels = grid[64:128, 132:196]
    pan = np.asarray(Image.open(os.path.join(d, "panoptic", "val_000002.png")))
    ids = rgb2id(pan)
    for sid in np.unique(ids):  # one colour per segment
        assert len(np.unique(labels[ids == sid], axis=0)) == 1
    with pytest.raises(SystemExit):
        tool.main(args[:-2] + ["--preview", str(tmp_path / "missing" / "p.png")])
    assert "its directory does not exist" in capsys.readouterr().err


def test_tool_writes_into_output_and_keeps_a_matching_split(tmp_path, capsys):
    tool = _tool()
    out = tmp_path / "my_split"
    args = ["--output", str(out), "--split", "val", "--num-images", "2", "--image-size", "48"]
    assert tool.main(args) == 0
    assert f"wrote {out}: " in capsys.readouterr().out
    assert sorted(os.listdir(out)) == [
        "generation.json",
        "images",
        "instances.json",
        "panoptic",
        "panoptic.json",
        "panoptic_stuff",
    ]
    assert tool.main(args) == 0
    assert f"kept {out}: " in capsys.readouterr().out
    assert tool.main(args[:-3] + ["3", "--image-size", "48"]) == 1
    assert "other parameters" in capsys.readouterr().err
