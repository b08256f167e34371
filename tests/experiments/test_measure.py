"""crbp_panoptic.experiments.measure: the step measurement, parameters, multiply-adds."""

import pytest
import torch

from crbp_panoptic.experiments.measure import (
    config_macs,
    measure_step,
    parameter_counts,
    peak_allocated_bytes,
)

from tests.tiny import REPO, tiny_cfg

MIB = 1 << 20
SYN = str(REPO / "configs/Synthetic-PanopticSegmentation")


def test_peak_allocated_bytes_follows_allocations_and_frees():
    def step():
        a = torch.empty(MIB, dtype=torch.uint8)
        b = torch.empty(2 * MIB, dtype=torch.uint8)
        del a, b  # 3 MiB at the peak
        return torch.empty(MIB, dtype=torch.uint8)

    assert peak_allocated_bytes(step) == 3 * MIB


def test_peak_allocated_bytes_ignores_tensors_alive_before_the_call():
    before = torch.empty(8 * MIB, dtype=torch.uint8)
    # an in-place update allocates nothing but the wrapped scalar (a few bytes)
    assert peak_allocated_bytes(lambda: before.add_(1)) < 64


def test_measure_step_times_after_warmup_then_measures_one_more_call():
    calls, cleared = [], []

    def step():
        calls.append(1)
        a = torch.empty(2 * MIB, dtype=torch.uint8)
        del a

    m = measure_step(
        step, iters=3, warmup=2, memory="allocated", before_each=lambda: cleared.append(1)
    )
    assert len(calls) == 2 + 3 + 1 and len(cleared) == len(calls)
    assert len(m["times"]) == len(m["cpu_times"]) == 3
    assert m["fastest"] == min(m["times"]) <= m["seconds"] == sorted(m["times"])[1]
    assert m["peak_bytes"] == 2 * MIB
    assert "peak_bytes" not in measure_step(step, iters=1)
    rss = measure_step(step, iters=1, memory="rss", mem_iters=2)
    assert len(rss["rss_mib_all"]) == 2 and rss["rss_mib"] == min(rss["rss_mib_all"])
    with pytest.raises(ValueError, match="memory='bytes'; choose from"):
        measure_step(step, memory="bytes")


def test_parameter_counts_split_the_model():
    from detectron2.modeling import build_model

    from crbp_panoptic.modeling import recurrent_modules

    mask = "Synthetic-PanopticSegmentation/panoptic_crbp_mask_R_18_quick.yaml"
    model = build_model(tiny_cfg(mask, "MODEL.BACKBONE.FREEZE_AT", "2"))
    c = parameter_counts(model)
    everything = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert c["total"] == everything and c["trainable"] == everything - frozen and frozen > 0
    assert c["backbone"] == sum(p.numel() for p in model.backbone.parameters())
    assert c["mask_head"] == sum(p.numel() for p in model.roi_heads.mask_head.parameters())
    refiner = sum(p.numel() for _, m in recurrent_modules(model) for p in m.parameters())
    assert c["recurrent"] == refiner > 0
    ff = build_model(tiny_cfg("Synthetic-PanopticSegmentation/panoptic_fpn_R_18_quick.yaml"))
    assert parameter_counts(ff)["recurrent"] == 0


def _macs(config, opts, size, rois):
    from detectron2.modeling import build_model

    from crbp_panoptic.engine import setup_cfg

    base = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.CRBP.TEST_TOL", 0.0]
    cfg = setup_cfg(config, base + list(opts))
    return config_macs(build_model(cfg).eval(), cfg, size, rois)


def test_recurrent_fpn_macs_are_steps_times_the_cell_on_each_level():
    """P5 of a 64x64 image is 2x2: per step and position two 3x3 and two 1x1 C -> C
    convolutions and fvcore's 5 per element for each of the two GroupNorms."""
    c, steps = 64, 3
    opts = ["MODEL.CRBP.FPN_LEVELS", "['p5']", "MODEL.CRBP.TEST_STEPS", steps]
    out = _macs(f"{SYN}/panoptic_crbp_fpn_R_18_quick.yaml", opts, (64, 64), (1,))
    assert out["steps"] == steps
    assert out["recurrent"] == steps * 4 * (2 * 9 * c * c + 2 * c * c + 2 * 5 * c)
    ff = _macs(f"{SYN}/panoptic_fpn_R_18_quick.yaml", (), (64, 64), (1,))
    assert ff["recurrent"] == 0 and ff["steps"] == 0
    assert out["backbone"] == ff["backbone"]  # the recurrence is all that differs there


def test_mask_head_macs_grow_with_detections_and_steps():
    config = f"{SYN}/panoptic_crbp_mask_R_18_quick.yaml"
    two = _macs(config, ["MODEL.CRBP.TEST_STEPS", 2], (64, 64), (1, 4))
    four = _macs(config, ["MODEL.CRBP.TEST_STEPS", 4], (64, 64), (1,))
    assert two["mask"][4] == pytest.approx(4 * two["mask"][1])
    c, positions = 64, 14 * 14
    per_step = positions * (2 * 9 * c * c + 2 * c * c + 2 * 5 * c)
    assert four["mask"][1] - two["mask"][1] == pytest.approx(2 * per_step)
