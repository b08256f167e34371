"""The seed-sweep runner: log parsing, config facts, orchestration, the report."""

import json
import os
import stat
import sys

import pytest

pytest.importorskip("detectron2")

from crbp_panoptic.experiments.seeds import (  # noqa: E402
    config_info,
    curves_markdown,
    dynamics_markdown,
    markdown,
    parse_copypaste,
    run_sweep,
)

from tests.tiny import CONFIGS  # noqa: E402

FF = str(CONFIGS / "Synthetic-PanopticSegmentation" / "longrange_panoptic_fpn_R_18.yaml")
CRBP = str(CONFIGS / "Synthetic-PanopticSegmentation" / "longrange_panoptic_crbp_mask_R_18.yaml")
BPTT = str(CONFIGS / "Synthetic-PanopticSegmentation" / "longrange_panoptic_bptt3_mask_R_18.yaml")

LOG = """[11/29 05:27:41 d2.evaluation.testing]: copypaste: Task: bbox
[11/29 05:27:41 d2.evaluation.testing]: copypaste: AP,AP50,AP75,APs,APm,APl
[11/29 05:27:41 d2.evaluation.testing]: copypaste: nan,nan,nan,nan,nan,nan
[11/29 05:27:41 d2.evaluation.testing]: copypaste: Task: panoptic_seg
[11/29 05:27:41 d2.evaluation.testing]: copypaste: PQ,SQ,RQ,PQ_th,SQ_th,RQ_th,PQ_st,SQ_st,RQ_st
[11/29 05:27:41 d2.evaluation.testing]: copypaste: {pq},48.7,51.0,0.0,0.0,0.0,69.2,81.3,85.1
"""

# Stands in for tools/train_net.py: writes what Detectron2 would (log.txt with copypaste
# lines, metrics.json, model_final.pth) with PQ = 40 + SEED + TEST_STEPS / 10 (evaluation
# runs get no SEED), and records its command line.
FAKE_TRAIN = r"""
import json, os, sys
args = sys.argv[2:]
opts = dict(zip(args[::2], args[1::2])) if "--eval-only" not in args else None
if opts is None:
    rest = [a for a in args if a != "--eval-only"]
    opts = dict(zip(rest[::2], rest[1::2]))
out = opts["OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
pq = 40 + int(opts.get("SEED", 0)) + int(opts.get("MODEL.CRBP.TEST_STEPS", 0)) / 10
with open(os.path.join(out, "log.txt"), "a") as f:
    f.write(LOG.format(pq=pq))
if "--eval-only" not in args:
    open(os.path.join(out, "model_final.pth"), "w").close()
    with open(os.path.join(out, "metrics.json"), "w") as f:
        f.write(json.dumps({"iteration": 9, "loss_mask": 0.25,
                            "crbp/roi_heads.mask_head.mask_recurrent/residual": 0.0125}) + "\n")
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
"""


def test_parse_copypaste_reads_the_last_block_of_each_task():
    tasks = parse_copypaste(LOG.format(pq=41.5) + LOG.format(pq=50.0))
    assert tasks["panoptic_seg"]["PQ"] == 50.0
    assert tasks["panoptic_seg"]["PQ_st"] == 69.2
    assert set(tasks) == {"bbox", "panoptic_seg"}
    assert parse_copypaste("no results here") == {}


def test_config_info_counts_a_smaller_recurrent_mask_head():
    ff, crbp, bptt = config_info(FF), config_info(CRBP), config_info(BPTT)
    assert not ff["recurrent"] and ff["steps"] is None
    assert (crbp["recurrent"], crbp["grad"], crbp["steps"]) == (True, "crbp", 10)
    assert (bptt["grad"], bptt["steps"]) == ("bptt", 3)
    assert crbp["mask_head_params"] == bptt["mask_head_params"] < ff["mask_head_params"]


def test_sweep_trains_once_per_seed_evaluates_multiples_and_resumes(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(f"LOG = {LOG!r}\n" + FAKE_TRAIN)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    out = str(tmp_path / "sweep")

    report = run_sweep([FF, CRBP], [0, 1], [1, 3], out, python=str(python), log=lambda m: None)
    lines = [json.loads(line) for line in calls.read_text().splitlines()]
    assert sum("--eval-only" not in c for c in lines) == 4  # 2 configs x 2 seeds
    evals = [c for c in lines if "--eval-only" in c]
    assert len(evals) == 2  # the recurrent config only, at 3 x 10 steps
    assert all(c[c.index("MODEL.CRBP.TEST_STEPS") + 1] == "30" for c in evals)
    crbp = report["configs"]["longrange_panoptic_crbp_mask_R_18"]
    assert crbp["runs"]["1"]["by_multiple"]["3"]["PQ"] == pytest.approx(43.0)
    assert crbp["runs"]["1"]["by_multiple"]["1"]["PQ"] == pytest.approx(41.0)
    summary = report["summary"]["longrange_panoptic_crbp_mask_R_18"]
    assert summary["mean"]["1"]["PQ"] == pytest.approx(40.5)
    assert summary["drift_pq"]["3"] == pytest.approx(2.5)  # (43 - 40 + 43 - 41) / 2
    assert summary["mean_delta_pq"] == pytest.approx(0.0)
    assert summary["mean_loss_mask"] == pytest.approx(0.25)
    ff_run = report["configs"]["longrange_panoptic_fpn_R_18"]["runs"]["0"]
    assert ff_run["by_multiple"].keys() == {"1"}  # feedforward: no test-step multiples
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["summary"] == report["summary"]

    run_sweep([FF, CRBP], [0, 1], [1, 3], out, python=str(python), log=lambda m: None)
    assert len(calls.read_text().splitlines()) == len(lines)  # finished runs are reused
    partial = run_sweep(
        [FF, CRBP], [0, 1, 2], [1, 3], out, python=str(python), log=lambda m: None, train=False
    )
    assert len(calls.read_text().splitlines()) == len(lines)  # train=False runs nothing
    assert set(partial["configs"]["longrange_panoptic_fpn_R_18"]["runs"]) == {"0", "1"}
    assert partial["summary"]["longrange_panoptic_crbp_mask_R_18"]["seeds"] == ["0", "1"]

    assert crbp["runs"]["0"]["curves"]["loss_mask"] == [[9, 0.25]]
    assert crbp["runs"]["0"]["dynamics"] == {"residual": 0.0125}
    assert "| `longrange_panoptic_crbp_mask_R_18` | 0.0125 |" in dynamics_markdown(report)
    assert "| `longrange_panoptic_crbp_mask_R_18` | 0.250 |" in curves_markdown(report, (9,))
    text = markdown(report)
    assert "| `longrange_panoptic_crbp_mask_R_18` | C-RBP, T = 10 |" in text
    assert "40.0 / 41.0" in text and "+2.5" in text


def test_sweep_rejects_bad_arguments_early(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        run_sweep([FF, "nope.yaml"], [0], [1], str(tmp_path))
    with pytest.raises(ValueError, match="multiples"):
        run_sweep([FF], [0], [0, 1], str(tmp_path))


def test_mask_probe_scores_every_thing_and_its_box_baseline(tmp_path):
    import numpy as np
    import torch

    from detectron2.modeling import build_model

    from crbp_panoptic.data import (
        box_class_mask_iou,
        register_synthetic_panoptic,
        render_cables_sample,
        unregister_synthetic_panoptic,
    )
    from crbp_panoptic.experiments.seeds import mask_probe

    from tests.tiny import tiny_cfg

    name = f"synthetic_longrange_probe_{tmp_path.name}"
    register_synthetic_panoptic(
        name,
        root=str(tmp_path),
        split="val",
        num_images=2,
        image_size=(64, 64),
        seed=0,
        kind="cables",
    )
    opts = [
        "DATASETS.TEST",
        f"('{name}_separated',)",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "2",
    ]
    try:
        torch.manual_seed(0)
        model = build_model(
            tiny_cfg("Synthetic-PanopticSegmentation/longrange_panoptic_crbp_mask_R_18.yaml", *opts)
        )
        weights = str(tmp_path / "model.pth")
        torch.save({"model": model.state_dict()}, weights)
        out = mask_probe(CRBP, weights, opts=_tiny_opts() + opts, test_steps=4)
    finally:
        unregister_synthetic_panoptic(name)
    samples = [render_cables_sample(i, "val", (64, 64), 0) for i in range(2)]
    ious = [v for s in samples for v in box_class_mask_iou(s.panoptic, s.segments_info)]
    assert out["things"] == len(ious)
    assert out["box_class_iou"] == pytest.approx(np.mean(ious))
    for key in ("iou", "iou_above_half", "leak", "miss"):
        assert 0.0 <= out[key] <= 1.0


def _tiny_opts():
    from tests.tiny import TINY

    return [str(v) for v in TINY]
