"""Train several configs over several seeds, evaluate PQ at multiples of the trained steps.

For every (config, seed) pair the sweep

1. trains the config with ``tools/train_net.py`` in a child process (``SEED`` = seed,
   ``OUTPUT_DIR`` = ``<output_dir>/<config stem>/seed<seed>``), which ends with Detectron2's
   evaluation on ``DATASETS.TEST``; a run whose ``model_final.pth`` and final evaluation
   are already there is reused;
2. for a recurrent config (``MODEL.CRBP.STEPS`` read by a recurrent mask head or FPN) and
   every test-step multiple m != 1, evaluates ``model_final.pth`` again with
   ``--eval-only`` and ``MODEL.CRBP.TEST_STEPS`` = m x STEPS (``TEST_TOL`` 0: exactly that
   many steps) into ``.../seed<seed>/test_steps<k>/``;
3. reads PQ, PQ_th, PQ_st, box AP and mask AP from the ``copypaste`` lines Detectron2's
   ``print_csv_format`` writes to the run's ``log.txt``, and the last ``loss_mask`` from its
   ``metrics.json``.

Children are plain ``tools/train_net.py`` runs: they see the same ``crbp_panoptic`` as this
process (its repository root is put first on ``PYTHONPATH``) and inherit the environment
(``OMP_NUM_THREADS``, niceness). The JSON report is rewritten after every child, so a sweep
cut short keeps what it measured, and a rerun resumes where it stopped.
"""

import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = [
    "config_info",
    "markdown",
    "parse_copypaste",
    "run_sweep",
    "summarize",
]

REPO = Path(__file__).resolve().parents[2]
_COPYPASTE = re.compile(r"copypaste: (.*)$")
METRICS = {"panoptic_seg": ("PQ", "PQ_th", "PQ_st"), "bbox": ("AP",), "segm": ("AP",)}
# Training curves kept per run (from metrics.json).
CURVES = (
    "loss_mask",
    "mask_rcnn/false_negative",
    "loss_cls",
    "fast_rcnn/fg_cls_accuracy",
    "loss_lcp",
)
_CURVE_COLUMNS = (
    ("loss_mask", "loss_mask"),
    ("mask_rcnn/false_negative", "mask FN"),
    ("loss_cls", "loss_cls"),
    ("fast_rcnn/fg_cls_accuracy", "fg_cls_acc"),
)


def parse_copypaste(text: str) -> Dict[str, Dict[str, float]]:
    """The last result of every task in Detectron2's ``copypaste`` log lines.

    Args:
        text (str): a log (``log.txt``), with blocks of ``copypaste: Task: <task>``, a line
            of comma-separated names and a line of values.

    Returns:
        dict: task -> {metric name: value}; a later block of a task replaces an earlier one.
    """
    lines = [m.group(1).strip() for m in map(_COPYPASTE.search, text.splitlines()) if m]
    out: Dict[str, Dict[str, float]] = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: ") and i + 2 < len(lines):
            names, values = lines[i + 1].split(","), lines[i + 2].split(",")
            if len(names) == len(values):
                out[line[len("Task: ") :]] = {n: float(v) for n, v in zip(names, values)}
    return out


def config_info(config_file: str, opts: Sequence[str] = ()) -> dict:
    """What the report needs to know about a config, from building its model (no weights).

    Returns:
        dict: ``recurrent`` (bool: a recurrent mask head or FPN reads MODEL.CRBP),
        ``steps`` (MODEL.CRBP.STEPS or None), ``grad``, ``mask_head_params``,
        ``model_params``, ``max_iter``, ``ims_per_batch``.
    """
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import crbp_panoptic  # noqa: F401  (registers)
    from crbp_panoptic import add_crbp_config

    cfg = get_cfg()
    add_crbp_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    recurrent = cfg.MODEL.ROI_MASK_HEAD.NAME == "CRBPMaskHead" or "crbp" in cfg.MODEL.BACKBONE.NAME
    model = build_model(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "recurrent": recurrent,
        "steps": int(cfg.MODEL.CRBP.STEPS) if recurrent else None,
        "grad": cfg.MODEL.CRBP.GRAD if recurrent else "feedforward",
        "mask_head_params": count(model.roi_heads.mask_head),
        "model_params": count(model),
        "max_iter": int(cfg.SOLVER.MAX_ITER),
        "ims_per_batch": int(cfg.SOLVER.IMS_PER_BATCH),
    }


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _run_child(cmd: List[str], log_path: str) -> float:
    """Run ``cmd`` with stdout and stderr to ``log_path``; seconds taken. Raises on failure."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = time.time()
    with open(log_path, "w") as log:
        code = subprocess.call(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=str(REPO)
        )
    if code:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {code}); log {log_path}:\n{tail}")
    seconds = time.time() - start
    with open(os.path.join(os.path.dirname(log_path), "wall_seconds.txt"), "w") as f:
        f.write(f"{seconds:.1f}\n")
    return seconds


def _recorded_seconds(run_dir: str) -> Optional[float]:
    """The wall-clock seconds a finished child recorded in ``run_dir`` (None if none)."""
    try:
        with open(os.path.join(run_dir, "wall_seconds.txt")) as f:
            return float(f.read())
    except (OSError, ValueError):
        return None


def _results(run_dir: str) -> Optional[dict]:
    """Metrics of the last evaluation in ``<run_dir>/log.txt`` (None if there is none)."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        tasks = parse_copypaste(f.read())
    if "panoptic_seg" not in tasks:
        return None
    out = {}
    for task, keys in METRICS.items():
        for k in keys:
            value = tasks.get(task, {}).get(k)
            name = k if task == "panoptic_seg" else f"{task}_{k}"
            out[name] = None if value is None or math.isnan(value) else value
    return out


def _last_metric(run_dir: str, key: str) -> Optional[float]:
    curve = _metric_curve(run_dir, key)
    return curve[-1][1] if curve else None


def _last_dynamics(run_dir: str) -> Dict[str, float]:
    """The last logged value of every recurrent module's telemetry (``crbp/<module>/<name>``
    in ``metrics.json``), keyed by ``<name>`` (one recurrent module assumed)."""
    path, out = os.path.join(run_dir, "metrics.json"), {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                for k, v in json.loads(line).items():
                    if k.startswith("crbp/"):
                        out[k.rsplit("/", 1)[-1]] = float(v)
    return out


def _metric_curve(run_dir: str, key: str) -> List[List[float]]:
    """[[iteration, value], ...] of ``key`` in ``<run_dir>/metrics.json`` (Detectron2's
    median over the last 20 iterations at each logged iteration)."""
    path, out = os.path.join(run_dir, "metrics.json"), []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if key in row:
                    out.append([int(row.get("iteration", -1)), float(row[key])])
    return out


def _train(
    config: str, seed: int, run_dir: str, opts: Sequence[str], python: str, train: bool = True
) -> Optional[dict]:
    weights = os.path.join(run_dir, "model_final.pth")
    done = os.path.isfile(weights) and _results(run_dir)
    seconds = None
    if not done and not train:
        return None
    if not done:
        cmd = [
            python,
            str(REPO / "tools" / "train_net.py"),
            "--config-file",
            config,
            "SEED",
            str(seed),
            "OUTPUT_DIR",
            run_dir,
            *opts,
        ]
        seconds = _run_child(cmd, os.path.join(run_dir, "stdout.txt"))
    results = _results(run_dir)
    if results is None:
        raise RuntimeError(f"{run_dir}/log.txt holds no panoptic evaluation")
    seconds = seconds if seconds is not None else _recorded_seconds(run_dir)
    return {
        "seconds": seconds,
        "weights": weights,
        "results": results,
        "loss_mask": _last_metric(run_dir, "loss_mask"),
        "curves": {k: _metric_curve(run_dir, k) for k in CURVES},
        "dynamics": _last_dynamics(run_dir),
    }


def _evaluate(
    config: str, run_dir: str, steps: int, opts: Sequence[str], python: str, train: bool = True
) -> Optional[dict]:
    eval_dir = os.path.join(run_dir, f"test_steps{steps}")
    results, seconds = _results(eval_dir), None
    if results is None and not train:
        return None
    if results is None:
        cmd = [
            python,
            str(REPO / "tools" / "train_net.py"),
            "--config-file",
            config,
            "--eval-only",
            *opts,
            "MODEL.WEIGHTS",
            os.path.join(run_dir, "model_final.pth"),
            "MODEL.CRBP.TEST_STEPS",
            str(steps),
            "MODEL.CRBP.TEST_TOL",
            "0.0",
            "OUTPUT_DIR",
            eval_dir,
        ]
        seconds = _run_child(cmd, os.path.join(eval_dir, "stdout.txt"))
        results = _results(eval_dir)
        if results is None:
            raise RuntimeError(f"{eval_dir}/log.txt holds no panoptic evaluation")
    seconds = seconds if seconds is not None else _recorded_seconds(eval_dir)
    return {"seconds": seconds, "results": results}


def machine_info() -> dict:
    """CPU, core count and library versions, for the report's header."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    }


def run_sweep(
    configs: Sequence[str],
    seeds: Sequence[int],
    multiples: Sequence[int],
    output_dir: str,
    opts: Sequence[str] = (),
    python: str = sys.executable,
    command: str = "",
    log=print,
    train: bool = True,
) -> dict:
    """Train and evaluate every config for every seed (see the module docstring).

    Seeds run in the outer loop, so a sweep cut short has every config for its first seeds.

    Args:
        configs (list[str]): config files; the first is the baseline of the comparisons.
        seeds (list[int]): values of ``SEED``.
        multiples (list[int]): test-step multiples m (TEST_STEPS = m x STEPS); 1 is the
            evaluation at the end of training.
        output_dir (str): runs go to ``<output_dir>/<config stem>/seed<seed>/``; the report
            to ``<output_dir>/report.json``.
        opts (list[str]): config overrides for every run (``KEY VALUE`` pairs).
        python (str): the interpreter for the children.
        command (str): the command line, recorded in the report.
        log (callable): progress messages.
        train (bool): False: run nothing, report the runs and evaluations already finished.

    Returns:
        dict: the report (also written to ``<output_dir>/report.json``).
    """
    if not configs or not seeds or not multiples:
        raise ValueError("need at least one config, one seed and one test-step multiple")
    if any(int(m) < 1 for m in multiples):
        raise ValueError(f"test-step multiples {list(multiples)}: each must be >= 1")
    missing = [c for c in configs if not os.path.isfile(c)]
    if missing:
        raise FileNotFoundError(f"config file(s) not found: {missing}")
    os.makedirs(output_dir, exist_ok=True)
    report = {
        "command": command,
        "machine": machine_info(),
        "seeds": list(seeds),
        "multiples": sorted({int(m) for m in multiples}),
        "opts": list(opts),
        "configs": {},
    }
    for c in configs:
        report["configs"][Path(c).stem] = {"file": c, **config_info(c, opts), "runs": {}}
    path = os.path.join(output_dir, "report.json")
    for seed in seeds:
        for c in configs:
            entry = report["configs"][Path(c).stem]
            run_dir = os.path.join(output_dir, Path(c).stem, f"seed{seed}")
            log(f"[{time.strftime('%H:%M:%S')}] train {Path(c).stem} seed {seed} -> {run_dir}")
            run = _train(c, seed, run_dir, opts, python, train)
            if run is None:
                continue
            run["by_multiple"] = {"1": run["results"]}
            for m in report["multiples"]:
                if m != 1 and entry["recurrent"]:
                    log(
                        f"[{time.strftime('%H:%M:%S')}] eval {Path(c).stem} seed {seed} at "
                        f"TEST_STEPS {m * entry['steps']}"
                    )
                    ev = _evaluate(c, run_dir, m * entry["steps"], opts, python, train)
                    if ev is None:
                        continue
                    run["by_multiple"][str(m)] = ev["results"]
                    run.setdefault("eval_seconds", {})[str(m)] = ev["seconds"]
            entry["runs"][str(seed)] = run
            with open(path, "w") as f:
                json.dump(report, f, indent=1)
    report["summary"] = summarize(report)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    return report


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarize(report: dict) -> dict:
    """Means over seeds per config and multiple, and paired differences to the baseline.

    Returns:
        dict: config -> {``mean`` {multiple: {metric: mean}}, ``seeds`` (those run),
        ``delta_pq`` {seed: PQ - baseline PQ, at multiple 1}, ``mean_delta_pq``,
        ``drift_pq`` {multiple: mean(PQ at m) - mean(PQ at 1) over seeds with both}}.
    """
    names = list(report["configs"])
    base_runs = report["configs"][names[0]]["runs"]
    out = {}
    for name, entry in report["configs"].items():
        runs = entry["runs"]
        mean = {}
        for m in report["multiples"]:
            rows = [r["by_multiple"][str(m)] for r in runs.values() if str(m) in r["by_multiple"]]
            if rows:
                mean[str(m)] = {k: _mean(row.get(k) for row in rows) for k in rows[0]}
        delta = {
            s: r["results"]["PQ"] - base_runs[s]["results"]["PQ"]
            for s, r in runs.items()
            if s in base_runs
        }
        drift = {}
        for m in report["multiples"]:
            pairs = [
                (r["by_multiple"][str(m)]["PQ"], r["results"]["PQ"])
                for r in runs.values()
                if str(m) in r["by_multiple"]
            ]
            if pairs and m != 1:
                drift[str(m)] = _mean(a - b for a, b in pairs)
        out[name] = {
            "mean": mean,
            "seeds": sorted(runs, key=int),
            "delta_pq": delta,
            "mean_delta_pq": _mean(delta.values()),
            "drift_pq": drift,
            "mean_loss_mask": _mean(r.get("loss_mask") for r in runs.values()),
            "mean_train_minutes": _mean(
                r["seconds"] / 60 if r.get("seconds") else None for r in runs.values()
            ),
        }
    return out


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def _rule(entry: dict) -> str:
    if not entry["recurrent"]:
        return "feedforward"
    return f"{entry['grad'].upper().replace('CRBP', 'C-RBP')}, T = {entry['steps']}"


def markdown(report: dict) -> str:
    """The report as markdown: machine, command, the PQ table at T and the table at m x T."""
    summary = report.get("summary") or summarize(report)
    names = list(report["configs"])
    base = names[0]
    m = report["machine"]
    seeds = " / ".join(str(s) for s in report["seeds"])
    lines = [
        f"Command: `{report['command']}`" if report.get("command") else "",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, OMP_NUM_THREADS "
        f"{m['omp_num_threads']}; Python {m['python']}, torch {m['torch']}.",
        "",
        f"PQ on `DATASETS.TEST` after training (recurrent configs at their training steps T), "
        f"seeds {seeds}; means over the seeds that ran. Δ PQ: PQ minus the PQ of "
        f"`{base}` with the same seed. loss_mask: the training mask loss at the last logged "
        "iteration (mean over seeds).",
        "",
        (
            "| config | rule | mask-head params | PQ, seeds " + seeds + " | mean PQ | mean PQ_th "
            "| mean PQ_st | mean box AP | mean mask AP | Δ PQ per seed (mean) | loss_mask "
            "| minutes / run |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        entry, summ = report["configs"][name], summary[name]
        runs, mean = entry["runs"], summ["mean"].get("1", {})
        per_seed = " / ".join(
            _fmt(runs[str(s)]["results"]["PQ"]) if str(s) in runs else "-" for s in report["seeds"]
        )
        deltas = " / ".join(_fmt(summ["delta_pq"].get(str(s)), "+.1f") for s in report["seeds"])
        lines.append(
            f"| `{name}` | {_rule(entry)} | {entry['mask_head_params']:,} | {per_seed} "
            f"| {_fmt(mean.get('PQ'))} | {_fmt(mean.get('PQ_th'))} | {_fmt(mean.get('PQ_st'))} "
            f"| {_fmt(mean.get('bbox_AP'))} | {_fmt(mean.get('segm_AP'))} "
            f"| {deltas} ({_fmt(summ['mean_delta_pq'], '+.1f')}) "
            f"| {_fmt(summ['mean_loss_mask'], '.3f')} | {_fmt(summ['mean_train_minutes'])} |"
        )
    multiples = [k for k in report["multiples"] if k != 1]
    recurrent = [n for n in names if report["configs"][n]["recurrent"]]
    if multiples and recurrent:
        lines += [
            "",
            (
                "Recurrent configs run for m x T steps at test time "
                "(`MODEL.CRBP.TEST_STEPS`, `TEST_TOL` 0), same weights. Change: mean PQ "
                "at m x T minus mean PQ at T (over the seeds with both)."
            ),
            "",
            (
                "| config | T | m | PQ at m x T, seeds " + seeds + " | mean PQ | mean PQ_th "
                "| mean PQ_st | change in PQ |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in recurrent:
            entry, summ = report["configs"][name], summary[name]
            for k in [1] + multiples:
                per_seed = " / ".join(
                    _fmt(entry["runs"][str(s)]["by_multiple"].get(str(k), {}).get("PQ"))
                    if str(s) in entry["runs"]
                    else "-"
                    for s in report["seeds"]
                )
                mean = summ["mean"].get(str(k), {})
                change = "0 (reference)" if k == 1 else _fmt(summ["drift_pq"].get(str(k)), "+.1f")
                lines.append(
                    f"| `{name}` | {entry['steps']} | {k} | {per_seed} "
                    f"| {_fmt(mean.get('PQ'))} | {_fmt(mean.get('PQ_th'))} "
                    f"| {_fmt(mean.get('PQ_st'))} | {change} |"
                )
    return "\n".join(lines).lstrip("\n") + "\n"


def _probe_model(config_file: str, weights: str, opts: Sequence[str], test_steps: int):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import crbp_panoptic  # noqa: F401  (registers)
    from crbp_panoptic import add_crbp_config

    cfg = get_cfg()
    add_crbp_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    if test_steps:
        cfg.MODEL.CRBP.TEST_STEPS, cfg.MODEL.CRBP.TEST_TOL = int(test_steps), 0.0
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    return cfg, model.eval()


def mask_probe(
    config_file: str, weights: str, opts: Sequence[str] = (), test_steps: int = 0
) -> Dict[str, float]:
    """The mask head alone, given the ground-truth boxes and classes of ``DATASETS.TEST``.

    Detection is taken out of the comparison: every ground-truth thing's box and class go
    to ``roi_heads.forward_with_given_boxes``; its mask (pasted into the image, threshold
    0.5) is compared with the thing's mask. ``leak`` is the fraction of the predicted mask
    on *other* things of the same class (the error a mask head that does not group makes
    where cables cross), ``miss`` the fraction of the thing it leaves out. Alongside, the
    same numbers for the grouping-free mask "every pixel of the class inside the box".

    Args:
        config_file (str): the config the weights were trained with.
        weights (str): a ``model_final.pth``.
        opts (list[str]): config overrides.
        test_steps (int): ``MODEL.CRBP.TEST_STEPS`` (0: the config's).

    Returns:
        dict: means over things of ``iou``, ``iou_above_half`` (fraction), ``leak``,
        ``miss``, and ``box_class_iou``, ``box_class_iou_above_half``; ``things``.
    """
    import numpy as np
    import torch
    from pycocotools import mask as mask_util

    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.layers import paste_masks_in_image
    from detectron2.structures import Boxes, BoxMode, Instances

    cfg, model = _probe_model(config_file, weights, opts, test_steps)
    mapper = DatasetMapper(cfg, is_train=False)
    rows = []
    for d in DatasetCatalog.get(cfg.DATASETS.TEST[0]):
        annos = d["annotations"]
        if not annos:
            continue
        inp = mapper(dict(d))
        h, w = inp["image"].shape[1:]
        if (h, w) != (d["height"], d["width"]):
            raise ValueError(
                f"mask_probe needs images at their own size; {d['file_name']} "
                f"was resized to {(h, w)} (INPUT.MIN_SIZE_TEST)"
            )
        gt = np.stack([mask_util.decode(a["segmentation"]).astype(bool) for a in annos])
        boxes = [BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in annos]
        classes = [a["category_id"] for a in annos]
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        with torch.no_grad():
            images = model.preprocess_image([inp])
            features = model.backbone(images.tensor)
            (out,) = model.roi_heads.forward_with_given_boxes(features, [inst])
            pred = paste_masks_in_image(out.pred_masks[:, 0], out.pred_boxes, (h, w), 0.5)
        pred = pred.numpy().astype(bool)
        for k in range(len(annos)):
            same = np.zeros((h, w), dtype=bool)
            for j in range(len(annos)):
                if j != k and classes[j] == classes[k]:
                    same |= gt[j]
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[k])
            guess = np.zeros((h, w), dtype=bool)
            guess[y0:y1, x0:x1] = (gt[k] | same)[y0:y1, x0:x1]
            p, g = pred[k], gt[k]
            rows.append(
                (
                    float((p & g).sum() / max((p | g).sum(), 1)),
                    float((p & same).sum() / max(p.sum(), 1)),
                    float((g & ~p).sum() / max(g.sum(), 1)),
                    float((guess & g).sum() / max((guess | g).sum(), 1)),
                )
            )
    a = np.array(rows)
    return {
        "things": len(rows),
        "iou": float(a[:, 0].mean()),
        "iou_above_half": float((a[:, 0] > 0.5).mean()),
        "leak": float(a[:, 1].mean()),
        "miss": float(a[:, 2].mean()),
        "box_class_iou": float(a[:, 3].mean()),
        "box_class_iou_above_half": float((a[:, 3] > 0.5).mean()),
    }


def run_probes(
    report: dict, output_dir: str, seeds: Optional[Sequence[int]] = None, log=print
) -> dict:
    """:func:`mask_probe` for every finished run of a sweep (and every test-step multiple of
    the recurrent ones) of ``seeds`` (default: all); stored under
    ``report["probe"][config][seed][multiple]`` and in ``<output_dir>/report.json``."""
    probe = report.setdefault("probe", {})
    wanted = None if seeds is None else {str(s) for s in seeds}
    for name, entry in report["configs"].items():
        for seed, run in entry["runs"].items():
            if wanted is not None and seed not in wanted:
                continue
            for m in run["by_multiple"]:
                steps = int(m) * entry["steps"] if entry["recurrent"] else 0
                log(f"[{time.strftime('%H:%M:%S')}] probe {name} seed {seed} multiple {m}")
                probe.setdefault(name, {}).setdefault(seed, {})[m] = mask_probe(
                    entry["file"], run["weights"], report["opts"], steps
                )
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return probe


def probe_markdown(report: dict) -> str:
    """The mask-head probe as a markdown table (means over seeds)."""
    lines = [
        (
            "The mask head alone (`mask_probe`): ground-truth boxes and classes of the test "
            "split in, masks out (pasted, threshold 0.5); means over things and seeds. IoU > "
            "0.5: fraction of things whose mask would match in PQ. Leak: fraction of the "
            "predicted mask lying on other things of the same class; miss: fraction of the "
            "thing left out. Last row: the grouping-free mask 'every pixel of the class in "
            "the box' (ground truth, no model)."
        ),
        "",
        "| config | test steps | seeds | mask IoU | IoU > 0.5 | leak | miss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    box = None
    for name, per_seed in report.get("probe", {}).items():
        entry = report["configs"][name]
        multiples = sorted({m for r in per_seed.values() for m in r}, key=int)
        for m in multiples:
            rows = [r[m] for r in per_seed.values() if m in r]
            mean = {k: _mean(r[k] for r in rows) for k in rows[0]}
            box = box or mean
            steps = int(m) * entry["steps"] if entry["recurrent"] else "-"
            lines.append(
                f"| `{name}` | {steps} | {len(rows)} | {mean['iou']:.3f} "
                f"| {mean['iou_above_half']:.3f} | {mean['leak']:.3f} "
                f"| {mean['miss']:.3f} |"
            )
    if box:
        lines.append(
            f"| every pixel of the class in the box | - | - | {box['box_class_iou']:.3f} "
            f"| {box['box_class_iou_above_half']:.3f} | - | - |"
        )
    return "\n".join(lines) + "\n"


def curves_markdown(report: dict, points: Optional[Sequence[int]] = None) -> str:
    """Training curves at a few iterations, means over seeds: is a config still learning?

    ``points``: 0-based iterations (default: the logged ones nearest a third, two thirds and
    the end of the first config's curve)."""
    if points is None:
        its = [
            it
            for r in next(iter(report["configs"].values()))["runs"].values()
            for it, _v in r.get("curves", {}).get("loss_mask", [])
        ]
        last = max(its) if its else 299
        points = [
            min(its or [last], key=lambda i, t=((last + 1) * k) // 3 - 1: abs(i - t))
            for k in (1, 2, 3)
        ]
    lines = [
        (
            "Training curves (Detectron2's running median over 20 iterations, mean over "
            "seeds) at iterations " + ", ".join(str(p + 1) for p in points) + ": the mask "
            "loss, the mask head's false-negative rate on foreground pixels of its training "
            "ROIs (1.0: it predicts no foreground), the box classifier's loss and its "
            "accuracy on foreground ROIs."
        ),
        "",
        "| config | "
        + " | ".join(f"{label} @ {p + 1}" for _k, label in _CURVE_COLUMNS for p in points)
        + " |",
        "|---|" + "---:|" * (len(_CURVE_COLUMNS) * len(points)),
    ]
    for name, entry in report["configs"].items():
        cells = []
        for key, _label in _CURVE_COLUMNS:
            for p in points:
                vals = [
                    v
                    for r in entry["runs"].values()
                    for it, v in r.get("curves", {}).get(key, [])
                    if it == p
                ]
                cells.append(_fmt(_mean(vals), ".3f"))
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


DYNAMICS = (
    "residual",
    "neumann_terms",
    "neumann_residual",
    "colsum_p50",
    "colsum_p90",
    "colsum_max",
    "frac_above_tau",
    "contrast",
    "lcp",
)


def dynamics_markdown(report: dict) -> str:
    """The recurrent modules' last logged telemetry, means over seeds."""
    lines = [
        (
            "Dynamics of the recurrent mask head at the end of training (last logged value, "
            "mean over seeds): relative forward residual ||h_T - h_(T-1)|| / ||h_T||, Neumann "
            "terms used and the series' last relative term, Jacobian column sums 1^T dF/dh "
            "(median, 90th percentile, max; fraction above LCP_TAU), the state's spatial "
            "contrast, and the unweighted penalty."
        ),
        "",
        "| config | " + " | ".join(DYNAMICS) + " |",
        "|---|" + "---:|" * len(DYNAMICS),
    ]
    for name, entry in report["configs"].items():
        if not entry["recurrent"]:
            continue
        cells = [
            _fmt(_mean(r.get("dynamics", {}).get(k) for r in entry["runs"].values()), ".3g")
            for k in DYNAMICS
        ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
