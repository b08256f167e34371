"""crbp_panoptic.experiments.stability (and .evaluation): schedule, options, report, and the
evaluation wiring on a tiny real model."""

import json

import pytest
import torch

from crbp_panoptic.crbp import parse_arm
from crbp_panoptic.experiments import stability as stab
from crbp_panoptic.experiments.evaluation import (
    config_at_test_steps,
    first_test_inputs,
    load_model,
    logged_pq,
    read_final_metrics,
)
from crbp_panoptic.experiments.machine import machine_info
from crbp_panoptic.experiments.trajectories import residual_curves
from crbp_panoptic.modeling import recurrent_modules

from tests.tiny import REPO, tiny_cfg

CONFIG = "Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


def test_default_grid_spans_one_to_twice_the_largest_steps():
    assert stab.default_grid([3, 10]) == [1, 2, 3, 5, 6, 8, 10, 15, 20]
    assert stab.default_grid([5]) == [1, 2, 3, 5, 8, 10]
    grid = stab.default_grid([1, 7])
    assert grid[0] == 1 and grid[-1] == 14 and {1, 2, 7, 14} <= set(grid)


def test_schedule_rescaling_and_train_opts():
    assert stab.scaled_lr_steps((250,), 300, 300) == (250,)
    assert stab.scaled_lr_steps((250,), 300, 600) == (500,)
    assert stab.scaled_lr_steps((250,), 300, 2) == ()  # a decay at the last iteration is rejected
    opts = stab.train_opts(
        REPO / "configs" / CONFIG,
        ["SEED", "3", "MODEL.CRBP.GRAD", "rbp"],
        60,
        parse_arm("bptt:3"),
        "out/bptt_3",
    )
    pairs = dict(zip(opts[::2], opts[1::2]))
    assert pairs["SOLVER.MAX_ITER"] == "60" and pairs["SOLVER.STEPS"] == "(50,)"
    assert pairs["MODEL.CRBP.GRAD"] == "bptt" and pairs["MODEL.CRBP.STEPS"] == "3"
    assert pairs["OUTPUT_DIR"] == "out/bptt_3" and pairs["SEED"] == "3"
    assert opts[-2:] == ["OUTPUT_DIR", "out/bptt_3"]  # the arm's keys win over the user's
    no_schedule = stab.train_opts("unused.yaml", [], 0, parse_arm("crbp:20:sub0.25"), "d")
    assert no_schedule == [
        "MODEL.CRBP.GRAD",
        "crbp",
        "MODEL.CRBP.STEPS",
        "20",
        "MODEL.CRBP.LCP_SUBSAMPLE",
        "0.25",
        "MODEL.CRBP.LCP_CROP",
        "0",
        "MODEL.CRBP.LCP_KIND",
        "colsum",
        "OUTPUT_DIR",
        "d",
    ]
    assert stab.arm_dir_name(parse_arm("crbp:20:sub0.25")) == "crbp_20_sub0.25"


def test_run_rejects_feedforward_and_duplicate_arms(tmp_path):
    for arms in ([parse_arm("ff")], [parse_arm("crbp:3"), parse_arm("crbp:3")], []):
        with pytest.raises(ValueError, match="distinct recurrent arms"):
            stab.run(REPO / "configs" / CONFIG, arms, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _report():
    def arm(mode, T, pq):
        a = parse_arm(f"{mode}:{T}")
        return {
            "arm": a.name,
            "label": a.label,
            "mode": mode,
            "steps": T,
            "iters": 5,
            "train_seconds": 12.0,
            "train_pq": pq[T],
            "pq": {str(t): {"PQ": v, "PQ_th": v - 1, "PQ_st": v + 1} for t, v in pq.items()},
            "residual": {
                m: {"residual": [1.0 / t for t in range(1, 7)], "drift": [0.0] * 6, "images": 2}
                for m in ("backbone.fpn_lateral3.recurrent", "mean")
            },
        }

    return {
        "machine": machine_info("cpu"),
        "config_file": "c.yaml",
        "iters": 5,
        "dataset": "val",
        "val_images": 4,
        "residual_images": 2,
        "test_steps": [1, 3, 6],
        "residual_steps": 6,
        "arms": [
            arm("bptt", 1, {1: 50.0, 3: 20.0, 6: 10.0}),
            arm("crbp", 3, {1: 30.0, 3: 60.0, 6: 61.0}),
        ],
    }


def test_markdown_json_and_png(tmp_path):
    from crbp_panoptic.experiments.report import write_report

    report = _report()
    text = write_report(str(tmp_path), "stability", report, stab.markdown(report))
    assert json.loads((tmp_path / "stability.json").read_text())["test_steps"] == [1, 3, 6]
    assert (tmp_path / "stability.md").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stability.json", "stability.md"]
    assert "Machine: " in text and report["machine"]["cpu"] in text and "no GPU" in text
    rows = [line for line in text.splitlines() if line.startswith("| BPTT-1 |")]
    # PQ row: arm, T, iters, train s, PQ at train end, t=1 (bold: trained), t=3, t=6,
    # residual@T, @2T, drift@2T
    assert (
        rows[0]
        == "| BPTT-1 | 1 | 5 | 12 | 50.0 | **50.0** | 20.0 | 10.0 | 1.0e+00 | 5.0e-01 | 0.0e+00 |"
    )
    assert rows[1] == "| BPTT-1 | 1 | **49.0** | 19.0 | 9.0 |"  # PQ Things
    crbp = [line for line in text.splitlines() if line.startswith("| C-RBP-3 |")][0]
    assert "**60.0**" in crbp and crbp.endswith("| 3.3e-01 | 1.7e-01 | 0.0e+00 |")
    stab.plot(report, str(tmp_path / "stability.png"))
    assert (tmp_path / "stability.png").read_bytes()[:4] == b"\x89PNG"


def test_read_final_metrics_takes_the_last_evaluation(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                {"iteration": 0, "total_loss": 3.0},
                {"iteration": 1, "panoptic_seg/PQ": 10.0, "panoptic_seg/SQ": 50.0},
                {
                    "iteration": 2,
                    "panoptic_seg/PQ": 20.0,
                    "panoptic_seg/SQ": 60.0,
                    "sem_seg/mIoU": 5.0,
                },
            )
        )
        + "\n"
    )
    assert read_final_metrics(str(path)) == {"PQ": 20.0, "SQ": 60.0}
    assert logged_pq(str(tmp_path)) == 20.0
    assert logged_pq(str(tmp_path / "nothing")) is None
    with pytest.raises(RuntimeError, match="no 'bbox/\\*' results"):
        read_final_metrics(str(path), "bbox/")


def test_eval_config_and_residuals_of_a_real_model(tmp_path):
    """An arm directory as training leaves it (config.yaml + weights): the test steps are set
    through the config, and the residual capture finds every recurrent FPN level."""
    cfg = tiny_cfg(
        CONFIG,
        "DATASETS.TEST",
        "('synthetic_panoptic_tiny_val_separated',)",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
        "MODEL.CRBP.TEST_TOL",
        "0.5",
    )
    (tmp_path / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(0)
    from detectron2.modeling import build_model

    model = build_model(cfg)
    torch.save({"model": model.state_dict()}, tmp_path / "model_final.pth")

    eval_cfg = config_at_test_steps(str(tmp_path), 7)
    assert eval_cfg.MODEL.CRBP.TEST_STEPS == 7 and eval_cfg.MODEL.CRBP.TEST_TOL == 0
    assert eval_cfg.MODEL.DEVICE == "cpu" and eval_cfg.is_frozen()
    loaded = load_model(eval_cfg, str(tmp_path / "model_final.pth"))
    modules = recurrent_modules(loaded)
    assert {n for n, _ in modules} == {f"backbone.fpn_lateral{k}.recurrent" for k in (3, 4, 5)}
    assert all(m.test_steps == 7 and m.test_tol == 0 and not m.training for _, m in modules)
    trained, restored = model.state_dict(), loaded.state_dict()
    keys = [k for k in trained if ".recurrent." in k]
    assert keys and all(torch.equal(trained[k], restored[k]) for k in keys)

    inputs = first_test_inputs(eval_cfg, 1)
    assert len(inputs) == 1 and inputs[0]["image"].shape[-2:] == (64, 64)
    curves = residual_curves(loaded, inputs, 4, 2)
    assert set(curves) == {n for n, _ in modules} | {"mean"}
    for curve in curves.values():
        assert len(curve["residual"]) == 4 and curve["residual"][0] == pytest.approx(1.0)
        assert curve["drift"][1] == 0 and all(r >= 0 for r in curve["residual"])


def test_run_trains_measures_and_then_reuses_an_arm(tmp_path):
    from tests.tiny import register_tiny_datasets, tiny_train_opts

    register_tiny_datasets(str(tmp_path / "datasets"), "stability_test")
    opts = tiny_train_opts(
        tmp_path / "unused", "stability_test_one_separated", "stability_test_val_separated"
    )[2:]  # run() sets OUTPUT_DIR per arm
    arms = [parse_arm("bptt:2")]
    out = str(tmp_path / "out")
    report = stab.run(
        REPO / "configs" / CONFIG,
        arms,
        out,
        opts=opts,
        iters=2,
        test_steps=[1, 4],
        residual_images=1,
        log=lambda m: None,
    )
    (entry,) = report["arms"]
    assert entry["label"] == "BPTT-2" and entry["dir"] == f"{out}/bptt_2"
    assert entry["iters"] == 2 and entry["train_seconds"] > 0
    assert set(entry["pq"]) == {"1", "4"} and all(
        set(v) == {"PQ", "PQ_th", "PQ_st"} for v in entry["pq"].values()
    )
    assert len(entry["residual"]["mean"]["residual"]) == report["residual_steps"] == 4
    assert report["val_images"] == 3 and report["dataset"] == "stability_test_val_separated"
    saved = json.loads((tmp_path / "out" / "stability.json").read_text())
    assert saved["arms"][0]["pq"] == entry["pq"]
    again = stab.run(
        REPO / "configs" / CONFIG,
        arms,
        out,
        opts=opts,
        iters=2,
        test_steps=[1],
        residual_images=1,
        skip_train=True,
        log=lambda m: None,
    )
    assert "train_seconds" not in again["arms"][0]  # reused, not retrained
    with pytest.raises(FileNotFoundError, match="crbp_2/model_final.pth"):
        stab.run(
            REPO / "configs" / CONFIG,
            [parse_arm("crbp:2")],
            out,
            opts=opts,
            skip_train=True,
            log=lambda m: None,
        )
