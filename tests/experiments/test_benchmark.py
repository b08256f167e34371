"""crbp_panoptic.experiments.benchmark: the plan, the report, and one tiny configuration
measured in this process and in a child process."""

import json
import sys

import pytest

from crbp_panoptic.crbp import parse_arm
from crbp_panoptic.experiments import benchmark as bench

from tests.tiny import REPO, TINY

CONFIG_DIR = REPO / "configs" / "COCO-PanopticSegmentation"


def test_default_plan_runs_feedforward_first_then_by_priority():
    arms = [parse_arm(a) for a in bench.DEFAULT_ARMS]
    for name in ("bptt:1", "bptt:3", "bptt:5", "rbp:20", "crbp:5", "crbp:10", "crbp:20", "crbp:40"):
        assert name in bench.DEFAULT_ARMS
    cheap = bench.parse_cheap_arms([f"{p}={a}" for p, a in bench.DEFAULT_CHEAP_ARMS.items()])
    runs = bench.plan(["fpn", "mask"], arms, cheap)
    assert runs[0] == ("-", bench.FEEDFORWARD)
    assert len(runs) == 1 + 2 * len(arms) + 2
    names = [(p, a.name) for p, a in runs]
    assert names[1:5] == [
        ("fpn", "crbp:20"),
        ("mask", "crbp:20"),
        ("fpn", "bptt:1"),
        ("mask", "bptt:1"),
    ]
    assert ("fpn", "crbp:20:crop32") in names and ("mask", "crbp:20:sub0.25") in names
    assert ("fpn", "crbp:20:sub0.25") not in names  # a cheap arm runs on its placement only
    assert names.index(("fpn", "crbp:20:crop32")) < names.index(("fpn", "bptt:3"))
    two = bench.plan(["fpn", "mask"], [parse_arm("bptt:1"), parse_arm("crbp:20")])
    assert [(p, a.name) for p, a in two] == [
        ("-", "ff"),
        ("fpn", "crbp:20"),
        ("mask", "crbp:20"),
        ("fpn", "bptt:1"),
        ("mask", "bptt:1"),
    ]


def _opts(arm):
    return [str(v) for v in parse_arm(arm).config_opts()]


def test_arm_options_select_exact_or_cheap_penalty():
    head = ["MODEL.CRBP.GRAD", "crbp", "MODEL.CRBP.STEPS", "20"]
    kind = ["MODEL.CRBP.LCP_KIND", "colsum"]
    exact = ["MODEL.CRBP.LCP_SUBSAMPLE", "0.0", "MODEL.CRBP.LCP_CROP", "0", *kind]
    assert _opts("crbp:20") == head + exact  # the FPN YAML's crop switched off
    assert _opts("crbp:20:sub0.25") == head + [
        "MODEL.CRBP.LCP_SUBSAMPLE",
        "0.25",
        "MODEL.CRBP.LCP_CROP",
        "0",
        *kind,
    ]
    assert _opts("crbp:20:crop16") == head + [
        "MODEL.CRBP.LCP_SUBSAMPLE",
        "0.0",
        "MODEL.CRBP.LCP_CROP",
        "16",
        *kind,
    ]
    assert bench.FEEDFORWARD.config_opts() == []
    assert bench.series(parse_arm("crbp:20:crop16")) == "C-RBP (cheap LCP)"
    assert (
        bench.series(parse_arm("cbptt:3")) == "C-BPTT" and bench.series(bench.FEEDFORWARD) == "FF"
    )
    assert bench.config_file(CONFIG_DIR, "mask", bench.FEEDFORWARD).endswith(
        "panoptic_fpn_R_50_1x.yaml"
    )
    assert bench.config_file(CONFIG_DIR, "mask", parse_arm("bptt:1")).endswith(
        "panoptic_crbp_mask_R_50_1x.yaml"
    )


@pytest.mark.parametrize(
    "text", ["mask", "head=crbp:20:sub0.25", "fpn=crbp:20", "mask=crbp:20:sub"]
)
def test_cheap_arms_reject_bad_items(text):
    with pytest.raises(ValueError, match="--cheap-arms|arm="):
        bench.parse_cheap_arms([text])


def test_common_options_and_config():
    opts = bench.common_opts("cpu", 0.0, 10, 18)
    assert opts[opts.index("MODEL.RESNETS.RES2_OUT_CHANNELS") + 1] == "64"
    assert opts[opts.index("TEST.DETECTIONS_PER_IMAGE") + 1] == "10"
    assert "TEST.DETECTIONS_PER_IMAGE" not in bench.common_opts("cpu", 0.0, 0, None)
    cfg = bench.build_cfg(
        CONFIG_DIR / "panoptic_crbp_mask_R_50_1x.yaml",
        opts + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
    )
    assert cfg.is_frozen() and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.05
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.DEVICE == "cpu"


def _fake(placement, name, mib, s, infer_s, es_steps=None):
    arm = parse_arm(name)
    infer = {"T": {"s_per_img": infer_s, "steps": None}}
    if arm.recurrent:
        infer["T"]["residual"] = 0.05
        infer["2T"] = {"s_per_img": 2 * infer_s, "steps": None, "residual": 0.01}
        infer["ES"] = {"s_per_img": infer_s / 2, "steps": es_steps}
    return {
        "placement": placement,
        "arm": name,
        "label": bench.table_label(arm),
        "mode": arm.mode,
        "steps": arm.steps,
        "series": bench.series(arm),
        "train_mib": mib,
        "train_s": s,
        "infer": infer,
        "mask_rois_train": 64.0,
    }


def test_ratios_and_table():
    results = [
        _fake("-", "ff", 1000.0, 0.1, 0.02),
        _fake("fpn", "bptt:1", 1200.0, 0.2, 0.03, 1.0),
        _fake("fpn", "crbp:5", 1250.0, 0.3, 0.04, 3.0),
        _fake("fpn", "crbp:20", 1260.0, 0.5, 0.05, 4.0),
        _fake("fpn", "crbp:40", 1400.0, 0.9, 0.08, 4.5),
        {
            "placement": "fpn",
            "arm": "bptt:5",
            "label": "BPTT-5",
            "error": "CUDA out of memory under the cap",
        },
    ]
    results[0]["infer"]["T"].update(detections=100.0, mask_rois=100.0)
    bench.add_ratios(results)
    assert results[1]["train_mib_x"] == pytest.approx(1.2)
    assert results[3]["infer"]["ES"]["x"] == pytest.approx(1.25)
    settings = {
        "device": "cpu",
        "size": [64, 96],
        "batch": 1,
        "instances": 4,
        "iters": 1,
        "warmup": 0,
        "infer_iters": 1,
        "infer_warmup": 0,
        "test_tol": 1e-3,
        "detections": 10,
        "lr": 1e-3,
        "opts": [],
        "placements": ["fpn"],
        "arms": list(bench.DEFAULT_ARMS),
        "isolated": True,
        "date": "today",
        "command": "x",
    }
    machine = {
        "cpu": "test CPU",
        "cpu_count": 2,
        "torch_threads": 2,
        "platform": "p",
        "python": "3",
        "torch": "t",
        "detectron2": "d",
        "gpu": None,
    }
    md = bench.markdown(results, machine, settings)
    assert "test CPU" in md and "| fpn | C-RBP-20 | 20 | 1260 (1.26×) | 0.5 (5.00×) |" in md
    assert "[4.0]" in md and "CUDA out of memory" in md
    assert "0.05 after T steps, 0.01 after 2T" in md
    rows = [line for line in md.splitlines() if line.startswith("| fpn |")]
    assert [r.split(" | ")[1] for r in rows] == [
        "BPTT-1",
        "BPTT-5",
        "C-RBP-5",
        "C-RBP-20",
        "C-RBP-40",
    ]


def _tiny_spec(placement, arm, *, batch, instances, detections, threads=0):
    """A :func:`measure` spec for a tiny model (tests/tiny.py's TINY options) on 64x96 images."""
    return {
        "placement": placement,
        "arm": arm,
        "config_file": bench.config_file(CONFIG_DIR, placement, parse_arm(arm)),
        "opts": bench.common_opts("cpu", 0.0, detections, 18),
        "user_opts": [str(v) for v in TINY],
        "device": "cpu",
        "size": [64, 96],
        "batch": batch,
        "instances": instances,
        "iters": 1,
        "warmup": 0,
        "infer_iters": 1,
        "infer_warmup": 0,
        "test_tol": 1e-3,
        "detections": detections,
        "seed": 0,
        "threads": threads,
        "mem_iters": 2,
    }


def test_one_tiny_configuration_measures_training_and_inference():
    r = bench.measure(_tiny_spec("mask", "crbp:5", batch=2, instances=3, detections=5))
    assert "error" not in r, r.get("error")
    assert r["steps"] == 3  # TINY's MODEL.CRBP.STEPS comes last and wins
    assert r["arm"] == "crbp:5" and r["mode"] == "crbp"
    assert r["label"] == "C-RBP-3"  # the table names what ran
    # resident-set growth of a tiny model is near zero; pages the kernel reclaims between
    # the two readings can make it a fraction of a MiB negative
    assert r["train_mib"] > -1.0 and r["train_s"] > 0 and not r["nonfinite_loss"]
    assert len(r["train_times"]) == 1 and len(r["train_mib_all"]) == 2
    assert r["params"] > 0
    assert "loss_lcp" in r["loss_last"]
    assert r["mask_rois_train"] >= 3  # the ground-truth boxes are appended to the proposals
    assert set(r["infer"]) == {"T", "2T", "ES"}
    assert r["infer"]["T"]["steps"] == 3 and r["infer"]["2T"]["steps"] == 6
    assert r["infer"]["2T"]["test_steps"] == 6
    assert 1 <= r["infer"]["ES"]["steps"] <= 3
    assert r["infer"]["T"]["detections"] == 5 and r["infer"]["T"]["mask_rois"] == 5


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the child's memory pass fixes glibc's mmap threshold (Linux)",
)
def test_child_process_reports_its_own_iteration_memory():
    spec = _tiny_spec("fpn", "bptt:1", batch=1, instances=2, detections=3, threads=1)
    r = bench.measure_in_child(spec, timeout=300)
    assert "error" not in r, r.get("error")
    assert r["rss_exact"] is True and r["peak_reset"] is True
    assert len(r["train_mib_all"]) == 2 and r["train_mib"] == min(r["train_mib_all"]) > 0
    assert r["steps"] == 3 and set(r["infer"]) == {"T", "2T", "ES"}


def test_child_process_failure_is_reported_not_raised():
    spec = _tiny_spec("fpn", "bptt:1", batch=1, instances=2, detections=3, threads=1)
    spec["config_file"] = str(CONFIG_DIR / "no_such.yaml")
    r = bench.measure_in_child(spec, timeout=300)
    assert r["arm"] == "bptt:1" and "no_such.yaml" in r["error"]


def test_run_measures_the_plan_and_writes_the_report(tmp_path):
    from crbp_panoptic.experiments.machine import machine_info

    runs = bench.plan(["mask"], [parse_arm("bptt:1")])
    spec = _tiny_spec("mask", "bptt:1", batch=1, instances=2, detections=3)
    base = {k: v for k, v in spec.items() if k not in ("placement", "arm", "config_file")}
    settings = {
        "device": "cpu",
        "size": [64, 96],
        "batch": 1,
        "instances": 2,
        "iters": 1,
        "warmup": 0,
        "infer_iters": 1,
        "infer_warmup": 0,
        "test_tol": 1e-3,
        "detections": 3,
        "lr": 0.0,
        "opts": [],
        "placements": ["mask"],
        "arms": ["bptt:1"],
        "isolated": False,
        "date": "today",
        "command": "x",
    }
    results = bench.run(
        runs, base, CONFIG_DIR, tmp_path, machine_info("cpu"), settings, in_process=True
    )
    assert [(r["placement"], r["arm"]) for r in results] == [("-", "ff"), ("mask", "bptt:1")]
    assert all("error" not in r for r in results), results
    assert results[0]["train_s_x"] == 1.0 and results[1]["train_s_x"] > 0
    md = (tmp_path / "benchmark.md").read_text()
    # TINY sets STEPS 3 after the arm: the table names what ran
    assert "| - | FF |" in md and "| mask | BPTT-3 | 3 |" in md and "Whole run:" in md
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert [r["arm"] for r in saved["results"]] == ["ff", "bptt:1"]
    assert bench.plot(results, ["mask"], tmp_path / "benchmark.png", "title")
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    skipped = bench.run(
        runs,
        base,
        CONFIG_DIR,
        tmp_path / "b",
        machine_info("cpu"),
        settings,
        in_process=True,
        time_budget=1e-9,
    )
    assert all(r["error"].startswith("skipped: time budget") for r in skipped)
