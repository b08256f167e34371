"""The plan of a full-model benchmark: which arms run on which placement, in which order.

Pure Python (no torch, no Detectron2): :mod:`.benchmark` measures the plan, and
:mod:`.benchmark_report` writes it up.
"""

from typing import Dict, List, Optional, Sequence, Tuple

from ..crbp.arms import Arm, parse_arm

__all__ = [
    "DEFAULT_ARMS",
    "DEFAULT_CHEAP_ARMS",
    "FEEDFORWARD",
    "PLACEMENT_YAMLS",
    "is_cheap",
    "parse_cheap_arms",
    "plan",
    "series",
    "table_label",
]

#: The stock Panoptic FPN (the FF row) and each placement's YAML, in a configs directory.
BASELINE_YAML = "panoptic_fpn_R_50_1x.yaml"
PLACEMENT_YAMLS = {
    "fpn": "panoptic_crbp_fpn_R_50_1x.yaml",
    "mask": "panoptic_crbp_mask_R_50_1x.yaml",
}
#: Arms measured on every placement, in table order (exact penalty).
DEFAULT_ARMS = ("bptt:1", "bptt:3", "bptt:5", "rbp:20", "crbp:5", "crbp:10", "crbp:20", "crbp:40")
#: Each placement's cheap penalty: a row subset where the state has many rows (ROIs), a
#: spatial window where it has a few large maps (FPN levels).
DEFAULT_CHEAP_ARMS = {"mask": "crbp:20:sub0.25", "fpn": "crbp:20:crop32"}
#: Run order (a run stopped by its time budget has these first); "cheap" = any cheap arm.
PRIORITY = (
    "crbp:20",
    "bptt:1",
    "crbp:5",
    "crbp:40",
    "cheap",
    "bptt:3",
    "bptt:5",
    "rbp:20",
    "crbp:10",
)
FEEDFORWARD = Arm("ff")
#: The early-stopping tolerance by default.
DEFAULT_TEST_TOL = 1e-3
#: Score of every forced test detection (see :func:`.benchmark.force_detections`).
DETECTION_SCORE = 0.3
#: Inference variants of a recurrent model: (key, TEST_STEPS as a multiple of STEPS, early stop).
INFER_VARIANTS = (("T", 1, False), ("2T", 2, False), ("ES", 1, True))


# --------------------------------------------------------------------------- the plan


def is_cheap(arm: Arm) -> bool:
    """Whether ``arm`` evaluates its penalty on a row subset or a crop."""
    return arm.lcp_subsample is not None or arm.lcp_crop > 0


def table_label(arm: Arm) -> str:
    """The arm as a table row names it: ``FF``, ``C-RBP-20``, ``C-RBP-20 (LCP on ...)``."""
    return "FF" if not arm.recurrent else arm.label


def series(arm: Arm) -> str:
    """The plot line an arm belongs to: one per training mode, cheap penalties apart."""
    if not arm.recurrent:
        return "FF"
    base = arm.label.split(" ")[0].rsplit("-", 1)[0]
    return f"{base} (cheap LCP)" if is_cheap(arm) else base


def parse_cheap_arms(texts: Sequence[str]) -> Dict[str, List[Arm]]:
    """``["mask=crbp:20:sub0.25", ...]`` -> ``{"mask": [Arm(...)], ...}``.

    Raises:
        ValueError: an item that is not ``PLACEMENT=ARM`` with a known placement and a
            cheap arm (``:subF`` or ``:cropS``).
    """
    out: Dict[str, List[Arm]] = {}
    for text in texts:
        placement, sep, arm_text = text.partition("=")
        if not sep or placement not in PLACEMENT_YAMLS:
            raise ValueError(
                f"--cheap-arms {text!r}: expected PLACEMENT=ARM with PLACEMENT in "
                f"{sorted(PLACEMENT_YAMLS)}, e.g. mask=crbp:20:sub0.25"
            )
        arm = parse_arm(arm_text)
        if not is_cheap(arm):
            raise ValueError(f"--cheap-arms {text!r}: {arm_text!r} has no :subF or :cropS option")
        out.setdefault(placement, []).append(arm)
    return out


def _priority(arm: Arm) -> int:
    key = "cheap" if is_cheap(arm) else arm.name
    return PRIORITY.index(key) if key in PRIORITY else len(PRIORITY)


def plan(
    placements: Sequence[str],
    arms: Sequence[Arm],
    cheap_arms: Optional[Dict[str, List[Arm]]] = None,
) -> List[Tuple[str, Arm]]:
    """``[(placement, arm)]`` in run order: FF once (placement ``"-"``), then by :data:`PRIORITY`
    (stable), placements interleaved; a cheap arm runs only on the placement it is given for."""
    cheap_arms = cheap_arms or {}
    runs = [(p, a) for a in arms if a.recurrent for p in placements]
    runs += [(p, a) for p in placements for a in cheap_arms.get(p, [])]
    order = {run: i for i, run in enumerate(runs)}
    runs.sort(key=lambda run: (_priority(run[1]), order[run]))
    return [("-", FEEDFORWARD)] + runs
