"""One grammar for naming a training arm: a gradient mode, a step count and a penalty.

Every command-line tool that compares training rules takes arms in this form::

    ff                   the feedforward model (no recurrence)
    MODE:STEPS           e.g. bptt:3, rbp:20, crbp:20, cbptt:5
    MODE:STEPS:subF      LCP on a fraction F (or a count, if F >= 1) of the batch rows
    MODE:STEPS:cropS     LCP on a random S x S window of positions

``MODE`` is one of :data:`~crbp_panoptic.crbp.MODES` (the value of ``MODEL.CRBP.GRAD``).
Labels for tables (:attr:`Arm.label`) follow the paper's spelling: ``C-RBP-20``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

from .options import MODES, PENALISED_MODES

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
    """

    mode: str
    steps: int = 0
    lcp_subsample: Union[None, int, float] = None
    lcp_crop: int = 0

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
        return text

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
        return text

    def refiner_kwargs(self) -> dict:
        """:class:`~crbp_panoptic.crbp.RecurrentRefiner` keyword arguments that select this
        arm (``mode``, ``steps`` and the cheap penalty, if any)."""
        if not self.recurrent:
            raise ValueError(f"arm={self.name!r} has no recurrent module to build")
        kwargs = {"mode": self.mode, "steps": self.steps}
        if self.lcp_subsample is not None:
            kwargs["lcp_subsample"] = self.lcp_subsample
        if self.lcp_crop:
            kwargs["lcp_crop"] = self.lcp_crop
        return kwargs

    def config_opts(self) -> list:
        """``MODEL.CRBP`` overrides (a Detectron2 ``KEY VALUE`` list) that select this arm."""
        if not self.recurrent:
            return []
        return [
            "MODEL.CRBP.GRAD",
            self.mode,
            "MODEL.CRBP.STEPS",
            self.steps,
            "MODEL.CRBP.LCP_SUBSAMPLE",
            float(self.lcp_subsample or 0.0),
            "MODEL.CRBP.LCP_CROP",
            self.lcp_crop,
        ]


def _fail(text: str, why: str):
    raise ValueError(
        f"arm={text!r}: {why}; write 'ff' or MODE:STEPS[:subF|:cropS] with MODE in "
        f"{sorted(MODES)}, e.g. bptt:3, crbp:20, crbp:20:sub0.25, crbp:20:crop32"
    )


def parse_arm(text: str) -> Arm:
    """Parse ``"crbp:20"``, ``"crbp:20:sub0.25"``, ``"crbp:20:crop32"`` or ``"ff"``.

    Raises:
        ValueError: naming the text and the grammar.
    """
    if text.strip() == FEEDFORWARD:
        return Arm(FEEDFORWARD)
    parts = [p.strip() for p in text.split(":")]
    if len(parts) not in (2, 3):
        _fail(text, "expected 2 or 3 ':'-separated fields")
    mode, steps_text = parts[0].lower(), parts[1]
    if mode not in MODES:
        _fail(text, f"unknown mode {mode!r}")
    if not steps_text.isdigit() or int(steps_text) < 1:
        _fail(text, f"steps {steps_text!r} must be an integer >= 1")
    subsample: Optional[Union[int, float]] = None
    crop = 0
    if len(parts) == 3:
        option = parts[2]
        if mode not in PENALISED_MODES:
            _fail(text, f"a cheap-penalty option needs a penalised mode {list(PENALISED_MODES)}")
        try:
            if option.startswith("sub"):
                value = float(option[3:])
                if value <= 0 or (value >= 1 and value != int(value)):
                    raise ValueError
                subsample = value if value < 1 else int(value)
            elif option.startswith("crop"):
                crop = int(option[4:])
                if crop < 1:
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            _fail(text, f"option {option!r} must be subF (0 < F < 1, or a count) or cropS (S >= 1)")
    return Arm(mode, int(steps_text), subsample, crop)
