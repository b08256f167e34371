"""The runner's summary (:mod:`.runner`) as markdown tables and a figure."""

import statistics
from typing import List, Optional

from .report import fmt, markdown_table, save_figure

__all__ = ["markdown", "plot"]

DYNAMICS = "residual neumann_terms neumann_residual colsum_p50 colsum_p90 colsum_max".split()
DYNAMICS += ["frac_above_tau", "contrast", "lcp"]
DRIFT = ("residual", "drift")
_CURVE_LABELS = {"loss_mask": "loss_mask", "mask_rcnn/false_negative": "mask FN"}
_CURVE_LABELS.update({"loss_cls": "loss_cls", "fast_rcnn/fg_cls_accuracy": "fg_cls_acc"})


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _ok(summary, arm) -> List[dict]:
    return [r for r in summary["runs"] if r["arm"] == arm and r["status"] == "ok"]


def _curve(summary, arm, key, which, t) -> Optional[float]:
    """Mean over seeds of a residual curve's value at step t (``which``: a module or "mean")."""
    values = []
    for r in _ok(summary, arm):
        curve = r.get("residual", {}).get(which, {}).get(key, [])
        values.append(curve[t - 1] if 0 < t <= len(curve) else None)
    return _mean(values)


def _steps(summary, arm) -> Optional[int]:
    return next((r["test_steps"] for r in summary["runs"] if r["arm"] == arm), None)


def _main_table(summary) -> List[str]:
    seeds = " / ".join(str(s) for s in summary["seeds"])
    residual = any("residual" in r for r in summary["runs"])
    boxes = any("iou_median" in (r.get("true_box_masks") or {}) for r in summary["runs"])
    head = ["arm", "params (total / mask head / recurrent)", "test steps"]
    head += [f"{k}, seeds {seeds}" for k in ("PQ", "PQ_th", "PQ_st")]
    head += ["mean PQ", "mean PQ_th", "mean PQ_st", "mean box AP", "mean mask AP"]
    head += [f"true-box mask IoU, seeds {seeds}", "true-box found"] * boxes
    head += ["residual", "drift"] * residual + ["failed"]
    rows = []
    for arm in summary["arms"]:
        runs = [r for r in summary["runs"] if r["arm"] == arm]
        for t in dict.fromkeys(r["test_steps"] for r in runs):
            at = [r for r in runs if r["test_steps"] == t]
            ok = [r for r in at if r["status"] == "ok"]
            by_seed = {r["seed"]: r for r in ok}
            p, m = at[0]["params"], at[0]["steps_multiple"]
            params = " / ".join(f"{p[k]:,}" for k in ("total", "mask_head", "recurrent"))
            row = [summary["labels"].get(arm, arm), params, "-" if t is None else f"{t} ({m:g}T)"]
            for k in ("pq", "pq_th", "pq_st"):
                row.append(" / ".join(fmt(by_seed.get(s, {}).get(k)) for s in summary["seeds"]))
            row += [fmt(_mean(r[k] for r in ok)) for k in ("pq", "pq_th", "pq_st", "box_ap")]
            row.append(fmt(_mean(r.get("mask_ap") for r in ok)))
            if boxes:
                probe = {
                    s: by_seed.get(s, {}).get("true_box_masks") or {} for s in summary["seeds"]
                }
                row.append(" / ".join(fmt(probe[s].get("iou_median"), ".3f") for s in probe))
                row.append(fmt(_mean(p.get("found") for p in probe.values()), ".3f"))
            if residual:
                row += [fmt(_curve(summary, arm, k, "mean", t or 0), ".1e") for k in DRIFT]
            rows.append(row + [str(len(at) - len(ok))])
    return markdown_table(head, rows)


def _module_table(summary) -> List[str]:
    rows = []
    for arm in summary["arms"]:
        T = _steps(summary, arm)
        modules = {m for r in _ok(summary, arm) for m in r.get("residual", {})}
        for module in sorted(modules, key=lambda m: (m == "mean", m)):
            row = [summary["labels"].get(arm, arm), module]
            for key, t in (("residual", 1), ("residual", T), ("residual", 2 * T), ("drift", 2 * T)):
                row.append(fmt(_curve(summary, arm, key, module, t), ".1e"))
            rows.append(row)
    head = ["arm", "module", "residual@1", "residual@T", "residual@2T", "drift@2T"]
    return markdown_table(head, rows) if rows else []


def _curves_table(summary) -> List[str]:
    its = sorted(
        {it for r in summary["runs"] for it, _ in r.get("curves", {}).get("loss_mask", [])}
    )
    if not its:
        return []
    last = its[-1]
    points = [min(its, key=lambda i, k=k: abs(i - ((last + 1) * k) // 3 + 1)) for k in (1, 2, 3)]
    head = ["arm"] + [f"{label} @ {p + 1}" for label in _CURVE_LABELS.values() for p in points]
    rows = []
    for arm in summary["arms"]:
        row = [summary["labels"].get(arm, arm)]
        for key in _CURVE_LABELS:
            curves = [r.get("curves", {}).get(key, []) for r in _ok(summary, arm)]
            for p in points:
                row.append(fmt(_mean(v for c in curves for it, v in c if it == p), ".3f"))
        rows.append(row)
    return [
        "Training curves (Detectron2's running median over 20 iterations, mean over seeds): "
        "the mask loss, the mask head's false-negative rate on the foreground pixels of its "
        "training ROIs (1.0: no foreground), the box classifier's loss and its accuracy on "
        "foreground ROIs.",
        "",
        *markdown_table(head, rows),
        "",
    ]


def _dynamics_table(summary) -> List[str]:
    rows = []
    for arm in summary["arms"]:
        runs = [r for r in _ok(summary, arm) if r.get("dynamics")]
        if runs:
            cells = [fmt(_mean(r["dynamics"].get(k) for r in runs), ".3g") for k in DYNAMICS]
            rows.append([summary["labels"].get(arm, arm)] + cells)
    if not rows:
        return []
    return [
        "Recurrent modules at the end of training (last logged value, mean over modules and "
        "seeds): forward residual, Neumann terms and the series' last relative term, Jacobian "
        "column sums (median, 90th percentile, max; share above LCP_TAU), the state's spatial "
        "contrast, the unweighted penalty.",
        "",
        *markdown_table(["arm", *DYNAMICS], rows),
        "",
    ]


def markdown(summary: dict) -> str:
    """The summary as markdown: per arm and test steps, PQ per seed and the means (with the
    residual and drift at those steps when measured), then what else was recorded."""
    m, w, floors = summary["machine"], summary.get("warmup"), summary.get("floors") or {}
    lines = [f"Comparison `{summary['suite']}`: {summary['description'] or 'configs over seeds'}."]
    lines += ["", f"Command: `{summary['command']}`"] * bool(summary.get("command"))
    if summary.get("rescored_from"):
        lines += [
            "",
            f"Rescored: the runs of `{summary['rescored_from']}` evaluated again with "
            f"`{' '.join(summary['rescore_opts'])}` after their own overrides (nothing "
            "trained; the training curves are those runs'; wall times are the evaluations').",
        ]
    kernels = f" ({m['cpu_capability']} kernels)" if m.get("cpu_capability") else ""
    lines += [
        "",
        f"Machine: {m['cpu']}{kernels}, {m['cpu_count']} CPUs, torch {m['torch']}, "
        f"{m['torch_threads']} threads, {m['gpu'] or 'no GPU'}.",
        "",
    ]
    budget = summary["iterations"] or "the config's"
    if w:
        lines += [
            f"Warm-up: `{w['config']}`, {w['iterations']} iterations (PQ {fmt(w.get('pq'))}, "
            f"box AP {fmt(w.get('box_ap'))}); every arm then trains {budget} iterations from it.",
            "",
        ]
    else:
        lines += [f"Every arm trains {budget} iterations from its config's initialisation.", ""]
    lines += [
        "Test steps t: the recurrent modules run exactly t steps (`TEST_TOL` 0), same weights; "
        "m T: t as a multiple of the trained steps T. Residual ||h_t - h_(t-1)|| / ||h_t|| and "
        "drift ||h_t - h_T|| / ||h_T|| at t from h_0 = 0, mean over modules, "
        f"{summary.get('residual_images')} test images and seeds.",
        "",
        *_main_table(summary),
        "",
    ]
    module = _module_table(summary)
    lines += ["Residual and drift per recurrent module:", "", *module, ""] if module else []
    lines += _curves_table(summary) + _dynamics_table(summary)
    if "dataset" in floors:
        reason = f" ({floors['reason']})" if floors.get("reason") else ""
        lines += [
            f"Floor on `{floors['dataset']}`: grouping-free mask IoU (median) "
            f"{fmt(floors.get('grouping_free_mask_iou'), '.3f')}{reason}.",
            "",
        ]
    probes = [r.get("true_box_masks") or {} for r in summary["runs"]]
    probe = next((p for p in probes if "grouping_free_iou_median" in p), None)
    if probe:
        lines += [
            "True-box mask IoU: the median over the test split's things of the IoU of the mask "
            "head's mask given the thing's true box and class (crbp_panoptic.experiments."
            "true_boxes); true-box found: the share above IoU 0.5, mean over seeds. The "
            "grouping-free mask (every pixel of the class in the true box) scores "
            f"{fmt(probe['grouping_free_iou_median'], '.3f')} on the same things "
            f"(found {fmt(probe['grouping_free_found'], '.3f')}).",
            "",
        ]
    sec = summary["seconds"]
    clock = ""
    if summary.get("jobs"):  # one call's (a merged summary joins several)
        clock = (
            f"; this call {fmt((sec.get('this_invocation') or 0) / 60)} minutes on the clock, "
            f"{summary['jobs']} run(s) at a time (OMP_NUM_THREADS "
            f"{summary.get('child_threads', '?')} each)"
        )
    lines.append(
        f"Wall time: {fmt((sec.get('total') or 0) / 60)} minutes of runs "
        f"(warm-up {fmt((sec.get('warmup') or 0) / 60)}){clock}."
    )
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: str) -> Optional[str]:
    """PQ against the test steps (multiples of T), one line per arm (mean over seeds, dots:
    the seeds; feedforward: flat, dashed); beside it, if recorded, the mean residual against
    the step. Returns ``path``, or None when no run finished (nothing is written)."""
    rows = [r for r in summary["runs"] if r.get("status") == "ok" and r.get("pq") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in rows if r.get("residual", {}).get("mean")]
    fig, axes = plt.subplots(1, 1 + bool(curves), figsize=(6 + 5 * bool(curves), 4), squeeze=False)
    ax = axes[0][0]
    multiples = sorted({r["steps_multiple"] for r in rows} | set(summary.get("multiples", [])))
    for arm in summary["arms"]:
        by_m = {}
        for r in rows:
            if r["arm"] == arm:
                by_m.setdefault(r["steps_multiple"], []).append(r["pq"])
        if not by_m:
            continue
        xs = sorted(by_m)
        means = [statistics.fmean(by_m[x]) for x in xs]
        label = summary["labels"].get(arm, arm)
        if _steps(summary, arm) is None:
            (line,) = ax.plot([multiples[0], multiples[-1]], [means[0]] * 2, ls="--", label=label)
        else:
            (line,) = ax.plot(xs, means, marker="o", label=label)
        for x in xs:
            ax.scatter([x] * len(by_m[x]), by_m[x], color=line.get_color(), alpha=0.5, s=14)
        arm_curves = [r["residual"]["mean"]["residual"] for r in curves if r["arm"] == arm]
        if arm_curves:
            mean = [statistics.fmean(c) for c in zip(*arm_curves)]
            axes[0][1].semilogy(range(1, len(mean) + 1), mean, color=line.get_color(), label=label)
            axes[0][1].axvline(_steps(summary, arm), color=line.get_color(), ls="--", lw=1)
    ax.set(xlabel="test-time steps (multiple of the trained steps T)", ylabel="PQ")
    ax.set_title(f"{summary['suite']}: mean over seeds (dots: each seed)", fontsize=10)
    if curves:
        axes[0][1].set(xlabel="step t (dashed: T)", ylabel="||h_t - h_{t-1}|| / ||h_t||")
        axes[0][1].set_title("relative residual, mean over modules and images", fontsize=10)
    return save_figure(fig, axes[0], path)
