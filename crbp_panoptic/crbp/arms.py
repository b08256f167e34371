"""One grammar for naming a training arm: a gradient mode, a step count and a penalty.

Every command-line tool that compares training rules takes arms in this form::

    ff                   the feedforward model (no recurrence)
    MODE:STEPS           e.g. bptt:3, rbp:20, crbp:20 (the paper's C-RBP), cbptt:5
    MODE:STEPS:OPTION... any of these options, each at most once, in any order:
        subF             LCP on a fraction F (or a count, if F >= 1) of the batch rows
        cropS            LCP on a random S x S window of positions
        spectral         the spectral penalty (growth of J per step) instead of the column sums
        kN               at most N >= 0 Neumann terms in the RBP backward; k0 is the
                         one-step ("Jacobian-free") gradient: same forward, g alone
                         enters the recorded step

``MODE`` is one of :data:`~crbp_panoptic.crbp.MODES` (the value of ``MODEL.CRBP.GRAD``).
The penalty options need a penalised mode (``crbp``, ``cbptt``), ``kN`` an RBP mode
(``rbp``, ``crbp``). Examples: ``crbp:20:spectral`` (C-RBP with the spectral penalty),
``crbp:20:k0`` (the one-step-gradient control of C-RBP-20: same cell, forward and
penalty). Labels for tables (:attr:`Arm.label`) follow the paper's spelling: ``C-RBP-20``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

from .options import LCP_KINDS, MODES, PENALISED_MODES, UNROLLED_MODES

__all__ = ["Arm", "FEEDFORWARD", "parse_arm"]

#: The arm name of the feedforward model.
FEEDFORWARD = "ff"

_LABELS = {"bptt": "BPTT", "cbptt": "C-BPTT", "rbp": "RBP", "crbp": "C-RBP"}


@dataclasses.dataclass(frozen=True)
class Arm:
    """A parsed arm.

    Attributes:
        mode: a key of :data:`~crbp_panoptic.crbp.MODES`, or ``"ff"``.
        steps: training steps T (0 for ``"ff"``).
        lcp_subsample: cheap-penalty rows (fraction < 1 or count >= 1), or None.
        lcp_crop: cheap-penalty window side, 0 = off.
        lcp_kind: a key of :data:`~crbp_panoptic.crbp.LCP_KINDS` (``"colsum"``, the paper's).
        neumann_steps: the RBP backward's Neumann terms, or None (the tool's default).
    """

    mode: str
    steps: int = 0
    lcp_subsample: Union[None, int, float] = None
    lcp_crop: int = 0
    lcp_kind: str = "colsum"
    neumann_steps: Optional[int] = None

    @property
    def recurrent(self) -> bool:
        return self.mode != FEEDFORWARD

    @property
    def name(self) -> str:
        """The arm as written on a command line (``crbp:20:sub0.25``)."""
        if not self.recurrent:
            return FEEDFORWARD
        text = f"{self.mode}:{self.steps}"
        if self.lcp_subsample is not None:
            text += f":sub{self.lcp_subsample:g}"
        if self.lcp_crop:
            text += f":crop{self.lcp_crop}"
        if self.lcp_kind != "colsum":
            text += f":{self.lcp_kind}"
        if self.neumann_steps is not None:
            text += f":k{self.neumann_steps}"
        return text

    @property
    def one_step(self) -> bool:
        """Whether the arm trains with the one-step gradient (``k0``)."""
        return self.neumann_steps == 0

    @property
    def label(self) -> str:
        """The arm for a table (``C-RBP-20``, ``C-RBP-20 (LCP on 25% of rows)``)."""
        if not self.recurrent:
            return "feedforward"
        text = f"{_LABELS[self.mode]}-{self.steps}"
        if self.lcp_subsample is not None:
            share = self.lcp_subsample
            text += f" (LCP on {share:.0%} of rows)" if share < 1 else f" (LCP on {share:g} rows)"
        if self.lcp_crop:
            text += f" (LCP on a {self.lcp_crop}x{self.lcp_crop} crop)"
        if self.lcp_kind != "colsum":
            text += f" ({self.lcp_kind} penalty)"
        if self.one_step:
            text += " (one-step gradient)"
        elif self.neumann_steps is not None:
            text += f" ({self.neumann_steps} Neumann terms)"
        return text

    def refiner_kwargs(self, **defaults) -> dict:
        """:class:`~crbp_panoptic.crbp.RecurrentRefiner` keyword arguments that select this
        arm (``mode``, ``steps``, the cheap penalty, the penalty kind and the Neumann terms,
        where the arm sets them), over ``defaults`` (e.g. the tool's ``neumann_steps``)."""
        if not self.recurrent:
            raise ValueError(f"arm={self.name!r} has no recurrent module to build")
        kwargs = {**defaults, "mode": self.mode, "steps": self.steps}
        if self.lcp_subsample is not None:
            kwargs["lcp_subsample"] = self.lcp_subsample
        if self.lcp_crop:
            kwargs["lcp_crop"] = self.lcp_crop
        if self.lcp_kind != "colsum":
            kwargs["lcp_kind"] = self.lcp_kind
        if self.neumann_steps is not None:
            kwargs["neumann_steps"] = self.neumann_steps
        return kwargs

    def config_opts(self) -> list:
        """``MODEL.CRBP`` overrides (a Detectron2 ``KEY VALUE`` list) that select this arm.

        The penalty's kind is always set (``crbp:20`` is the paper's rule whatever the
        config says); the spectral kind also sets ``LCP_REDUCTION`` to ``mean``, the only
        reduction it takes. ``NEUMANN_STEPS`` is set only by a ``kN`` option.
        """
        if not self.recurrent:
            return []
        opts = [
            "MODEL.CRBP.GRAD",
            self.mode,
            "MODEL.CRBP.STEPS",
            self.steps,
            "MODEL.CRBP.LCP_SUBSAMPLE",
            float(self.lcp_subsample or 0.0),
            "MODEL.CRBP.LCP_CROP",
            self.lcp_crop,
            "MODEL.CRBP.LCP_KIND",
            self.lcp_kind,
        ]
        if self.lcp_kind == "spectral":
            opts += ["MODEL.CRBP.LCP_REDUCTION", "mean"]
        if self.neumann_steps is not None:
            opts += ["MODEL.CRBP.NEUMANN_STEPS", self.neumann_steps]
        return opts


_GRAMMAR = (
    "write 'ff' or MODE:STEPS[:subF|:cropS][:spectral][:kN] with MODE in "
    f"{sorted(MODES)}, e.g. bptt:3, crbp:20, crbp:20:sub0.25, crbp:20:crop32, "
    "crbp:20:spectral, crbp:20:k0"
)


def _fail(text: str, why: str):
    raise ValueError(f"arm={text!r}: {why}; {_GRAMMAR}")


def _cheap_penalty(text: str, option: str) -> Union[int, float]:
    """``subF`` -> a fraction or a count; ``cropS`` -> a side (as an int)."""
    try:
        if option.startswith("sub"):
            value = float(option[3:])
            if value <= 0 or (value >= 1 and value != int(value)):
                raise ValueError
            return value if value < 1 else int(value)
        crop = int(option[4:])
        if crop < 1:
            raise ValueError
        return crop
    except ValueError:
        _fail(text, f"option {option!r} must be subF (0 < F < 1, or a count) or cropS (S >= 1)")


def parse_arm(text: str) -> Arm:
    """Parse ``"ff"`` or ``MODE:STEPS`` with options (module docstring), e.g. ``"crbp:20"``,
    ``"crbp:20:sub0.25"``, ``"crbp:20:crop32"``, ``"crbp:20:spectral"``, ``"crbp:20:k0"``.

    Raises:
        ValueError: naming the text and the grammar.
    """
    if text.strip() == FEEDFORWARD:
        return Arm(FEEDFORWARD)
    parts = [p.strip() for p in text.split(":")]
    if len(parts) < 2:
        _fail(text, "expected at least 2 ':'-separated fields")
    mode, steps_text = parts[0].lower(), parts[1]
    if mode not in MODES:
        _fail(text, f"unknown mode {mode!r}")
    if not steps_text.isdigit() or int(steps_text) < 1:
        _fail(text, f"steps {steps_text!r} must be an integer >= 1")
    subsample: Optional[Union[int, float]] = None
    crop, kind, neumann = 0, "colsum", None
    seen = set()
    for option in parts[2:]:
        if option.startswith(("sub", "crop")):
            group = "cheap penalty (subF or cropS)"
        elif option in LCP_KINDS:
            group = f"penalty kind {list(LCP_KINDS)}"
        elif option.startswith("k"):
            group = "Neumann terms (kN)"
        else:
            _fail(text, f"unknown option {option!r}")
        if group in seen:
            _fail(text, f"option {option!r}: at most one {group}")
        seen.add(group)
        if option.startswith(("sub", "crop")) or option in LCP_KINDS:
            if mode not in PENALISED_MODES:
                _fail(text, f"option {option!r} needs a penalised mode {list(PENALISED_MODES)}")
        if option.startswith("sub"):
            subsample = _cheap_penalty(text, option)
        elif option.startswith("crop"):
            crop = _cheap_penalty(text, option)
        elif option in LCP_KINDS:
            kind = option
        else:
            if mode in UNROLLED_MODES:
                _fail(text, f"option {option!r} needs an RBP mode ['crbp', 'rbp']")
            if not option[1:].isdigit():
                _fail(text, f"option {option!r} must be kN with N an integer >= 0 (Neumann terms)")
            neumann = int(option[1:])
    return Arm(mode, int(steps_text), subsample, crop, kind, neumann)
