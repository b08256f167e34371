"""The Pathfinder report: one ``metrics.json`` and a markdown table from finished arms.

:func:`collect` reads ``out/<arm>/metrics.json`` (written by
:func:`~crbp_panoptic.pathfinder.train.run_arm`), scores the two floors on the same
held-out set, and writes ``out/metrics.json``::

    {"floor": {"all_paths": IoU, "connectivity_oracle": IoU},
     "floor_f1": {...}, "arms": {"crbp:20": {"iou": {"T", "2T", "3T"}, "f1": {...}, ...}}}

plus ``out/table.md`` and, where matplotlib is installed, ``accuracy_vs_steps.png``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import sys
from typing import List

__all__ = ["collect", "neumann_summary", "table"]

_ORDER = {"bptt": 0, "cbptt": 1, "rbp": 2, "crbp": 3}


def _load_arms(out: str) -> List[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "*", "metrics.json"))):
        with open(path) as fh:
            runs.append(json.load(fh))
    if not runs:
        raise FileNotFoundError(f"no */metrics.json under {out!r}; train some arms first")
    runs.sort(key=lambda r: (_ORDER.get(r["mode"], 9), r["steps"]))
    return runs


def table(summary: dict) -> str:
    """Markdown: floors and arms, IoU and pooled F1 at T / 2T / 3T, cost columns."""
    head = (
        "| answer | IoU@T | IoU@2T | IoU@3T | F1@T | F1@2T | F1@3T | best IoU (step) "
        "| residual@T | residual@3T | saved tensors MiB | train min |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    names = {
        "all_paths": "floor: every path (ink >= 0.5)",
        "connectivity_oracle": "oracle: ink connected to the dot",
    }
    for key, label in names.items():
        i, f = summary["floor"][key], summary["floor_f1"][key]
        lines.append(
            f"| {label} | {i:.3f} | {i:.3f} | {i:.3f} | {f:.3f} | {f:.3f} | {f:.3f} "
            "| - | - | - | - | - |"
        )
    for name, a in summary["arms"].items():
        iou, f1, res = a["iou"], a["f1"], a["residual"]
        lines.append(
            f"| {a['label']} (`{name}`) | {iou['T']:.3f} | {iou['2T']:.3f} | {iou['3T']:.3f} "
            f"| {f1['T']:.3f} | {f1['2T']:.3f} | {f1['3T']:.3f} "
            f"| {a['best_iou']:.3f} ({a['best_step']}) | {res['T']:.1e} | {res['3T']:.1e} "
            f"| {a['saved_tensor_bytes'] / 2**20:.1f} | {a['train_time_s'] / 60:.1f} |"
        )
    s = summary["settings"]
    note = (
        f"Device: {summary['device']}. {s['size']}x{s['size']} px, paths of {s['path_length']} "
        f"dashes ({s['dash_length']:g} px, gap {s['gap']:g} px, width {s['thickness']:g} px), "
        f"{s['distractors']} distractors kept >= {s['min_separation']:g} px from every other path "
        f"and >= {s['dot_clearance']:g} px from the dot. hGRU: C={s['channels']}, kernel "
        f"{s['kernel_size']}, variant {s['variant']}, norm {s['norm']} (gain {s['norm_gain']:g}), "
        f"drive gain {s['drive_gain']:g}; {s['iters']} iterations x batch {s['batch']}, "
        f"{s['n_test']} test images. T = training steps. IoU: mean over images; F1: pooled over "
        "all test pixels. Floors are scored on the same images. Best IoU (step): the highest "
        "IoU over test steps 1..3T, picked with the test labels (not a fair score; it shows "
        "what the dynamics pass through)."
    )
    peaks = [
        f"{a['label']} {a['cuda_peak_bytes'] / 2**20:.0f} MiB"
        for a in summary["arms"].values()
        if a.get("cuda_peak_bytes")
    ]
    if peaks:
        note += " CUDA peak memory in training: " + ", ".join(peaks) + "."
    lines += ["", note, "", _recall_table(summary), "", _colsum_table(summary)]
    lines += _neumann_lines(summary)
    return "\n".join(lines)


#: The Neumann statistics count the logged iterations from this one on (past the warm-up).
NEUMANN_FROM_ITER = 300


def neumann_summary(history: List[dict], from_iter: int = NEUMANN_FROM_ITER) -> dict:
    """How the RBP backward's Neumann series fared over the logged training iterations
    from ``from_iter`` on: ``logged``, ``cut`` (a growing term stopped the series) and
    ``at_most_one`` (it kept 0 or 1 terms). Empty for arms without a Neumann series."""
    rows = [h for h in history if h["iter"] >= from_iter and h.get("neumann") is not None]
    if not rows:
        return {}
    return {
        "from_iter": from_iter,
        "logged": len(rows),
        "cut": sum(bool(h["neumann_cut"]) for h in rows),
        "at_most_one": sum(h["neumann"] <= 1 for h in rows),
    }


def _neumann_lines(summary: dict) -> List[str]:
    lines = []
    for a in summary["arms"].values():
        n = a.get("neumann")
        if n:
            lines.append(
                f"{a['label']}: of the {n['logged']} logged training iterations from "
                f"{n['from_iter']} on, the Neumann series was cut by a growing term in "
                f"{n['cut']}, after at most one term in {n['at_most_one']}."
            )
    return ["", *lines] if lines else []


def _colsum_table(summary: dict) -> str:
    """Jacobian column sums ``1^T dF/dh`` at the state after T steps, at init and trained."""
    keys = ("colsum_p10", "colsum_p50", "colsum_p90", "colsum_max", "frac_above_tau", "contrast")
    rows = []
    for a in summary["arms"].values():
        for when in ("init", "trained"):
            d = a.get("colsum", {}).get(when)
            if d:
                cells = [f"{d[k]:.3f}" for k in keys] + [f"{d.get('adjoint_growth', math.nan):.3g}"]
                rows.append(f"| {a['label']} {when} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    tau = summary["settings"]["lcp_tau"]
    head = (
        "| Jacobian column sums at the state after T steps (first 8 test images) | p10 | p50 | p90 "
        f"| max | share > tau={tau:g} | state contrast | Neumann term growth |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(rows)


def _recall_table(summary: dict) -> str:
    rows = []
    for a in summary["arms"].values():
        prof = a.get("recall_by_distance")
        if not prof:
            continue
        bins, pixels = prof["bins"], prof["pixels"]
        keep = [j for j in range(len(bins) - 1) if pixels[j] > 0]
        if not rows:
            labels = [f"{bins[j]}-{bins[j + 1] - 1}" for j in keep]
            rows.append(
                "| recall of target pixels at distance (steps along the target) | "
                + " | ".join(labels)
                + " |"
            )
            rows.append("|---" * (len(keep) + 1) + "|")
        for t, vals in prof.items():
            if t in ("bins", "pixels"):
                continue
            rows.append(
                f"| {a['label']} at {t} steps | "
                + " | ".join(f"{vals[j]:.2f}" for j in keep)
                + " |"
            )
    return "\n".join(rows)


def collect(out: str, s=None) -> dict:
    """Write ``out/metrics.json``, ``out/table.md`` (and a plot); return the summary dict."""
    from .train import Settings, at_multiples, floors, held_out_data

    runs = _load_arms(out)
    if s is None:
        known = {f.name for f in dataclasses.fields(Settings)}
        s = Settings(**{k: v for k, v in runs[0]["settings"].items() if k in known})
    fl = floors(held_out_data(s))
    summary = {
        "floor": {k: v["iou"] for k, v in fl.items()},
        "floor_f1": {k: v["f1"] for k, v in fl.items()},
        "arms": {},
        "settings": dataclasses.asdict(s),
        "device": runs[0]["device"],
    }
    for r in runs:
        tr = r["trajectory"]
        summary["arms"][r["arm"]] = {
            "label": r["label"],
            "iou": r["iou"],
            "f1": r["f1"],
            "residual": at_multiples(tr, r["steps"], "residual"),
            "best_iou": max(tr["iou"]),
            "best_step": 1 + tr["iou"].index(max(tr["iou"])),
            "train_time_s": r["train_time_s"],
            "saved_tensor_bytes": r["saved_tensor_bytes"],
            "peak_rss_mb": r["peak_rss_mb"],
            "cuda_peak_bytes": r.get("cuda_peak_bytes"),
            "colsum": r.get("colsum", {}),
            "recall_by_distance": tr.get("recall_by_distance"),
            "neumann": neumann_summary(r.get("history", [])),
        }
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    text = table(summary)
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(text + "\n")
    _plot(out, runs, summary)
    return summary


def _plot(out: str, runs: List[dict], summary: dict, fname: str = "accuracy_vs_steps.png") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # e.g. a GPU machine without it: metrics.json and table.md hold everything
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in runs:
        tr = r["trajectory"]
        (line,) = ax.plot(tr["steps"], tr["iou"], label=f"{r['label']} (trained at {r['steps']})")
        ax.axvline(r["steps"], color=line.get_color(), ls=":", lw=1)
    ax.axhline(summary["floor"]["all_paths"], color="grey", ls="--", lw=1, label="every path")
    ax.axhline(summary["floor"]["connectivity_oracle"], color="k", ls="--", lw=1, label="oracle")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("test-time steps")
    ax.set_ylabel("test IoU (mean over images)")
    s = summary["settings"]
    ax.set_title(f"Pathfinder, {s['path_length']} dashes, {s['size']} px")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, fname), dpi=90)
    plt.close(fig)
