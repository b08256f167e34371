"""tools/stability.py: its pure helpers, the residual capture, and the evaluation wiring on a tiny model."""
import json

import pytest
import torch
from torch import nn

from crbp_panoptic.crbp import RecurrentRefiner

from tests.tiny import load_tool, tiny_cfg

CONFIG = "Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


stab = load_tool("stability")


def test_parse_arm_and_args():
    assert stab.parse_arm("bptt:3") == ("bptt", 3)
    assert stab.parse_arm("CRBP:10") == ("crbp", 10)
    for bad in ("bptt", "bptt:0", "foo:3", "crbp:x", "crbp:-1"):
        with pytest.raises(ValueError):
            stab.parse_arm(bad)
    args = stab.parse_args(["--arms", "bptt:5", "crbp:20", "--iters", "7", "MODEL.CRBP.NUM_GROUPS", "4"])
    assert args.arm_specs == [("bptt", 5), ("crbp", 20)]
    assert args.opts == ["MODEL.CRBP.NUM_GROUPS", "4"] and args.iters == 7
    defaults = stab.parse_args([])
    assert defaults.arm_specs == [("bptt", 3), ("crbp", 10)] and defaults.output_dir == "output/stability"
    for argv in (["--arms", "rnn:3"], ["--arms", "crbp:3", "crbp:3"], ["MODEL.CRBP.STEPS"], ["--test-steps", "0"]):
        with pytest.raises(SystemExit):
            stab.parse_args(argv)


def test_default_grid_spans_one_to_twice_the_largest_steps():
    assert stab.default_grid([3, 10]) == [1, 2, 3, 5, 6, 8, 10, 15, 20]
    assert stab.default_grid([5]) == [1, 2, 3, 5, 8, 10]
    grid = stab.default_grid([1, 7])
    assert grid[0] == 1 and grid[-1] == 14 and {1, 2, 7, 14} <= set(grid)


def test_schedule_rescaling_and_train_opts():
    assert stab.scaled_lr_steps((250,), 300, 300) == (250,)
    assert stab.scaled_lr_steps((250,), 300, 600) == (500,)
    assert stab.scaled_lr_steps((250,), 300, 2) == ()  # a decay at the last iteration is rejected
    args = stab.parse_args(["--iters", "60", "SEED", "3"])
    opts = stab.train_opts(args, "bptt", 3, "out/bptt_3")
    pairs = dict(zip(opts[::2], opts[1::2]))
    assert pairs["SOLVER.MAX_ITER"] == "60" and pairs["SOLVER.STEPS"] == "(50,)"
    assert pairs["MODEL.CRBP.GRAD"] == "bptt" and pairs["MODEL.CRBP.STEPS"] == "3"
    assert pairs["OUTPUT_DIR"] == "out/bptt_3" and pairs["SEED"] == "3"
    assert opts[-2:] == ["OUTPUT_DIR", "out/bptt_3"]  # the arm's keys win over user opts


class _HalfCell(nn.Module):
    """h' = h / 2 + x: h_t = x (2 - 2^(1-t)), so every relative quantity is known in closed form."""

    def forward(self, x, h):
        return 0.5 * h + x


def _expected_residual(t):
    return 2.0 ** (1 - t) / (2 - 2.0 ** (1 - t))


def test_residual_trajectory_matches_closed_form():
    x = torch.randn(2, 3, 4, 4)
    res, drift = stab.residual_trajectory(_HalfCell(), x, 6, 3)
    assert res == pytest.approx([_expected_residual(t) for t in range(1, 7)], rel=1e-5)
    h = [2 - 2.0 ** (1 - t) for t in range(1, 7)]
    assert drift == pytest.approx([abs(v - h[2]) / h[2] for v in h], rel=1e-5, abs=1e-7)
    assert drift[2] == 0
    with pytest.raises(ValueError):
        stab.residual_trajectory(_HalfCell(), x, 3, 4)


class _ToyModel(nn.Module):
    """Two refiners; the second sees an empty batch on odd images (like a mask head without ROIs)."""

    def __init__(self):
        super().__init__()
        self.a = RecurrentRefiner(cell=_HalfCell(), steps=2)
        self.b = RecurrentRefiner(cell=_HalfCell(), steps=2)

    def forward(self, batch):
        (item,) = batch
        out = self.a(item["x"])
        return out, self.b(item["x"][: 0 if item["odd"] else 1])


def test_residual_curves_capture_drives_and_average():
    model = _ToyModel().train()
    inputs = [{"x": torch.randn(1, 2, 3, 3), "odd": i % 2 == 1} for i in range(3)]
    curves = stab.residual_curves(model, inputs, 4, 2)
    assert model.training  # mode restored
    assert set(curves) == {"a", "b", "mean"}
    assert curves["a"]["images"] == 3 and curves["b"]["images"] == 2 and curves["mean"]["images"] == 2
    expected = [_expected_residual(t) for t in range(1, 5)]
    for name in ("a", "b", "mean"):
        assert curves[name]["residual"] == pytest.approx(expected, rel=1e-5)
    for _, module in (("a", model.a), ("b", model.b)):  # the hooks are gone
        assert not module._forward_pre_hooks


def _report():
    arm = lambda grad, T, pq: {  # noqa: E731
        "name": f"{grad}_{T}", "grad": grad, "steps": T, "iters": 5, "train_seconds": 12.0, "train_pq": pq[T],
        "pq": {str(t): {"PQ": v, "PQ_th": v - 1, "PQ_st": v + 1} for t, v in pq.items()},
        "residual": {m: {"residual": [1.0 / t for t in range(1, 7)], "drift": [0.0] * 6, "images": 2}
                     for m in ("backbone.fpn_recurrent3", "mean")},
    }
    return {
        "machine": stab.machine_info(), "config_file": "c.yaml", "iters": 5, "dataset": "val",
        "val_images": 4, "residual_images": 2, "test_steps": [1, 3, 6], "residual_steps": 6,
        "arms": [arm("bptt", 1, {1: 50.0, 3: 20.0, 6: 10.0}), arm("crbp", 3, {1: 30.0, 3: 60.0, 6: 61.0})],
    }


def test_markdown_json_and_png(tmp_path):
    report = _report()
    text = stab.write_report(report, str(tmp_path))
    assert json.loads((tmp_path / "stability.json").read_text())["test_steps"] == [1, 3, 6]
    assert (tmp_path / "stability.md").read_text() == text
    assert "Machine: " in text and report["machine"]["cpu"] in text
    rows = [line for line in text.splitlines() if line.startswith("| bptt_1 |")]
    # PQ row: arm, T, train s, PQ at train end, t=1 (bold: trained), t=3, t=6, residual@T, @2T, drift@2T
    assert rows[0] == "| bptt_1 | 1 | 5 | 12 | 50.0 | **50.0** | 20.0 | 10.0 | 1.0e+00 | 5.0e-01 | 0.0e+00 |"
    assert rows[1] == "| bptt_1 | 1 | **49.0** | 19.0 | 9.0 |"  # PQ Things
    crbp = [line for line in text.splitlines() if line.startswith("| crbp_3 |")][0]
    assert "**60.0**" in crbp and crbp.endswith("| 3.3e-01 | 1.7e-01 | 0.0e+00 |")
    stab.plot(report, str(tmp_path / "stability.png"))
    assert (tmp_path / "stability.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_config_and_residuals_of_a_real_model(tmp_path):
    """An arm directory as training leaves it (config.yaml + weights): the test steps are set
    through the config, and the residual capture finds every recurrent FPN level."""
    cfg = tiny_cfg(CONFIG, "DATASETS.TEST", "('synthetic_panoptic_tiny_val_separated',)",
                   "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "MODEL.CRBP.TEST_TOL", "0.5")
    (tmp_path / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(0)
    model = stab.build_model(cfg)
    torch.save({"model": model.state_dict()}, tmp_path / "model_final.pth")

    eval_cfg = stab.arm_eval_config(str(tmp_path), 7)
    assert eval_cfg.MODEL.CRBP.TEST_STEPS == 7 and eval_cfg.MODEL.CRBP.TEST_TOL == 0
    assert eval_cfg.MODEL.DEVICE == "cpu"
    loaded = stab.load_model(eval_cfg, str(tmp_path / "model_final.pth"))
    modules = stab.recurrent_modules(loaded)
    assert {n for n, _ in modules} == {f"backbone.fpn_recurrent{k}" for k in (3, 4, 5)}
    assert all(m.test_steps == 7 and m.test_tol == 0 and not m.training for _, m in modules)
    trained, restored = model.state_dict(), loaded.state_dict()
    keys = [k for k in trained if "fpn_recurrent" in k]
    assert keys and all(torch.equal(trained[k], restored[k]) for k in keys)

    inputs = stab.residual_inputs(eval_cfg, 1)
    assert len(inputs) == 1 and inputs[0]["image"].shape[-2:] == (64, 64)
    curves = stab.residual_curves(loaded, inputs, 4, 2)
    assert set(curves) == {n for n, _ in modules} | {"mean"}
    for curve in curves.values():
        assert len(curve["residual"]) == 4 and curve["residual"][0] == pytest.approx(1.0)
        assert curve["drift"][1] == 0 and all(r >= 0 for r in curve["residual"])
