"""TorchScript tracing of both recurrent placements: traced == eager, steps frozen in the trace."""

import sys

import pytest
import torch

from crbp_panoptic.engine.export import (
    eager_raw_outputs,
    fixed_test_steps,
    import_tracing_adapter,
    trace_panoptic,
    traced_outputs,
)
from crbp_panoptic.modeling import recurrent_modules

from tests.tiny import CONFIGS, TINY, load_tool, tiny_cfg

PLACEMENTS = ["panoptic_crbp_fpn_R_18_quick.yaml", "panoptic_crbp_mask_R_18_quick.yaml"]


def _model(config, *opts):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return build_model(tiny_cfg(f"Synthetic-PanopticSegmentation/{config}", *opts)).eval()


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).float()


def _assert_same(eager, traced):
    torch.testing.assert_close(traced["sem_seg"], eager["sem_seg"], rtol=0, atol=0)
    fields = eager["instances"].get_fields()
    assert set(traced["instances"].get_fields()) == set(fields)
    assert len(eager["instances"]) > 0
    for key, value in fields.items():
        other = traced["instances"].get(key)
        torch.testing.assert_close(
            getattr(other, "tensor", other), getattr(value, "tensor", value), rtol=0, atol=0
        )


@pytest.mark.parametrize(
    "config, solver",
    [(PLACEMENTS[0], "fixed_point"), (PLACEMENTS[1], "fixed_point"), (PLACEMENTS[1], "anderson")],
)
def test_traced_model_gives_the_eager_outputs_on_other_images(config, solver):
    model = _model(config, "MODEL.CRBP.TEST_SOLVER", solver)
    traced, adapter = trace_panoptic(model, _image(64, 96, 0), steps=3)
    for image in (_image(64, 96, 0), _image(64, 96, 1), _image(96, 70, 2)):  # new content, size
        _assert_same(eager_raw_outputs(model, image, 3), traced_outputs(traced, adapter, image))


def test_steps_are_frozen_into_the_trace_and_restored_afterwards():
    model = _model(PLACEMENTS[1])
    refiner = dict(recurrent_modules(model))["roi_heads.mask_head.mask_recurrent"]
    refiner.test_tol = 1e-3
    traced, adapter = trace_panoptic(model, _image(64, 96, 0), steps=6)
    assert (refiner.test_steps, refiner.test_tol) == (0, 1e-3)  # restored
    image = _image(64, 96, 1)
    out = traced_outputs(traced, adapter, image)
    _assert_same(eager_raw_outputs(model, image, 6), out)
    three = eager_raw_outputs(model, image, 3)["instances"].pred_masks
    assert not torch.equal(three, out["instances"].pred_masks)
    with fixed_test_steps(model) as used:
        assert used == {"roi_heads.mask_head.mask_recurrent": 3} and refiner.test_tol == 0


def test_tool_writes_a_torchscript_file_that_loads_and_matches(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    model = _model(PLACEMENTS[0])
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    config = str(CONFIGS / "Synthetic-PanopticSegmentation" / PLACEMENTS[0])
    tool = load_tool("export_model")
    path, diff = tool.main(
        [
            "--config-file",
            config,
            "--output",
            str(tmp_path / "exported"),
            "--format",
            "torchscript",
            "--export-method",
            "tracing",
            "--steps",
            "2",
            *[str(v) for v in TINY],
            "MODEL.WEIGHTS",
            str(tmp_path / "model_final.pth"),
        ]
    )
    assert diff == 0
    loaded = torch.jit.load(path)
    cfg = tiny_cfg(f"Synthetic-PanopticSegmentation/{PLACEMENTS[0]}")
    image = tool.sample_image(cfg)
    assert image.shape == (3, 128, 128)  # INPUT.MIN_SIZE_TEST of the synthetic configs
    _, adapter = trace_panoptic(model, image, steps=2)  # the weights the tool loaded
    with torch.no_grad():
        reloaded = adapter.outputs_schema(loaded(image))[0]
    _assert_same(eager_raw_outputs(model, image, 2), reloaded)


def test_a_broken_detectron2_export_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "detectron2.export", None)
    with pytest.raises(RuntimeError, match="caffe2.*tools/install_detectron2.py"):
        import_tracing_adapter()
