"""crbp_panoptic.experiments.speed on tiny trained-run folders made from the real configs."""

import json

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from crbp_panoptic.crbp import RecurrentRefiner
from crbp_panoptic.experiments import speed
from crbp_panoptic.experiments.evaluation import first_test_inputs, load_model

from tests.tiny import register_tiny_datasets, tiny_train_opts

MASK = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_mask_R_18_quick.yaml"
FPN = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"
FF = "configs/Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders (config.yaml + model_final.pth) of tiny untrained models."""
    from crbp_panoptic.engine import setup_cfg

    from tests.tiny import REPO

    root = tmp_path_factory.mktemp("speed")
    register_tiny_datasets(str(root / "data"), "speedtiny")
    folders = {}
    for name, config in (("ff", FF), ("mask", MASK), ("fpn", FPN)):
        out = root / name
        opts = tiny_train_opts(out, "speedtiny_train_separated", "speedtiny_val_separated")
        cfg = setup_cfg(str(REPO / config), opts + ["MODEL.CRBP.FPN_LEVELS", "['p4', 'p5']"])
        out.mkdir()
        (out / "config.yaml").write_text(cfg.dump())
        torch.manual_seed(0)
        DetectionCheckpointer(build_model(cfg), save_dir=str(out)).save("model_final")
        folders[name] = str(out)
    return folders


def test_settings_name_the_levers():
    names = [s.name for s in speed.inference_settings(10)]
    assert names == ["T", "2T", "tol 0.01", "tol 0.003", "tol 0.001", "anderson tol 0.001"]
    two_t = dict(
        zip(speed.inference_settings(10)[1].opts[::2], speed.inference_settings(10)[1].opts[1::2])
    )
    assert two_t == {"MODEL.CRBP.TEST_STEPS": 20, "MODEL.CRBP.TEST_TOL": 0.0}
    assert [s.name for s in speed.training_settings("fpn")][-1] == "NEUMANN_TOL 1e-2"
    assert [s.name for s in speed.training_settings("mask_head")][-1] == "LCP_SUBSAMPLE 0.25"


def test_inference_counts_the_steps_each_setting_runs(runs):
    settings = speed.inference_settings(3, tols=(1e9,))
    rows = speed.measure_inference(runs["fpn"], settings, num_images=1, with_pq=False)
    by_name = {r["setting"]: r for r in rows}
    assert by_name["T"]["mean_steps"] == 3 and by_name["2T"]["mean_steps"] == 6
    # a tolerance every residual meets stops each call after its first step
    assert by_name["tol 1e+09"]["mean_steps"] == 1
    assert all(r["seconds"] > 0 and r["pq"] is None for r in rows)


def test_step_macs_match_the_cell_convolutions(runs):
    """The refiners' MACs at T are T steps of the hGRU on every recurrent level: per position
    two k x k and two 1 x 1 C -> C convolutions, on the map shapes the refiners saw, plus
    fvcore's count for the two GroupNorms (5 per element when affine)."""
    cfg = speed.run_cfg(runs["fpn"])
    k, c = cfg.MODEL.CRBP.KERNEL_SIZE, cfg.MODEL.FPN.OUT_CHANNELS
    model = load_model(cfg, speed.check_run_dir(runs["fpn"]))
    shapes = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: shapes.append(args[0].shape))
        for m in model.modules()
        if isinstance(m, RecurrentRefiner)
    ]
    inputs = first_test_inputs(cfg, 1)
    with torch.no_grad():
        model(inputs)
    for h in hooks:
        h.remove()
    per_step = sum(
        b * hh * ww * (2 * k * k * c * c + 2 * c * c + 2 * 5 * c) for b, _, hh, ww in shapes
    )
    assert len(shapes) == 2  # p4, p5

    settings = speed.inference_settings(3)[:2]
    rows = speed.measure_inference(runs["fpn"], settings, num_images=1, with_pq=False)
    run = {"steps": 3, "inference": rows}
    assert speed.step_macs(run) == pytest.approx(per_step, rel=1e-9)
    ff = speed.measure_inference(
        runs["ff"], [speed.Setting("as trained", flops=True)], num_images=1, with_pq=False
    )[0]
    assert rows[1]["flops"]["recurrent"] == pytest.approx(2 * rows[0]["flops"]["recurrent"])
    assert ff["flops"]["total"] > 0 == ff["flops"]["recurrent"]


def test_measure_runs_and_report(runs):
    report = speed.measure_runs({"mask": runs["mask"]}, runs["ff"], num_images=1, train_iters=1)
    run = report["runs"]["mask"]
    assert run["placement"] == "mask_head" and run["steps"] == 3
    assert [r["setting"] for r in run["training"]] == [
        s.name for s in speed.training_settings("mask_head")
    ]
    assert all(r["seconds"] > 0 for r in run["training"] + report["feedforward"]["training"])
    assert all(0 < r["fg_rois"] <= 128 for r in run["training"])  # BATCH_SIZE_PER_IMAGE
    assert all(r["peak_bytes"] > 0 for r in run["training"] + report["feedforward"]["training"])
    # the same batches for every run and setting: the same foreground ROIs sampled
    assert len({r["fg_rois"] for r in run["training"]}) == 1
    with pytest.raises(ValueError, match="1 batches; need warmup \\+ iters = 3"):
        speed.measure_training(runs["mask"], [speed.Setting("x")], iters=1, warmup=2, batches=[0])
    assert set(run["inference"][0]["pq"]) == {"PQ", "PQ_th", "PQ_st"}
    text = "\n".join(speed.markdown(report))
    assert "| mask | T |" in text and "| feedforward | - |" in text
    assert "| mask | LCP_SUBSAMPLE 0.25 |" in text
    assert "## What bounds inference" in text and "| mask | " in text.split("bounds")[1]
    assert run["inference"][0]["flops"]["recurrent"] > 0 and run["inference"][2]["flops"] is None
    json.dumps(report)  # serialisable


def test_a_run_without_weights_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml: not found"):
        speed.check_run_dir(str(tmp_path))
    (tmp_path / "config.yaml").write_text("")
    with pytest.raises(FileNotFoundError, match="model_final.pth: not found"):
        speed.measure_inference(str(tmp_path), speed.inference_settings(3))
