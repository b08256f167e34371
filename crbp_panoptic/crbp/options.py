"""The engine's choices, declared once, and the one place their values are checked.

:func:`check_cell_args` and :func:`check_refiner_args` validate keyword arguments of
:class:`~crbp_panoptic.crbp.HGRUCell` and :class:`~crbp_panoptic.crbp.RecurrentRefiner`.
The modules call them when they are built; the Detectron2 builders call them first with
``labels`` that map each argument to its config key, so an error names
``MODEL.CRBP.STEPS`` rather than ``steps``. Nothing is re-checked in ``forward``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Mapping, Optional, Tuple

from .solvers import SOLVERS

__all__ = [
    "MODES",
    "GATE_BIAS_INITS",
    "LCP_KINDS",
    "LCP_REDUCTIONS",
    "NORMS",
    "PENALISED_MODES",
    "UNROLLED_MODES",
    "VARIANTS",
    "check_cell_args",
    "check_refiner_args",
]

#: Gradient modes (``MODEL.CRBP.GRAD``), in the order of the paper's table.
MODES: Tuple[str, ...] = ("bptt", "cbptt", "rbp", "crbp")
#: Modes that back-propagate through the unrolled iterations.
UNROLLED_MODES: Tuple[str, ...] = ("bptt", "cbptt")
#: Modes that add the Lipschitz-coefficient penalty.
PENALISED_MODES: Tuple[str, ...] = ("cbptt", "crbp")
#: hGRU normalisations: GroupNorm, BatchNorm with batch statistics, none.
NORMS: Tuple[str, ...] = ("GN", "BN", "none")
#: hGRU variants: the authors' COCO cell, the authors' Pathfinder cell, and ours with the
#: kappa/omega excitation (equations in :mod:`~crbp_panoptic.crbp.hgru`).
VARIANTS: Tuple[str, ...] = ("less_softplus", "pathfinder", "kappa_omega")
#: hGRU gate-bias draws: ``log U(lo, hi)`` (chronos, as intended) or the raw ``U(lo, hi)``
#: (what the authors' code did).
GATE_BIAS_INITS: Tuple[str, ...] = ("chronos", "raw")
#: LCP reductions over the state's elements: the mean, or the sum (the authors' COCO model).
LCP_REDUCTIONS: Tuple[str, ...] = ("mean", "sum")
#: Penalty kinds: the paper's signed Jacobian column sums (``colsum``), or the growth of ``J``
#: along the forward's last difference, an estimate of the growth per Neumann term
#: (``spectral``, see :mod:`.lcp`).
LCP_KINDS: Tuple[str, ...] = ("colsum", "spectral")


class _Checker:
    def __init__(self, labels: Optional[Mapping[str, str]]):
        self.labels = labels or {}

    def fail(self, name: str, value: Any, allowed: str):
        raise ValueError(f"{self.labels.get(name, name)}={value!r}; {allowed}")

    def integer(self, name: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            self.fail(name, value, f"expected an integer >= {low}")

    def real(self, name: str, value: Any, low: float, strict: bool = False) -> None:
        ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < low or (strict and value == low):
            self.fail(name, value, f"expected a finite number {'>' if strict else '>='} {low}")

    def choice(self, name: str, value: Any, choices) -> None:
        if value not in choices:
            self.fail(name, value, f"choose from {sorted(choices)}")


def check_cell_args(labels: Optional[Mapping[str, str]] = None, **kwargs: Any) -> None:
    """Validate :class:`~crbp_panoptic.crbp.HGRUCell` keyword arguments (those given).

    Args:
        labels: display names of the arguments in error messages (default: their names).
        **kwargs: ``channels``, ``kernel_size``, ``dilation``, ``norm``, ``num_groups``, ``gala``,
            ``variant``, ``norm_gain``, ``gate_bias_range``, ``gate_bias_init``.

    Raises:
        ValueError: naming the argument (or its label), the value and what is allowed.
    """
    check = _Checker(labels)
    if "channels" in kwargs:
        check.integer("channels", kwargs["channels"], 1)
    if "kernel_size" in kwargs:
        k = kwargs["kernel_size"]
        check.integer("kernel_size", k, 1)
        if k % 2 == 0:
            check.fail("kernel_size", k, "expected an odd integer (same-size padding)")
    if "dilation" in kwargs:
        check.integer("dilation", kwargs["dilation"], 1)
    if "norm" in kwargs:
        check.choice("norm", kwargs["norm"], NORMS)
    if "variant" in kwargs:
        check.choice("variant", kwargs["variant"], VARIANTS)
    if "gate_bias_init" in kwargs:
        check.choice("gate_bias_init", kwargs["gate_bias_init"], GATE_BIAS_INITS)
    if "norm_gain" in kwargs:
        check.real("norm_gain", kwargs["norm_gain"], 0.0, strict=True)
    if "gate_bias_range" in kwargs:
        pair = kwargs["gate_bias_range"]
        ok = isinstance(pair, (tuple, list)) and len(pair) == 2
        ok = ok and all(isinstance(v, Real) and math.isfinite(v) for v in pair)
        if not ok or not 0 < pair[0] <= pair[1]:
            check.fail("gate_bias_range", pair, "expected [lo, hi] with 0 < lo <= hi")
    if kwargs.get("norm", "GN") == "GN" and "num_groups" in kwargs:
        groups = kwargs["num_groups"]
        check.integer("num_groups", groups, 1)
        channels = kwargs.get("channels")
        if channels is not None and channels % groups:
            check.fail("num_groups", groups, f"must divide the channel count {channels}")


_CELL_ARGS = (
    "channels",
    "kernel_size",
    "dilation",
    "norm",
    "num_groups",
    "gala",
    "variant",
    "norm_gain",
    "gate_bias_range",
    "gate_bias_init",
)


def check_refiner_args(labels: Optional[Mapping[str, str]] = None, **kwargs: Any) -> None:
    """Validate :class:`~crbp_panoptic.crbp.RecurrentRefiner` keyword arguments (those given).

    Cell arguments among ``kwargs`` are passed on to :func:`check_cell_args`.

    Raises:
        ValueError: naming the argument (or its label), the value and what is allowed.
    """
    check = _Checker(labels)
    get = kwargs.get
    if "mode" in kwargs:
        check.choice("mode", kwargs["mode"], MODES)
    for name, low in (
        ("steps", 1),
        ("test_steps", 0),
        ("neumann_steps", 0),
        ("lcp_crop", 0),
        ("anderson_m", 1),
    ):
        if name in kwargs:
            check.integer(name, kwargs[name], low)
    for name in ("neumann_tol", "forward_tol", "test_tol"):
        if name in kwargs:
            check.real(name, kwargs[name], 0.0)
    if "lcp_tau" in kwargs:
        tau = kwargs["lcp_tau"]
        check.real("lcp_tau", tau, 0.0, strict=True)
        if tau > 1:
            check.fail("lcp_tau", tau, "expected 0 < tau <= 1 (a bound that asks for contraction)")
    if "lcp_reduction" in kwargs:
        check.choice("lcp_reduction", kwargs["lcp_reduction"], LCP_REDUCTIONS)
    if "lcp_kind" in kwargs:
        check.choice("lcp_kind", kwargs["lcp_kind"], LCP_KINDS)
        if kwargs["lcp_kind"] == "spectral" and get("lcp_reduction", "mean") != "mean":
            kind = check.labels.get("lcp_kind", "lcp_kind")
            check.fail(
                "lcp_reduction",
                kwargs["lcp_reduction"],
                f"with {kind}='spectral' the penalty acts on the largest row growth, not a "
                "sum over elements: use 'mean'",
            )
    for name in ("solver", "test_solver"):
        if get(name) is not None:
            check.choice(name, kwargs[name], SOLVERS)
    sub = get("lcp_subsample")
    if sub is not None:
        fraction = isinstance(sub, float) and 0 < sub <= 1
        count = isinstance(sub, Integral) and not isinstance(sub, bool) and sub >= 1
        if not (fraction or count):
            check.fail(
                "lcp_subsample",
                sub,
                "expected None (exact), a fraction in (0, 1] or a row count >= 1",
            )
        if get("lcp_crop"):
            other = check.labels.get("lcp_subsample", "lcp_subsample")
            check.fail(
                "lcp_crop",
                kwargs["lcp_crop"],
                f"choose at most one cheap penalty ({other}={sub!r})",
            )
    if get("mode") in UNROLLED_MODES and get("solver", "fixed_point") != "fixed_point":
        check.fail(
            "solver",
            kwargs["solver"],
            f"with mode={kwargs['mode']!r} (BPTT differentiates through the iterations) "
            "train with 'fixed_point'; test_solver may be 'anderson'",
        )
    cell = {k: v for k, v in kwargs.items() if k in _CELL_ARGS}
    check_cell_args(labels, **cell)
