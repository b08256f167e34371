"""The report of a full-model benchmark: ratios to the feedforward model, the paper's
claims as targets, the markdown table and the plot (:mod:`.benchmark` measures)."""

import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ..crbp.arms import parse_arm
from .benchmark_plan import DETECTION_SCORE, PLACEMENT_YAMLS, is_cheap
from .report import ratio, ratio_cell

__all__ = ["add_ratios", "markdown", "plot", "target_lines"]


def add_ratios(results: List[Dict]) -> None:
    """Add ``train_mib_x``, ``train_s_x`` and ``infer[*]["x"]``: each figure over FF's."""
    ff = next((r for r in results if r["arm"] == "ff" and "error" not in r), None)
    for r in results:
        if ff is None or "error" in r:
            continue
        r["train_mib_x"] = ratio(r.get("train_mib"), ff.get("train_mib"))
        r["train_s_x"] = ratio(r.get("train_s"), ff.get("train_s"))
        r["train_cpu_s_x"] = ratio(r.get("train_cpu_s"), ff.get("train_cpu_s"))
        for fig in r.get("infer", {}).values():
            fig["x"] = ratio(fig["s_per_img"], ff["infer"]["T"]["s_per_img"])
            fig["cpu_x"] = ratio(fig.get("cpu_s_per_img"), ff["infer"]["T"].get("cpu_s_per_img"))


def _find(results, placement, name, cheap=False):
    """The result of arm ``name`` (or, with ``cheap``, of a cheap arm with the same mode and
    steps) in ``placement`` (FF is found in any placement); None if not measured."""
    want = parse_arm(name)
    for r in results:
        if "error" in r or r["placement"] not in (placement, "-"):
            continue
        arm = parse_arm(r["arm"])
        if cheap and is_cheap(arm) and (arm.mode, arm.steps) == (want.mode, want.steps):
            return r
        if not cheap and r["arm"] == name:
            return r
    return None


def target_lines(results: List[Dict], placements: Sequence[str]) -> List[str]:
    """The paper's claims as targets, each with what this run measured (or that it did not)."""
    lines = []
    for p in placements:
        names = ("crbp:5", "crbp:20", "crbp:40", "bptt:1")
        c5, c20, c40, b1 = (_find(results, p, n) for n in names)
        cheap = _find(results, p, "crbp:20", cheap=True)
        tests = [
            ("C-RBP training memory flat in steps: C-RBP-40 / C-RBP-5", c40, c5, 1.05),
            ("C-RBP-20 training memory / BPTT-1", c20, b1, 1.10),
            ("C-RBP-20 with a cheap LCP, training memory / BPTT-1", cheap, b1, 1.10),
        ]
        for text, a, b, limit in tests:
            if a is None or b is None or not a.get("train_mib") or not b.get("train_mib"):
                lines.append(f"- {p}: {text} ≤ {limit:.2f}: not measured in this run.")
                continue
            value = a["train_mib"] / b["train_mib"]
            verdict = "met" if value <= limit else "not met"
            lines.append(f"- {p}: {text} ≤ {limit:.2f}: {value:.3f} here ({verdict}).")
        es = c20["infer"].get("ES", {}).get("x") if c20 else None
        text = f"- {p}: C-RBP-20 inference with early stopping ≤ 1.20× FF"
        if es is None:
            lines.append(f"{text}: not measured in this run.")
        else:
            verdict = "met" if es <= 1.2 else "not met"
            lines.append(
                f"{text}: {es:.2f}× here ({verdict}; "
                f"{c20['infer']['ES']['steps']:.1f} steps on average)."
            )
    return lines


def _header_lines(machine: Dict, settings: Dict) -> List[str]:
    cuda = settings["device"].startswith("cuda")
    gpu = (
        (
            f"{machine['gpu']} ({machine['gpu_mib'] / 1024:.0f} GiB, CUDA {machine['cuda']}, cuDNN "
            f"{machine['cudnn']}, cuDNN TF32 {machine['cudnn_tf32']}, cudnn.benchmark "
            f"{machine['cudnn_benchmark']}); "
        )
        if cuda
        else ""
    )
    h, w = settings["size"]
    detections = (
        f"{settings['detections']} forced detections (score {DETECTION_SCORE})"
        if settings["detections"]
        else "the random-init detections"
    )
    cap = (
        f"; memory cap {settings['mem_cap_mib'] / 1024:.1f} GiB "
        f"(fraction {settings['mem_fraction']:.3f})."
        if cuda
        else "."
    )
    mem = (
        "peak `max_memory_allocated` in training (MiB; all tensors, weights and optimizer "
        "state included)"
        if cuda
        else "least growth of the peak resident set of the configuration's own process over "
        f"one of {settings.get('mem_iters', 1)} training iterations after the timed ones, "
        "above the resident set just before it (MiB; activations, gradients, temporaries; "
        "glibc's mmap threshold fixed at 128 KiB so that freed tensors leave the resident set)"
    )
    legend = (
        f"Train MiB: {mem}. s/iter: median seconds per training iteration. Inference: "
        "median seconds per image with TEST_STEPS = T (= STEPS), 2T, and early stopping "
        "(ES; the mean steps used per recurrent solve in brackets). "
        "In brackets after each figure: its ratio to FF."
    )
    if not cuda:
        legend += (
            " On a CPU, CPU-s columns give the process CPU time (all threads) of the same "
            "iteration and image (T): the less disturbed figure where cores are shared."
        )
    return [
        "# crbp_panoptic: training memory and speed against the feedforward Panoptic FPN",
        "",
        f"Generated {settings['date']} by `{settings['command']}`.",
        "",
        f"**Machine**: {gpu}{machine['cpu']}, {machine['cpu_count']} logical CPUs "
        f"({machine['torch_threads']} torch threads); {machine['platform']}; Python "
        f"{machine['python']}, torch {machine['torch']}, Detectron2 {machine['detectron2']}.",
        "",
        f"**Settings**: device {settings['device']}; random images {h}×{w}, batch "
        f"{settings['batch']}, {settings['instances']} instances per image; {settings['warmup']} "
        f"warm-up + {settings['iters']} timed training iterations (SGD, lr {settings['lr']}); "
        f"inference on one image at a time, {settings['infer_warmup']} warm-up + "
        f"{settings['infer_iters']} timed, {detections} per image; early stopping: TEST_STEPS = "
        f"STEPS, TEST_TOL = {settings['test_tol']:g} (relative residual); penalty exact unless "
        "the arm names a cheap one; common options "
        f"`{' '.join(settings['opts']) or '(none)'}`{cap}",
        "",
        legend,
        "",
    ]


def _row(r: Dict, cuda: bool, cap_mib: Optional[float]) -> Tuple[List[str], bool]:
    """The cells of one result's row, and whether its allocator reached the memory cap."""
    mem_cell = ratio_cell(r["train_mib"], r.get("train_mib_x"), 4)
    flagged = bool(cuda and cap_mib and r.get("reserved_mib", 0) >= 0.95 * cap_mib)
    if flagged:
        mem_cell += " †"
    inf = r.get("infer", {})
    t = inf.get("T", {})
    cells = [ratio_cell(t.get("s_per_img"), t.get("x"))]
    for key in ("2T", "ES"):
        fig = inf.get(key)
        if fig is None:
            cells.append("—")
            continue
        cell = ratio_cell(fig["s_per_img"], fig.get("x"))
        if key == "ES" and fig["steps"] is not None:
            cell += f" [{fig['steps']:.1f}]"
        cells.append(cell)
    if not cuda:
        cells += [
            ratio_cell(r.get("train_cpu_s"), r.get("train_cpu_s_x")),
            ratio_cell(t.get("cpu_s_per_img"), t.get("cpu_x")),
        ]
    steps = r["steps"] or "—"
    row = [
        r["placement"],
        r["label"],
        str(steps),
        mem_cell,
        ratio_cell(r["train_s"], r.get("train_s_x")),
        *cells,
    ]
    return row, flagged


def _table_lines(results: List[Dict], settings: Dict) -> Tuple[List[str], bool]:
    cuda = settings["device"].startswith("cuda")
    head = [
        "placement",
        "config",
        "T",
        "train MiB",
        "s/iter",
        "infer s/img, T",
        "infer s/img, 2T",
        "infer s/img, ES [steps]",
    ]
    if not cuda:
        head += ["train CPU-s/iter", "infer CPU-s/img, T"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    arm_order = {name: i for i, name in enumerate(["ff", *settings.get("arms", [])])}
    placement_order = {"-": -1, **{p: i for i, p in enumerate(PLACEMENT_YAMLS)}}

    def key(r):
        return (placement_order.get(r["placement"], 9), arm_order.get(r["arm"], len(arm_order)))

    any_flagged = False
    for r in sorted(results, key=key):
        if "error" in r:
            lines.append(
                f"| {r['placement']} | {r['label']} | | {r['error']} |" + " |" * (len(head) - 4)
            )
            continue
        row, flagged = _row(r, cuda, settings.get("mem_cap_mib"))
        any_flagged |= flagged
        lines.append("| " + " | ".join(row) + " |")
    return lines, any_flagged


def _note_lines(results: List[Dict], settings: Dict) -> List[str]:
    cuda = settings["device"].startswith("cuda")
    ff = next((r for r in results if r["arm"] == "ff" and "error" not in r), None)
    notes = []
    if ff is not None:
        t = ff["infer"]["T"]
        notes.append(
            f"Mask-head ROIs per image in training (FF): {ff['mask_rois_train']:.1f}; "
            f"at inference {t['mask_rois']:.1f} (detections per image "
            f"{t['detections']:.1f})."
        )
    for p in settings["placements"]:
        c20 = _find(results, p, "crbp:20")
        if c20 is not None and c20["infer"]["T"].get("residual") is not None:
            notes.append(
                f"{p}: C-RBP-20 relative residual ||h_t - h_(t-1)|| / ||h_t|| at inference "
                f"(largest over the solves): {c20['infer']['T']['residual']:.2g} after T steps, "
                f"{c20['infer']['2T']['residual']:.2g} after 2T. These are the dynamics of the "
                "weights measured (random init unless MODEL.WEIGHTS is given), not of a trained "
                "model; early stopping saves steps only once the residual falls below TEST_TOL."
            )
    bad = [f"{r['placement']}/{r['label']}" for r in results if r.get("nonfinite_loss")]
    if bad:
        notes.append(
            f"Non-finite training loss in: {', '.join(bad)} (timings still valid, losses are not)."
        )
    if not cuda:
        notes.append(
            "CPU timings are noisy: the cores may be shared with other work, and each "
            "figure is the median of few iterations."
        )
        if any(r.get("peak_reset") is False for r in results):
            notes.append(
                "This kernel could not reset the peak resident set; a configuration's "
                "peak then includes its model build and timed iterations."
            )
        if any(r.get("rss_exact") is False for r in results):
            notes.append(
                "The mmap threshold was not fixed (in-process run, or not glibc): memory "
                "figures include allocator slack."
            )
        if not settings.get("isolated", True):
            notes.append(
                "All configurations ran in one process (--in-process): memory figures "
                "are only indicative."
            )
    if settings.get("total_s") is not None:
        notes.append(f"Whole run: {settings['total_s']:.0f} s wall clock.")
    return [f"- {n}" for n in notes]


def markdown(results: List[Dict], machine: Dict, settings: Dict) -> str:
    """The report: machine, settings, the table (ratios to FF), targets and notes.

    Args:
        results: :func:`measure`'s results (after :func:`add_ratios`).
        machine: :func:`~crbp_panoptic.experiments.machine.machine_info`'s dict.
        settings: ``device``, ``size``, ``batch``, ``instances``, ``iters``, ``warmup``,
            ``infer_iters``, ``infer_warmup``, ``test_tol``, ``detections``, ``lr``, ``opts``,
            ``placements``, ``arms`` (table order), ``date``, ``command``; optional
            ``mem_iters``, ``isolated``, ``total_s``; on CUDA ``mem_cap_mib``, ``mem_fraction``.
    """
    lines = _header_lines(machine, settings)
    table, flagged = _table_lines(results, settings)
    lines += table + [""]
    if flagged:
        lines += [
            "† the allocator's reserve reached the memory cap: cuDNN may have used "
            "workspace up to the cap, so the true need can be lower (rerun with a lower "
            "cap).",
            "",
        ]
    lines.append("Targets from the paper's claims (the verdicts are this run's only):")
    lines += target_lines(results, settings["placements"]) + [""]
    lines += _note_lines(results, settings)
    return "\n".join(lines) + "\n"


def plot(results: List[Dict], placements: Sequence[str], path, title: str) -> bool:
    """Memory, s/iter and inference s/img (T) against steps, one line per training mode.

    Returns:
        bool: False (and no file) without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    ok = [r for r in results if "error" not in r]
    ff = next((r for r in ok if r["arm"] == "ff"), None)
    rows = [
        ("train_mib", "training memory (MiB)"),
        ("train_s", "training s/iter"),
        ("infer_T", "inference s/img (T steps)"),
    ]

    def value(r, key):
        return r["infer"]["T"]["s_per_img"] if key == "infer_T" else r.get(key)

    fig, axes = plt.subplots(
        len(rows), len(placements), figsize=(5.5 * len(placements), 9), squeeze=False, sharex=True
    )
    markers = {"BPTT": "o", "RBP": "s", "C-RBP": "^"}
    for col, p in enumerate(placements):
        lines: Dict[str, List[Dict]] = {}
        for r in ok:
            if r["placement"] == p:
                lines.setdefault(r["series"], []).append(r)
        for row, (key, label) in enumerate(rows):
            ax = axes[row][col]
            for name, rs in sorted(lines.items()):
                rs = sorted(rs, key=lambda r: r["steps"])
                ax.plot(
                    [r["steps"] for r in rs],
                    [value(r, key) for r in rs],
                    marker=markers.get(name.split(" ")[0], "D"),
                    label=name,
                )
            if ff is not None and value(ff, key) is not None:
                ax.axhline(value(ff, key), color="gray", linestyle="--", label="FF")
            ax.set_xscale("log", base=2)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(f"recurrent {p}")
            if row == len(rows) - 1:
                ax.set_xlabel("training steps T")
        axes[0][col].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
