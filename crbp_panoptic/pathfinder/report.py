"""The Pathfinder report: one ``metrics.json`` and a markdown table from finished arms.

:func:`collect` gathers ``out/<arm>/metrics.json`` (written by
:func:`~crbp_panoptic.pathfinder.train.run_arm`, read by :func:`load_arms`) and the two
floors scored on the same held-out set (by
:func:`~crbp_panoptic.pathfinder.train.write_report`, which calls it), and writes
``out/metrics.json``::

    {"floor": {"all_paths": IoU, "connectivity_oracle": IoU},
     "floor_f1": {...},
     "penalty_arm": "crbp:20:spectral",          # the spectral-penalty arm, or null
     "arms": {"crbp:20": {"iou": {"T", "2T", "3T"}, "f1": {...},
                          "residual": {"T", "3T"},   # relative forward residual, held out
                          "adjoint_growth": x,       # trained cell, state after 3T steps
                          "guard_cut_share": x,      # logged iterations >= telemetry_from_iter
                          ...}}}

plus ``out/table.md`` and, where matplotlib is installed, ``accuracy_vs_steps.png``.
``guard_cut_share`` is the share of logged training iterations from
``settings.telemetry_from_iter`` on whose Neumann series the growth guard cut (null for
BPTT arms, and when no iteration was logged there).

:func:`length_report` gathers the runs of a length sweep (``out/L<length>/``, one such
``metrics.json`` each) into ``out/metrics.json`` = ``{"lengths": {"5": {...}, ...}, ...}``,
``out/table.md`` and ``out/length_curve.png``: pooled F1 at T against path length per arm,
the floor, and the paper's curve for reference (:data:`PAPER_LENGTH_CURVE`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ..crbp import NEUMANN_STOPS, parse_arm
from ..experiments.report import write_atomic

__all__ = [
    "PAPER_LENGTH_CURVE",
    "at_multiples",
    "collect",
    "length_report",
    "length_table",
    "load_arms",
    "neumann_summary",
    "penalty_arm",
    "table",
]

#: The paper's Pathfinder length curve (Linsley et al. 2020; 150 px images, 25-channel
#: hGRU with 15x15 kernels): pooled F1 at T of BPTT-6 and C-RBP-20 at three path lengths,
#: as reported there. Drawn for reference only: its images, lengths and model differ
#: from the runs' own.
PAPER_LENGTH_CURVE = {
    "size": 150,
    "lengths": [14, 20, 25],
    "f1": {"bptt:6": [0.986, 0.886, 0.724], "crbp:20": [0.962, 0.946, 0.938]},
}

#: A one-step-gradient arm "matches" its C-RBP twin when their IoU at T differ by at most this.
ONE_STEP_MATCH = 0.02

_ORDER = {"bptt": 0, "cbptt": 1, "rbp": 2, "crbp": 3}


def load_arms(out: str) -> List[dict]:
    """Every ``out/<arm>/metrics.json``, BPTT arms first, by steps within a mode.

    Raises:
        FileNotFoundError: there is none.
    """
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "*", "metrics.json"))):
        with open(path) as fh:
            runs.append(json.load(fh))
    if not runs:
        raise FileNotFoundError(f"no */metrics.json under {out!r}; train some arms first")
    runs.sort(key=lambda r: (_ORDER.get(r["mode"], 9), r["steps"]))
    return runs


def _dilated(settings: dict) -> str:
    d = settings.get("dilation", 1)  # runs from before the key: undilated
    return f" dilated {d}" if d != 1 else ""


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
        f"{s['kernel_size']}{_dilated(s)}, variant {s['variant']}, norm {s['norm']} "
        f"(gain {s['norm_gain']:g}), "
        f"drive gain {s['drive_gain']:g}; {s['iters']} iterations x batch {s['batch']}, "
        f"{s['n_test']} test images. T = training steps. IoU: mean over images; F1: pooled over "
        "all test pixels. Floors are scored on the same images. Best IoU (step): the highest "
        "IoU over test steps 1..3T, picked with the test labels (not a fair score; it shows "
        "what the dynamics pass through)."
    )
    cut = [
        f"{a['label']} {a['iters_run']}"
        for a in summary["arms"].values()
        if a.get("iters_run", s["iters"]) < s["iters"]
    ]
    if cut:
        note += " Stopped early (time limit or a non-finite loss), iterations done: "
        note += ", ".join(cut) + "."
    peaks = [
        f"{a['label']} {a['cuda_peak_bytes'] / 2**20:.0f} MiB"
        for a in summary["arms"].values()
        if a.get("cuda_peak_bytes")
    ]
    if peaks:
        note += " CUDA peak memory in training: " + ", ".join(peaks) + "."
    lines += ["", note, "", _recall_table(summary), "", _colsum_table(summary)]
    lines += ["", _convergence_table(summary)]
    lines += _neumann_lines(summary)
    lines += _one_step_lines(summary)
    return "\n".join(lines)


#: The Neumann statistics count the logged iterations from this one on (past the warm-up);
#: the default of ``Settings.telemetry_from_iter``.
NEUMANN_FROM_ITER = 300


def neumann_summary(history: List[dict], from_iter: int = NEUMANN_FROM_ITER) -> dict:
    """How the RBP backward's Neumann series fared over the logged training iterations
    from ``from_iter`` on: ``logged``, ``cut`` (a growing term stopped the series, the
    guard), ``guard_cut_share`` (``cut / logged``), ``at_most_one`` (it kept 0 or 1 terms),
    ``stops`` (how many stopped for each reason of
    :data:`~crbp_panoptic.crbp.NEUMANN_STOPS`; histories written before the reason was
    logged count only the guard's) and ``mean_terms``. Empty for arms without a Neumann
    series, or without logged iterations from ``from_iter`` on."""
    rows = [h for h in history if h["iter"] >= from_iter and h.get("neumann") is not None]
    if not rows:
        return {}
    stops = dict.fromkeys(NEUMANN_STOPS, 0)
    for h in rows:
        reason = h.get("neumann_stop") or ("guard" if h["neumann_cut"] else None)
        if reason in stops:
            stops[reason] += 1
    cut = sum(bool(h["neumann_cut"]) for h in rows)
    return {
        "from_iter": from_iter,
        "logged": len(rows),
        "cut": cut,
        "guard_cut_share": cut / len(rows),
        "at_most_one": sum(h["neumann"] <= 1 for h in rows),
        "stops": stops,
        "mean_terms": sum(h["neumann"] for h in rows) / len(rows),
    }


def _neumann_lines(summary: dict) -> List[str]:
    lines = []
    for a in summary["arms"].values():
        n = a.get("neumann")
        if n:
            stops = ", ".join(f"{k} {v}" for k, v in n.get("stops", {}).items() if v)
            lines.append(
                f"{a['label']}: of the {n['logged']} logged training iterations from "
                f"{n['from_iter']} on, the Neumann series was cut by a growing term in "
                f"{n['cut']} ({n['guard_cut_share']:.0%}), after at most one term in "
                f"{n['at_most_one']}; mean terms {n['mean_terms']:.1f}"
                + (f"; stopped by: {stops}." if stops else ".")
            )
    return ["", *lines] if lines else []


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _convergence_table(summary: dict) -> str:
    """Forward residual, adjoint growth and the guard's share per arm."""
    rows = [
        "| convergence | residual@T | residual@3T | adjoint growth (trained, 3T) "
        "| guard-cut share | s / iteration |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in summary["arms"].items():
        res = a["residual"]
        rows.append(
            f"| {a['label']} (`{name}`) | {res['T']:.1e} | {res['3T']:.1e} "
            f"| {_fmt(a.get('adjoint_growth'), '.3g')} | {_fmt(a.get('guard_cut_share'), '.2f')} "
            f"| {_fmt(a.get('time_per_iter_s'), '.3f')} |"
        )
    return "\n".join(rows)


def penalty_arm(names: Sequence[str]) -> Optional[str]:
    """The run's spectral-penalty arm (the first such arm with its Neumann series), or None."""
    arms = [parse_arm(n) for n in names]
    spectral = [a for a in arms if a.lcp_kind == "spectral"]
    full = [a for a in spectral if not a.one_step]
    return (full or spectral)[0].name if spectral else None


def one_step_comparisons(summary: dict) -> List[dict]:
    """Each one-step-gradient arm (``...:k0``) against its twin with Neumann terms (the same
    arm without ``k0``), where both ran: IoU at T of each, the difference, and whether they
    match (within :data:`ONE_STEP_MATCH`)."""
    arms = summary["arms"]
    out = []
    for name, a in arms.items():
        arm = parse_arm(name)
        if not arm.one_step:
            continue
        twin = dataclasses.replace(arm, neumann_steps=None).name
        if twin not in arms:
            continue
        ours, theirs = a["iou"]["T"], arms[twin]["iou"]["T"]
        out.append(
            {
                "arm": name,
                "twin": twin,
                "iou_T": ours,
                "twin_iou_T": theirs,
                "difference": ours - theirs,
                "matches": abs(ours - theirs) <= ONE_STEP_MATCH,
            }
        )
    return out


def _one_step_lines(summary: dict) -> List[str]:
    lines = []
    arms = summary["arms"]
    for c in summary.get("one_step", []):
        mine, twin = arms[c["arm"]]["label"], arms[c["twin"]]["label"]
        floor = summary["floor"]["all_paths"]
        if c["matches"] and c["twin_iou_T"] <= floor:
            lines.append(
                f"The one-step-gradient control {mine} matches {twin} within "
                f"{ONE_STEP_MATCH} IoU at T ({c['iou_T']:.3f} vs {c['twin_iou_T']:.3f}), but "
                f"{twin} is not above the every-path floor ({floor:.3f}): this run says "
                "nothing about what makes it trace."
            )
        elif c["matches"]:
            lines.append(
                f"The one-step-gradient control {mine} matches {twin} within "
                f"{ONE_STEP_MATCH} IoU at T ({c['iou_T']:.3f} vs {c['twin_iou_T']:.3f}): on "
                f"this run the Neumann terms are not what makes {twin} trace."
            )
        else:
            lines.append(
                f"The one-step-gradient control {mine} differs from {twin} by "
                f"{c['difference']:+.3f} IoU at T ({c['iou_T']:.3f} vs {c['twin_iou_T']:.3f})."
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


#: The length table's far end: target pixels at least this many px (along the target) from the dot.
FAR_PX = 40


def far_recall(
    profile: Optional[dict], steps: Optional[int] = None, from_px: int = FAR_PX
) -> Optional[Tuple[float, float]]:
    """Recall at ``steps`` test steps (default: the fewest recorded, T) of the target pixels
    ``from_px`` or more from the dot, pooled over ``profile``'s distance bins (a
    ``recall_by_distance``), and the share of the target's pixels they are; None if the
    profile is missing or has no such pixel.

    ``from_px`` must be one of the bins' lower edges, so that the pooled bins hold exactly
    those pixels.
    """
    if not profile:
        return None
    if steps is None:
        steps = min(int(k) for k in profile if k not in ("bins", "pixels"))
    bins, pixels, recall = profile["bins"], profile["pixels"], profile[str(steps)]
    if from_px not in bins:
        raise ValueError(f"from_px={from_px}; must be a bin edge of {bins}")
    far = [j for j in range(len(pixels)) if bins[j] >= from_px and pixels[j] > 0]
    n = sum(pixels[j] for j in far)
    if not n:
        return None
    return sum(pixels[j] * recall[j] for j in far) / n, n / sum(pixels)


def at_multiples(traj: dict, steps: int, key: str) -> Dict[str, float]:
    """``traj[key]`` at T, 2T, 3T test steps (clamped to the trajectory's length)."""
    n = len(traj[key])
    return {f"{m}T" if m > 1 else "T": traj[key][min(m * steps, n) - 1] for m in (1, 2, 3)}


def collect(out: str, runs: List[dict], settings: dict, fl: Dict[str, Dict[str, float]]) -> dict:
    """Write ``out/metrics.json``, ``out/table.md`` (and a plot); return the summary dict.

    Args:
        out: the run's folder.
        runs: the arms' ``metrics.json`` (:func:`load_arms`).
        settings: the run's settings as a flat dict (a ``metrics.json``'s ``settings``).
        fl: the floors' scores on the held-out images: ``{"all_paths": {"iou", "f1"},
            "connectivity_oracle": {...}}``.
    """
    summary = {
        "floor": {k: v["iou"] for k, v in fl.items()},
        "floor_f1": {k: v["f1"] for k, v in fl.items()},
        "penalty_arm": penalty_arm([r["arm"] for r in runs]),
        "arms": {},
        "settings": dict(settings),
        "device": runs[0]["device"],
    }
    from_iter = settings.get("telemetry_from_iter", NEUMANN_FROM_ITER)
    for r in runs:
        tr = r["trajectory"]
        residual = at_multiples(tr, r["steps"], "residual")
        neumann = neumann_summary(r.get("history", []), from_iter)
        iters = r.get("iters_run") or (r["history"][-1]["iter"] if r.get("history") else 0)
        summary["arms"][r["arm"]] = {
            "label": r["label"],
            "iou": r["iou"],
            "f1": r["f1"],
            "residual": {"T": residual["T"], "3T": residual["3T"]},
            "adjoint_growth": r.get("adjoint_growth"),
            "guard_cut_share": neumann.get("guard_cut_share"),
            "time_per_iter_s": r["train_time_s"] / iters if iters else None,
            "best_iou": max(tr["iou"]),
            "best_step": 1 + tr["iou"].index(max(tr["iou"])),
            "train_time_s": r["train_time_s"],
            "iters_run": iters,
            "saved_tensor_bytes": r["saved_tensor_bytes"],
            "peak_rss_mb": r["peak_rss_mb"],
            "cuda_peak_bytes": r.get("cuda_peak_bytes"),
            "colsum": r.get("colsum", {}),
            "recall_by_distance": tr.get("recall_by_distance"),
            "neumann": neumann,
        }
    summary["one_step"] = one_step_comparisons(summary)
    write_atomic(os.path.join(out, "metrics.json"), json.dumps(summary, indent=1))
    write_atomic(os.path.join(out, "table.md"), table(summary) + "\n")
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


def _length_dirs(out: str) -> Dict[int, str]:
    found = {}
    for path in glob.glob(os.path.join(out, "L*", "metrics.json")):
        m = re.fullmatch(r"L(\d+)", os.path.basename(os.path.dirname(path)))
        if m:
            found[int(m.group(1))] = os.path.dirname(path)
    return found


def length_report(
    out: str, lengths: Optional[Sequence[int]] = None, wall_time_s: Optional[float] = None
) -> dict:
    """Gather a length sweep: ``out/L<n>/metrics.json`` (each :func:`collect`'s summary) into
    ``out/metrics.json``, ``out/table.md`` and ``out/length_curve.png``.

    Args:
        out: the sweep's folder.
        lengths: the path lengths to gather (default: every ``L<n>`` folder with a
            ``metrics.json``).
        wall_time_s: the sweep's wall time, recorded as ``wall_time_s`` (default: the one an
            earlier ``out/metrics.json`` recorded, if any).

    Returns:
        ``{"lengths": {"<n>": summary, ...}, "arms": [...], "penalty_arm": ...,
        "wall_time_s": ..., "paper": PAPER_LENGTH_CURVE}``, as written.

    Raises:
        FileNotFoundError: a length without its ``metrics.json``.
    """
    found = _length_dirs(out)
    lengths = sorted(found) if lengths is None else [int(n) for n in lengths]
    missing = [n for n in lengths if n not in found]
    if missing or not lengths:
        raise FileNotFoundError(
            f"no L<length>/metrics.json under {out!r} for lengths {missing or lengths}; "
            "run the sweep first"
        )
    per_length = {}
    for n in lengths:
        with open(os.path.join(found[n], "metrics.json")) as fh:
            per_length[str(n)] = json.load(fh)
    top = os.path.join(out, "metrics.json")
    if wall_time_s is None and os.path.exists(top):
        with open(top) as fh:
            wall_time_s = json.load(fh).get("wall_time_s")
    names = []
    for summary in per_length.values():
        names += [a for a in summary["arms"] if a not in names]
    report = {
        "lengths": per_length,
        "arms": names,
        "penalty_arm": penalty_arm(names),
        "wall_time_s": wall_time_s,
        "paper": PAPER_LENGTH_CURVE,
    }
    write_atomic(top, json.dumps(report, indent=1))
    write_atomic(os.path.join(out, "table.md"), length_table(report) + "\n")
    _plot_lengths(out, report)
    return report


def length_table(report: dict) -> str:
    """Markdown: pooled F1 and IoU at T per arm and path length, the floors, and the
    convergence figures (residual at T, adjoint growth, guard-cut share)."""
    lengths = list(report["lengths"])
    first = report["lengths"][lengths[0]]
    cols = " | ".join(f"{n} dashes" for n in lengths)
    sep = "|---" * (len(lengths) + 1) + "|"
    lines = [f"| F1@T / IoU@T | {cols} |", sep]
    for key, label in (("all_paths", "floor: every path"), ("connectivity_oracle", "oracle")):
        per = [report["lengths"][n] for n in lengths]
        cells = [f"{r['floor_f1'][key]:.3f} / {r['floor'][key]:.3f}" for r in per]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    labels = {}
    for summary in report["lengths"].values():
        labels.update({k: v["label"] for k, v in summary["arms"].items()})
    for name in report["arms"]:
        cells = []
        for n in lengths:
            a = report["lengths"][n]["arms"].get(name)
            cells.append("-" if a is None else f"{a['f1']['T']:.3f} / {a['iou']['T']:.3f}")
        lines.append(f"| {labels[name]} (`{name}`) | " + " | ".join(cells) + " |")
    lines += ["", f"| residual@T / adjoint growth / guard-cut share | {cols} |", sep]
    for name in report["arms"]:
        cells = []
        for n in lengths:
            a = report["lengths"][n]["arms"].get(name)
            cells.append(
                "-"
                if a is None
                else f"{a['residual']['T']:.1e} / {_fmt(a.get('adjoint_growth'), '.3g')} / "
                f"{_fmt(a.get('guard_cut_share'), '.2f')}"
            )
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"| recall at >= {FAR_PX} px from the dot, at T (share of the target) | {cols} |",
        sep,
    ]
    for name in report["arms"]:
        cells = []
        for n in lengths:
            a = report["lengths"][n]["arms"].get(name)
            far = None if a is None else far_recall(a.get("recall_by_distance"))
            cells.append("-" if far is None else f"{far[0]:.2f} ({far[1]:.0%})")
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    s = first["settings"]
    wall = report.get("wall_time_s")
    paper = report["paper"]
    lines += [
        "",
        f"Device: {first['device']}. {s['size']}x{s['size']} px, kernel {s['kernel_size']}"
        f"{_dilated(s)}, {s['distractors']} distractors, {s['iters']} iterations x batch "
        f"{s['batch']}, {s['n_test']} test images per length, seed {s['seed']}."
        + (f" Sweep wall time {wall / 60:.1f} min." if wall is not None else "")
        + f" For reference, the paper's F1 at {paper['size']} px and "
        f"{'/'.join(map(str, paper['lengths']))} dashes: "
        + "; ".join(f"`{k}` {' / '.join(f'{v:.3f}' for v in vs)}" for k, vs in paper["f1"].items())
        + ".",
    ]
    return "\n".join(lines)


def _plot_lengths(out: str, report: dict, fname: str = "length_curve.png") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no length curve", file=sys.stderr)
        return
    lengths = [int(n) for n in report["lengths"]]
    summaries = list(report["lengths"].values())
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {}
    for name in report["arms"]:
        xs = [n for n, s in zip(lengths, summaries) if name in s["arms"]]
        ys = [s["arms"][name]["f1"]["T"] for s in summaries if name in s["arms"]]
        label = next(s["arms"][name]["label"] for s in summaries if name in s["arms"])
        (line,) = ax.plot(xs, ys, "o-", label=label)
        colours[name] = line.get_color()
    floor = [s["floor_f1"]["all_paths"] for s in summaries]
    ax.plot(lengths, floor, "s--", color="grey", lw=1, label="floor: every path")
    paper = report["paper"]
    for name, ys in paper["f1"].items():
        ax.plot(
            paper["lengths"],
            ys,
            "x:",
            lw=1,
            alpha=0.6,
            color=colours.get(name, "black"),
            label=f"paper ({paper['size']} px): {parse_arm(name).label}",
        )
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("path length (dashes)")
    ax.set_ylabel("pooled F1 at T (held-out images)")
    s = summaries[0]["settings"]
    kernel = f"kernel {s['kernel_size']}{_dilated(s)}"
    ax.set_title(f"Pathfinder length curve ({s['size']} px, {kernel})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, fname), dpi=90)
    plt.close(fig)
