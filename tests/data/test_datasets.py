"""Detectron2 registration of the synthetic data: catalogs, loaders, mapper, evaluators."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("detectron2")
torch = pytest.importorskip("torch")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata  # noqa: E402
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json  # noqa: E402

from crbp_panoptic.data import (  # noqa: E402
    CATEGORIES,
    DEFAULT_DATASETS,
    PanopticFormatError,
    ensure_generated,
    register_synthetic_panoptic,
    rgb2id,
    split_paths,
    synthetic_panoptic_metadata,
    unregister_synthetic_panoptic,
)

SIZE = (64, 80)
NUM_IMAGES = 4  # image 3 has no things


@pytest.fixture
def dataset(tmp_path):
    """A synthetic dataset registered under a fresh name and an explicit root."""
    name = f"synthetic_test_{tmp_path.name}"
    register_synthetic_panoptic(
        name, root=str(tmp_path), split="val", num_images=NUM_IMAGES, image_size=SIZE, seed=0
    )
    yield name, str(tmp_path / "synthetic_panoptic" / name)
    unregister_synthetic_panoptic(name)


def _panoptic_ids(path):
    return rgb2id(np.asarray(Image.open(path)))


def test_metadata_mirrors_builtin_separated_coco():
    meta, coco = synthetic_panoptic_metadata(), _get_builtin_metadata("coco_panoptic_separated")
    assert set(meta) == set(coco)
    things = [c for c in CATEGORIES if c["isthing"]]
    stuff = [c for c in CATEGORIES if not c["isthing"]]
    assert meta["thing_classes"] == [c["name"] for c in things]
    assert meta["thing_dataset_id_to_contiguous_id"] == {1: 0, 2: 1, 3: 2}
    assert meta["stuff_classes"] == ["things"] + [c["name"] for c in stuff]
    assert meta["stuff_dataset_id_to_contiguous_id"] == {0: 0, 92: 1, 95: 2, 100: 3}
    assert coco["stuff_dataset_id_to_contiguous_id"][0] == 0
    assert coco["stuff_classes"][0] == "things"
    assert meta["stuff_colors"][0] == coco["stuff_colors"][0]
    assert len(meta["stuff_colors"]) == len(meta["stuff_classes"])
    assert len(meta["thing_colors"]) == len(meta["thing_classes"])


def test_defaults_are_registered_lazily():
    for name, kw in DEFAULT_DATASETS.items():
        for suffix, kind in (("_separated", "coco_panoptic_seg"), ("_stuffonly", "sem_seg")):
            assert name + suffix in DatasetCatalog.list()
            meta = MetadataCatalog.get(name + suffix)
            assert meta.as_dict()["evaluator_type"] == kind
            assert meta.as_dict()["sem_seg_root"].endswith(
                os.path.join("synthetic_panoptic", name, "panoptic_stuff")
            )
    assert DEFAULT_DATASETS["synthetic_panoptic_train"]["num_images"] == 48
    assert DEFAULT_DATASETS["synthetic_panoptic_val"]["split"] == "val"
    test = DEFAULT_DATASETS["synthetic_panoptic_test"]
    assert (test["split"], test["num_images"], test["image_size"]) == ("test", 500, (128, 128))


def test_registration_generates_nothing_and_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "env_root"))
    name = "synthetic_test_env_root"
    try:
        register_synthetic_panoptic(name, split="val", num_images=1, image_size=(32, 32))
        meta = MetadataCatalog.get(name + "_separated").as_dict()  # as_dict: no generation
        assert meta["json_file"] == str(
            tmp_path / "env_root" / "synthetic_panoptic" / name / "instances.json"
        )
        assert not (tmp_path / "env_root").exists()
        # The same parameters again: a no-op; other parameters: an error naming both.
        register_synthetic_panoptic(name, split="val", num_images=1, image_size=(32, 32))
        with pytest.raises(ValueError, match=name):
            register_synthetic_panoptic(name, split="val", num_images=2, image_size=(32, 32))
    finally:
        unregister_synthetic_panoptic(name)
    assert name + "_separated" not in DatasetCatalog.list()
    assert ensure_generated("coco_2017_val_panoptic_separated") is None  # not ours: no-op


def test_separated_dicts_agree_with_pngs(dataset):
    """DatasetCatalog.get generates; instance masks and semantic PNGs match the panoptic PNGs."""
    from pycocotools import mask as mask_util

    name, split_dir = dataset
    assert not os.path.exists(split_dir)
    dicts = DatasetCatalog.get(name + "_separated")
    assert os.path.isdir(split_dir) and len(dicts) == NUM_IMAGES
    p = split_paths(split_dir)
    with open(p.panoptic_json) as f:
        pan = {a["image_id"]: a for a in json.load(f)["annotations"]}
    thing_map = synthetic_panoptic_metadata()["thing_dataset_id_to_contiguous_id"]
    stuff_map = synthetic_panoptic_metadata()["stuff_dataset_id_to_contiguous_id"]
    empty = 0
    for d in dicts:
        assert (d["height"], d["width"]) == SIZE and os.path.isfile(d["file_name"])
        ann = pan[d["image_id"]]
        ids = _panoptic_ids(os.path.join(p.panoptic_dir, ann["file_name"]))
        things = [s for s in ann["segments_info"] if s["category_id"] in thing_map]
        assert len(d["annotations"]) == len(things)
        empty += not things
        for obj, seg in zip(d["annotations"], things):  # same order as written
            mask = mask_util.decode(obj["segmentation"]).astype(bool)
            np.testing.assert_array_equal(mask, ids == seg["id"])
            assert obj["category_id"] == thing_map[seg["category_id"]]
            assert list(obj["bbox"]) == seg["bbox"]
        sem = np.asarray(Image.open(d["sem_seg_file_name"]))
        expected = np.full(SIZE, 255)
        for seg in ann["segments_info"]:
            expected[ids == seg["id"]] = 0 if seg in things else stuff_map[seg["category_id"]]
        np.testing.assert_array_equal(sem, expected)
    assert empty == 1
    stuffonly = DatasetCatalog.get(name + "_stuffonly")
    assert [s["sem_seg_file_name"] for s in stuffonly] == [d["sem_seg_file_name"] for d in dicts]


def test_load_coco_panoptic_json_reads_it_back(dataset):
    name, split_dir = dataset
    ensure_generated(name)
    meta = MetadataCatalog.get(name + "_separated")
    dicts = load_coco_panoptic_json(
        meta.panoptic_json, meta.image_root, meta.panoptic_root, meta.as_dict()
    )
    n_things = n_stuff = 0
    for d in dicts:
        assert os.path.isfile(d["file_name"])
        ids = _panoptic_ids(d["pan_seg_file_name"])
        assert set(np.unique(ids)) - {0} == {s["id"] for s in d["segments_info"]}
        for s in d["segments_info"]:
            mask = ids == s["id"]
            ys, xs = np.nonzero(mask)
            assert s["area"] == mask.sum()
            assert s["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            assert s["category_id"] in (range(3) if s["isthing"] else range(1, 4))
            n_things += s["isthing"]
            n_stuff += not s["isthing"]
    assert n_things and n_stuff


def test_dataset_mapper_builds_training_targets(dataset):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetMapper

    name, _ = dataset
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = "bitmask"  # the instance masks are RLE
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 1000
    mapper = DatasetMapper(cfg, is_train=True)
    dicts = DatasetCatalog.get(name + "_separated")
    out = mapper(dicts[0])
    inst, sem = out["instances"], out["sem_seg"]
    assert out["image"].shape[1:] == sem.shape == inst.image_size
    assert len(inst) == len(dicts[0]["annotations"]) > 0
    assert inst.gt_masks.tensor.shape[0] == len(inst)
    assert set(torch.unique(sem).tolist()) <= {0, 1, 2, 3, 255}


def test_evaluators_build_and_score_ground_truth_perfectly(dataset, tmp_path):
    """Evaluator construction generates the files; ground truth as predictions scores 100."""
    from pycocotools import mask as mask_util

    from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
    from detectron2.structures import Boxes, BoxMode, Instances

    name, split_dir = dataset
    ds = name + "_separated"
    coco_eval = COCOEvaluator(
        ds,
        tasks=("bbox", "segm"),
        distributed=False,
        output_dir=str(tmp_path / "coco"),
        use_fast_impl=False,
    )
    assert os.path.isdir(split_dir)  # reading metadata.json_file generated the split
    pan_eval = COCOPanopticEvaluator(ds, str(tmp_path / "pan"))
    sem_eval = SemSegEvaluator(ds, distributed=False)
    meta = MetadataCatalog.get(ds)
    pan_dicts = {
        d["image_id"]: d
        for d in load_coco_panoptic_json(
            meta.panoptic_json, meta.image_root, meta.panoptic_root, meta.as_dict()
        )
    }
    for e in (coco_eval, pan_eval, sem_eval):
        e.reset()
    for d in DatasetCatalog.get(ds):
        h, w = d["height"], d["width"]
        inst = Instances((h, w))
        annos = d["annotations"]
        boxes = [BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in annos]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.int64)
        masks = [mask_util.decode(a["segmentation"]) for a in annos]
        inst.pred_masks = torch.tensor(np.array(masks, dtype=bool).reshape(-1, h, w))
        sem = torch.tensor(np.array(Image.open(d["sem_seg_file_name"])), dtype=torch.int64)
        logits = torch.nn.functional.one_hot(torch.where(sem == 255, 0, sem), 4).permute(2, 0, 1)
        pd = pan_dicts[d["image_id"]]
        segments = [
            {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
            for s in pd["segments_info"]
        ]
        pan = torch.as_tensor(_panoptic_ids(pd["pan_seg_file_name"]), dtype=torch.int32)
        inputs = [{"file_name": d["file_name"], "image_id": d["image_id"], "height": h, "width": w}]
        coco_eval.process(inputs, [{"instances": inst}])
        sem_eval.process(inputs, [{"sem_seg": logits.float()}])
        pan_eval.process(inputs, [{"panoptic_seg": (pan, segments)}])
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    coco = coco_eval.evaluate()
    assert coco["bbox"]["AP"] == pytest.approx(100) and coco["segm"]["AP"] == pytest.approx(100)
    assert sem_eval.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100)
    pq = pan_eval.evaluate()["panoptic_seg"]
    assert (pq["PQ"], pq["PQ_th"], pq["PQ_st"]) == pytest.approx((100, 100, 100))


def test_loader_names_a_corrupt_file(dataset):
    name, split_dir = dataset
    ensure_generated(name)
    p = split_paths(split_dir)
    with open(p.panoptic_json) as f:
        original = f.read()
    pan = json.loads(original)
    ann = pan["annotations"][0]
    ann["segments_info"][-1]["area"] += 5
    with open(p.panoptic_json, "w") as f:
        json.dump(pan, f)
    with pytest.raises(PanopticFormatError, match=ann["file_name"]):
        DatasetCatalog.get(name + "_separated")
    with open(p.panoptic_json, "w") as f:
        f.write(original)
    DatasetCatalog.get(name + "_separated")  # repaired
    with open(p.instances_json, "w") as f:
        f.write("{not json")
    with pytest.raises(PanopticFormatError, match="instances.json"):
        ensure_generated(name + "_stuffonly")


def test_mismatched_split_on_disk_is_an_error(dataset):
    name, split_dir = dataset
    ensure_generated(name)
    root = os.path.dirname(os.path.dirname(split_dir))
    unregister_synthetic_panoptic(name)
    register_synthetic_panoptic(
        name, root=root, split="val", num_images=NUM_IMAGES + 1, image_size=SIZE, seed=0
    )
    with pytest.raises(ValueError, match="num_images") as info:
        DatasetCatalog.get(name + "_separated")
    assert split_dir in str(info.value)


def test_check_datasets_names_an_unregistered_or_incomplete_dataset(dataset, tmp_path):
    from crbp_panoptic.data import check_datasets

    with pytest.raises(KeyError, match="'no_such_data' .* is not registered; registered: "):
        check_datasets(["no_such_data"])
    name, split_dir = dataset
    assert not os.path.exists(split_dir)
    check_datasets([name + "_separated", name + "_stuffonly"])  # generates the split
    assert os.path.isfile(os.path.join(split_dir, "generation.json"))
    name = f"files_elsewhere_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(panoptic_json=str(tmp_path / "missing.json"))
    try:
        with pytest.raises(FileNotFoundError, match=r"missing panoptic_json: .*missing\.json"):
            check_datasets([name])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
