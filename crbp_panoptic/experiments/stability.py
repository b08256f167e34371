"""Stability beyond training: PQ and the recurrent residual when a model runs more steps.

The paper's claim (docs/DESIGN.md, "Stability"): run a C-RBP model for more steps at test
time than in training and it stays at its equilibrium, while a BPTT model drifts and its
PQ falls. :func:`run` checks that:

1. Every arm (:func:`~crbp_panoptic.crbp.parse_arm`, e.g. ``bptt:3``, ``crbp:10``) is
   trained from a config with the arm's ``MODEL.CRBP`` options, through
   :func:`~crbp_panoptic.engine.train_or_evaluate` (final evaluation included), into
   ``<out>/<arm dir>/`` (:func:`arm_dir_name`). An arm whose ``model_final.pth`` exists is
   reused.
2. PQ (All / Things / Stuff) on ``DATASETS.TEST`` for every test-step count t of a grid
   (:func:`default_grid`): the arm's saved config with ``TEST_STEPS`` = t and
   ``TEST_TOL`` = 0 (exactly t steps), evaluated by ``COCOPanopticEvaluator``.
3. Residual and drift curves (:mod:`.trajectories`) for t = 1 .. 2 x the largest STEPS
   per recurrent module, averaged over the first ``residual_images`` test images.

The report (``stability.json`` and ``stability.md``) is rewritten after every arm.
"""

import contextlib
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ..crbp.arms import Arm
from .evaluation import (
    PQ_KEYS,
    config_at_test_steps,
    evaluate_pq,
    first_test_inputs,
    load_model,
    logged_pq,
)
from .machine import machine_info
from .report import fmt, markdown_table, write_report
from .trajectories import residual_curves

__all__ = [
    "DEFAULT_ARMS",
    "arm_dir_name",
    "default_grid",
    "markdown",
    "plot",
    "run",
    "scaled_lr_steps",
    "train_arm",
    "train_opts",
]

DEFAULT_ARMS = ("bptt:3", "crbp:10")
BASE_GRID = (1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 60, 80)
_LOGGERS = ("detectron2", "fvcore")


def arm_dir_name(arm: Arm) -> str:
    """The arm's folder name: ``crbp:20:sub0.25`` -> ``crbp_20_sub0.25``."""
    return arm.name.replace(":", "_")


def default_grid(trained_steps: Sequence[int]) -> List[int]:
    """Test-step counts from 1 to 2 x max(trained_steps): a rough log grid plus every T and 2T."""
    top = 2 * max(trained_steps)
    grid = {t for t in BASE_GRID if t <= top}
    for t in trained_steps:
        grid.update((t, 2 * t))
    grid.update((1, top))
    return sorted(grid)


def scaled_lr_steps(lr_steps: Sequence[int], max_iter: int, iters: int) -> Tuple[int, ...]:
    """The config's LR decay iterations rescaled to a schedule of ``iters`` instead of
    ``max_iter``; decays on or after the last iteration are dropped (the scheduler rejects
    them)."""
    scaled = (max(1, round(s * iters / max_iter)) for s in lr_steps)
    return tuple(sorted({s for s in scaled if s < iters}))


def train_opts(config_file, opts: Sequence[str], iters: int, arm: Arm, arm_dir: str) -> List[str]:
    """Config overrides of one arm: ``opts``, then (``iters`` > 0) the rescaled schedule,
    then the arm's ``MODEL.CRBP`` keys and ``OUTPUT_DIR`` (which win over ``opts``)."""
    from ..engine import setup_cfg

    out = list(opts)
    if iters:
        cfg = setup_cfg(config_file, opts)
        lr_steps = scaled_lr_steps(cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER, iters)
        checkpoint = max(iters, cfg.SOLVER.CHECKPOINT_PERIOD)
        out += [
            "SOLVER.MAX_ITER",
            str(iters),
            "SOLVER.STEPS",
            str(lr_steps),
            "SOLVER.CHECKPOINT_PERIOD",
            str(checkpoint),
        ]
    return out + [str(v) for v in arm.config_opts()] + ["OUTPUT_DIR", arm_dir]


@contextlib.contextmanager
def training_logging():
    """Let ``default_setup`` log one arm to its own ``log.txt`` without doubling the console.

    ``default_setup`` adds a console and a file handler per output dir; before an arm the
    console handlers of earlier arms are dropped, after it its file handler is dropped
    (its console handler stays, for the evaluation that follows).
    """

    def is_console(h):
        return getattr(h, "stream", None) in (sys.stdout, sys.stderr)

    loggers = [logging.getLogger(n) for n in _LOGGERS]
    for lg in loggers:
        for h in [h for h in lg.handlers if is_console(h)]:
            lg.removeHandler(h)
    before = {lg.name: set(lg.handlers) for lg in loggers}
    try:
        yield
    finally:
        for lg in loggers:
            for h in [h for h in lg.handlers if h not in before[lg.name] and not is_console(h)]:
                lg.removeHandler(h)


def train_arm(config_file, opts: Sequence[str], iters: int, arm: Arm, arm_dir: str) -> Dict:
    """Train one arm (then evaluate it once); returns ``train_seconds`` and ``train_pq``."""
    from detectron2.engine import default_argument_parser

    from ..engine import train_or_evaluate

    args = default_argument_parser().parse_args(
        ["--config-file", str(config_file), *train_opts(config_file, opts, iters, arm, arm_dir)]
    )
    start = time.perf_counter()
    with training_logging():
        results = train_or_evaluate(args)
    seconds = time.perf_counter() - start
    pq = (results or {}).get("panoptic_seg", {}).get("PQ")
    return {"train_seconds": seconds, "train_pq": pq if pq is not None else logged_pq(arm_dir)}


def measure_arm(
    entry: Dict, grid: Sequence[int], num_steps: int, residual_images: int, log=print
) -> None:
    """Residual curves and PQ per test-step count of a trained arm, into ``entry``.

    Args:
        entry (dict): the arm's report entry: ``dir`` (with ``config.yaml`` and
            ``model_final.pth``), ``steps`` and ``label``.
        grid: the test-step counts of the PQ table.
        num_steps: length of the residual curves.
        residual_images: test images the curves are averaged over.
    """
    from detectron2.data import DatasetCatalog

    arm_dir, steps = entry["dir"], entry["steps"]
    weights = os.path.join(arm_dir, "model_final.pth")
    cfg = config_at_test_steps(arm_dir, steps)
    entry["iters"] = cfg.SOLVER.MAX_ITER  # as trained (a reused arm may differ from --iters)
    entry["dataset"] = cfg.DATASETS.TEST[0]
    entry["val_images"] = len(DatasetCatalog.get(cfg.DATASETS.TEST[0]))
    model = load_model(cfg, weights)
    entry["residual"] = residual_curves(
        model, first_test_inputs(cfg, residual_images), num_steps, steps
    )
    del model
    entry["pq"] = {}
    for t in grid:
        t0 = time.perf_counter()
        cfg = config_at_test_steps(arm_dir, t)
        pq = entry["pq"][str(t)] = evaluate_pq(cfg, load_model(cfg, weights))
        figures = "  ".join(f"{k} {pq[k]:.2f}" for k in PQ_KEYS)
        seconds = time.perf_counter() - t0
        log(f"[stability] {entry['label']}: t={t:3d}  {figures}  ({seconds:.0f} s)")


def run(
    config_file,
    arms: Sequence[Arm],
    out_dir: str,
    *,
    opts: Sequence[str] = (),
    iters: int = 0,
    test_steps: Optional[Sequence[int]] = None,
    residual_images: int = 4,
    skip_train: bool = False,
    log=print,
) -> Dict:
    """Train (or reuse) every arm, measure it, and write the report into ``out_dir``.

    Args:
        config_file: the training config.
        arms: recurrent arms, distinct.
        out_dir: the output directory (one subdirectory per arm).
        opts: config overrides for training (evaluation reads each arm's saved config).
        iters: training iterations per arm (LR decays rescaled); 0 = the config's.
        test_steps: the PQ grid; None = :func:`default_grid`.
        residual_images: test images for the residual curves.
        skip_train: never train: fail if an arm's ``model_final.pth`` is missing.

    Returns:
        dict: the report (also in ``stability.json``).

    Raises:
        ValueError: no arm, a feedforward arm, or a duplicate.
        FileNotFoundError: ``skip_train`` and a missing ``model_final.pth``.
    """
    from ..engine import setup_cfg

    if not arms or any(not a.recurrent for a in arms) or len(set(arms)) != len(arms):
        raise ValueError(f"arms {[a.name for a in arms]}: need distinct recurrent arms")
    os.makedirs(out_dir, exist_ok=True)
    trained = [a.steps for a in arms]
    grid = sorted(set(test_steps)) if test_steps else default_grid(trained)
    cfg0 = setup_cfg(config_file, opts)
    report = {
        "machine": machine_info(),
        "config_file": str(config_file),
        "opts": list(opts),
        "iters": iters or cfg0.SOLVER.MAX_ITER,
        "dataset": cfg0.DATASETS.TEST[0],
        "val_images": None,
        "residual_images": residual_images,
        "test_steps": grid,
        "residual_steps": 2 * max(trained),
        "arms": [],
    }
    start = time.perf_counter()
    for arm in arms:
        entry = {
            "arm": arm.name,
            "label": arm.label,
            "mode": arm.mode,
            "steps": arm.steps,
            "dir": os.path.join(out_dir, arm_dir_name(arm)),
        }
        report["arms"].append(entry)
        weights = os.path.join(entry["dir"], "model_final.pth")
        if os.path.exists(weights):
            log(f"[stability] {arm.label}: reusing {weights}")
            entry["train_pq"] = logged_pq(entry["dir"])
        elif skip_train:
            raise FileNotFoundError(f"--skip-train: {weights} does not exist")
        else:
            log(f"[stability] {arm.label}: training {report['iters']} iterations -> {entry['dir']}")
            entry.update(train_arm(config_file, opts, iters, arm, entry["dir"]))
            log(
                f"[stability] {arm.label}: trained in {entry['train_seconds']:.0f} s, "
                f"PQ {entry['train_pq']}"
            )
        measure_arm(entry, grid, report["residual_steps"], residual_images, log)
        report["dataset"], report["val_images"] = entry.pop("dataset"), entry.pop("val_images")
        write_report(out_dir, "stability", report, markdown(report))
    report["wall_seconds"] = time.perf_counter() - start
    write_report(out_dir, "stability", report, markdown(report))
    return report


# ----------------------------------------------------------------------------- report


def _pq_rows(report: Dict, key: str) -> List[List[str]]:
    rows = []
    for arm in report["arms"]:
        T = arm["steps"]
        row = [arm["label"], str(T)]
        if key == "PQ":
            row += [
                str(arm.get("iters", "-")),
                fmt(arm.get("train_seconds"), ".0f"),
                fmt(arm.get("train_pq")),
            ]
        pqs = {int(t): v for t, v in arm.get("pq", {}).items()}
        for t in report["test_steps"]:
            cell = fmt(pqs[t][key]) if t in pqs else "-"
            row.append(f"**{cell}**" if t == T else cell)
        if key == "PQ":
            mean = arm.get("residual", {}).get("mean")
            for k, t in (("residual", T), ("residual", 2 * T), ("drift", 2 * T)):
                row.append(fmt(mean[k][t - 1], ".1e") if mean and t <= len(mean[k]) else "-")
        rows.append(row)
    return rows


def _module_rows(report: Dict) -> List[List[str]]:
    rows = []
    for arm in report["arms"]:
        T = arm["steps"]
        for name, curve in arm.get("residual", {}).items():
            r, d = curve["residual"], curve["drift"]
            rows.append(
                [
                    arm["label"],
                    name,
                    fmt(r[0], ".1e"),
                    fmt(r[T - 1], ".1e"),
                    fmt(r[2 * T - 1], ".1e") if 2 * T <= len(r) else "-",
                    fmt(d[2 * T - 1], ".1e") if 2 * T <= len(d) else "-",
                ]
            )
    return rows


def markdown(report: Dict) -> str:
    """The tables of ``report`` (as :func:`run` returns it) as markdown."""
    m = report["machine"]
    lines = [
        "# Stability picture: PQ and residual vs test-time steps",
        "",
        f"Machine: {m['host']} ({m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']}, "
        f"{m['torch_threads']} threads, {m['gpu'] or 'no GPU'}).",
        f"Config: `{report['config_file']}`; training iterations per arm: see `iters`; "
        f"val split `{report['dataset']}` ({report['val_images']} images); residuals averaged "
        f"over {report['residual_images']} val images and the recurrent modules.",
        "",
    ]
    for key, title in (("PQ", "PQ (All)"), ("PQ_th", "PQ Things"), ("PQ_st", "PQ Stuff")):
        head = ["arm", "T", "iters", "train s", "PQ at train end"] if key == "PQ" else ["arm", "T"]
        head += [f"t={t}" for t in report["test_steps"]]
        if key == "PQ":
            head += ["residual@T", "residual@2T", "drift@2T"]
        lines += [f"## {title} vs test steps t (T = trained steps)", ""]
        lines += markdown_table(head, _pq_rows(report, key)) + [""]
    lines += [
        "train s: '-' = a reused model (its model_final.pth was already in the arm's directory). "
        "residual@t = ||h_t - h_{t-1}|| / ||h_t||, drift@t = ||h_t - h_T|| / ||h_T|| (state at t "
        "vs the trained step count T), both from h_0 = 0, mean over modules and images. "
        "Bold: t = T.",
        "",
        "## Residual per recurrent module",
        "",
    ]
    head = ["arm", "module", "residual@1", "residual@T", "residual@2T", "drift@2T"]
    lines += markdown_table(head, _module_rows(report)) + [""]
    return "\n".join(lines)


def plot(report: Dict, path: str) -> None:
    """PQ vs test steps and the mean residual vs step (log scale), one colour per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_pq, ax_res) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, arm in enumerate(report["arms"]):
        color, label = colors[i % len(colors)], arm["label"]
        pqs = sorted((int(t), v["PQ"]) for t, v in arm.get("pq", {}).items())
        if pqs:
            ax_pq.plot([t for t, _ in pqs], [v for _, v in pqs], "o-", color=color, label=label)
        mean = arm.get("residual", {}).get("mean")
        if mean:
            ts = range(1, len(mean["residual"]) + 1)
            ax_res.semilogy(ts, mean["residual"], "-", color=color, lw=2, label=f"{label} (mean)")
            for name, curve in arm["residual"].items():
                if name != "mean":
                    ax_res.semilogy(ts, curve["residual"], "-", color=color, lw=0.7, alpha=0.4)
        for ax in (ax_pq, ax_res):
            ax.axvline(arm["steps"], color=color, ls="--", lw=1)
    ax_pq.set(
        xlabel="test-time steps t",
        ylabel="PQ (val)",
        title="PQ vs test steps (dashed: trained steps)",
    )
    ax_res.set(
        xlabel="step t",
        ylabel="||h_t - h_{t-1}|| / ||h_t||",
        title="relative residual (thin: per module)",
    )
    for ax in (ax_pq, ax_res):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
