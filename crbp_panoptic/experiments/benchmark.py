"""Training memory and speed of recurrent Panoptic FPNs next to the feedforward one.

:func:`measure` trains one configuration (a placement's YAML plus an arm, random weights and
batch) a few iterations and runs it at T, 2T steps and with early stopping; peak training
memory is ``max_memory_allocated`` under a cap on CUDA, the peak resident set's growth in a
process of its own on a CPU (:func:`measure_in_child`). :func:`run` rewrites
``benchmark.md`` / ``.json`` after every configuration of a :func:`plan`.
"""

import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..crbp.arms import Arm, parse_arm
from .measure import MIB, measure_step, parameter_counts
from .report import fmt_num, markdown_table, publish, ratio, ratio_cell, render

#: The stock Panoptic FPN (the FF row) and each placement's YAML, in a configs directory.
BASELINE_YAML = "panoptic_fpn_R_50_1x.yaml"
PLACEMENT_YAMLS = {
    "fpn": "panoptic_crbp_fpn_R_50_1x.yaml",
    "mask": "panoptic_crbp_mask_R_50_1x.yaml",
}
#: Arms measured on every placement, in table order (exact penalty).
DEFAULT_ARMS = ("bptt:1", "bptt:3", "bptt:5", "rbp:20", "crbp:5", "crbp:10", "crbp:20", "crbp:40")
#: Each placement's cheap penalty: a row subset for many rows (ROIs), a window for few maps.
DEFAULT_CHEAP_ARMS = {"mask": "crbp:20:sub0.25", "fpn": "crbp:20:crop32"}
#: Run order (a run stopped by its time budget has these first); "cheap" = any cheap arm.
PRIORITY = ("crbp:20", "bptt:1", "crbp:5", "crbp:40", "cheap", "bptt:3", "bptt:5", "rbp:20")
FEEDFORWARD = Arm("ff")
#: Score of every forced test detection (see :func:`force_detections`).
DETECTION_SCORE = 0.3
#: Inference variants of a recurrent model: (key, TEST_STEPS as a multiple of STEPS, early stop).
INFER_VARIANTS = (("T", 1, False), ("2T", 2, False), ("ES", 1, True))


def is_cheap(arm: Arm) -> bool:
    """Whether ``arm`` evaluates its penalty on a row subset or a crop."""
    return arm.lcp_subsample is not None or arm.lcp_crop > 0


def table_label(arm: Arm) -> str:
    """The arm as a table row names it: ``FF``, ``C-RBP-20``, ``C-RBP-20 (LCP on ...)``."""
    return arm.label if arm.recurrent else "FF"


def series(arm: Arm) -> str:
    """The plot line an arm belongs to: one per training mode, cheap penalties apart."""
    if not arm.recurrent:
        return "FF"
    base = arm.label.split(" ")[0].rsplit("-", 1)[0]
    return f"{base} (cheap LCP)" if is_cheap(arm) else base


def parse_cheap_arms(texts: Sequence[str]) -> Dict[str, List[Arm]]:
    """``["mask=crbp:20:sub0.25", ...]`` -> ``{"mask": [Arm(...)], ...}``; ValueError names a bad
    item."""
    out: Dict[str, List[Arm]] = {}
    for text in texts:
        placement, sep, arm_text = text.partition("=")
        if not sep or placement not in PLACEMENT_YAMLS:
            raise ValueError(
                f"--cheap-arms {text!r}: expected PLACEMENT=ARM with PLACEMENT in "
                f"{sorted(PLACEMENT_YAMLS)}, e.g. mask=crbp:20:sub0.25"
            )
        arm = parse_arm(arm_text)
        if not is_cheap(arm):
            raise ValueError(f"--cheap-arms {text!r}: {arm_text!r} has no :subF or :cropS option")
        out.setdefault(placement, []).append(arm)
    return out


def plan(placements, arms, cheap_arms=None) -> List[Tuple[str, Arm]]:
    """``[(placement, arm)]`` in run order: FF once (placement ``"-"``), then by
    :data:`PRIORITY` (stable), placements interleaved; a cheap arm of ``cheap_arms``
    ({placement: [arms]}) runs only on its placement."""
    runs = [(p, a) for a in arms if a.recurrent for p in placements]
    runs += [(p, a) for p in placements for a in (cheap_arms or {}).get(p, [])]

    def key(run):
        name = "cheap" if is_cheap(run[1]) else run[1].name
        return PRIORITY.index(name) if name in PRIORITY else len(PRIORITY)

    return [("-", FEEDFORWARD)] + sorted(runs, key=key)


def common_opts(device: str, lr: float, detections: int, depth: Optional[int]) -> List[str]:
    """Options applied to every configuration before the arm's and the user's."""
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, "SOLVER.BASE_LR", str(lr)]
    if detections > 0:
        opts += ["TEST.DETECTIONS_PER_IMAGE", str(detections)]
    if depth is not None:
        opts += ["MODEL.RESNETS.DEPTH", str(depth)]
        if depth in (18, 34):  # Detectron2's basic-block ResNets require res2 = 64 channels
            opts += ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    return opts


def config_file(config_dir, placement: str, arm: Arm) -> str:
    """The YAML of a configuration: the stock model for FF, else the placement's."""
    return str(Path(config_dir) / (PLACEMENT_YAMLS[placement] if arm.recurrent else BASELINE_YAML))


def build_cfg(config_file, opts: Sequence[str]):
    """The frozen config, ``SCORE_THRESH_TEST`` >= 0.05 (below that, pasting near-zero-score
    masks dominates the inference time)."""
    from ..engine import setup_cfg

    cfg = setup_cfg(config_file, opts)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = max(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, 0.05)
    cfg.freeze()
    return cfg


def _build(spec: Dict):
    """The config, model, optimizer and batch of a spec, and the result's identifying fields."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from ..engine.optimizer import build_optimizer
    from ..modeling import recurrent_modules
    from .batches import random_batch

    arm = parse_arm(spec["arm"])
    opts = list(spec["opts"]) + [str(v) for v in arm.config_opts()] + list(spec["user_opts"])
    cfg = build_cfg(spec["config_file"], opts)
    torch.manual_seed(spec["seed"])
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:  # only when the user's options name a checkpoint
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    refiners = [m for _, m in recurrent_modules(model)]
    if refiners:  # what trains after every override (the user's options come last)
        r = refiners[0]
        arm = Arm(r.mode, r.steps, r.lcp_subsample, r.lcp_crop, r.lcp_kind)
    out = dict(placement=spec["placement"], arm=spec["arm"], label=table_label(arm))
    out.update(mode=arm.mode if arm.recurrent else None, steps=arm.steps, opts=opts)
    out.update(series=series(parse_arm(spec["arm"])), params=parameter_counts(model)["total"])
    out["config_file"] = os.path.basename(spec["config_file"])
    # on the device once: iterations time the model, not copies
    batch = random_batch(
        spec["batch"], spec["size"], instances=spec["instances"], seed=spec["seed"],
        num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES, num_stuff=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        device=cfg.MODEL.DEVICE,
    )  # fmt: skip
    return cfg, model, build_optimizer(cfg, model), batch, refiners, out


def _train(spec, model, optimizer, batch, cuda: bool, out: Dict) -> None:
    """Warm-up, timed iterations and the memory measurement; figures into ``out``."""
    from detectron2.utils.events import EventStorage

    losses_seen = []
    model.train()
    with EventStorage(0) as storage:

        def train_step():
            losses = model(batch)
            sum(losses.values()).backward()
            optimizer.step()
            storage.step()
            losses_seen.append({k: float(v.detach()) for k, v in losses.items()})

        try:
            m = measure_step(
                train_step, iters=spec["iters"], warmup=spec["warmup"], cuda=cuda,
                memory="allocated" if cuda else "rss", mem_iters=spec.get("mem_iters", 1),
                isolated=bool(spec.get("isolated")),
                before_each=lambda: optimizer.zero_grad(set_to_none=True),
            )  # fmt: skip
        except torch.cuda.OutOfMemoryError as e:  # only under the CUDA memory cap
            out["error"] = f"CUDA out of memory under the cap: {str(e).splitlines()[0]}"
            return
    if cuda:
        out.update(train_mib=(m["base_bytes"] + m["peak_bytes"]) / MIB)
        out["reserved_mib"] = torch.cuda.max_memory_reserved() / MIB
    else:
        out.update(train_mib=m["rss_mib"], train_mib_all=m["rss_mib_all"])
        out.update(rss_exact=m["rss_exact"], peak_reset=m["peak_reset"])
    out.update(train_s=m["seconds"], train_times=m["times"], train_cpu_s=m["cpu_seconds"])
    out["loss_last"] = losses_seen[-1]
    out["nonfinite_loss"] = any(not math.isfinite(v) for d in losses_seen for v in d.values())


def _mean(values) -> float:
    return sum(values) / max(len(values), 1)


def _infer(spec, model, batch, refiners, steps: int, mask_rois: List[int], cuda: bool) -> Dict:
    """Seconds per image (and steps, residuals, detections) per inference variant."""
    images = [{k: x[k] for k in ("image", "height", "width")} for x in batch]
    figures = {}
    for key, mult, early in INFER_VARIANTS if refiners else (("T", 1, False),):
        tol = spec["test_tol"] if early else 0.0
        for m in refiners:
            m.test_steps, m.test_tol = mult * m.steps, tol
        mask_rois.clear()
        seen = []  # per call: detections, and the refiners' last solves

        def step():
            (pred,) = model([images[len(seen) % len(images)]])
            seen.append((len(pred["instances"]), [m.last_result for m in refiners]))

        with torch.no_grad():
            t = measure_step(
                step, iters=spec["infer_iters"], warmup=spec["infer_warmup"], cuda=cuda
            )
        timed = seen[spec["infer_warmup"] :]
        results = [r for _, rs in timed for r in rs if r is not None]
        figures[key] = {
            "test_steps": mult * steps, "test_tol": tol, "s_per_img": t["seconds"],
            "times": t["times"], "cpu_s_per_img": t["cpu_seconds"],
            "steps": _mean([r.steps for r in results]) if results else None,
            "residual": max(r.residual for r in results) if results else None,
            "detections": _mean([d for d, _ in timed]), "mask_rois": _mean(mask_rois),
        }  # fmt: skip
    return figures


def measure(spec: Dict) -> Dict:
    """Build, train and run inference for one configuration.

    Args:
        spec (dict): ``placement``, ``arm`` (name), ``config_file``, ``opts`` (common options;
            the arm's and ``user_opts`` follow), ``user_opts`` and the settings of
            ``tools/benchmark.py`` (``device``, ``size``, ``iters``, ...).

    Returns:
        dict: the spec's names, ``train_mib``, ``train_s``, ``infer`` (per variant:
        ``s_per_img``, ``steps``, ``residual``, ...), ROI counts, losses; or ``error``.
    """
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cfg, model, optimizer, batch, refiners, out = _build(spec)
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    mask_rois: List[int] = []
    hook = model.roi_heads.mask_head.register_forward_pre_hook(
        lambda module, args: mask_rois.append(int(args[0].shape[0]))
    )
    _train(spec, model, optimizer, batch, cuda, out)
    out["mask_rois_train"] = _mean(mask_rois) / spec["batch"]
    if "error" in out:
        return out
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    model.eval()
    if spec["detections"] > 0:
        force_detections(model)
    out["infer"] = _infer(spec, model, batch, refiners, out["steps"], mask_rois, cuda)
    hook.remove()
    return out


def force_detections(model, score: float = DETECTION_SCORE) -> None:
    """Make every proposal (an anchor ranked by objectness) a detection of class 0.

    On random weights the RPN's deltas clip most proposals to empty boxes: the RPN's delta
    conv and the box predictor get zero weights, class 0 the probability ``score``, between
    ``SCORE_THRESH_TEST`` (0.05) and the panoptic merge's 0.5 (a slow Python loop over
    equal-score masks); every layer still runs.
    """
    predictor = model.roi_heads.box_predictor
    layers = [predictor.cls_score, predictor.bbox_pred]
    rpn_head = getattr(model.proposal_generator, "rpn_head", None)
    if rpn_head is not None and hasattr(rpn_head, "anchor_deltas"):
        layers.append(rpn_head.anchor_deltas)
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            layer.bias.zero_()
        others = predictor.cls_score.out_features - 1  # the other classes and background, logit 0
        predictor.cls_score.bias[0] = math.log(score * others / (1 - score))


def _error(spec: Dict, message: str) -> Dict:
    label = table_label(parse_arm(spec["arm"]))
    return {"placement": spec["placement"], "arm": spec["arm"], "label": label, "error": message}


def measure_in_child(spec: Dict, timeout: Optional[float] = None) -> Dict:
    """:func:`measure` in a fresh Python process (its own peak resident set), which imports
    this same ``crbp_panoptic`` (its parent directory leads its ``PYTHONPATH``)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="crbp_bench_") as tmp:
        spec = dict(spec, result_path=os.path.join(tmp, "result.json"), isolated=True)
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, "-m", __name__, spec_path]
        env = {**os.environ, "PYTHONPATH": path}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return _error(spec, f"timed out after {timeout:.0f} s")
        if os.path.exists(spec["result_path"]):
            with open(spec["result_path"]) as f:
                return json.load(f)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return _error(spec, f"child exited with {proc.returncode}: {' | '.join(tail)}")


def prepare_cuda(device: str, memory_fraction: float, cap_gib: Optional[float]) -> Dict:
    """Select ``device``, cap its memory at ``memory_fraction`` of the card or at ``cap_gib``
    GiB; returns ``mem_fraction`` and ``mem_cap_mib`` as applied."""
    if not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available here")
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    torch.cuda.set_device(index)  # the memory statistics read the current device
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = min(1.0, cap_gib * 2**30 / total) if cap_gib else memory_fraction
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return {"mem_fraction": fraction, "mem_cap_mib": fraction * total / MIB}


def run(runs, base_spec: Dict, config_dir, out_dir, machine, settings, *, in_process=False,
        time_budget=0) -> List[Dict]:  # fmt: skip
    """Measure every ``(placement, arm)`` of ``runs`` (:func:`plan`) with ``base_spec``
    (:func:`measure`'s spec less ``placement``, ``arm``, ``config_file``), rewriting
    ``benchmark.md`` / ``.json`` after each; ``in_process`` (CPU): no child processes;
    configurations not started within ``time_budget`` seconds (0: none) are skipped."""
    cuda = base_spec["device"].startswith("cuda")
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    results: List[Dict] = []

    def write():
        data = {"machine": machine, "settings": settings, "results": results}
        md = markdown(results, machine, settings)
        publish(md, Path(out_dir) / "benchmark.md", data, echo=False)

    for placement, arm in runs:
        spec = dict(base_spec, placement=placement, arm=arm.name)
        spec["config_file"] = config_file(config_dir, placement, arm)
        if time_budget and time.perf_counter() - start > time_budget:
            results.append(_error(spec, f"skipped: time budget {time_budget:.0f} s spent"))
            continue
        t0 = time.perf_counter()
        if not (cuda or in_process):
            r = measure_in_child(spec)
        else:
            try:
                r = measure(spec)
            except Exception as e:  # one failing configuration must not lose the others
                r = _error(spec, f"{type(e).__name__}: {e}")
            if cuda:
                gc.collect()
                torch.cuda.empty_cache()
        r["wall_s"] = time.perf_counter() - t0
        results.append(r)
        status = r.get("error") or f"train {r['train_mib']:.0f} MiB, {fmt_num(r['train_s'])} s/iter"
        print(f"[{time.perf_counter() - start:6.0f} s] {placement} {arm.name} {status}", flush=True)
        add_ratios(results)
        write()
    settings["total_s"] = time.perf_counter() - start
    write()
    return results


def add_ratios(results: List[Dict]) -> None:
    """Add ``train_mib_x``, ``train_s_x`` and ``infer[*]["x"]``: each figure over FF's."""
    ff = next((r for r in results if r["arm"] == "ff" and "error" not in r), None)
    for r in results:
        if ff is None or "error" in r:
            continue
        for key in ("train_mib", "train_s", "train_cpu_s"):
            r[key + "_x"] = ratio(r.get(key), ff.get(key))
        for fig in r.get("infer", {}).values():
            fig["x"] = ratio(fig["s_per_img"], ff["infer"]["T"]["s_per_img"])
            fig["cpu_x"] = ratio(fig.get("cpu_s_per_img"), ff["infer"]["T"].get("cpu_s_per_img"))


def _find(results, placement, name):
    """The result of arm ``name`` in ``placement``; None if not measured."""
    ok = (r for r in results if "error" not in r and r["placement"] == placement)
    return next((r for r in ok if r["arm"] == name), None)


def _row(r: Dict, cuda: bool, cap_mib: Optional[float]) -> Tuple[List[str], bool]:
    """The cells of one result's row, and whether its allocator reached the memory cap."""
    if "error" in r:
        return [r["placement"], r["label"], "", r["error"]] + [""] * (6 if cuda else 8), False
    flagged = bool(cuda and cap_mib and r.get("reserved_mib", 0) >= 0.95 * cap_mib)
    inf = r.get("infer", {})
    t = inf.get("T", {})
    cells = [r["placement"], r["label"], str(r["steps"] or "—")]
    cells += [ratio_cell(r["train_mib"], r.get("train_mib_x"), 4) + (" †" if flagged else "")]
    cells += [ratio_cell(r["train_s"], r.get("train_s_x"))]
    for key in ("T", "2T", "ES"):
        fig = inf.get(key)
        cells.append("—" if fig is None else ratio_cell(fig["s_per_img"], fig.get("x")))
        if key == "ES" and fig is not None and fig["steps"] is not None:
            cells[-1] += f" [{fig['steps']:.1f}]"
    if not cuda:
        cells += [ratio_cell(r.get("train_cpu_s"), r.get("train_cpu_s_x"))]
        cells += [ratio_cell(t.get("cpu_s_per_img"), t.get("cpu_x"))]
    return cells, flagged


def _notes(results: List[Dict], s: Dict) -> List[str]:
    ff = next((r for r in results if r["arm"] == "ff" and "error" not in r), None)
    notes = []
    if ff is not None:
        t = ff["infer"]["T"]
        notes.append(
            f"Mask-head ROIs per image in training (FF): {ff['mask_rois_train']:.1f}; at "
            f"inference {t['mask_rois']:.1f} (detections per image {t['detections']:.1f})."
        )
    for p in s["placements"]:
        inf = (_find(results, p, "crbp:20") or {}).get("infer", {})
        if inf.get("T", {}).get("residual") is not None:
            notes.append(
                f"{p}: C-RBP-20 relative residual ||h_t - h_(t-1)|| / ||h_t|| at inference "
                f"(largest over the solves): {inf['T']['residual']:.2g} after T steps, "
                f"{inf['2T']['residual']:.2g} after 2T, with the weights measured (random init "
                "unless MODEL.WEIGHTS is given); early stopping saves steps only below TEST_TOL."
            )
    bad = [f"{r['placement']}/{r['label']}" for r in results if r.get("nonfinite_loss")]
    if bad:
        notes.append(f"Non-finite training loss in: {', '.join(bad)} (timings still valid).")
    if not s["device"].startswith("cuda"):
        notes.append("CPU timings are noisy: shared cores, medians of few iterations.")
        inexact = any(r.get("peak_reset") is False or r.get("rss_exact") is False for r in results)
        if inexact or not s.get("isolated", True):
            notes.append(
                "Peak resident set not reset, mmap threshold not fixed (not glibc) or one "
                "process for all configurations (--in-process): memory figures are indicative."
            )
    if s.get("total_s") is not None:
        notes.append(f"Whole run: {s['total_s']:.0f} s wall clock.")
    return notes


def markdown(results: List[Dict], machine: Dict, s: Dict) -> str:
    """The report: settings, the table (ratios to FF) and notes.

    Args:
        results: :func:`measure`'s results (after :func:`add_ratios`).
        machine: :func:`~crbp_panoptic.experiments.machine.machine_info`'s dict.
        s: the settings: ``device``, ``size``, ``batch``, ``instances``, ``iters``,
            ``warmup``, ``infer_iters``, ``infer_warmup``, ``test_tol``, ``detections``,
            ``lr``, ``opts``, ``placements``, ``arms`` (table order), ``date``, ``command``;
            optional ``mem_iters``, ``isolated``, ``total_s``; on CUDA ``mem_cap_mib``.
    """
    cuda = s["device"].startswith("cuda")
    dets = f"{s['detections']} forced detections (score {DETECTION_SCORE})"
    gpu = "; CUDA {cuda}, cuDNN {cudnn}, TF32 {cudnn_tf32}, cudnn.benchmark {cudnn_benchmark}, "
    gpu = (gpu.format(**machine) + f"memory cap {s['mem_cap_mib'] / 1024:.1f} GiB") if cuda else ""
    mem = (
        "`max_memory_allocated` of a training iteration (all tensors, weights and optimizer state)"
        if cuda
        else "least growth of the peak resident set of the configuration's own process over "
        f"{s.get('mem_iters', 1)} training iterations after the timed ones (activations, "
        "gradients, temporaries; glibc's mmap threshold fixed at 128 KiB)"
    )
    h, w = s["size"]
    body = [
        f"Generated {s['date']}{gpu}. **Settings**: device {s['device']}; random images {h}×{w}, "
        f"batch {s['batch']}, {s['instances']} instances per image; {s['warmup']} warm-up + "
        f"{s['iters']} timed training iterations (SGD, lr {s['lr']}); inference on one image "
        f"at a time, {s['infer_warmup']} warm-up + {s['infer_iters']} timed, "
        f"{dets if s['detections'] else 'the random-init detections'} per image; early "
        f"stopping: TEST_TOL = {s['test_tol']:g} (relative residual); penalty exact unless the "
        f"arm names a cheap one; common options `{' '.join(s['opts']) or '(none)'}`.",
        "",
        f"Train MiB: {mem}. s/iter, s/img: medians per training iteration and per image with "
        "TEST_STEPS = T (= STEPS), 2T and early stopping (ES, mean steps used in brackets); "
        "each figure's ratio to FF in brackets; CPU-s: process CPU time (all threads).",
        "",
    ]  # fmt: skip
    head = ["placement", "config", "T", "train MiB", "s/iter", "infer s/img, T"]
    head += ["infer s/img, 2T", "infer s/img, ES [steps]"]
    head += [] if cuda else ["train CPU-s/iter", "infer CPU-s/img, T"]
    arms = {name: i for i, name in enumerate(["ff", *s.get("arms", [])])}
    places = {p: i for i, p in enumerate(["-", *PLACEMENT_YAMLS])}
    order = sorted(results, key=lambda r: (places.get(r["placement"], 9), arms.get(r["arm"], 99)))
    rows, flags = zip(*(_row(r, cuda, s.get("mem_cap_mib")) for r in order)) if order else ((), ())
    body += markdown_table(head, rows)
    if any(flags):
        body += [
            "",
            "† the allocator's reserve reached the memory cap: cuDNN may have used workspace "
            "up to the cap, so the true need can be lower (rerun with a lower cap).",
        ]
    title = "crbp_panoptic: training memory and speed against the feedforward Panoptic FPN"
    return render(title, s["command"], machine, body, _notes(results, s))


def plot(results: List[Dict], placements: Sequence[str], path, title: str) -> bool:
    """Memory, s/iter and inference s/img (T) against steps, one line per training mode."""
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")
    ok = [r for r in results if "error" not in r]
    ff = next((r for r in ok if r["arm"] == "ff"), None)
    panels = {
        "training memory (MiB)": lambda r: r.get("train_mib"),
        "training s/iter": lambda r: r.get("train_s"),
        "inference s/img (T steps)": lambda r: r["infer"]["T"]["s_per_img"],
    }
    n = len(placements)
    fig, axes = plt.subplots(3, n, figsize=(5.5 * n, 9), squeeze=False, sharex=True)
    markers = {"BPTT": "o", "RBP": "s", "C-RBP": "^"}
    for col, p in enumerate(placements):
        rows = sorted((r for r in ok if r["placement"] == p), key=lambda r: r["steps"])
        for ax, (label, value) in zip(axes[:, col], panels.items()):
            for name in sorted({r["series"] for r in rows}):
                rs = [r for r in rows if r["series"] == name]
                marker = markers.get(name.split(" ")[0], "D")
                ax.plot([r["steps"] for r in rs], [value(r) for r in rs], marker=marker, label=name)
            if ff is not None and value(ff) is not None:
                ax.axhline(value(ff), color="gray", linestyle="--", label="FF")
            ax.set_xscale("log", base=2)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
        axes[0][col].set_title(f"recurrent {p}")
        axes[-1][col].set_xlabel("training steps T")
        axes[0][col].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":  # the child process of measure_in_child
    with open(sys.argv[1]) as f:
        _spec = json.load(f)
    try:
        _result = measure(_spec)
    except Exception as e:  # reported in the table, the run goes on
        _result = _error(_spec, f"{type(e).__name__}: {e}")
    with open(_spec["result_path"], "w") as f:
        json.dump(_result, f)
