#!/usr/bin/env python
"""Stability picture: PQ and the recurrent residual when a model runs past its trained steps.

The paper's claim (DESIGN.md, section 4): run for more steps at test time than in
training and a C-RBP model stays at its equilibrium, while a BPTT model drifts and its
PQ falls. This tool checks that on the synthetic data:

1. For every arm ``GRAD:STEPS`` (default ``bptt:3 crbp:10``) it trains a model from
   ``--config-file`` with ``MODEL.CRBP.GRAD`` = GRAD and ``MODEL.CRBP.STEPS`` = STEPS,
   through ``tools/train_net.py``'s ``main`` (the project's Trainer, final evaluation
   included), into ``<output-dir>/<grad>_<steps>/``. An arm whose ``model_final.pth``
   is already there is reused (``--skip-train``: never train, fail if one is missing).
2. PQ (All / Things / Stuff) on the val split (``DATASETS.TEST``) for every test-step
   count t of a grid (``--test-steps``; default: 1, 2, 3, 5, 8, 10, 15, 20, ... up to 2x
   the largest STEPS, plus every arm's STEPS and 2 x STEPS). Each t rebuilds the model
   from the arm's saved config with ``MODEL.CRBP.TEST_STEPS`` = t and ``TEST_TOL`` = 0
   (exactly t steps), loads the weights and runs ``Trainer.test`` with Detectron2's
   ``COCOPanopticEvaluator``.
3. The relative residual ``||h_t - h_{t-1}|| / ||h_t||`` for t = 1 .. 2 x the largest
   STEPS, per recurrent module (``recurrent_modules(model)``), averaged over the first
   ``--residual-images`` val images: the drive ``x`` of every ``RecurrentRefiner`` is
   captured with a forward pre-hook during one inference pass, then the module's cell is
   stepped from ``h_0 = 0`` under ``torch.no_grad()``. Alongside: the drift
   ``||h_t - h_T|| / ||h_T||`` away from the state the model was trained to use (T = STEPS).

Writes ``stability.md`` (tables headed by the machine), ``stability.json`` (everything)
and ``stability.png`` (PQ vs test steps, a dashed line at each arm's STEPS; residual vs t
on a log scale) to ``--output-dir`` and prints the tables. The JSON and markdown are
rewritten after every arm, so a run cut short keeps what it measured.

    python tools/stability.py [--config-file CONFIG] [--arms bptt:3 crbp:10] [--iters 300] \\
        [--output-dir output/stability] [--test-steps 1 2 5 10 20] [--residual-images 4] \\
        [--skip-train] [KEY VALUE ...]

Trailing ``KEY VALUE`` pairs are config overrides for training (and so for evaluation:
evaluation reads the config the arm was trained with, ``<arm dir>/config.yaml``).
"""
import argparse
import contextlib
import json
import logging
import math
import os
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.modeling import build_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_net  # noqa: E402  (tools/train_net.py: main())

from crbp_panoptic import add_crbp_config  # noqa: E402
from crbp_panoptic.crbp.equilibrium import MODES  # noqa: E402
from crbp_panoptic.crbp.solvers import relative_residual  # noqa: E402
from crbp_panoptic.data.checks import prepare_dataset  # noqa: E402
from crbp_panoptic.engine import Trainer  # noqa: E402
from crbp_panoptic.modeling import recurrent_modules  # noqa: E402

DEFAULT_CONFIG = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"
DEFAULT_ARMS = ("bptt:3", "crbp:10")
BASE_GRID = (1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 60, 80)
PQ_KEYS = ("PQ", "PQ_th", "PQ_st")


# ----------------------------------------------------------------------------- helpers
def parse_arm(text: str) -> Tuple[str, int]:
    """``"bptt:3"`` -> ``("bptt", 3)``; GRAD must be one of the engine's modes, STEPS >= 1."""
    grad, sep, steps = text.partition(":")
    grad = grad.strip().lower()
    if not sep or grad not in MODES or not steps.strip().isdigit() or int(steps) < 1:
        raise ValueError(f"arm {text!r}: expected GRAD:STEPS with GRAD in {list(MODES)} and STEPS >= 1")
    return grad, int(steps)


def arm_name(grad: str, steps: int) -> str:
    return f"{grad}_{steps}"


def default_grid(trained_steps: Sequence[int]) -> List[int]:
    """Test-step counts from 1 to 2 x max(trained_steps): a rough log grid plus every T and 2T."""
    top = 2 * max(trained_steps)
    grid = {t for t in BASE_GRID if t <= top}
    for t in trained_steps:
        grid.update((t, 2 * t))
    grid.update((1, top))
    return sorted(grid)


def scaled_lr_steps(lr_steps: Sequence[int], max_iter: int, iters: int) -> Tuple[int, ...]:
    """The config's LR decay iterations rescaled to a schedule of ``iters`` instead of ``max_iter``.

    Decays that would fall on or after the last iteration are dropped (the scheduler rejects them).
    """
    scaled = (max(1, round(s * iters / max_iter)) for s in lr_steps)
    return tuple(sorted({s for s in scaled if s < iters}))


def residual_trajectory(cell, x: torch.Tensor, num_steps: int, ref_step: int) -> Tuple[List[float], List[float]]:
    """Step ``h <- cell(x, h)`` from ``h_0 = 0`` for ``num_steps`` steps (no grad).

    Returns:
        (residual, drift): per step t = 1..num_steps, ``||h_t - h_{t-1}|| / ||h_t||`` and
        ``||h_t - h_T|| / ||h_T||`` with T = ``ref_step`` (<= num_steps).
    """
    if not 1 <= ref_step <= num_steps:
        raise ValueError(f"ref_step={ref_step} must lie in 1..num_steps={num_steps}")
    residual, states = [], []
    with torch.no_grad():
        h = torch.zeros_like(x)
        for _ in range(num_steps):
            h_new = cell(x, h)
            residual.append(float(relative_residual(h_new, h)))
            states.append(h_new)
            h = h_new
        ref = states[ref_step - 1]
        drift = [float(_rel_dist(s, ref)) for s in states]
    return residual, drift


def _rel_dist(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``||a - ref|| / ||ref||`` (0 for an empty tensor)."""
    return torch.linalg.vector_norm((a - ref).float()) / (torch.linalg.vector_norm(ref.float()) + 1e-12)


@contextlib.contextmanager
def capture_drives(model):
    """Record the drive ``x`` of every RecurrentRefiner call: yields ``{name: [x, ...]}``."""
    drives: Dict[str, List[torch.Tensor]] = {}
    handles = []
    for name, module in recurrent_modules(model):
        drives[name] = []
        handles.append(module.register_forward_pre_hook(
            lambda mod, args, _name=name: drives[_name].append(args[0].detach())))
    try:
        yield drives
    finally:
        for h in handles:
            h.remove()


def residual_curves(model, inputs: Sequence[dict], num_steps: int, ref_step: int) -> Dict[str, Dict[str, List[float]]]:
    """Per recurrent module of ``model``: the residual and drift curves, averaged over ``inputs``.

    Each input (a Detectron2 inference dict) is run alone through ``model`` in eval mode to
    capture the drives; modules that saw an empty drive (e.g. a mask head with no ROIs) skip
    that image. Returns ``{module: {"residual": [...], "drift": [...], "images": n}}``, plus
    ``"mean"`` over modules (modules with no drive at all are left out).
    """
    was_training = model.training
    model.eval()
    sums: Dict[str, Dict[str, list]] = {}
    counts: Dict[str, int] = {}
    try:
        modules = dict(recurrent_modules(model))
        for item in inputs:
            with torch.no_grad(), capture_drives(model) as drives:
                model([item])
            for name, xs in drives.items():
                for x in xs:
                    if x.numel() == 0:
                        continue
                    res, drift = residual_trajectory(modules[name].cell, x, num_steps, ref_step)
                    acc = sums.setdefault(name, {"residual": [0.0] * num_steps, "drift": [0.0] * num_steps})
                    acc["residual"] = [a + b for a, b in zip(acc["residual"], res)]
                    acc["drift"] = [a + b for a, b in zip(acc["drift"], drift)]
                    counts[name] = counts.get(name, 0) + 1
    finally:
        model.train(was_training)
    out = {name: {key: [v / counts[name] for v in vals] for key, vals in acc.items()} | {"images": counts[name]}
           for name, acc in sums.items()}
    if out:
        n = len(out)
        out["mean"] = {key: [sum(out[m][key][t] for m in sums) / n for t in range(num_steps)]
                       for key in ("residual", "drift")} | {"images": min(counts.values())}
    return out


def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {"host": platform.node(), "cpu": cpu, "cpu_count": str(os.cpu_count()),
            "torch_threads": str(torch.get_num_threads()), "gpu": device,
            "torch": torch.__version__, "platform": platform.platform()}


def _fmt(value, spec=".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def markdown(report: dict) -> str:
    """The tables of ``report`` (the JSON written by this tool) as markdown."""
    m = report["machine"]
    grid = report["test_steps"]
    lines = [
        "# Stability picture: PQ and residual vs test-time steps",
        "",
        f"Machine: {m['host']} ({m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']}, "
        f"{m['torch_threads']} threads, {m['gpu']}).",
        f"Config: `{report['config_file']}`; training iterations per arm: see `iters`; "
        f"val split `{report['dataset']}` ({report['val_images']} images); residuals averaged over "
        f"{report['residual_images']} val images and the recurrent modules.",
        "",
    ]
    for key, title in (("PQ", "PQ (All)"), ("PQ_th", "PQ Things"), ("PQ_st", "PQ Stuff")):
        lines += [f"## {title} vs test steps t (T = trained steps)", ""]
        head = ["arm", "T", "iters", "train s", "PQ at train end"] if key == "PQ" else ["arm", "T"]
        head += [f"t={t}" for t in grid]
        if key == "PQ":
            head += ["residual@T", "residual@2T", "drift@2T"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm in report["arms"]:
            T = arm["steps"]
            row = [arm["name"], str(T)]
            if key == "PQ":
                row += [str(arm.get("iters", "-")), _fmt(arm.get("train_seconds"), ".0f"), _fmt(arm.get("train_pq"))]
            pqs = {int(t): v for t, v in arm.get("pq", {}).items()}
            for t in grid:
                cell = _fmt(pqs[t][key]) if t in pqs else "-"
                row.append(f"**{cell}**" if t == T else cell)
            if key == "PQ":
                mean = arm.get("residual", {}).get("mean")
                for k, t in (("residual", T), ("residual", 2 * T), ("drift", 2 * T)):
                    row.append(_fmt(mean[k][t - 1], ".1e") if mean and t <= len(mean[k]) else "-")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        "train s: '-' = a reused model (its model_final.pth was already in the arm's directory). "
        "residual@t = ||h_t - h_{t-1}|| / ||h_t||, drift@t = ||h_t - h_T|| / ||h_T|| (state at t vs "
        "the trained step count T), both from h_0 = 0, mean over modules and images. Bold: t = T.",
        "",
        "## Residual per recurrent module",
        "",
        "| arm | module | residual@1 | residual@T | residual@2T | drift@2T |",
        "|---|---|---|---|---|---|",
    ]
    for arm in report["arms"]:
        T = arm["steps"]
        for name, curve in arm.get("residual", {}).items():
            r, d = curve["residual"], curve["drift"]
            lines.append(f"| {arm['name']} | {name} | {_fmt(r[0], '.1e')} | {_fmt(r[T - 1], '.1e')} | "
                         f"{_fmt(r[2 * T - 1], '.1e') if 2 * T <= len(r) else '-'} | "
                         f"{_fmt(d[2 * T - 1], '.1e') if 2 * T <= len(d) else '-'} |")
    lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_pq, ax_res) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, arm in enumerate(report["arms"]):
        color = colors[i % len(colors)]
        label = f"{arm['grad'].upper()}-{arm['steps']}"
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
    ax_pq.set(xlabel="test-time steps t", ylabel="PQ (val)", title="PQ vs test steps (dashed: trained steps)")
    ax_res.set(xlabel="step t", ylabel="||h_t - h_{t-1}|| / ||h_t||",
               title="relative residual (thin: per module)")
    for ax in (ax_pq, ax_res):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------- the run
_LOGGERS = ("detectron2", "fvcore")


@contextlib.contextmanager
def training_logging():
    """Let ``default_setup`` log one arm to its own ``log.txt`` without doubling the console.

    ``default_setup`` adds a console and a file handler per output dir; before an arm the
    console handlers of earlier arms are dropped, after it its file handler is dropped
    (its console handler stays, for the evaluation that follows).
    """
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    for lg in loggers:
        for h in list(lg.handlers):
            if getattr(h, "stream", None) in (sys.stdout, sys.stderr):
                lg.removeHandler(h)
    before = {lg.name: set(lg.handlers) for lg in loggers}
    try:
        yield
    finally:
        for lg in loggers:
            for h in list(lg.handlers):
                if h not in before[lg.name] and getattr(h, "stream", None) not in (sys.stdout, sys.stderr):
                    lg.removeHandler(h)


def base_config(config_file: str, opts: Sequence[str]):
    cfg = get_cfg()
    add_crbp_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def train_opts(args, grad: str, steps: int, arm_dir: str) -> List[str]:
    """Config overrides of one arm: the user's, then GRAD/STEPS/OUTPUT_DIR and the schedule."""
    opts = list(args.opts)
    if args.iters:
        cfg = base_config(args.config_file, args.opts)
        lr_steps = scaled_lr_steps(cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER, args.iters)
        checkpoint = max(args.iters, cfg.SOLVER.CHECKPOINT_PERIOD)
        opts += ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", str(lr_steps),
                 "SOLVER.CHECKPOINT_PERIOD", str(checkpoint)]
    return opts + ["MODEL.CRBP.GRAD", grad, "MODEL.CRBP.STEPS", str(steps), "OUTPUT_DIR", arm_dir]


def train_arm(args, grad: str, steps: int, arm_dir: str) -> dict:
    train_args = default_argument_parser().parse_args(
        ["--config-file", args.config_file, *train_opts(args, grad, steps, arm_dir)])
    start = time.perf_counter()
    with training_logging():
        results = train_net.main(train_args)  # trains, then evaluates once (EvalHook)
    seconds = time.perf_counter() - start
    pq = (results or {}).get("panoptic_seg", {}).get("PQ")
    return {"train_seconds": seconds, "train_pq": pq if pq is not None else logged_pq(arm_dir)}


def logged_pq(arm_dir: str) -> Optional[float]:
    """The last ``panoptic_seg/PQ`` the trainer wrote to ``<arm_dir>/metrics.json`` (None if none)."""
    path = os.path.join(arm_dir, "metrics.json")
    pq = None
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "panoptic_seg/PQ" in line:
                    pq = json.loads(line).get("panoptic_seg/PQ", pq)
    return pq


def arm_eval_config(arm_dir: str, test_steps: int):
    """The config the arm was trained with, set to run exactly ``test_steps`` steps at test time."""
    cfg = get_cfg()
    add_crbp_config(cfg)
    cfg.merge_from_file(os.path.join(arm_dir, "config.yaml"))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.CRBP.TEST_STEPS = int(test_steps)
    cfg.MODEL.CRBP.TEST_TOL = 0.0
    cfg.freeze()
    return cfg


def load_model(cfg, weights: str):
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    model.eval()
    return model


def evaluate_pq(arm_dir: str, weights: str, test_steps: int) -> Dict[str, float]:
    cfg = arm_eval_config(arm_dir, test_steps)
    model = load_model(cfg, weights)
    evaluators = []
    for name in cfg.DATASETS.TEST:
        prepare_dataset(name)
        evaluators.append(COCOPanopticEvaluator(name))  # output_dir=None: a temporary dir
    results = Trainer.test(cfg, model, evaluators=evaluators)
    pq = results["panoptic_seg"] if "panoptic_seg" in results else next(iter(results.values()))["panoptic_seg"]
    return {k: float(pq[k]) for k in PQ_KEYS}


def residual_inputs(cfg, num_images: int) -> List[dict]:
    loader = Trainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    items = []
    for batch in loader:
        items.extend(batch)
        if len(items) >= num_images:
            break
    return items[:num_images]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), metavar="GRAD:STEPS",
                        help="models to compare (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=300,
                        help="training iterations per arm (LR decay rescaled); 0 = the config's")
    parser.add_argument("--output-dir", default="output/stability")
    parser.add_argument("--test-steps", type=int, nargs="+", default=None,
                        help="test-step grid (default: 1..2x the largest STEPS, see the docstring)")
    parser.add_argument("--residual-images", type=int, default=4, help="val images for the residual curves")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default); 1 is much faster on a shared machine")
    parser.add_argument("--skip-train", action="store_true",
                        help="only evaluate: every arm's model_final.pth must exist")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    try:
        args.arm_specs = [parse_arm(a) for a in args.arms]
    except ValueError as e:
        parser.error(str(e))
    if len(set(args.arm_specs)) != len(args.arm_specs):
        parser.error(f"--arms {args.arms}: duplicate arm")
    if args.iters < 0 or args.residual_images < 1:
        parser.error("--iters must be >= 0 and --residual-images >= 1")
    if args.test_steps is not None and min(args.test_steps) < 1:
        parser.error("--test-steps must be >= 1")
    if len(args.opts) % 2:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    return args


def write_report(report: dict, out_dir: str) -> str:
    with open(os.path.join(out_dir, "stability.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(os.path.join(out_dir, "stability.md"), "w") as f:
        f.write(text)
    return text


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out_dir = args.output_dir
    os.makedirs(out_dir, exist_ok=True)
    trained = [s for _, s in args.arm_specs]
    grid = sorted(set(args.test_steps)) if args.test_steps else default_grid(trained)
    num_steps = 2 * max(trained)
    cfg0 = base_config(args.config_file, args.opts)
    report = {
        "machine": machine_info(), "config_file": args.config_file, "opts": list(args.opts),
        "iters": args.iters or cfg0.SOLVER.MAX_ITER, "dataset": cfg0.DATASETS.TEST[0],
        "val_images": None, "residual_images": args.residual_images, "test_steps": grid,
        "residual_steps": num_steps, "arms": [],
    }
    start = time.perf_counter()
    for grad, steps in args.arm_specs:
        name = arm_name(grad, steps)
        arm_dir = os.path.join(out_dir, name)
        weights = os.path.join(arm_dir, "model_final.pth")
        arm = {"name": name, "grad": grad, "steps": steps, "dir": arm_dir}
        report["arms"].append(arm)
        if os.path.exists(weights):
            print(f"[stability] {name}: reusing {weights}", flush=True)
            arm["train_pq"] = logged_pq(arm_dir)
        elif args.skip_train:
            raise FileNotFoundError(f"--skip-train: {weights} does not exist")
        else:
            print(f"[stability] {name}: training {report['iters']} iterations -> {arm_dir}", flush=True)
            arm.update(train_arm(args, grad, steps, arm_dir))
            print(f"[stability] {name}: trained in {arm['train_seconds']:.0f} s, PQ {arm['train_pq']}", flush=True)

        # Residual curves: one model at the trained step count, drives captured per image.
        cfg = arm_eval_config(arm_dir, steps)
        arm["iters"] = cfg.SOLVER.MAX_ITER  # as trained (a reused arm may differ from --iters)
        report["dataset"] = cfg.DATASETS.TEST[0]
        report["val_images"] = len(DatasetCatalog.get(cfg.DATASETS.TEST[0]))
        model = load_model(cfg, weights)
        inputs = residual_inputs(cfg, args.residual_images)
        arm["residual"] = residual_curves(model, inputs, num_steps, steps)
        del model

        arm["pq"] = {}
        for t in grid:
            t0 = time.perf_counter()
            arm["pq"][str(t)] = evaluate_pq(arm_dir, weights, t)
            print(f"[stability] {name}: t={t:3d}  " + "  ".join(
                f"{k} {arm['pq'][str(t)][k]:.2f}" for k in PQ_KEYS) + f"  ({time.perf_counter() - t0:.0f} s)",
                flush=True)
        write_report(report, out_dir)
    report["wall_seconds"] = time.perf_counter() - start
    text = write_report(report, out_dir)
    plot(report, os.path.join(out_dir, "stability.png"))
    print("\n" + text)
    print(f"[stability] wrote {out_dir}/stability.md, stability.json, stability.png "
          f"in {report['wall_seconds'] / 60:.1f} min", flush=True)
    return report


if __name__ == "__main__":
    main()
