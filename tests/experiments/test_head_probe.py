"""Mask heads trained alone on frozen ROI features (crbp_panoptic/experiments/head_probe.py):
the scores against hand-counted pixels, the ROI sets against the dataset's masks, the training
loop against the config's schedule and seed, the probe of a suite (reuse, bad input) and its
tool."""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2")

from crbp_panoptic.experiments.head_probe import (  # noqa: E402
    RoiSet,
    grouping_free_scores,
    markdown,
    plot,
    probe_plan,
    roi_set,
    score_logits,
    train_head,
)
from crbp_panoptic.experiments.runner import plan_suite  # noqa: E402
from crbp_panoptic.experiments.suites import SUITES, get_suite  # noqa: E402

from tests.experiments.test_suites import FF_QUICK, MASK_QUICK, VAL, _tiny_opts, _tiny_suite  # noqa: E402
from tests.tiny import load_tool, tiny_cfg  # noqa: E402


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_score_logits_against_hand_counted_pixels():
    targets = torch.zeros(2, 4, 4)
    targets[0, 0, :] = 1  # 4 pixels
    targets[1, 1:3, :] = 1  # 8 pixels
    logits = torch.full((2, 4, 4), -10.0)
    logits[0, 0, :3] = 10  # 3 of its 4 pixels ...
    logits[0, 3, 3] = 10  # ... and one background pixel
    logits[1][targets[1] > 0] = 10  # exact
    rois = RoiSet(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), targets, targets)
    s = score_logits(logits, rois)
    assert s["iou_median"] == pytest.approx((3 / 5 + 1) / 2)
    assert s["iou_mean"] == pytest.approx((3 / 5 + 1) / 2)
    assert s["miss_mean"] == pytest.approx((1 / 4 + 0) / 2)
    sig = 1 / (1 + math.exp(-10))
    assert s["p_fg"] == pytest.approx((11 * sig + (1 - sig)) / 12)
    assert s["p_bg"] == pytest.approx((19 * (1 - sig) + sig) / 20)
    # 30 pixels right with margin 10, two wrong with margin 10
    assert s["loss"] == pytest.approx((30 * _bce(10, 1) + 2 * _bce(-10, 1)) / 32, rel=1e-5)
    # A mask that is the target scores IoU 1 and no miss.
    assert grouping_free_scores(rois)["iou_median"] == 1.0
    with pytest.raises(ValueError, match="one of each per ROI"):
        RoiSet(torch.zeros(2, 1, 2, 2), torch.zeros(1, dtype=torch.int64), targets, targets)


@pytest.fixture(scope="module")
def tiny_model():
    from detectron2.modeling import build_model

    from crbp_panoptic.data import ensure_generated

    ensure_generated(VAL)
    cfg = tiny_cfg(FF_QUICK[len("configs/") :], "DATASETS.TEST", f"('{VAL}',)")
    cfg.freeze()
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def test_roi_set_crops_each_things_mask_and_the_union_of_its_class(tiny_model, empty_split):
    from pycocotools import mask as mask_util

    from detectron2.data import DatasetCatalog

    cfg, model = tiny_model
    rois = roi_set(cfg, model, VAL)
    annos = [a for d in DatasetCatalog.get(VAL) for a in d["annotations"] if not a.get("iscrowd")]
    assert len(rois) == len(annos) > 0
    assert rois.features.shape == (len(annos), cfg.MODEL.FPN.OUT_CHANNELS, 14, 14)
    assert rois.classes.tolist() == [a["category_id"] for a in annos]
    # Independently: each 28 x 28 target covers about the share of its box the mask covers.
    for k, a in enumerate(annos):
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        segm = a["segmentation"]
        if isinstance(segm["counts"], list):
            segm = mask_util.frPyObjects(segm, *segm["size"])
        mask = mask_util.decode(segm).astype(bool)
        share = mask[y : y + h, x : x + w].mean()
        assert float(rois.targets[k].mean()) == pytest.approx(share, abs=0.08)
    # the class's union holds the thing's own mask
    assert bool((rois.grouping_free >= rois.targets).all())
    with pytest.raises(ValueError, match="no non-crowd thing"):
        roi_set(cfg, model, empty_split)


def test_roi_set_at_proposals_trains_on_a_matched_box_per_thing(tiny_model, monkeypatch):
    from detectron2.structures import Boxes, Instances

    from crbp_panoptic.experiments.true_boxes import true_things

    cfg, model = tiny_model
    true = [torch.from_numpy(b * s) for _, _, _, b, s in true_things(cfg, VAL)]
    calls = iter(true)

    def fake_rpn(images, features, gt_instances):
        # per thing: its box 2 px to the right (IoU high) and moved by 80% of its width (low)
        b = next(calls)
        w = (b[:, 2] - b[:, 0])[:, None]
        near, far = b + torch.tensor([2.0, 0, 2, 0]), b + w * torch.tensor([0.8, 0, 0.8, 0])
        inst = Instances(images.image_sizes[0])
        inst.proposal_boxes = Boxes(torch.cat([near, far]))
        inst.objectness_logits = torch.zeros(2 * len(b))
        return [inst], {}

    monkeypatch.setattr(model.proposal_generator, "forward", fake_rpn)
    at_true = roi_set(cfg, model, VAL)
    rois = roi_set(cfg, model, VAL, boxes="proposals")
    b = torch.cat(true)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    near_iou = (w - 2) * h / ((w + 2) * h)
    # Each thing's ROI is its true box or the near proposal: the far one is below the
    # matcher's foreground threshold (0.5), both candidates are drawn.
    is_true = rois.box_iou == 1
    assert torch.allclose(rois.box_iou[~is_true], near_iou[~is_true], atol=1e-5)
    assert 0 < int(is_true.sum()) < len(rois) and bool((near_iou > 0.5).all())
    assert rois.classes.tolist() == at_true.classes.tolist()
    assert torch.equal(rois.features[is_true], at_true.features[is_true])
    assert torch.equal(rois.targets[is_true], at_true.targets[is_true])
    assert not torch.equal(rois.features[~is_true], at_true.features[~is_true])
    # The same seed draws the same boxes; the targets follow the box.
    calls = iter(true)
    again = roi_set(cfg, model, VAL, boxes="proposals")
    assert torch.equal(again.box_iou, rois.box_iou) and torch.equal(again.targets, rois.targets)
    assert not torch.equal(rois.targets[~is_true], at_true.targets[~is_true])
    # each near-box target is the thing's own mask cropped to that box, as mask_rcnn_loss crops
    from detectron2.structures import BitMasks

    from crbp_panoptic.experiments.true_boxes import _gt_masks

    expected = []
    for d, inp, annos, boxes, scale in true_things(cfg, VAL):
        near = torch.from_numpy(boxes * scale) + torch.tensor([2.0, 0, 2, 0])
        masks = torch.from_numpy(_gt_masks(annos, d["height"], d["width"])).float()
        masks = torch.nn.functional.interpolate(masks[None], inp["image"].shape[1:])[0] > 0.5
        expected.append(BitMasks(masks).crop_and_resize(near, 28).float())
    expected = torch.cat(expected)
    assert torch.equal(rois.targets[~is_true], expected[~is_true])
    with pytest.raises(ValueError, match="boxes='gt'; allowed: 'true', 'proposals'"):
        roi_set(cfg, model, VAL, boxes="gt")


@pytest.fixture
def empty_split():
    from detectron2.data import DatasetCatalog

    name = "synthetic_panoptic_tiny_val_separated_empty_for_test"
    DatasetCatalog.register(name, lambda: [])
    yield name
    DatasetCatalog.remove(name)


def _learnable_rois(n=48, channels=8, seed=0):
    """Random features whose 28 x 28 target is channel 0 > 0, upsampled (a stock head learns it)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, channels, 14, 14, generator=g)
    target = torch.nn.functional.interpolate((features[:, :1] > 0).float(), scale_factor=2)[:, 0]
    return RoiSet(features, torch.zeros(n, dtype=torch.int64), target, torch.ones_like(target))


def _stock_head(cfg, channels=8, seed=0):
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.roi_heads.mask_head import build_mask_head

    torch.manual_seed(seed)
    return build_mask_head(cfg, ShapeSpec(channels=channels, height=14, width=14))


def test_train_head_follows_the_config_schedule_and_repeats_with_its_seed():
    rois = _learnable_rois()
    cfg = tiny_cfg(FF_QUICK[len("configs/") :], "SOLVER.MAX_ITER", 200, "SOLVER.STEPS", "()",
                   "SOLVER.BASE_LR", 0.05, "SOLVER.WARMUP_ITERS", 1)  # fmt: skip
    cfg.freeze()
    rows = train_head(cfg, _stock_head(cfg), rois, rois, batch_rois=16, eval_at={10, 200})
    assert [r["iter"] for r in rows] == [0, 10, 200]
    assert rows[0]["train_loss"] is None and rows[1]["train_loss"] > 0
    assert rows[-1]["loss"] < 0.3 * rows[0]["loss"]
    assert rows[-1]["iou_median"] > 0.9 > rows[0]["iou_median"]
    again = train_head(cfg, _stock_head(cfg), rois, rois, batch_rois=16, eval_at={10, 200})
    assert again == rows
    other = train_head(cfg, _stock_head(cfg, seed=1), rois, rois, batch_rois=16, eval_at={200})
    assert other[-1]["loss"] != rows[-1]["loss"]
    for bad in (0, len(rois) + 1):
        with pytest.raises(ValueError, match=f"batch_rois={bad}; expected 1 to {len(rois)}"):
            train_head(cfg, _stock_head(cfg), rois, rois, batch_rois=bad, eval_at={1})


def test_train_head_adds_the_recurrent_heads_penalty():
    rois = _learnable_rois(n=8)
    cfg = tiny_cfg(MASK_QUICK[len("configs/") :], "SOLVER.MAX_ITER", 1, "SOLVER.STEPS", "()",
                   "SOLVER.WARMUP_FACTOR", 1.0, "MODEL.CRBP.LCP_TAU", 0.01,
                   "SOLVER.CLIP_GRADIENTS.ENABLED", False)  # fmt: skip
    cfg.freeze()
    before = _stock_head(cfg)
    before.layers(rois.features)
    assert before.mask_recurrent.last_result.lcp > 0  # tau 0.01: the penalty is active
    after = {}
    for weight in (0.0, 100.0):
        head = _stock_head(cfg)
        train_head(cfg, head, rois, rois, batch_rois=8, eval_at=set(), lcp_weight=weight)
        after[weight] = head.mask_recurrent.state_dict()
    # the penalty changes the step of the recurrent cell's weights
    start = before.mask_recurrent.state_dict()["cell.w_exc.weight"]
    without, penalised = (after[w]["cell.w_exc.weight"] for w in (0.0, 100.0))
    assert not torch.equal(without, start)
    assert (without - penalised).abs().max() > 1e-4 * (without - start).abs().max()


def _tiny_mask_suite():
    return _tiny_suite(name="tiny_mask", description="test suite: tiny recurrent mask head",
                       placement="mask_head", recurrent_config=MASK_QUICK,
                       arms=("ff", "bptt:1", "crbp:T"))  # fmt: skip


@pytest.fixture
def tiny_warmup(tmp_path):
    from detectron2.modeling import build_model

    from crbp_panoptic.data import ensure_generated

    ensure_generated(VAL)
    cfg = tiny_cfg(FF_QUICK[len("configs/") :], *_tiny_opts())
    torch.manual_seed(0)
    path = tmp_path / "warmup.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return str(path)


def test_probe_plan_trains_every_runs_head_once_and_reuses_it(tmp_path, tiny_warmup, monkeypatch):
    import crbp_panoptic.experiments.head_probe as hp

    out = str(tmp_path / "probe")
    plan = plan_suite(_tiny_mask_suite(), [0], out, warmup_weights=tiny_warmup)
    probe = probe_plan(plan, batch_rois=4, evals=2, log=lambda m: None)
    assert [r["arm"] for r in probe["runs"]] == ["ff", "bptt:1", "crbp:3"]
    assert probe["train_rois"] > 0 and probe["test_rois"] > 0 and probe["iterations"] == 2
    by_arm = {r["arm"]: r for r in probe["runs"]}
    for r in probe["runs"]:
        assert [row["iter"] for row in r["curve"]] == [0, 1, 2]
    assert by_arm["ff"]["at_steps"] == {}
    assert sorted(by_arm["crbp:3"]["at_steps"], key=int) == ["3", "9"]
    assert sorted(by_arm["bptt:1"]["at_steps"], key=int) == ["1", "3"]
    assert by_arm["ff"]["params"] != by_arm["crbp:3"]["params"]
    assert by_arm["bptt:1"]["params"] == by_arm["crbp:3"]["params"]
    # The run's own opts: the suite's schedule (2 iterations) and the arm's rule.
    assert "MODEL.CRBP.GRAD" in by_arm["crbp:3"]["opts"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished probe run was trained again")

    monkeypatch.setattr(hp, "train_head", no_training)
    again = probe_plan(plan_suite(_tiny_mask_suite(), [0], out, warmup_weights=tiny_warmup),
                       batch_rois=4, evals=2, log=lambda m: None)  # fmt: skip
    assert again["runs"] == probe["runs"]
    with pytest.raises(ValueError, match="other settings.*batch_rois"):
        probe_plan(plan, batch_rois=8, evals=2, log=lambda m: None)
    with pytest.raises(ValueError, match="other settings.*train_boxes"):
        probe_plan(plan, batch_rois=4, evals=2, train_boxes="proposals", log=lambda m: None)
    # a run file written before train_boxes existed was trained at the true boxes
    path = tmp_path / "probe" / "probe_runs" / "ff_seed0.json"
    old = json.loads(path.read_text())
    del old["train_boxes"]
    path.write_text(json.dumps(old))
    reused = probe_plan(plan, batch_rois=4, evals=2, log=lambda m: None)
    assert reused["runs"][0]["curve"] == probe["runs"][0]["curve"]
    assert probe["train_boxes"] == "true" and probe["train_box_iou"] == 1.0

    lines = markdown(probe)
    assert sum(line.startswith(f"| {arm} |") for arm in by_arm for line in lines) == 3
    assert "Grouping-free mask on the same" in "\n".join(lines)
    assert "training ROIs at their true boxes" in "\n".join(lines)
    moved = markdown({**probe, "train_boxes": "proposals", "train_box_iou": 0.8})
    assert "at RPN proposals (one per thing; mean IoU 0.800 with its true box)" in "\n".join(moved)
    assert plot(probe, str(tmp_path / "p.png")) and (tmp_path / "p.png").stat().st_size > 0


def test_probe_plan_needs_a_mask_head_suite_and_its_warmup(tmp_path):
    quick = plan_suite(get_suite("quick"), [0], str(tmp_path / "q"))
    with pytest.raises(ValueError, match="placement 'mask_head'"):
        probe_plan(quick)
    plan = plan_suite(_tiny_mask_suite(), [0], str(tmp_path / "m"))
    with pytest.raises(FileNotFoundError, match="warm-up weights .*no such file"):
        probe_plan(plan)
    with pytest.raises(ValueError, match="batch_rois=0"):
        probe_plan(plan, batch_rois=0)
    with pytest.raises(ValueError, match="train_boxes='gt'; allowed: 'true', 'proposals'"):
        probe_plan(plan, train_boxes="gt")


def test_tool_writes_the_report_and_names_the_allowed_arms(
    tmp_path, tiny_warmup, monkeypatch, capsys
):
    monkeypatch.setitem(SUITES, "tiny_mask", _tiny_mask_suite())
    tool = load_tool("probe_mask_heads")
    out = tmp_path / "out"
    argv = ["--suite", "tiny_mask", "--warmup-weights", tiny_warmup, "--output", str(out)]
    probe = tool.main(argv + ["--arms", "ff", "--batch-rois", "4", "--evals", "1"])
    assert [r["arm"] for r in probe["runs"]] == ["ff"]
    data = json.loads((out / "probe.json").read_text())
    assert data["runs"][0]["curve"] == probe["runs"][0]["curve"]
    assert "| ff |" in (out / "probe.md").read_text() and (out / "probe_iou.png").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        tool.main(argv + ["--arms", "crbp:7"])
    err = capsys.readouterr().err
    assert "--arms ['crbp:7']" in err and "'bptt:1', 'crbp:3'" in err
    with pytest.raises(SystemExit):
        tool.main(["--suite", "quick", "--warmup-weights", tiny_warmup, "--output", str(out)])
    assert "placement 'mask_head'" in capsys.readouterr().err


def test_grouping_free_scores_of_a_class_that_crosses_itself():
    # Two crossing bars of one class in one box: the grouping-free mask also holds the other bar.
    own = torch.zeros(1, 4, 4)
    own[0, 1, :] = 1
    union = own.clone()
    union[0, :, 2] = 1
    rois = RoiSet(torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.int64), own, union)
    s = grouping_free_scores(rois)
    assert s["iou_median"] == pytest.approx(4 / 7) and s["miss_mean"] == 0.0
    assert np.isclose(s["p_bg"], 3 / 12, atol=1e-6)
