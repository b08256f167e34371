"""Read ``MODEL.CRBP`` once, turning it into plain keyword arguments.

Only the registered builders call this; modules never see the config. Values are checked
by the engine's own rules (:mod:`crbp_panoptic.crbp.options`) with each argument labelled
by its config key, so an error names ``MODEL.CRBP.<KEY>`` and what is allowed, when the
model is built.
"""

import math

from crbp_panoptic.crbp.options import check_refiner_args

__all__ = [
    "diagnostics_period",
    "fpn_channels",
    "fpn_levels",
    "lcp_weight",
    "mask_head_lr_factor",
    "mask_output_norm",
    "mask_train_rois",
    "refiner_args",
]

#: Refiner / cell keyword argument -> the MODEL.CRBP key it comes from.
KEYS = {
    "kernel_size": "KERNEL_SIZE",
    "dilation": "DILATION",
    "norm": "NORM",
    "num_groups": "NUM_GROUPS",
    "norm_gain": "NORM_GAIN",
    "gate_bias_range": "GATE_BIAS_RANGE",
    "gala": "GALA",
    "variant": "CELL",
    "gate_bias_init": "GATE_BIAS_INIT",
    "lcp_reduction": "LCP_REDUCTION",
    "lcp_kind": "LCP_KIND",
    "mode": "GRAD",
    "steps": "STEPS",
    "test_steps": "TEST_STEPS",
    "neumann_steps": "NEUMANN_STEPS",
    "lcp_tau": "LCP_TAU",
    "lcp_subsample": "LCP_SUBSAMPLE",
    "lcp_crop": "LCP_CROP",
    "solver": "SOLVER",
    "test_solver": "TEST_SOLVER",
    "forward_tol": "FORWARD_TOL",
    "test_tol": "TEST_TOL",
    "neumann_tol": "NEUMANN_TOL",
}
_LABELS = {arg: f"MODEL.CRBP.{key}" for arg, key in KEYS.items()}


def _fail(key, value, allowed):
    raise ValueError(f"MODEL.CRBP.{key}={value!r}; {allowed}")


def lcp_weight(cfg):
    """``MODEL.CRBP.LCP_WEIGHT`` as a float, validated (a finite number >= 0)."""
    value = cfg.MODEL.CRBP.LCP_WEIGHT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        _fail("LCP_WEIGHT", value, "expected a finite number >= 0")
    return float(value)


def mask_head_lr_factor(cfg):
    """``MODEL.CRBP.MASK_HEAD_LR_FACTOR`` as a float, validated (a finite number > 0)."""
    value = cfg.MODEL.CRBP.MASK_HEAD_LR_FACTOR
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        _fail(
            "MASK_HEAD_LR_FACTOR",
            value,
            "expected a finite number > 0 (1 = the mask head learns at SOLVER.BASE_LR like the "
            "rest of the model)",
        )
    return float(value)


def diagnostics_period(cfg):
    """``MODEL.CRBP.DIAGNOSTICS_PERIOD`` as an int, validated (>= 0)."""
    value = cfg.MODEL.CRBP.DIAGNOSTICS_PERIOD
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail("DIAGNOSTICS_PERIOD", value, "expected an integer >= 0 (0 = never)")
    return value


def mask_train_rois(cfg):
    """``MODEL.CRBP.MASK_TRAIN_ROIS`` as an int, validated (>= 0)."""
    value = cfg.MODEL.CRBP.MASK_TRAIN_ROIS
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail("MASK_TRAIN_ROIS", value, "expected an integer >= 0 (0 = every foreground ROI)")
    return value


#: Allowed ``MODEL.CRBP.MASK_OUTPUT_NORM`` values ("" = none).
MASK_OUTPUT_NORMS = ("", "GN", "BN", "SyncBN")


def mask_output_norm(cfg, channels):
    """``MODEL.CRBP.MASK_OUTPUT_NORM``, validated (one of :data:`MASK_OUTPUT_NORMS`; for
    "GN", ``MODEL.CRBP.NUM_GROUPS`` must divide the ``channels`` of the ROI features)."""
    value = cfg.MODEL.CRBP.MASK_OUTPUT_NORM
    if value not in MASK_OUTPUT_NORMS:
        _fail("MASK_OUTPUT_NORM", value, f"choose from {list(MASK_OUTPUT_NORMS)} ('' = none)")
    groups = cfg.MODEL.CRBP.NUM_GROUPS
    if value == "GN" and (not isinstance(groups, int) or groups < 1 or channels % groups):
        _fail("NUM_GROUPS", groups, f"must divide the channel count {channels} (MASK_OUTPUT_NORM)")
    return value


def _subsample(value):
    # 0 = exact; a fraction in (0, 1) or a whole row count (YAML may spell it 8.0).
    if isinstance(value, float) and value >= 1 and value == int(value):
        return int(value)
    return None if value == 0 else value


def _gate_bias_range(value, steps):
    pair = list(value)
    if len(pair) == 2 and pair[1] == 0 and isinstance(steps, int):
        pair[1] = float(max(steps - 1, pair[0]))
    return pair


def refiner_args(cfg, channels):
    """Keyword arguments for :class:`crbp_panoptic.crbp.RecurrentRefiner` from ``MODEL.CRBP``.

    Args:
        cfg (CfgNode): a config that went through ``add_crbp_config``.
        channels (int): channel count of the drive and state of the hGRU being built.

    Returns:
        dict: ``RecurrentRefiner`` keyword arguments, those of its ``HGRUCell`` included.

    Raises:
        ValueError: naming the key, the value and the allowed values.
    """
    c = cfg.MODEL.CRBP
    kwargs = {arg: c[key] for arg, key in KEYS.items()}
    kwargs["gala"] = bool(kwargs["gala"])
    kwargs["test_solver"] = kwargs["test_solver"] or None
    kwargs["lcp_subsample"] = _subsample(kwargs["lcp_subsample"])
    kwargs["gate_bias_range"] = _gate_bias_range(kwargs["gate_bias_range"], kwargs["steps"])
    check_refiner_args(_LABELS, channels=channels, **kwargs)
    kwargs["gate_bias_range"] = tuple(kwargs["gate_bias_range"])
    return {"channels": channels, **kwargs}


def fpn_levels(cfg, available):
    """``MODEL.CRBP.FPN_LEVELS`` validated against the FPN's lateral levels (``p2``..``p5``)."""
    levels = list(cfg.MODEL.CRBP.FPN_LEVELS)
    unknown = [lvl for lvl in levels if lvl not in available]
    if unknown or not levels or len(set(levels)) != len(levels):
        _fail("FPN_LEVELS", levels, f"expected distinct levels from {list(available)}")
    return levels


def fpn_channels(cfg, out_channels):
    """The recurrent FPN's hGRU channels: ``MODEL.CRBP.FPN_CHANNELS``, or the FPN's own."""
    value = cfg.MODEL.CRBP.FPN_CHANNELS
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail("FPN_CHANNELS", value, "expected an integer >= 0 (0 = MODEL.FPN.OUT_CHANNELS)")
    return value or out_channels
