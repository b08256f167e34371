"""How fast a mask head learns, on its own: trained on a frozen detector's ROI features.

A Panoptic FPN run mixes the mask head's learning with the backbone's and the RPN's. Here a
trained detector (a comparison's feedforward warm-up) is frozen; every thing of a split gets
the ROIAlign features at its *true* box (the model's own mask pooler) and its M x M mask
target (cropped as Detectron2's ``mask_rcnn_loss`` crops it). Mask heads built from configs
are trained on those features alone, with the config's optimizer, LR schedule, gradient
clipping and mask loss (plus ``loss_lcp`` for a recurrent head, as
:class:`~crbp_panoptic.modeling.CRBPPanopticFPN` adds it), and scored on the test split's
features at fixed iterations (:func:`score_logits`). The grouping-free mask ("every pixel of
the class inside the true box", cropped the same way) is scored on the same targets.

Every head sees the same features, targets, batches (one seeded order of the training ROIs)
and schedule; only the head and its initialisation (``SEED``) differ.
"""

import json
import os
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch

__all__ = [
    "BOXES",
    "RoiSet",
    "grouping_free_scores",
    "markdown",
    "plot",
    "probe_plan",
    "roi_set",
    "score_logits",
    "train_head",
]


class RoiSet:
    """ROI features, mask targets and grouping-free masks of the things of one split.

    Attributes:
        features: (N, C, S, S) float, the mask pooler's output at each ROI's box.
        classes: (N,) int64 contiguous class ids.
        targets: (N, M, M) float in {0, 1}: each thing's own mask, cropped to the ROI's box.
        grouping_free: (N, M, M) float in {0, 1}: every instance of its class, cropped alike.
        box_iou: (N,) float, the IoU of each ROI's box with its thing's true box (1 where the
            ROI is the true box).
    """

    def __init__(self, features, classes, targets, grouping_free, box_iou=None):
        n = len(features)
        box_iou = torch.ones(n) if box_iou is None else box_iou
        if not (len(classes) == len(targets) == len(grouping_free) == len(box_iou) == n):
            raise ValueError(
                f"RoiSet: {n} features, {len(classes)} classes, {len(targets)} targets, "
                f"{len(grouping_free)} grouping-free masks, {len(box_iou)} box IoUs; expected "
                "one of each per ROI"
            )
        self.features, self.classes = features, classes
        self.targets, self.grouping_free = targets, grouping_free
        self.box_iou = box_iou

    def __len__(self) -> int:
        return len(self.features)


#: Where :func:`roi_set` puts each thing's ROI.
BOXES = ("true", "proposals")


def _check_boxes(key: str, value: str) -> None:
    if value not in BOXES:
        raise ValueError(f"{key}={value!r}; allowed: {', '.join(map(repr, BOXES))}")


def _proposal_per_thing(model, images, features, gt_boxes, gen: torch.Generator):
    """One box per true box: drawn uniformly from the RPN's proposals that the ROI heads'
    matcher assigns to that thing as foreground, with the true box itself among them (as
    Detectron2 appends the true boxes to the proposals in training). Returns the (G, 4)
    boxes and their (G,) IoU with the true boxes."""
    from detectron2.structures import Boxes, pairwise_iou

    (proposals,), _ = model.proposal_generator(images, features, None)
    candidates = Boxes.cat([Boxes(gt_boxes), proposals.proposal_boxes])
    iou = pairwise_iou(Boxes(gt_boxes), candidates)
    owner, label = model.roi_heads.proposal_matcher(iou)
    chosen = []
    for k in range(len(gt_boxes)):
        mine = torch.nonzero((owner == k) & (label == 1)).flatten()
        # the true box is its own candidate, unless another thing has the same box
        mine = mine if len(mine) else torch.tensor([k])
        chosen.append(mine[torch.randint(len(mine), (1,), generator=gen)])
    chosen = torch.cat(chosen)
    return candidates.tensor[chosen], iou[torch.arange(len(gt_boxes)), chosen]


@torch.no_grad()
def roi_set(cfg, model, dataset_name: str, mask_size: int = 28, boxes: str = "true",
            seed: int = 0) -> RoiSet:  # fmt: skip
    """The :class:`RoiSet` of every non-crowd thing of ``dataset_name``, from ``model`` (in
    eval mode) at the test-time input size of ``cfg``; ValueError if there is none.

    Args:
        boxes: where each thing's ROI lies (:data:`BOXES`): ``"true"``, its true box;
            ``"proposals"``, one of the boxes the mask head would train on for it in a
            Panoptic FPN run (the RPN's test-time proposals that the ROI heads' matcher
            assigns to it as foreground, or the true box), drawn with ``seed``. The target
            is the thing's mask cropped to that box, as ``mask_rcnn_loss`` crops it.
    """
    from detectron2.structures import BitMasks, Boxes

    from .true_boxes import _gt_masks, true_things

    _check_boxes("boxes", boxes)
    gen = torch.Generator().manual_seed(seed)
    roi_heads = model.roi_heads
    feats, classes_all, targets, free, box_iou = [], [], [], [], []
    for d, inp, annos, true, scale in true_things(cfg, dataset_name):
        in_h, in_w = inp["image"].shape[1:]
        h, w = d["height"], d["width"]
        true = torch.from_numpy(true * scale)
        classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.int64)
        masks = torch.from_numpy(_gt_masks(annos, h, w))
        if (in_h, in_w) != (h, w):
            masks = torch.nn.functional.interpolate(masks[None].float(), (in_h, in_w))[0] > 0.5
        union = torch.stack([masks[row].any(0) for row in classes[:, None] == classes[None, :]])
        images = model.preprocess_image([inp])
        features = model.backbone(images.tensor)
        rois, iou = true, torch.ones(len(true))
        if boxes == "proposals":
            rois, iou = _proposal_per_thing(model, images, features, true, gen)
        x = [features[f] for f in roi_heads.mask_in_features]
        feats.append(roi_heads.mask_pooler(x, [Boxes(rois)]))
        targets.append(BitMasks(masks).crop_and_resize(rois, mask_size).float())
        free.append(BitMasks(union).crop_and_resize(rois, mask_size).float())
        classes_all.append(classes)
        box_iou.append(iou)
    if not feats:
        raise ValueError(f"{dataset_name}: no non-crowd thing to train or score a mask head on")
    return RoiSet(torch.cat(feats), torch.cat(classes_all), torch.cat(targets), torch.cat(free),
                  torch.cat(box_iou))  # fmt: skip


def _own_class(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(N, M, M) logits of each ROI's own class from (N, K, M, M); K = 1: class-agnostic."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    return logits[torch.arange(len(logits)), classes]


def score_logits(logits: torch.Tensor, rois: RoiSet, threshold: float = 0.5) -> Dict[str, float]:
    """Scores of (N, M, M) own-class mask logits against ``rois.targets``: ``iou_median`` and
    ``iou_mean`` (of each ROI's mask, probability >= ``threshold``), ``miss_mean`` (share of
    each target left out), ``p_fg`` / ``p_bg`` (mean probability on target / other pixels)
    and ``loss`` (mean binary cross-entropy: the head's mask loss)."""
    prob = logits.sigmoid()
    pred, target = prob >= threshold, rois.targets > 0.5
    inter = (pred & target).flatten(1).sum(1).double()
    union = (pred | target).flatten(1).sum(1).double().clamp(min=1)
    fg = target.flatten(1).sum(1).double().clamp(min=1)
    iou = (inter / union).tolist()
    miss = ((target & ~pred).flatten(1).sum(1).double() / fg).tolist()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, rois.targets)
    return {
        "iou_median": statistics.median(iou),
        "iou_mean": statistics.fmean(iou),
        "miss_mean": statistics.fmean(miss),
        "p_fg": float(prob[target].mean()) if target.any() else None,
        "p_bg": float(prob[~target].mean()) if (~target).any() else None,
        "loss": float(loss),
    }


def grouping_free_scores(rois: RoiSet) -> Dict[str, float]:
    """:func:`score_logits` of the grouping-free mask (logits +-20: in or out)."""
    return score_logits((rois.grouping_free * 2 - 1) * 20.0, rois)


def _recurrent(head) -> list:
    from crbp_panoptic.modeling.meta_arch import recurrent_modules

    return [m for _, m in recurrent_modules(head)]


@torch.no_grad()
def _score(head, rois: RoiSet, chunk: int = 256) -> Dict[str, float]:
    was_training = head.training
    head.eval()
    logits = torch.cat([head.layers(x) for x in rois.features.split(chunk)])
    head.train(was_training)
    return score_logits(_own_class(logits, rois.classes), rois)


def train_head(
    cfg,
    head: torch.nn.Module,
    train: RoiSet,
    test: RoiSet,
    *,
    batch_rois: int,
    eval_at: Sequence[int],
    lcp_weight: float = 0.0,
    order_seed: int = 0,
) -> List[Dict[str, float]]:
    """Train ``head`` (a :class:`BaseMaskRCNNHead`) on ``train`` for ``cfg.SOLVER.MAX_ITER``
    iterations of ``batch_rois`` ROIs, with ``cfg``'s optimizer, LR schedule and clipping
    (the trainer's ``build_optimizer``, ``MODEL.CRBP.MASK_HEAD_LR_FACTOR`` included, and
    Detectron2's ``build_lr_scheduler``), and score it on ``test``
    before training and after each iteration in ``eval_at``.

    The loss is the head's mask loss (binary cross-entropy of each ROI's own-class logits,
    times ``head.loss_weight``) plus ``lcp_weight`` times the summed penalty of its
    recurrent modules. The ROIs come in one random order drawn from ``order_seed``.

    Returns:
        one dict per scored iteration: ``iter``, ``train_loss`` (mean mask loss of the
        iterations since the previous row; None at iteration 0) and :func:`score_logits`.
    """
    from detectron2.solver import build_lr_scheduler

    from crbp_panoptic.engine.optimizer import build_optimizer

    iterations = int(cfg.SOLVER.MAX_ITER)
    if batch_rois < 1 or batch_rois > len(train):
        raise ValueError(f"batch_rois={batch_rois}; expected 1 to {len(train)} (the train ROIs)")
    refiners = _recurrent(head)
    gen = torch.Generator().manual_seed(order_seed)
    epochs = iterations * batch_rois // len(train) + 1
    order = torch.cat([torch.randperm(len(train), generator=gen) for _ in range(epochs)])
    optimizer = build_optimizer(cfg, head, mask_head=head)
    scheduler = build_lr_scheduler(cfg, optimizer)
    rows, losses = [{"iter": 0, "train_loss": None, **_score(head, test)}], []
    head.train()
    for it in range(1, iterations + 1):
        idx = order[(it - 1) * batch_rois : it * batch_rois]
        for m in refiners:
            m.last_result = None
        logits = _own_class(head.layers(train.features[idx]), train.classes[idx])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, train.targets[idx])
        total = loss * head.loss_weight
        results = [m.last_result for m in refiners if m.last_result is not None]
        if lcp_weight and results:
            total = total + lcp_weight * sum(r.lcp for r in results)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if it in eval_at:
            rows.append({"iter": it, "train_loss": statistics.fmean(losses), **_score(head, test)})
            losses = []
    return rows


# --- a suite's heads on its warm-up -----------------------------------------------------------

#: Settings that runs written before the setting existed were made with.
_EARLIER = {"train_boxes": "true"}


def probe_plan(plan, *, batch_rois: int = 64, evals: int = 8, train_boxes: str = "true",
               log=print) -> dict:  # fmt: skip
    """Train the mask head of every run of ``plan`` (a mask-head suite's
    :class:`~.runner.Plan`, from :func:`~.runner.plan_suite` with its warm-up weights) on
    the warm-up's frozen ROI features, and score it (:func:`train_head`). The training ROIs
    lie at ``train_boxes`` (:func:`roi_set`'s ``boxes``, drawn once with seed 0 and shared by
    every run); the test ROIs at the true boxes.

    Each run's config and overrides are the suite's (iterations, LR and every other
    override included), so a probe and the suite train the same heads. Finished runs are
    kept in ``<plan.output_dir>/probe_runs/<arm>_seed<s>.json`` and reused when their
    settings match; a file made with other settings is an error.

    Returns:
        ``{"suite", "warmup_weights", "warmup_sha256", "batch_rois", "evals", "train_boxes",
        "iterations", "train_rois", "train_box_iou": mean IoU of the training ROIs' boxes with
        their things' true boxes, "test_rois", "floor": grouping-free scores, "runs": [{"arm",
        "seed", "config", "opts", "params", "seconds", "curve": [...], "at_steps": {t: scores}}]}``
        (``at_steps``: the trained head at each of the run's test-step counts, recurrent
        arms only).
    """
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.roi_heads.mask_head import build_mask_head

    from crbp_panoptic.modeling.config_args import lcp_weight

    from .evaluation import load_model
    from .report import write_atomic
    from .runner import _cfg, _sha256

    if plan.placement != "mask_head":
        raise ValueError(
            f"suite {plan.name!r} puts its recurrence in {plan.placement!r}; the head probe "
            "trains mask heads: allowed, a suite with placement 'mask_head'"
        )
    if batch_rois < 1 or evals < 1:
        raise ValueError(f"batch_rois={batch_rois}, evals={evals}; expected integers >= 1")
    _check_boxes("train_boxes", train_boxes)
    weights = plan.warmup["weights"]
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"warm-up weights {weights!r}: no such file; the probe needs a finished warm-up "
            "(train it with tools/compare_configs.py --suite, or pass --warmup-weights)"
        )
    settings = {
        "warmup_sha256": _sha256(weights),
        "batch_rois": batch_rois,
        "evals": evals,
        "train_boxes": train_boxes,
    }
    ff_cfg = _cfg(plan.warmup["config"], plan.warmup["opts"])
    ff_cfg.freeze()
    model = load_model(ff_cfg, weights)
    log(f"ROI features of {ff_cfg.DATASETS.TRAIN[0]} and {ff_cfg.DATASETS.TEST[0]} ...")
    train = roi_set(ff_cfg, model, ff_cfg.DATASETS.TRAIN[0], boxes=train_boxes)
    test = roi_set(ff_cfg, model, ff_cfg.DATASETS.TEST[0])
    shape = ShapeSpec(channels=train.features.shape[1], height=train.features.shape[2],
                      width=train.features.shape[3])  # fmt: skip
    out = {
        "suite": plan.name,
        "warmup_weights": weights,
        **settings,
        "iterations": plan.iterations,
        "train_rois": len(train),
        "train_box_iou": float(train.box_iou.mean()),
        "test_rois": len(test),
        "floor": grouping_free_scores(test),
        "runs": [],
    }
    cache = os.path.join(plan.output_dir, "probe_runs")
    os.makedirs(cache, exist_ok=True)
    for run in plan.runs:
        path = os.path.join(cache, f"{run.arm.replace(':', '_')}_seed{run.seed}.json")
        spec = {"config": run.config, "opts": list(run.opts), **settings}
        if os.path.isfile(path):
            with open(path) as f:
                old = json.load(f)
            diff = [k for k in spec if old.get(k, _EARLIER.get(k)) != spec[k]]
            if diff:
                raise ValueError(
                    f"{path} holds a probe run made with other settings ({', '.join(diff)}); "
                    "use another output directory, or delete that file to train it again"
                )
            log(f"{run.arm} seed {run.seed}: reused {path}")
            out["runs"].append(old)
            continue
        cfg = _cfg(run.config, run.opts)
        cfg.freeze()
        torch.manual_seed(run.seed)
        head = build_mask_head(cfg, shape)
        iterations = int(cfg.SOLVER.MAX_ITER)
        eval_at = {round(iterations * k / evals) for k in range(1, evals + 1)}
        weight = lcp_weight(cfg) if _recurrent(head) else 0.0
        log(f"{run.arm} seed {run.seed}: {iterations} iterations ...")
        start = time.perf_counter()
        curve = train_head(cfg, head, train, test, batch_rois=batch_rois, eval_at=eval_at,
                           lcp_weight=weight, order_seed=run.seed)  # fmt: skip
        seconds = time.perf_counter() - start
        at_steps = {}
        for t in run.test_steps:
            for m in _recurrent(head):
                m.test_steps, m.test_tol = t, 0.0
            at_steps[str(t)] = _score(head, test)
        entry = {
            "arm": run.arm,
            "seed": run.seed,
            **spec,
            "params": sum(p.numel() for p in head.parameters()),
            "seconds": round(seconds, 1),
            "curve": curve,
            "at_steps": at_steps,
        }
        write_atomic(path, json.dumps(entry, indent=1))
        out["runs"].append(entry)
        log(f"{run.arm} seed {run.seed}: IoU (median) {curve[-1]['iou_median']:.3f}, "
            f"{seconds:.0f} s")  # fmt: skip
    return out


def _arms(probe: dict) -> List[str]:
    return list(dict.fromkeys(r["arm"] for r in probe["runs"]))


def _at_multiple(run: dict, m: int) -> Optional[dict]:
    """A recurrent run's scores at m x T test steps (T: its smallest count); None if none."""
    if not run["at_steps"]:
        return None
    return run["at_steps"].get(str(m * min(int(t) for t in run["at_steps"])))


def _first_above(curve: Sequence[dict], floor: float) -> Optional[int]:
    return next((row["iter"] for row in curve if row["iou_median"] > floor), None)


def markdown(probe: dict) -> List[str]:
    """The probe's table (one row per arm: the mean over seeds and each seed), markdown lines."""
    from .report import fmt, markdown_table
    from .runner_report import _mean

    floor = probe["floor"]["iou_median"]
    head = [
        "arm", "head parameters", "IoU (median) at the end, mean", "per seed",
        "IoU at 3T, mean", "first iteration above the floor, per seed", "mask loss (test)",
        "miss", "seconds per run",
    ]  # fmt: skip
    rows = []
    for arm in _arms(probe):
        runs = sorted((r for r in probe["runs"] if r["arm"] == arm), key=lambda r: r["seed"])
        last = [r["curve"][-1] for r in runs]
        three = [_at_multiple(r, 3) for r in runs]
        rows.append(
            [arm, runs[0]["params"], fmt(_mean(x["iou_median"] for x in last), ".3f")]
            + [" / ".join(fmt(x["iou_median"], ".3f") for x in last)]
            + [fmt(_mean(x["iou_median"] for x in three if x), ".3f")]
            + [" / ".join(str(_first_above(r["curve"], floor) or "-") for r in runs)]
            + [fmt(_mean(x[k] for x in last), ".3f") for k in ("loss", "miss_mean")]
            + [fmt(_mean(r["seconds"] for r in runs), ".0f")]
        )
    lines = markdown_table(head, rows)
    f = probe["floor"]
    where = "at their true boxes"
    if probe.get("train_boxes", "true") == "proposals":
        where = (f"at RPN proposals (one per thing; mean IoU {probe['train_box_iou']:.3f} with "
                 "its true box)")  # fmt: skip
    lines += [
        "",
        f"Grouping-free mask on the same {probe['test_rois']} test ROIs (true boxes): IoU "
        f"(median) {fmt(floor, '.3f')}, mean {fmt(f['iou_mean'], '.3f')}. "
        f"{probe['train_rois']} training ROIs {where}, {probe['batch_rois']} per iteration, "
        f"{probe['iterations']} iterations.",
    ]
    return lines


def plot(probe: dict, path: str) -> str:
    """Test IoU (median) against the iteration, one line per arm (mean over seeds; dots:
    each seed), the grouping-free mask dashed; written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arm in _arms(probe):
        curves = [r["curve"] for r in probe["runs"] if r["arm"] == arm]
        xs = [row["iter"] for row in curves[0]]
        ys = [statistics.fmean(c[i]["iou_median"] for c in curves) for i in range(len(xs))]
        (line,) = ax.plot(xs, ys, marker="o", ms=3, label=arm)
        for c in curves:
            ax.scatter(xs, [row["iou_median"] for row in c], color=line.get_color(), s=8, alpha=0.4)
    ax.axhline(probe["floor"]["iou_median"], color="k", ls="--", lw=1, label="grouping-free mask")
    ax.set(xlabel="iteration", ylabel="IoU with the true mask (median over test ROIs)")
    where = ", trained at proposals" if probe.get("train_boxes") == "proposals" else ""
    ax.set_title(f"{probe['suite']}: mask heads on frozen warm-up features{where}", fontsize=10)
    return save_figure(fig, [ax], path)
