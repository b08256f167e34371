"""What a trained recurrent model costs, and what each speed lever buys.

A *run* is a folder of ``tools/train_net.py`` (``config.yaml``, ``model_final.pth``). Under
each :class:`Setting`: inference seconds per image, mean recurrent steps, PQ and, for fixed
step counts, multiply-adds per image (the cost floor); seconds and peak allocated memory
per training iteration on the same batches for every run; each next to the feedforward
run's, measured in the same process.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Dict, List, Optional, Sequence

import torch

from ..crbp import RecurrentRefiner
from ..engine import Trainer, setup_cfg
from ..modeling import placement
from .evaluation import evaluate_pq, first_test_inputs, load_model
from .measure import MIB, count_macs, measure_step, median, refiner_macs
from .report import fmt, markdown_table, ratio


@dataclasses.dataclass(frozen=True)
class Setting:
    """A named set of config overrides (``KEY VALUE`` pairs) applied to a trained run."""

    name: str
    opts: tuple = ()
    #: count the multiply-adds per image (for settings whose step count is fixed)
    flops: bool = False


_STEPS, _TOL = "MODEL.CRBP.TEST_STEPS", "MODEL.CRBP.TEST_TOL"


def inference_settings(steps: int, tols: Sequence[float] = (1e-2, 3e-3, 1e-3)) -> List[Setting]:
    """Test-time levers of a model trained with ``steps`` steps: exactly ``T`` and ``2T`` steps,
    early stopping at ``tol X`` (at most T steps), and the same with Anderson acceleration."""
    out = [
        Setting("T" if k == 1 else f"{k}T", (_STEPS, k * steps, _TOL, 0.0), flops=True)
        for k in (1, 2)
    ]
    out += [Setting(f"tol {tol:g}", (_STEPS, steps, _TOL, tol)) for tol in tols]
    solver = ("MODEL.CRBP.TEST_SOLVER", "anderson")
    return out + [Setting(f"anderson tol {min(tols):g}", (_STEPS, steps, _TOL, min(tols)) + solver)]


def training_settings(where: str) -> List[Setting]:
    """Training levers: the run's own settings, then forward / Neumann tolerances and, for
    the mask head, the penalty on a quarter of the ROIs (the FPN's cheap penalty is a crop,
    set by its config)."""
    settings = [
        Setting("as trained"),
        Setting("FORWARD_TOL 1e-3", ("MODEL.CRBP.FORWARD_TOL", 1e-3)),
        Setting("NEUMANN_TOL 1e-2", ("MODEL.CRBP.NEUMANN_TOL", 1e-2)),
    ]
    if "mask_head" in where:
        settings.append(Setting("LCP_SUBSAMPLE 0.25", ("MODEL.CRBP.LCP_SUBSAMPLE", 0.25)))
    return settings


def run_cfg(run_dir: str, opts: Sequence = ()):
    """The frozen config of a finished run (``run_dir/config.yaml``) with ``opts`` applied."""
    cfg = setup_cfg(os.path.join(run_dir, "config.yaml"), list(opts))
    cfg.freeze()
    return cfg


def check_run_dir(run_dir: str) -> str:
    """The weights of a finished run; raises FileNotFoundError naming what is missing."""
    for needed in ("config.yaml", "model_final.pth"):
        path = os.path.join(run_dir, needed)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not found; train the run first (tools/train_net.py)")
    return path


def time_per_image(model, inputs: List[dict], repeats: int = 2) -> Dict[str, float]:
    """Median over images of the least of ``repeats`` timed calls: ``seconds`` (wall clock)
    and ``cpu_seconds`` (process CPU time, all threads)."""
    wall, cpu = [], []
    with torch.no_grad():
        model([inputs[0]])  # warm-up
        for item in inputs:
            m = measure_step(lambda: model([item]), iters=repeats)
            wall.append(m["fastest"])
            cpu.append(m["fastest_cpu"])
    return {"seconds": median(wall), "cpu_seconds": median(cpu)}


def flops_per_image(model, inputs: List[dict]) -> Dict[str, float]:
    """Mean multiply-adds per image of ``model`` (eval mode) over ``inputs``
    (:func:`~.measure.count_macs`): ``total`` and ``recurrent`` (inside the refiners)."""
    total = recurrent = 0.0
    for item in inputs:
        count, by_module = count_macs(model, ([item],))
        total += count
        recurrent += refiner_macs(model, by_module)
    return {"total": total / len(inputs), "recurrent": recurrent / len(inputs)}


def measure_inference(
    run_dir: str, settings: Sequence[Setting], num_images: int = 12, with_pq: bool = True
) -> List[Dict]:
    """Inference cost and PQ of a trained run under each setting.

    Returns:
        list of dicts: ``setting``, ``seconds``, ``cpu_seconds`` (per image), ``mean_steps``
        (per refiner call; None: feedforward), ``pq`` (PQ / PQ_th / PQ_st, or None) and
        ``flops`` (:func:`flops_per_image` where the setting asks, else None).
    """
    rows = []
    weights = check_run_dir(run_dir)
    for setting in settings:
        cfg = run_cfg(run_dir, setting.opts)
        model = load_model(cfg, weights)
        inputs = first_test_inputs(cfg, num_images)
        steps: List[int] = []
        hooks = [
            m.register_forward_hook(lambda mod, i, o: steps.append(mod.last_result.steps))
            for m in model.modules()
            if isinstance(m, RecurrentRefiner)
        ]
        row = {"setting": setting.name, **time_per_image(model, inputs)}
        for h in hooks:
            h.remove()
        row["mean_steps"] = sum(steps) / len(steps) if steps else None
        row["pq"] = evaluate_pq(cfg, model) if with_pq else None
        row["flops"] = flops_per_image(model, inputs) if setting.flops else None
        rows.append(row)
    return rows


#: Untimed training iterations before the timed ones.
_WARMUP = 2
#: Detectron2's ROI heads log their sampled foreground ROIs per image under this name.
_FG_ROIS = "roi_head/num_fg_samples"


def training_batches(run_dir: str, count: int) -> List:
    """The first ``count`` batches of a finished run's training loader."""
    loader = Trainer.build_train_loader(run_cfg(run_dir))
    return list(itertools.islice(iter(loader), count))


def measure_training(
    run_dir: str, settings: Sequence[Setting], iters: int = 6, warmup: int = _WARMUP,
    batches: Optional[List] = None,
) -> List[Dict]:  # fmt: skip
    """Seconds per training iteration (forward + backward, no optimiser step) of a trained
    run under each setting, on ``batches`` (``warmup + iters``; default: the first of the
    run's training loader; give every run the same ones to compare runs).

    Returns:
        list of dicts: ``setting``, ``seconds`` and ``cpu_seconds`` (medians), ``fg_rois``
        (mean foreground ROIs per image the ROI heads sampled: the mask head's training
        ROIs, which depend on the trained RPN) and ``peak_bytes`` (of one more iteration,
        :func:`~.measure.peak_allocated_bytes`).
    """
    from detectron2.utils.events import EventStorage

    rows = []
    weights = check_run_dir(run_dir)
    if batches is None:  # the same batches for every setting
        batches = training_batches(run_dir, warmup + iters)
    if len(batches) < warmup + iters:
        raise ValueError(f"{len(batches)} batches; need warmup + iters = {warmup + iters}")
    for setting in settings:
        model = load_model(run_cfg(run_dir, setting.opts), weights).train()
        fg = []
        # the timed batches in order, then batches[warmup] again for the memory
        queue = iter(list(batches) + [batches[warmup]])
        with EventStorage() as storage:

            def step():
                sum(model(next(queue)).values()).backward()
                fg.append(storage.history(_FG_ROIS).latest())

            m = measure_step(
                step, iters=iters, warmup=warmup, memory="allocated",
                before_each=lambda: model.zero_grad(set_to_none=True),
            )  # fmt: skip
        rows.append({"setting": setting.name, "fg_rois": sum(fg[warmup:-1]) / iters})
        rows[-1].update({k: m[k] for k in ("seconds", "cpu_seconds", "peak_bytes")})
    return rows


def measure_runs(
    runs: Dict[str, str], feedforward: str, num_images: int = 12, train_iters: int = 6,
    with_pq: bool = True,
) -> Dict:  # fmt: skip
    """Measure the feedforward run and each recurrent run (name -> folder), all trained on the
    same batches from the feedforward run's loader.

    Returns:
        dict: ``feedforward`` ({inference, training} rows of the feedforward run) and
        ``runs`` (name -> {placement, steps, inference, training}).
    """
    batches = training_batches(feedforward, _WARMUP + train_iters)

    def measure(run_dir, inference, training):
        return {
            "dir": run_dir,
            "inference": measure_inference(run_dir, inference, num_images, with_pq),
            "training": measure_training(run_dir, training, train_iters, batches=batches),
        }

    ff = measure(feedforward, [Setting("as trained", flops=True)], [Setting("as trained")])
    report = {"feedforward": ff, "runs": {}}
    for name, run_dir in runs.items():
        cfg = run_cfg(run_dir)
        where, steps = placement(cfg), cfg.MODEL.CRBP.STEPS
        if where == "feedforward":
            raise ValueError(f"{run_dir}: the run {name!r} has no recurrent module")
        figures = measure(run_dir, inference_settings(steps), training_settings(where))
        report["runs"][name] = {"placement": where, "steps": steps, **figures}
    return report


def _x(row, base, key="seconds") -> str:
    return fmt(ratio(row.get(key), base.get(key)), ".2f")


def _inference_row(name, setting, row, ff, delta=None) -> list:
    macs = [(r.get("flops") or {}).get("total") for r in (row, ff)]
    cells = [name, setting, f"{row['seconds']:.3f}", _x(row, ff), _x(row, ff, "cpu_seconds")]
    pq = fmt(row["pq"]["PQ"] if row.get("pq") else None)
    cells += [fmt(row.get("mean_steps")), pq, fmt(delta, "+.1f")]
    return cells + [fmt(macs[0] and macs[0] / 1e9, ".3f"), fmt(macs[0] and ratio(*macs), ".2f")]


def _training_row(name, setting, row, ff) -> list:
    cells = [name, setting, f"{row['seconds']:.3f}", _x(row, ff), _x(row, ff, "cpu_seconds")]
    cells += [fmt(row.get("peak_bytes") and row["peak_bytes"] / MIB, ".0f")]
    return cells + [_x(row, ff, "peak_bytes"), fmt(row.get("fg_rois"))]


def step_macs(run: Dict) -> Optional[float]:
    """Multiply-adds per image of one recurrent step (all refiners): theirs at ``T``, over T."""
    at_t = run["inference"][0]
    if at_t["setting"] != "T" or at_t.get("flops") is None:
        return None
    return at_t["flops"]["recurrent"] / run["steps"]


_X = "x feedforward"
_HEADS = {
    "inference": f"run|setting|s / image|{_X}|{_X} (CPU time)|mean steps|PQ|PQ - PQ(T)|"
    f"GMAC / image|{_X} (MACs)",
    "bounds": f"run|GMAC per step|step / feedforward model (MACs)|{_X} at T (MACs)|"
    f"{_X} at T (CPU time)|time ratio / MAC ratio",
    "training": f"run|setting|s / iteration|{_X}|{_X} (CPU time)|peak MiB|{_X} (memory)|"
    "foreground ROIs / image",
}


def markdown(report: Dict) -> List[str]:
    """The report's body: inference and training tables, ratios to the feedforward run, and
    what the multiply-adds alone would make of each run's inference ratio at T."""
    ff, ff_train = report["feedforward"]["inference"][0], report["feedforward"]["training"][0]
    inference = [_inference_row("feedforward", "-", ff, ff)]
    training = [_training_row("feedforward", "-", ff_train, ff_train)]
    bounds = []
    for name, run in report["runs"].items():
        at_t, step = run["inference"][0], step_macs(run)
        for row in run["inference"]:
            pqs = row.get("pq") and at_t.get("pq")
            delta = row["pq"]["PQ"] - at_t["pq"]["PQ"] if pqs else None
            inference.append(_inference_row(name, row["setting"], row, ff, delta))
        training += [_training_row(name, r["setting"], r, ff_train) for r in run["training"]]
        if step is not None and ff.get("flops"):
            macs = at_t["flops"]["total"] / ff["flops"]["total"]
            cpu = at_t["cpu_seconds"] / ff["cpu_seconds"]
            cells = [step / 1e9, step / ff["flops"]["total"], macs, cpu, cpu / macs]
            bounds.append(
                [name] + [fmt(v, f) for v, f in zip(cells, (".4f", ".3f") + (".2f",) * 3)]
            )
    table = {k: markdown_table(h.split("|"), r) for k, h, r in
             zip(_HEADS, _HEADS.values(), (inference, bounds, training))}  # fmt: skip
    lines = ["## Inference (per image, batch 1)", ""] + table["inference"]
    if bounds:
        lines += ["", "## What bounds inference", ""]
        lines += [
            "MACs (multiply-adds of convolutions and linear layers) are the floor of a setting's "
            "cost; the CPU-time ratio over the MAC ratio is what the rest (elementwise operations, "
            "normalisations, small-kernel overhead) adds.",
            "",
        ] + table["bounds"]
    lines += ["", "## Training (forward + backward per iteration, the same batches for every run)"]
    lines += ["", "Memory: the peak of the bytes torch allocated during one iteration.", ""]
    return lines + table["training"]
