"""The mask head on true boxes (crbp_panoptic/experiments/true_boxes.py)."""

import math

import numpy as np
import pytest
import torch

from crbp_panoptic.experiments.true_boxes import score_masks, summarize, true_box_masks

from tests.tiny import tiny_cfg

VAL = "synthetic_panoptic_tiny_val_separated"


def test_score_masks_against_hand_counted_pixels():
    # Two crossing bars of class 0 and a square of class 1, on a 10 x 10 image.
    gt = np.zeros((3, 10, 10), dtype=bool)
    gt[0, 2, 0:10] = True  # horizontal bar, box x 0-10, y 2-3
    gt[1, 0:10, 5] = True  # vertical bar, box x 5-6, y 0-10
    gt[1, 2, 5] = False  # hidden under the horizontal bar
    gt[2, 6:9, 0:3] = True  # another class, inside no class-0 box
    boxes = [(0, 2, 10, 3), (5, 0, 6, 10), (0, 6, 3, 9)]
    classes = [0, 0, 1]
    pred = np.zeros_like(gt)
    pred[0, 2, 0:6] = True  # 6 of its 10 pixels
    pred[0, 3, 5] = True  # one pixel of the vertical bar
    pred[1] = gt[1]  # exact
    pred[2, 6:9, 0:3] = True
    pred[2, 5, 0] = True  # one pixel on nothing
    s = score_masks(pred, gt, classes, boxes)
    assert s[0] == pytest.approx(dict(iou=6 / 11, miss=4 / 10, leak=1 / 7, grouping_free_iou=1.0))
    # the vertical bar's box holds one pixel of the horizontal bar: 9 of its 10 pixels are its own
    assert s[1] == pytest.approx(dict(iou=1.0, miss=0.0, leak=0.0, grouping_free_iou=9 / 10))
    assert s[2] == pytest.approx(dict(iou=9 / 10, miss=0.0, leak=0.0, grouping_free_iou=1.0))

    out = summarize(s)
    assert out["things"] == 3 and out["iou_median"] == pytest.approx(0.9)
    assert out["found"] == pytest.approx(1.0) and out["grouping_free_found"] == pytest.approx(1.0)
    assert out["leak_mean"] == pytest.approx(1 / 21)
    assert summarize([])["iou_median"] is None


def _filling_head(model):
    """Make the mask head fill every box: a mask logit of 20 everywhere."""
    head = model.roi_heads.mask_head
    num_classes = model.roi_heads.num_classes

    def layers(x):
        return torch.full((x.shape[0], num_classes, 28, 28), 20.0)

    head.layers = layers


@pytest.mark.parametrize("test_size", [64, 128])
def test_a_head_that_fills_its_box_scores_the_box_against_the_generator_masks(test_size):
    from detectron2.modeling import build_model

    from crbp_panoptic.data import CATEGORIES, ensure_generated, render_sample

    ensure_generated(VAL)
    cfg = tiny_cfg(
        "Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml",
        "DATASETS.TEST", f"('{VAL}',)", "INPUT.MIN_SIZE_TEST", test_size,
        "INPUT.MAX_SIZE_TEST", test_size,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _filling_head(model)
    out = true_box_masks(cfg, model)

    # Independently: each thing's box (from the generator's segments) against its mask.
    isthing = {c["id"]: c["isthing"] for c in CATEGORIES}
    ious, leaks = [], []
    for i in range(4):
        sample = render_sample(i, "val", (64, 64), 0)
        things = [s for s in sample.segments_info if isthing[s["category_id"]]]
        for s in things:
            x, y, w, h = s["bbox"]
            box = np.zeros(sample.panoptic.shape, dtype=bool)
            box[y : y + h, x : x + w] = True
            own = sample.panoptic == s["id"]
            same = [o["id"] for o in things if o["category_id"] == s["category_id"] and o is not s]
            ious.append((box & own).sum() / (box | own).sum())
            leaks.append((box & np.isin(sample.panoptic, same)).sum() / box.sum())
    assert out["things"] == len(ious) > 0
    assert out["iou_mean"] == pytest.approx(np.mean(ious), abs=1e-6)
    assert out["iou_median"] == pytest.approx(np.median(ious), abs=1e-6)
    assert out["leak_mean"] == pytest.approx(np.mean(leaks), abs=1e-6)
    assert out["miss_mean"] == pytest.approx(0.0)


def test_grouping_free_scores_are_the_split_statistics_floor():
    from detectron2.modeling import build_model

    from crbp_panoptic.data import ensure_generated, split_statistics

    split_dir = ensure_generated(VAL)
    cfg = tiny_cfg(
        "Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml",
        "DATASETS.TEST",
        f"('{VAL}',)",
    )
    torch.manual_seed(0)
    out = true_box_masks(cfg, build_model(cfg).eval())
    stats = split_statistics(split_dir)
    assert out["things"] == stats["things"]
    assert out["grouping_free_iou_median"] == pytest.approx(stats["box_class_iou_median"])
    assert out["grouping_free_found"] == pytest.approx(stats["box_class_iou_above_half"])
    assert 0.0 <= out["iou_median"] <= 1.0 and 0.0 <= out["found"] <= 1.0


def _constant_head(model, logit):
    num_classes = model.roi_heads.num_classes
    model.roi_heads.mask_head.layers = lambda x: torch.full(
        (x.shape[0], num_classes, 28, 28), float(logit)
    )


def test_mask_threshold_decides_which_probabilities_count_and_is_checked():
    from detectron2.modeling import build_model

    from crbp_panoptic.data import ensure_generated

    ensure_generated(VAL)
    cfg = tiny_cfg(
        "Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml",
        "DATASETS.TEST",
        f"('{VAL}',)",
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _constant_head(model, math.log(0.6 / 0.4))  # probability 0.6 in every box
    below = true_box_masks(cfg, model, mask_threshold=0.5)
    assert below["iou_median"] > 0.3 and below["miss_mean"] < 0.1
    above = true_box_masks(cfg, model, mask_threshold=0.7)
    assert above["iou_median"] == 0.0 and above["miss_mean"] == pytest.approx(1.0)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="mask_threshold=.*expected a probability in"):
            true_box_masks(cfg, model, mask_threshold=bad)


def test_score_summary_scores_the_chosen_runs_at_each_threshold(tmp_path, capsys):
    from detectron2.modeling import build_model

    from crbp_panoptic.data import ensure_generated
    from crbp_panoptic.experiments.true_boxes import score_summary

    from tests.tiny import TINY, load_tool

    ensure_generated(VAL)
    config = "configs/Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml"
    opts = [str(v) for v in TINY] + ["DATASETS.TEST", f"('{VAL}',)"]
    cfg = tiny_cfg(config[len("configs/") :], "DATASETS.TEST", f"('{VAL}',)")
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "m.pth")
    entry = dict(arm="ff", config=config, opts=opts, weights=str(tmp_path / "m.pth"))
    entry.update(status="ok", steps_multiple=1, test_steps=None)
    summary = {"runs": [dict(entry, seed=0), dict(entry, seed=1), dict(entry, seed=2)]}
    summary["runs"].append(dict(entry, seed=0, status="failed"))
    rows = score_summary(summary, seeds=[0, 2], thresholds=[0.3, 0.5])
    assert [(r["seed"], r["mask_threshold"]) for r in rows] == [
        (0, 0.3),
        (0, 0.5),
        (2, 0.3),
        (2, 0.5),
    ]
    cfg.freeze()
    from crbp_panoptic.experiments.evaluation import load_model

    model = load_model(cfg, str(tmp_path / "m.pth"))
    for r in rows:
        expected = true_box_masks(cfg, model, r["mask_threshold"])
        assert {k: r[k] for k in expected} == pytest.approx(expected)
    with pytest.raises(ValueError, match="mask threshold 1.0"):
        score_summary(summary, thresholds=[1.0])

    (tmp_path / "summary.json").write_text(__import__("json").dumps(summary))
    tool = load_tool("score_true_boxes")
    out = tool.main(
        [str(tmp_path / "summary.json"), "--seeds", "1", "--output", str(tmp_path / "r.json")]
    )
    assert [(r["seed"], r["mask_threshold"]) for r in out] == [(1, 0.5)]
    printed = capsys.readouterr().out
    assert "| ff | 1 | - | 0.5 |" in printed and "grouping-free mask on the same" in printed
    assert (tmp_path / "r.json").is_file()
