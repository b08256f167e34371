#!/usr/bin/env python
"""Pathfinder (PF-SEG) experiment: BPTT at few steps vs C-RBP at many, and their stability.

Trains each arm (``MODE:STEPS``), evaluates IoU/F1 on held-out images at every
test-time step from 1 to 3x the trained steps, then writes into ``--out``:

* ``<mode>_<steps>/model.pt`` and ``metrics.json`` per arm,
* ``table.md`` (also printed): IoU/F1 at T, 2T, 3T, training memory, time,
* ``accuracy_vs_steps.png`` (IoU vs test-time steps) and ``residual_vs_steps.png``.

Examples::

    # CPU scale (README numbers), two arms in parallel processes:
    python tools/train_pathfinder.py --scale cpu --arms bptt:6,crbp:20 --jobs 2 --out output/pathfinder
    # GPU scale (the paper's setting), one path length:
    python tools/train_pathfinder.py --scale gpu --path-length 25 --arms bptt:6,crbp:20 --device cuda --out out/L25
    # Rebuild the table and plots from finished arms:
    python tools/train_pathfinder.py --out output/pathfinder --report-only
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crbp_panoptic.crbp import MODES  # noqa: E402
from crbp_panoptic.pathfinder.generator import save_examples  # noqa: E402
from crbp_panoptic.pathfinder.model import LOSSES  # noqa: E402
from crbp_panoptic.pathfinder.train import (  # noqa: E402
    INK,
    SCALES,
    Settings,
    all_paths_iou,
    parse_arm,
    run_arm,
)

#: Settings fields that can be overridden from the command line (``--path-length`` etc.).
_OVERRIDES = [f for f in dataclasses.fields(Settings)]


def _arm_dir(out: str, arm: str) -> str:
    mode, steps = parse_arm(arm)
    return os.path.join(out, f"{mode}_{steps}")


def _fmt_mb(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


def report(out: str) -> str:
    """Write ``table.md`` and the two plots from every ``*/metrics.json`` under ``out``."""
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "*", "metrics.json"))):
        with open(path) as fh:
            runs.append(json.load(fh))
    if not runs:
        raise SystemExit(f"no */metrics.json under {out!r}; train some arms first")
    order = {m: i for i, m in enumerate(MODES)}
    runs.sort(key=lambda r: (order.get(r["mode"], 9), r["steps"]))
    lines = [
        "| arm | IoU@T | F1@T | IoU@2T | F1@2T | IoU@3T | F1@3T | best IoU (step) | residual@T | residual@3T "
        "| saved tensors MiB | peak RSS MiB | CUDA peak MiB | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        tr, t = r["trajectory"], r["steps"]
        n = len(tr["iou"])

        def at(key, k, tr=tr, n=n):
            return tr[key][min(k, n) - 1]

        best = max(range(n), key=lambda i: tr["iou"][i])
        cuda = r.get("cuda_peak_bytes")
        lines.append(
            f"| {r['arm']} | {at('iou', t):.3f} | {at('f1', t):.3f} | {at('iou', 2 * t):.3f} | {at('f1', 2 * t):.3f} "
            f"| {at('iou', 3 * t):.3f} | {at('f1', 3 * t):.3f} | {tr['iou'][best]:.3f} ({best + 1}) "
            f"| {at('residual', t):.1e} | {at('residual', 3 * t):.1e} "
            f"| {_fmt_mb(r['saved_tensor_bytes'])} | {r['peak_rss_mb']:.0f} | {_fmt_mb(cuda)} | {r['train_time_s']:.0f} |"
        )
    s = runs[0]["settings"]
    lines.append("")
    lines.append(
        f"Device: {runs[0]['device']}. {s['size']}x{s['size']} px, path length {s['path_length']} dashes, "
        f"{s['distractors']} distractors ({s['near_distractors']} near), C={s['channels']}, hGRU kernel "
        f"{s['kernel_size']}, Gabor {s['gabor_size']}, {s['iters']} iters x batch {s['batch']}, "
        f"{s['n_test']} test images. T = trained steps; IoU/F1 are per-image means."
    )
    known = {f.name for f in dataclasses.fields(Settings)}
    floor = all_paths_iou(Settings(**{k: v for k, v in s.items() if k in known}))
    lines.append(
        f"Floor: marking every path (every pixel brighter than {INK}) scores IoU {floor:.3f}; "
        "a model that traces the contour touching the dot scores well above it."
    )
    table = "\n".join(lines)
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(table + "\n")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # e.g. a GPU machine without it: table.md and metrics.json still hold everything
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return table

    for key, fname, ylabel in (
        ("iou", "accuracy_vs_steps.png", "test IoU"),
        ("residual", "residual_vs_steps.png", "relative residual ||h_t - h_{t-1}|| / ||h_t||"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in runs:
            tr = r["trajectory"]
            (line,) = ax.plot(tr["steps"], tr[key], label=f"{r['arm']} (trained at {r['steps']})")
            ax.axvline(r["steps"], color=line.get_color(), ls=":", lw=1)
        if key == "residual":
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1)
        ax.set_xlabel("test-time steps")
        ax.set_ylabel(ylabel)
        ax.set_title(f"Pathfinder PF-SEG, path length {s['path_length']} ({s['size']} px)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=100)
        plt.close(fig)
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="settings preset")
    p.add_argument("--arms", default="bptt:6,crbp:20", help="comma-separated MODE:STEPS (modes: %s)" % ", ".join(MODES))
    p.add_argument("--out", default="output/pathfinder", help="output folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--jobs", type=int, default=1, help="train arms in this many parallel processes")
    p.add_argument("--report-only", action="store_true", help="only rebuild table and plots")
    p.add_argument("--no-report", action="store_true", help="train only (used by --jobs workers)")
    p.add_argument("--examples", default=None, help="also render generator examples to this PNG")
    for f in _OVERRIDES:
        kind = f.type if f.type in (int, float, str) else {"int": int, "float": float, "str": str}.get(str(f.type), float)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None, help=f"override the preset's {f.name}")
    a = p.parse_args(argv)

    if a.report_only:
        print(report(a.out))
        return
    settings = dataclasses.replace(
        SCALES[a.scale], **{f.name: getattr(a, f.name) for f in _OVERRIDES if getattr(a, f.name) is not None}
    )
    if settings.loss not in LOSSES:
        raise SystemExit(f"--loss={settings.loss!r}; choose from {sorted(LOSSES)}")
    arms = [x for x in a.arms.split(",") if x]
    for arm in arms:
        mode, _ = parse_arm(arm)
        if mode not in MODES:
            raise SystemExit(f"arm {arm!r}: mode={mode!r}; choose from {sorted(MODES)}")
    os.makedirs(a.out, exist_ok=True)
    if a.examples:
        save_examples(settings.generator_config(), a.examples, n=4, seed=settings.seed, scale=2 if settings.size < 100 else 1)

    if a.jobs > 1 and len(arms) > 1:
        # One process per arm (peak RSS is then per arm); pass the same argv minus arms/jobs.
        base = [x for x in (argv if argv is not None else sys.argv[1:])]
        strip = {"--arms", "--jobs", "--examples"}
        rest, skip = [], False
        for x in base:
            if skip:
                skip = False
                continue
            key = x.split("=")[0]
            if key in strip:
                skip = "=" not in x
                continue
            rest.append(x)
        procs = []
        for i in range(0, len(arms), 1):
            cmd = [sys.executable, os.path.abspath(__file__), *rest, "--arms", arms[i], "--no-report"]
            procs.append(subprocess.Popen(cmd))
            if len(procs) >= a.jobs:
                procs.pop(0).wait()
        for pr in procs:
            pr.wait()
    else:
        for arm in arms:
            mode, steps = parse_arm(arm)
            run_arm(settings, mode, steps, _arm_dir(a.out, arm), device=a.device, log=lambda m: print(m, flush=True))
    if not a.no_report:
        print(report(a.out))


if __name__ == "__main__":
    main()
