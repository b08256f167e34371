"""The declared comparisons (``tools/compare_configs.py --suite NAME``), in one place.

A suite compares the recurrent refiner in one placement with the feedforward model: configs,
arms (``bptt:1``: the recurrent module run once; ``crbp:T``: T from the recurrent config),
budgets, and floors: model-free scores of the test split, such as the grouping-free mask
("every pixel of the class inside the true box"). :mod:`.runner` runs them.
"""

import dataclasses
from typing import Dict, Sequence, Tuple

from crbp_panoptic.crbp.arms import FEEDFORWARD

__all__ = ["FLOORS", "PLACEMENTS", "SUITES", "Suite", "check_multiples", "get_suite"]

SYNTHETIC = "configs/Synthetic-PanopticSegmentation/"

#: Placement (``crbp_panoptic.modeling.placement``) -> (what it is, what a config sets).
PLACEMENTS = {
    "feedforward": ("the feedforward model", "a stock FPN backbone and a stock mask head"),
    "fpn": (
        "the recurrent FPN",
        "MODEL.BACKBONE.NAME 'build_resnet_crbp_fpn_backbone' and a stock mask head",
    ),
    "mask_head": (
        "the recurrent mask head",
        "MODEL.ROI_MASK_HEAD.NAME 'CRBPMaskHead' and a stock FPN backbone",
    ),
}

GROUPING_FREE = (
    "median IoU of each thing with 'every pixel of its class inside its true box' on the test "
    "split (no model; crbp_panoptic.data.longrange.split_statistics)"
)


def _grouping_free_mask_iou(dataset_name: str) -> dict:
    from crbp_panoptic.data import ensure_generated, split_statistics

    split_dir = ensure_generated(dataset_name, validate=False)
    if split_dir is None:
        reason = f"{dataset_name!r} is not a synthetic split of this package: its PNGs are not read"
        return {"grouping_free_mask_iou": None, "reason": reason}
    stats = split_statistics(split_dir)
    return {
        "grouping_free_mask_iou": stats.get("box_class_iou_median"),
        "grouping_free_mask_iou_definition": GROUPING_FREE,
        "split_statistics": stats,
    }


#: Floor name -> function of the test dataset's registered name returning the floor's fields.
FLOORS = {"grouping_free_mask_iou": _grouping_free_mask_iou}


def suite_floors(dataset_name: str, names: Sequence[str] = tuple(FLOORS)) -> dict:
    """Model-free floors of a test split (a missing synthetic split is generated first):
    ``dataset`` and each floor's fields (its value under its name; None and a ``reason``
    where it does not apply)."""
    out = {"dataset": dataset_name}
    for name in names:
        out.update(FLOORS[name](dataset_name))
    return out


def check_count(value, what: str):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r}; expected an integer >= 1")


def check_multiples(multiples, where: str):
    ms = list(multiples)
    bad = any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms)
    if bad or 1 not in ms or len(set(ms)) != len(ms):
        raise ValueError(
            f"{where}: test-step multiples {ms}; expected distinct integers >= 1, 1 among them "
            "(1: the evaluation at the end of training)"
        )


@dataclasses.dataclass(frozen=True)
class Suite:
    """A declared comparison (see the module docstring).

    Attributes:
        placement: ``"fpn"`` or ``"mask_head"``: where ``recurrent_config`` recurs.
        feedforward_config: the ``ff`` arm's and the warm-up's config (``SEED``
            ``warmup_seed``, ``warmup_iterations``); every arm trains ``iterations`` from it.
        arms: ``crbp:T`` takes T from the recurrent config; multiples: of T at test time.
        floors: keys of :data:`FLOORS`; opts: ``KEY VALUE`` overrides of every run.
        arm_opts: ``KEY VALUE`` overrides of every arm's run (after ``opts``), not of the
            warm-up: how the arms train from it.
        fresh: state-dict prefixes every arm (ff too) learns from its initialisation: the
            warm-up's weights under them are not loaded.
        true_box_masks: score every run's mask head on the test split's true boxes
            (:mod:`.true_boxes`), beside the grouping-free mask.
    """

    name: str
    description: str
    placement: str
    feedforward_config: str
    recurrent_config: str
    warmup_iterations: int
    iterations: int
    arms: Tuple[str, ...] = ("ff", "bptt:1", "bptt:3", "crbp:T")
    multiples: Tuple[int, ...] = (1, 3)
    floors: Tuple[str, ...] = ("grouping_free_mask_iou",)
    opts: Tuple[str, ...] = ()
    arm_opts: Tuple[str, ...] = ()
    warmup_seed: int = 0
    fresh: Tuple[str, ...] = ()
    true_box_masks: bool = False

    def __post_init__(self):
        where = f"suite {self.name!r}"
        if self.placement not in ("fpn", "mask_head"):
            raise ValueError(f"{where}: placement={self.placement!r}; allowed: fpn, mask_head")
        check_count(self.warmup_iterations, f"{where}: warmup_iterations")
        check_count(self.iterations, f"{where}: iterations")
        check_multiples(self.multiples, where)
        unknown = [f for f in self.floors if f not in FLOORS]
        if unknown:
            raise ValueError(f"{where}: floors {unknown}; allowed: {list(FLOORS)}")
        if FEEDFORWARD not in self.arms or len(set(self.arms)) < max(2, len(self.arms)):
            raise ValueError(
                f"{where}: arms={list(self.arms)}; expected distinct arms, 'ff' and at least "
                "one recurrent arm"
            )


#: The quick suites' test split: 500 images (1,285 things). The configs' val split has 12
#: images and 27 things (2 / 15 / 10 per class): one thing more or less found there moves
#: PQ_th by 1 to 9 points.
TEST_SPLIT = ("DATASETS.TEST", "('synthetic_panoptic_test_separated',)")

#: The declared suites. Budgets: see the time estimate in ``tools/compare_configs.py``.
SUITES: Dict[str, Suite] = {
    "quick": Suite(
        name="quick",
        description="recurrent FPN (P3-P5) against feedforward Panoptic FPN, quick synthetic data",
        placement="fpn",
        feedforward_config=SYNTHETIC + "panoptic_fpn_R_18_quick.yaml",
        recurrent_config=SYNTHETIC + "panoptic_crbp_fpn_R_18_quick.yaml",
        warmup_iterations=300,
        iterations=400,
        opts=TEST_SPLIT,
    ),
    "longrange": Suite(
        name="longrange",
        description="recurrent mask head against the stock mask head, long-range synthetic data",
        placement="mask_head",
        feedforward_config=SYNTHETIC + "longrange_panoptic_fpn_R_18.yaml",
        recurrent_config=SYNTHETIC + "longrange_panoptic_crbp_mask_R_18.yaml",
        # box AP 40.8 on val after 1000 iterations from scratch (docs/results/longrange.md)
        warmup_iterations=1000,
        # At the backbone's learning rate, 300 further iterations left every head near the
        # floor and 800 still below it (true-box IoU 0.31-0.42 against 0.443): thin masks
        # learn slowly. With the heads at 5x the rate (0.05, where every head passes the floor
        # on the warm-up's frozen features, docs/results/probe_longrange.md), 400 iterations
        # lift the stock head above it (0.46-0.48) and leave the hGRU heads where 800 at the
        # backbone's rate did (0.33-0.36; docs/results/suite_longrange.md). With
        # --iterations 1800 (about 70 minutes of two cores per seed) the hGRU heads that run
        # several steps reach the stock head (three seeds: 0.69-0.72 against 0.68;
        # docs/results/suite_longrange_1800.md). With the heads at 20x (0.2) every head learns
        # faster in 400 iterations and the stock head's lead stays (31.2 against 22.7 PQ_th for
        # C-RBP-20, three seeds; docs/results/suite_longrange_lr20.md).
        iterations=400,
        arm_opts=("MODEL.CRBP.MASK_HEAD_LR_FACTOR", "5.0"),
        # The stock and the recurrent head both learn from scratch on the warm backbone, as
        # in the paper (every head trained on an ImageNet backbone): a warm stock head would
        # have had 1000 iterations more than the recurrent one.
        fresh=("roi_heads.mask_head.",),
        true_box_masks=True,
    ),
    "quick_mask": Suite(
        name="quick_mask",
        description="recurrent mask head against the stock mask head, quick synthetic data",
        placement="mask_head",
        feedforward_config=SYNTHETIC + "panoptic_fpn_R_18_quick.yaml",
        recurrent_config=SYNTHETIC + "panoptic_crbp_mask_authors_cell_R_18_quick.yaml",
        warmup_iterations=300,
        iterations=400,
        arms=("ff", "bptt:1", "crbp:T"),
        # the long-range suite's head: chronos gates over 1-3 steps, 20 steps
        opts=("MODEL.CRBP.GATE_BIAS_INIT", "chronos", "MODEL.CRBP.GATE_BIAS_RANGE", "[1.0, 3.0]")
        + ("MODEL.CRBP.STEPS", "20")
        + TEST_SPLIT,
        # At the backbone's rate the hGRU heads fit their masks about half as fast as the
        # stock head (loss 0.29 against 0.22 after 400 iterations) and end 0.5 PQ_th below it
        # (three seeds); at 5x, the long-range suite's factor, the three heads' losses fall
        # together and every head gains (docs/RESULTS.md, "The mask heads at five times the
        # rate"). The stock head gains 0.6 more at 10x: 5x is not shown to be its best rate.
        arm_opts=("MODEL.CRBP.MASK_HEAD_LR_FACTOR", "5.0"),
        fresh=("roi_heads.mask_head.",),
        true_box_masks=True,
    ),
}


def get_suite(name: str) -> Suite:
    """The declared suite called ``name``; a ValueError names the suites there are."""
    if name not in SUITES:
        raise ValueError(f"suite {name!r}: no such suite; allowed: {sorted(SUITES)}")
    return SUITES[name]
