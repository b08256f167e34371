"""tools/benchmark.py: its pure helpers, and one tiny configuration measured in-process."""
import math
import sys

import pytest
import torch

from tests.tiny import TINY, load_tool


bench = load_tool("benchmark")


def test_every_issue_configuration_is_listed_and_selectable():
    names = [v.name for v in bench.VARIANTS]
    for name in ("BPTT-1", "BPTT-3", "BPTT-5", "RBP-20", "C-RBP-5", "C-RBP-10", "C-RBP-20", "C-RBP-40"):
        assert name in names
    assert sorted(bench.PRIORITY) == sorted(names)
    assert [v.name for v in bench.select_variants(["C-RBP-40", "BPTT-1"])] == ["BPTT-1", "C-RBP-40"]
    with pytest.raises(ValueError, match="NOPE"):
        bench.select_variants(["NOPE"])
    order = bench.run_order(["fpn", "mask"], bench.select_variants(["BPTT-1", "C-RBP-20"]))
    assert [(p, v.name) for p, v in order] == [
        ("-", "FF"), ("fpn", "C-RBP-20"), ("mask", "C-RBP-20"), ("fpn", "BPTT-1"), ("mask", "BPTT-1")]
    head = ["MODEL.CRBP.GRAD", "crbp", "MODEL.CRBP.STEPS", "20"]
    exact = ["MODEL.CRBP.LCP_SUBSAMPLE", "0.0", "MODEL.CRBP.LCP_CROP", "0"]
    assert bench.BY_NAME["C-RBP-20"].opts("fpn") == head + exact  # the FPN YAML's crop switched off
    cheap = bench.BY_NAME["C-RBP-20-cheap"]
    assert cheap.opts("mask") == head + ["MODEL.CRBP.LCP_SUBSAMPLE", "0.25", "MODEL.CRBP.LCP_CROP", "0"]
    assert cheap.opts("fpn") == head + ["MODEL.CRBP.LCP_SUBSAMPLE", "0.0", "MODEL.CRBP.LCP_CROP", "32"]
    assert cheap.opts("fpn", crop=16)[-1] == "16" and cheap.opts("mask", subsample=0.5)[5] == "0.5"


def test_parse_args_rejects_bad_options():
    with pytest.raises(SystemExit):
        bench.parse_args(["--opts", "MODEL.CRBP.STEPS"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--configs", "C-RBP-7"])
    args = bench.parse_args(["--device", "cpu", "--depth", "18", "--opts", "MODEL.FPN.OUT_CHANNELS", "32"])
    opts = bench.common_opts(args)
    assert opts[opts.index("MODEL.RESNETS.RES2_OUT_CHANNELS") + 1] == "64"
    assert args.opts == ["MODEL.FPN.OUT_CHANNELS", "32"]


def test_synthetic_batch_has_detectron2_training_format():
    batch = bench.synthetic_batch(2, (48, 80), instances=5, num_classes=7, num_stuff=4, seed=3)
    again = bench.synthetic_batch(2, (48, 80), instances=5, num_classes=7, num_stuff=4, seed=3)
    assert len(batch) == 2
    for x, y in zip(batch, again):
        assert x["image"].dtype == torch.uint8 and x["image"].shape == (3, 48, 80)
        assert torch.equal(x["image"], y["image"])
        inst = x["instances"]
        assert len(inst) == 5 and inst.image_size == (48, 80)
        assert int(inst.gt_classes.max()) < 7
        masks, boxes = inst.gt_masks.tensor, inst.gt_boxes.tensor
        assert masks.shape == (5, 48, 80) and masks.dtype == torch.bool
        assert (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 48).all() and (boxes[:, :2] >= 0).all()
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert len(ys) > 0  # the ellipse's centre pixel at least
            assert xs.min() >= math.floor(x0) and xs.max() <= math.ceil(x1)
            assert ys.min() >= math.floor(y0) and ys.max() <= math.ceil(y1)
        assert x["sem_seg"].shape == (48, 80) and x["sem_seg"].dtype == torch.int64
        assert 0 <= int(x["sem_seg"].min()) and int(x["sem_seg"].max()) < 4


def _fake(placement, name, mib, s, infer_s, es_steps=None):
    v = bench.BY_NAME[name]
    infer = {"T": {"s_per_img": infer_s, "steps": None}}
    if v.rule:
        infer["T"]["residual"] = 0.05
        infer["2T"] = {"s_per_img": 2 * infer_s, "steps": None, "residual": 0.01}
        infer["ES"] = {"s_per_img": infer_s / 2, "steps": es_steps}
    return {"placement": placement, "variant": name, "rule": v.rule, "steps": v.steps, "series": v.series,
            "train_mib": mib, "train_s": s, "infer": infer, "mask_rois_train": 64.0}


def test_ratios_table_and_goal_verdicts():
    results = [_fake("-", "FF", 1000.0, 0.1, 0.02), _fake("fpn", "BPTT-1", 1200.0, 0.2, 0.03, 1.0),
               _fake("fpn", "C-RBP-5", 1250.0, 0.3, 0.04, 3.0), _fake("fpn", "C-RBP-20", 1260.0, 0.5, 0.05, 4.0),
               _fake("fpn", "C-RBP-40", 1400.0, 0.9, 0.08, 4.5),
               {"placement": "fpn", "variant": "BPTT-5", "error": "CUDA out of memory under the cap"}]
    results[0]["infer"]["T"].update(detections=100.0, mask_rois=100.0)
    bench.add_ratios(results)
    assert results[1]["train_mib_x"] == pytest.approx(1.2)
    assert results[3]["infer"]["ES"]["x"] == pytest.approx(1.25)
    settings = {"device": "cpu", "size": [64, 96], "batch": 1, "instances": 4, "iters": 1, "warmup": 0,
                "infer_iters": 1, "infer_warmup": 0, "test_tol": 1e-3, "detections": 10, "lr": 1e-3,
                "opts": [], "placements": ["fpn"], "isolated": True, "date": "today", "command": "x"}
    machine = {"cpu": "test CPU", "cpu_count": 2, "torch_threads": 2, "platform": "p", "python": "3",
               "torch": "t", "detectron2": "d"}
    md = bench.markdown(results, machine, settings)
    assert "test CPU" in md and "| fpn | C-RBP-20 | 20 | 1260 (1.26×) | 0.5 (5.00×) |" in md
    assert "[4.0]" in md and "CUDA out of memory" in md
    assert "0.05 after T steps, 0.01 after 2T" in md
    goals = "\n".join(bench.goal_lines(results, ["fpn"]))
    assert "C-RBP-40 / C-RBP-5 ≤ 1.05: 1.120 here (not met)" in goals
    assert "C-RBP-20 training memory / BPTT-1 ≤ 1.10: 1.050 here (met)" in goals
    assert "C-RBP-20-cheap training memory / BPTT-1 ≤ 1.10: not measured" in goals
    assert "early stopping ≤ 1.20× FF: 1.25× here (not met; 4.0 steps" in goals


def _tiny_spec(placement, variant, *, batch, instances, detections, threads=0):
    """A :func:`measure` spec for a tiny model (tests/tiny.py's TINY options) on 64x96 images."""
    args = bench.parse_args(["--device", "cpu", "--depth", "18", "--detections", str(detections)])
    return {"placement": placement, "variant": variant, "opts": bench.common_opts(args),
            "user_opts": [str(v) for v in TINY], "device": "cpu", "size": [64, 96], "batch": batch,
            "instances": instances, "iters": 1, "warmup": 0, "infer_iters": 1, "infer_warmup": 0,
            "test_tol": 1e-3, "detections": detections, "seed": 0, "threads": threads, "mem_iters": 2,
            "lcp_subsample": 0.25, "lcp_crop": 32}


def test_one_tiny_configuration_measures_training_and_inference():
    r = bench.measure(_tiny_spec("mask", "C-RBP-5", batch=2, instances=3, detections=5))
    assert "error" not in r, r.get("error")
    assert r["steps"] == 3  # TINY's MODEL.CRBP.STEPS comes last and wins
    assert r["train_mib"] >= 0 and r["train_s"] > 0 and not r["nonfinite_loss"]
    assert "loss_lcp" in r["loss_last"]
    assert r["mask_rois_train"] >= 3  # the ground-truth boxes are appended to the proposals
    assert set(r["infer"]) == {"T", "2T", "ES"}
    assert r["infer"]["T"]["steps"] == 3 and r["infer"]["2T"]["steps"] == 6
    assert 1 <= r["infer"]["ES"]["steps"] <= 3
    assert r["infer"]["T"]["detections"] == 5 and r["infer"]["T"]["mask_rois"] == 5


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the child's memory pass fixes glibc's mmap threshold (Linux)")
def test_child_process_reports_its_own_iteration_memory():
    spec = _tiny_spec("fpn", "BPTT-1", batch=1, instances=2, detections=3, threads=1)
    r = bench.measure_in_child(spec, timeout=300)
    assert "error" not in r, r.get("error")
    assert r["rss_exact"] is True and r["peak_reset"] is True
    assert len(r["train_mib_all"]) == 2 and r["train_mib"] == min(r["train_mib_all"]) > 0
    assert r["steps"] == 3 and set(r["infer"]) == {"T", "2T", "ES"}
