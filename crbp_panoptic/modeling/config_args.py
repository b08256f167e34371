"""Read and validate ``MODEL.CRBP`` once, turning it into plain keyword arguments.

Only the registered builders call this; modules never see the config. Every check
names the offending key and what is allowed, and runs when the model is built.
"""
from numbers import Integral, Real

from crbp_panoptic.crbp import MODES, NORMS, SOLVERS



def _fail(key, value, allowed):
    raise ValueError(f"MODEL.CRBP.{key}={value!r}; {allowed}")


def _int(c, key, low):
    value = c[key]
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        _fail(key, value, f"expected an integer >= {low}")
    return int(value)


def _real(c, key, low, strict=False):
    value = c[key]
    bad = isinstance(value, bool) or not isinstance(value, Real)
    if bad or value < low or (strict and value == low):
        _fail(key, value, f"expected a number {'>' if strict else '>='} {low}")
    return float(value)


def lcp_weight(cfg):
    """``MODEL.CRBP.LCP_WEIGHT`` as a float, validated."""
    return _real(cfg.MODEL.CRBP, "LCP_WEIGHT", 0.0)


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
    if c.GRAD not in MODES:
        _fail("GRAD", c.GRAD, f"choose from {sorted(MODES)}")
    if c.SOLVER not in SOLVERS:
        _fail("SOLVER", c.SOLVER, f"choose from {sorted(SOLVERS)}")
    if c.NORM not in NORMS:
        _fail("NORM", c.NORM, f"choose from {sorted(NORMS)}")
    kernel_size = _int(c, "KERNEL_SIZE", 1)
    if kernel_size % 2 == 0:
        _fail("KERNEL_SIZE", kernel_size, "expected an odd integer (same-size padding)")
    num_groups = _int(c, "NUM_GROUPS", 1)
    if c.NORM == "GN" and channels % num_groups:
        _fail("NUM_GROUPS", num_groups, f"must divide the recurrent channel count {channels}")
    subsample = _real(c, "LCP_SUBSAMPLE", 0.0)
    if subsample >= 1 and subsample != int(subsample):
        _fail("LCP_SUBSAMPLE", subsample, "expected 0 (exact), a fraction in (0, 1) or a row count >= 1")
    crop = _int(c, "LCP_CROP", 0)
    if crop and subsample:
        _fail("LCP_CROP", crop, f"choose at most one cheap penalty (MODEL.CRBP.LCP_SUBSAMPLE={subsample!r})")
    return {
        "channels": channels,
        "kernel_size": kernel_size,
        "norm": c.NORM,
        "num_groups": num_groups,
        "gala": bool(c.GALA),
        "mode": c.GRAD,
        "steps": _int(c, "STEPS", 1),
        "test_steps": _int(c, "TEST_STEPS", 0),
        "neumann_steps": _int(c, "NEUMANN_STEPS", 0),
        "lcp_tau": _real(c, "LCP_TAU", 0.0, strict=True),
        "lcp_subsample": None if subsample == 0 else (subsample if subsample < 1 else int(subsample)),
        "lcp_crop": crop,
        "solver": c.SOLVER,
        "forward_tol": _real(c, "FORWARD_TOL", 0.0),
        "test_tol": _real(c, "TEST_TOL", 0.0),
        "neumann_tol": _real(c, "NEUMANN_TOL", 0.0),
    }


def fpn_levels(cfg, available):
    """``MODEL.CRBP.FPN_LEVELS`` validated against the FPN's lateral levels (e.g. ``p2``..``p5``)."""
    levels = list(cfg.MODEL.CRBP.FPN_LEVELS)
    unknown = [lvl for lvl in levels if lvl not in available]
    if unknown or not levels or len(set(levels)) != len(levels):
        _fail("FPN_LEVELS", levels, f"expected distinct levels from {list(available)}")
    return levels
