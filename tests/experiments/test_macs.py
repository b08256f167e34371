"""crbp_panoptic.experiments.macs on the synthetic configs at a tiny size."""

import pytest

from crbp_panoptic.experiments.macs import config_macs, parse_variant

from tests.tiny import REPO

SYN = str(REPO / "configs/Synthetic-PanopticSegmentation")


def test_parse_variant():
    assert parse_variant("a.yaml") == ("a.yaml", [])
    assert parse_variant("a.yaml::K.A=1::K.B=['p4']") == ("a.yaml", ["K.A", "1", "K.B", "['p4']"])
    with pytest.raises(ValueError, match=r"override 'K.A' must be KEY=VALUE"):
        parse_variant("a.yaml::K.A")


def test_recurrent_fpn_macs_are_steps_times_the_cell_on_each_level():
    """P5 of a 64x64 image is 2x2: per step and position two 3x3 and two 1x1 C -> C
    convolutions and fvcore's 5 per element for each of the two GroupNorms."""
    c, steps = 64, 3
    opts = ["MODEL.CRBP.FPN_LEVELS", "['p5']", "MODEL.CRBP.TEST_STEPS", steps]
    out = config_macs(f"{SYN}/panoptic_crbp_fpn_R_18_quick.yaml", opts, (64, 64), (1,))
    assert out["steps"] == steps
    assert out["recurrent"] == steps * 4 * (2 * 9 * c * c + 2 * c * c + 2 * 5 * c)
    ff = config_macs(f"{SYN}/panoptic_fpn_R_18_quick.yaml", (), (64, 64), (1,))
    assert ff["recurrent"] == 0 and ff["steps"] == 0
    assert out["backbone"] == ff["backbone"]  # the recurrence is all that differs there


def test_mask_head_macs_grow_with_detections_and_steps():
    config = f"{SYN}/panoptic_crbp_mask_R_18_quick.yaml"
    two = config_macs(config, ["MODEL.CRBP.TEST_STEPS", 2], (64, 64), (1, 4))
    four = config_macs(config, ["MODEL.CRBP.TEST_STEPS", 4], (64, 64), (1,))
    assert two["mask"][4] == pytest.approx(4 * two["mask"][1])
    c, positions = 64, 14 * 14
    per_step = positions * (2 * 9 * c * c + 2 * c * c + 2 * 5 * c)
    assert four["mask"][1] - two["mask"][1] == pytest.approx(2 * per_step)
