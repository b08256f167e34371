"""record_dynamics and tools/visualize_dynamics.py: the recorded trajectory is the refiner's own."""

import json

import pytest
import torch
from PIL import Image

from crbp_panoptic.data import generate_split
from crbp_panoptic.engine.dynamics import record_dynamics
from crbp_panoptic.modeling import recurrent_modules

from tests.tiny import CONFIGS, TINY, load_tool, tiny_cfg

MASK_CONFIG = "Synthetic-PanopticSegmentation/panoptic_crbp_mask_R_18_quick.yaml"
BOTH = [
    "MODEL.BACKBONE.NAME",
    "build_resnet_crbp_fpn_backbone",
    "MODEL.CRBP.FPN_LEVELS",
    "['p3', 'p4']",
]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    split_dir = generate_split(str(tmp_path_factory.mktemp("dyn") / "val"), "val", 1, (64, 64), 0)
    return split_dir + "/images/val_000000.jpg"


def _model():
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return build_model(tiny_cfg(MASK_CONFIG, *BOTH)).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8)}]


def test_recorded_states_reach_the_refiners_own_output():
    model = _model()
    refiners = recurrent_modules(model)
    names = [n for n, _ in refiners]
    assert len(names) == 3 and "roi_heads.mask_head.mask_recurrent" in names  # p3, p4, mask head
    with torch.no_grad():
        plain = model(_inputs())[0]["panoptic_seg"][0]
        with record_dynamics(model, steps=7) as records:
            recorded = model(_inputs())[0]["panoptic_seg"][0]
    assert torch.equal(plain, recorded)  # recording leaves the prediction alone
    for name, refiner in refiners:
        (trajectory,) = records[name]
        trained = refiner.test_steps or refiner.steps
        assert trajectory.trained_steps == trained == 3  # tests/tiny.py: MODEL.CRBP.STEPS 3
        assert len(trajectory.states) == len(trajectory.residuals) == 7
        torch.testing.assert_close(trajectory.states[trained - 1], refiner.last_result.state)
        assert trajectory.residuals[0] == pytest.approx(1.0)
        assert trajectory.residuals[-1] < trajectory.residuals[1]
    assert all(not r._forward_pre_hooks for _, r in refiners)  # hooks removed on exit


def test_training_mode_is_not_recorded_and_a_feedforward_model_is_refused():
    from detectron2.modeling import build_model

    model = _model()
    with record_dynamics(model) as records:
        model.train()
        model.backbone(torch.zeros(1, 3, 64, 64))
    assert all(not calls for calls in records.values())
    ff = build_model(tiny_cfg("Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml"))
    with pytest.raises(ValueError, match="no RecurrentRefiner"):
        with record_dynamics(ff):
            pass


def test_tool_writes_grids_and_gifs_with_one_frame_per_step(image_path, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(_model(), save_dir=str(tmp_path)).save("model_final")
    out = tmp_path / "dyn"
    summary = load_tool("visualize_dynamics").main(
        [
            "--config-file",
            str(CONFIGS / MASK_CONFIG),
            "--input",
            image_path,
            "--output",
            str(out),
            "--steps",
            "5",
            "--top",
            "2",
            *[str(v) for v in TINY],
            *BOTH,
            "MODEL.WEIGHTS",
            str(tmp_path / "model_final.pth"),
        ]
    )
    assert set(summary) == {n for n, _ in recurrent_modules(_model())}
    for name, info in summary.items():
        assert "skipped" not in info, info
        with Image.open(out / f"{name}.gif") as gif:
            assert gif.n_frames == info["frames"] == 5
        with Image.open(out / f"{name}_steps.png") as grid:
            rows = 2 if "mask_head" in name else 1
            assert grid.size[0] == 2 + 5 * (48 + 2)  # 5 columns of 48 px (square maps)
            assert grid.size[1] == 14 + 2 + rows * (48 + 2)
    residuals = json.loads((out / "residuals.json").read_text())
    assert {k: len(v["residuals"]) for k, v in residuals.items()} == dict.fromkeys(summary, 5)
    assert (out / "residuals.png").stat().st_size > 0


def test_tool_names_a_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        load_tool("visualize_dynamics").main(
            [
                "--config-file",
                str(CONFIGS / MASK_CONFIG),
                "--input",
                str(tmp_path / "nope.png"),
                "--output",
                str(tmp_path / "out"),
            ]
        )
    assert not (tmp_path / "out").exists()
