"""Training memory and speed of recurrent Panoptic FPNs next to the feedforward one.

Each configuration (a placement's YAML plus a training arm, :mod:`crbp_panoptic.crbp.arms`)
is built with random weights, trained for a few iterations on a random batch
(:func:`~crbp_panoptic.experiments.batches.random_batch`) and then run at inference.
:func:`measure` returns, for one configuration:

* peak training memory -- CUDA: ``torch.cuda.max_memory_allocated`` (every tensor,
  weights and optimizer state included), meant to run under a memory cap
  (:func:`prepare_cuda`), because without one cuDNN takes workspace it does not need;
  CPU (in a process of its own, :func:`measure_in_child`): after the timed iterations,
  ``mem_iters`` more run with glibc's mmap threshold fixed
  (:func:`~crbp_panoptic.experiments.measure.trim_allocator`) so that the resident set
  follows the live tensors; the figure is the least growth of the peak resident set over
  one of them, above the resident set just before it (activations, gradients and
  temporaries; weights and optimizer state are in the baseline; allocator and library
  caches only add, hence the least);
* seconds per training iteration (forward + backward + SGD step in an ``EventStorage``;
  median over the timed iterations after warm-up; CUDA synchronised);
* seconds per image at inference (batch of one, ``torch.no_grad()``) with
  ``TEST_STEPS`` = STEPS, = 2 x STEPS, and with early stopping (``TEST_STEPS`` = STEPS,
  ``TEST_TOL`` = the spec's ``test_tol``), plus the mean steps the early-stopped solves used.

Forced detections: a random-init box predictor rarely scores a class above
``SCORE_THRESH_TEST`` = 0.05, so at inference the mask head would run on no ROI.
:func:`force_detections` makes every proposal a class-0 detection of score
:data:`DETECTION_SCORE`, capped by ``TEST.DETECTIONS_PER_IMAGE``; see its docstring.

:func:`run` measures a plan (:func:`plan`: FF first, then the arms by :data:`PRIORITY`),
adds ratios to FF and rewrites ``benchmark.md`` / ``benchmark.json`` after every
configuration, so a run cut short keeps what it measured.
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
from ..engine import setup_cfg
from .measure import MIB, Clock, median, peak_rss_mib, reset_peak_rss, rss_mib, trim_allocator
from .report import fmt_num, ratio, ratio_cell, write_report

__all__ = [
    "DEFAULT_ARMS",
    "DEFAULT_CHEAP_ARMS",
    "add_ratios",
    "build_cfg",
    "common_opts",
    "force_detections",
    "markdown",
    "measure",
    "measure_in_child",
    "parse_cheap_arms",
    "plan",
    "plot",
    "prepare_cuda",
    "run",
    "series",
    "target_lines",
]

#: The stock Panoptic FPN (the FF row) and each placement's YAML, in a configs directory.
BASELINE_YAML = "panoptic_fpn_R_50_1x.yaml"
PLACEMENT_YAMLS = {
    "fpn": "panoptic_crbp_fpn_R_50_1x.yaml",
    "mask": "panoptic_crbp_mask_R_50_1x.yaml",
}
#: Arms measured on every placement, in table order (exact penalty).
DEFAULT_ARMS = ("bptt:1", "bptt:3", "bptt:5", "rbp:20", "crbp:5", "crbp:10", "crbp:20", "crbp:40")
#: Each placement's cheap penalty: a row subset where the state has many rows (ROIs), a
#: spatial window where it has a few large maps (FPN levels).
DEFAULT_CHEAP_ARMS = {"mask": "crbp:20:sub0.25", "fpn": "crbp:20:crop32"}
#: Run order (a run stopped by its time budget has these first); "cheap" = any cheap arm.
PRIORITY = ("crbp:20", "bptt:1", "crbp:5", "crbp:40", "cheap", "bptt:3", "bptt:5", "rbp:20",
            "crbp:10")
FEEDFORWARD = Arm("ff")
#: The early-stopping tolerance by default.
DEFAULT_TEST_TOL = 1e-3
#: Score of every forced test detection (see :func:`force_detections`).
DETECTION_SCORE = 0.3
#: Inference variants of a recurrent model: (key, TEST_STEPS as a multiple of STEPS, early stop).
INFER_VARIANTS = (("T", 1, False), ("2T", 2, False), ("ES", 1, True))


# --------------------------------------------------------------------------- the plan


def is_cheap(arm: Arm) -> bool:
    """Whether ``arm`` evaluates its penalty on a row subset or a crop."""
    return arm.lcp_subsample is not None or arm.lcp_crop > 0


def table_label(arm: Arm) -> str:
    """The arm as a table row names it: ``FF``, ``C-RBP-20``, ``C-RBP-20 (LCP on ...)``."""
    return "FF" if not arm.recurrent else arm.label


def series(arm: Arm) -> str:
    """The plot line an arm belongs to: one per training mode, cheap penalties apart."""
    if not arm.recurrent:
        return "FF"
    base = arm.label.split(" ")[0].rsplit("-", 1)[0]
    return f"{base} (cheap LCP)" if is_cheap(arm) else base


def parse_cheap_arms(texts: Sequence[str]) -> Dict[str, List[Arm]]:
    """``["mask=crbp:20:sub0.25", ...]`` -> ``{"mask": [Arm(...)], ...}``.

    Raises:
        ValueError: an item that is not ``PLACEMENT=ARM`` with a known placement and a
            cheap arm (``:subF`` or ``:cropS``).
    """
    out: Dict[str, List[Arm]] = {}
    for text in texts:
        placement, sep, arm_text = text.partition("=")
        if not sep or placement not in PLACEMENT_YAMLS:
            raise ValueError(f"--cheap-arms {text!r}: expected PLACEMENT=ARM with PLACEMENT in "
                             f"{sorted(PLACEMENT_YAMLS)}, e.g. mask=crbp:20:sub0.25")
        arm = parse_arm(arm_text)
        if not is_cheap(arm):
            raise ValueError(f"--cheap-arms {text!r}: {arm_text!r} has no :subF or :cropS option")
        out.setdefault(placement, []).append(arm)
    return out


def _priority(arm: Arm) -> int:
    key = "cheap" if is_cheap(arm) else arm.name
    return PRIORITY.index(key) if key in PRIORITY else len(PRIORITY)


def plan(placements: Sequence[str], arms: Sequence[Arm],
         cheap_arms: Optional[Dict[str, List[Arm]]] = None) -> List[Tuple[str, Arm]]:
    """``[(placement, arm)]`` in run order: FF once (placement ``"-"``), then by :data:`PRIORITY`
    (stable), placements interleaved; a cheap arm runs only on the placement it is given for."""
    cheap_arms = cheap_arms or {}
    runs = [(p, a) for a in arms if a.recurrent for p in placements]
    runs += [(p, a) for p in placements for a in cheap_arms.get(p, [])]
    order = {run: i for i, run in enumerate(runs)}
    runs.sort(key=lambda run: (_priority(run[1]), order[run]))
    return [("-", FEEDFORWARD)] + runs


# --------------------------------------------------------------------------- configs


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
    name = BASELINE_YAML if not arm.recurrent else PLACEMENT_YAMLS[placement]
    return str(Path(config_dir) / name)


def effective_arm(cfg) -> Arm:
    """The arm a recurrent config trains, as its ``MODEL.CRBP`` keys say after every override
    (the user's options come last and may change the steps or the penalty)."""
    c = cfg.MODEL.CRBP
    sub = c.LCP_SUBSAMPLE
    sub = None if not sub else (sub if sub < 1 else int(sub))
    return Arm(c.GRAD, int(c.STEPS), sub, int(c.LCP_CROP))


def arm_opts(arm: Arm) -> List[str]:
    """The arm's ``MODEL.CRBP`` options as strings (exact penalty unless the arm is cheap)."""
    return [str(v) for v in arm.config_opts()]


def build_cfg(config_file, opts: Sequence[str]):
    """:func:`~crbp_panoptic.engine.setup_cfg`, frozen, with ``SCORE_THRESH_TEST`` >= 0.05
    (below that, pasting near-zero-score masks dominates the inference time)."""
    cfg = setup_cfg(config_file, opts)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = max(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, 0.05)
    cfg.freeze()
    return cfg


# --------------------------------------------------------------------------- one configuration


def _build(spec: Dict):
    """The config, model, optimizer and batch of a spec, and the result's identifying fields."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    import crbp_panoptic  # noqa: F401  (registers the C-RBP backbone, mask head, meta-architecture)

    from .batches import random_batch

    arm = parse_arm(spec["arm"])
    opts = list(spec["opts"]) + arm_opts(arm) + list(spec["user_opts"])
    cfg = build_cfg(spec["config_file"], opts)
    out = {"placement": spec["placement"], "arm": arm.name,
           "label": table_label(effective_arm(cfg) if arm.recurrent else arm),
           "mode": arm.mode if arm.recurrent else None,
           "steps": cfg.MODEL.CRBP.STEPS if arm.recurrent else 0, "series": series(arm),
           "config_file": os.path.basename(spec["config_file"]), "opts": opts}
    torch.manual_seed(spec["seed"])
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:  # only when the user's options name a checkpoint
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    optimizer = build_optimizer(cfg, model)
    out["params"] = sum(p.numel() for p in model.parameters())
    # One batch, put on the device once and reused: iterations time the model, not copies.
    batch = random_batch(spec["batch"], spec["size"], instances=spec["instances"],
                         num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                         num_stuff=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                         seed=spec["seed"], device=cfg.MODEL.DEVICE)
    return cfg, model, optimizer, batch, out


def _train(spec, model, optimizer, batch, cuda: bool, out: Dict) -> None:
    """Warm-up and timed iterations, then (CPU) the memory pass; figures into ``out``."""
    from detectron2.utils.events import EventStorage

    times, cpu_times, losses_seen = [], [], []
    model.train()

    def train_step(storage):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        storage.step()
        losses_seen.append({k: float(v.detach()) for k, v in losses.items()})

    try:
        with EventStorage(0) as storage:
            for it in range(spec["warmup"] + spec["iters"]):
                with Clock(cuda) as clock:
                    train_step(storage)
                if it >= spec["warmup"]:
                    times.append(clock.seconds)
                    cpu_times.append(clock.cpu_seconds)
            if not cuda:
                _memory_pass(spec, optimizer, lambda: train_step(storage), out)
    except torch.cuda.OutOfMemoryError as e:  # only under the CUDA memory cap
        out["error"] = f"CUDA out of memory under the cap: {str(e).splitlines()[0]}"
    out.update(train_s=median(times), train_times=times, train_cpu_s=median(cpu_times),
               loss_last=losses_seen[-1] if losses_seen else {},
               nonfinite_loss=any(not math.isfinite(v) for d in losses_seen for v in d.values()))


def _memory_pass(spec, optimizer, step, out: Dict) -> None:
    """CPU: ``mem_iters`` more iterations, each measured as peak-RSS growth (least kept)."""
    isolated = bool(spec.get("isolated"))  # the allocator setting lasts for the whole process
    growth = []
    for _ in range(spec.get("mem_iters", 1)):
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        out["rss_exact"] = isolated and trim_allocator()
        before = rss_mib()
        out["peak_reset"] = reset_peak_rss()
        step()
        growth.append(peak_rss_mib() - before)
    # Allocator and library caches only ever add to a growth: the least is the need.
    out["train_mib_all"] = growth
    out["train_mib"] = min(growth)


def _infer(spec, model, batch, recurrent, steps: int, mask_rois: List[int], cuda: bool) -> Dict:
    """Seconds per image (and steps, residuals, detections) per inference variant."""
    images = [{"image": x["image"], "height": x["height"], "width": x["width"]} for x in batch]
    figures = {}
    for key, mult, early in INFER_VARIANTS if recurrent else (("T", 1, False),):
        for m in recurrent:
            m.test_steps = mult * m.steps
            m.test_tol = spec["test_tol"] if early else 0.0
        mask_rois.clear()
        seconds, cpu_seconds, used, residuals, detections = [], [], [], [], []
        with torch.no_grad():
            for i in range(spec["infer_warmup"] + spec["infer_iters"]):
                with Clock(cuda) as clock:
                    (pred,) = model([images[i % len(images)]])
                if i < spec["infer_warmup"]:
                    continue
                seconds.append(clock.seconds)
                cpu_seconds.append(clock.cpu_seconds)
                detections.append(len(pred["instances"]))
                for m in recurrent:
                    if m.last_result is not None:
                        used.append(m.last_result.steps)
                        residuals.append(m.last_result.residual)
        figures[key] = {
            "test_steps": mult * steps,
            "test_tol": spec["test_tol"] if early else 0.0,
            "s_per_img": median(seconds), "times": seconds, "cpu_s_per_img": median(cpu_seconds),
            "steps": sum(used) / len(used) if used else None,
            "residual": max(residuals) if residuals else None,
            "detections": sum(detections) / max(len(detections), 1),
            "mask_rois": sum(mask_rois) / max(len(mask_rois), 1),
        }
    return figures


def measure(spec: Dict) -> Dict:
    """Build, train and run inference for one configuration; return its figures.

    Args:
        spec (dict): ``placement``, ``arm`` (an arm name, ``"ff"`` or ``"crbp:20"``),
            ``config_file``, ``opts`` (common options; the arm's and then ``user_opts``
            follow), ``user_opts``, ``device``, ``size``, ``batch``, ``instances``,
            ``iters``, ``warmup``, ``infer_iters``, ``infer_warmup``, ``test_tol``,
            ``detections``, ``seed``, ``threads`` and, on a CPU, ``mem_iters`` (iterations
            of the memory pass, default 1) and ``isolated`` (a process of its own).

    Returns:
        dict: the spec's names plus ``train_mib`` (the memory figure of the device; on a
        CPU the least of ``train_mib_all``, one growth per memory-pass iteration),
        ``train_s`` (median seconds per iteration), ``infer`` (per inference variant:
        ``s_per_img``, ``steps``, ``residual``, ...), ROI counts, losses; or ``error``.
    """
    from ..modeling import recurrent_modules

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cfg, model, optimizer, batch, out = _build(spec)
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    recurrent = [m for _, m in recurrent_modules(model)]
    mask_rois: List[int] = []
    hook = model.roi_heads.mask_head.register_forward_pre_hook(
        lambda module, args: mask_rois.append(int(args[0].shape[0])))
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        out["before_mib"] = torch.cuda.memory_allocated() / MIB
    _train(spec, model, optimizer, batch, cuda, out)
    if cuda:
        out["train_mib"] = torch.cuda.max_memory_allocated() / MIB
        out["reserved_mib"] = torch.cuda.max_memory_reserved() / MIB
    out["mask_rois_train"] = sum(mask_rois) / max(len(mask_rois), 1) / spec["batch"]
    if "error" in out:
        return out
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    model.eval()
    if spec["detections"] > 0:
        force_detections(model)
    out["infer"] = _infer(spec, model, batch, recurrent, out["steps"], mask_rois, cuda)
    hook.remove()
    return out


def force_detections(model, score: float = DETECTION_SCORE) -> None:
    """Make the box regressions constant and every proposal a detection of class 0.

    A random-init ResNet with frozen batch norm makes large features: the RPN's box deltas
    then clip most proposals to empty boxes (dropped), and the classifier's scores are
    arbitrary. So the RPN's delta conv and both layers of ``roi_heads.box_predictor`` get
    zero weights and biases, except a classifier bias that gives class 0 the probability
    ``score``: the proposals are anchors (ranked by the model's own objectness), each
    becomes a detection with its own box, and ``TEST.DETECTIONS_PER_IMAGE`` caps the count
    after NMS. The layers still run, so the cost of every stage is the real one.

    ``score`` lies between ``SCORE_THRESH_TEST`` (0.05: every detection reaches the mask
    head and is pasted) and ``PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH`` (0.5: the
    panoptic merge takes none of them). A trained model merges a handful; merging all 100
    equal-score detections would add a Python loop of ~100 mask operations to every
    configuration alike and hide the differences the table is for.
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


# --------------------------------------------------------------------------- processes


def _error(spec: Dict, message: str) -> Dict:
    return {"placement": spec["placement"], "arm": spec["arm"],
            "label": table_label(parse_arm(spec["arm"])), "error": message}


def child_main(spec_path: str) -> None:
    """Entry point of the child process: :func:`measure` the JSON spec, write the result."""
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        result = measure(spec)
    except Exception as e:  # reported in the table, the run goes on
        result = _error(spec, f"{type(e).__name__}: {e}")
    with open(spec["result_path"], "w") as f:
        json.dump(result, f)


def measure_in_child(spec: Dict, timeout: Optional[float] = None) -> Dict:
    """:func:`measure` in a fresh Python process (its own peak resident set), which imports
    this same ``crbp_panoptic`` (its parent directory leads its ``PYTHONPATH``)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory(prefix="crbp_bench_") as tmp:
        spec = dict(spec, result_path=os.path.join(tmp, "result.json"), isolated=True)
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, "-m", __name__, spec_path]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return _error(spec, f"timed out after {timeout:.0f} s")
        if os.path.exists(spec["result_path"]):
            with open(spec["result_path"]) as f:
                return json.load(f)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return _error(spec, f"child exited with {proc.returncode}: {' | '.join(tail)}")


def prepare_cuda(device: str, mem_fraction: float, mem_cap_gib: Optional[float]) -> Dict:
    """Select ``device`` and cap this process's CUDA memory.

    Args:
        device (str): "cuda" or "cuda:N".
        mem_fraction (float): ``torch.cuda.set_per_process_memory_fraction``'s argument.
        mem_cap_gib (float or None): the cap in GiB instead (same on any card).

    Returns:
        dict: ``mem_fraction`` and ``mem_cap_mib`` as applied.

    Raises:
        SystemExit: CUDA is not available.
    """
    if not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available here")
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    torch.cuda.set_device(index)  # the memory statistics read the current device
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = min(1.0, mem_cap_gib * 2**30 / total) if mem_cap_gib else mem_fraction
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return {"mem_fraction": fraction, "mem_cap_mib": fraction * total / MIB}


# --------------------------------------------------------------------------- the run


def _measure_one(spec: Dict, cuda: bool, in_process: bool) -> Dict:
    if not (cuda or in_process):
        return measure_in_child(spec)
    try:
        r = measure(spec)
    except Exception as e:  # one failing configuration must not lose the others
        r = _error(spec, f"{type(e).__name__}: {e}")
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
    return r


def run(runs: Sequence[Tuple[str, Arm]], base_spec: Dict, config_dir, out_dir, machine: Dict,
        settings: Dict, *, in_process: bool = False, time_budget: float = 0) -> List[Dict]:
    """Measure every ``(placement, arm)`` of ``runs`` (see :func:`plan`); write the report.

    Args:
        runs: the plan; FF must come first (the ratios need it).
        base_spec (dict): :func:`measure`'s spec without ``placement``, ``arm``, ``config_file``.
        config_dir: the directory of :data:`BASELINE_YAML` and :data:`PLACEMENT_YAMLS`.
        out_dir: where ``benchmark.md`` and ``benchmark.json`` are (re)written (created).
        machine, settings (dict): for the report's header (:func:`markdown`).
        in_process: CPU only: measure in this process instead of a child per configuration.
        time_budget: seconds; configurations not started by then are skipped (0 = no limit).

    Returns:
        list[dict]: one result per run, with ratios to FF.
    """
    cuda = base_spec["device"].startswith("cuda")
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()
    results: List[Dict] = []
    for placement, arm in runs:
        spec = dict(base_spec, placement=placement, arm=arm.name,
                    config_file=config_file(config_dir, placement, arm))
        if time_budget and time.perf_counter() - start > time_budget:
            results.append(_error(spec, f"skipped: time budget {time_budget:.0f} s spent"))
            continue
        t0 = time.perf_counter()
        r = _measure_one(spec, cuda, in_process)
        r["wall_s"] = time.perf_counter() - t0
        results.append(r)
        status = r.get("error") or (f"train {r['train_mib']:.0f} MiB, {fmt_num(r['train_s'])} "
                                    f"s/iter, infer {fmt_num(r['infer']['T']['s_per_img'])} s/img")
        print(f"[{time.perf_counter() - start:7.1f} s] {placement:4s} {arm.name:16s} {status}",
              flush=True)
        add_ratios(results)
        write_report(str(out_dir), "benchmark", {"machine": machine, "settings": settings,
                                                  "results": results},
                     markdown(results, machine, settings))
    settings["total_s"] = time.perf_counter() - start
    write_report(str(out_dir), "benchmark",
                 {"machine": machine, "settings": settings, "results": results},
                 markdown(results, machine, settings))
    return results


# --------------------------------------------------------------------------- report


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
            lines.append(f"{text}: {es:.2f}× here ({verdict}; "
                         f"{c20['infer']['ES']['steps']:.1f} steps on average).")
    return lines


def _header_lines(machine: Dict, settings: Dict) -> List[str]:
    cuda = settings["device"].startswith("cuda")
    gpu = (f"{machine['gpu']} ({machine['gpu_mib'] / 1024:.0f} GiB, CUDA {machine['cuda']}, cuDNN "
           f"{machine['cudnn']}, cuDNN TF32 {machine['cudnn_tf32']}, cudnn.benchmark "
           f"{machine['cudnn_benchmark']}); ") if cuda else ""
    h, w = settings["size"]
    detections = (f"{settings['detections']} forced detections (score {DETECTION_SCORE})"
                  if settings["detections"] else "the random-init detections")
    cap = (f"; memory cap {settings['mem_cap_mib'] / 1024:.1f} GiB "
           f"(fraction {settings['mem_fraction']:.3f})." if cuda else ".")
    mem = ("peak `max_memory_allocated` in training (MiB; all tensors, weights and optimizer "
           "state included)" if cuda else
           "least growth of the peak resident set of the configuration's own process over "
           f"one of {settings.get('mem_iters', 1)} training iterations after the timed ones, "
           "above the resident set just before it (MiB; activations, gradients, temporaries; "
           "glibc's mmap threshold fixed at 128 KiB so that freed tensors leave the resident set)")
    legend = (f"Train MiB: {mem}. s/iter: median seconds per training iteration. Inference: "
              "median seconds per image with TEST_STEPS = T (= STEPS), 2T, and early stopping "
              "(ES; the mean steps used per recurrent solve in brackets). "
              "In brackets after each figure: its ratio to FF.")
    if not cuda:
        legend += (" On a CPU, CPU-s columns give the process CPU time (all threads) of the same "
                   "iteration and image (T): the less disturbed figure where cores are shared.")
    return [
        "# crbp_panoptic: training memory and speed against the feedforward Panoptic FPN", "",
        f"Generated {settings['date']} by `{settings['command']}`.", "",
        f"**Machine**: {gpu}{machine['cpu']}, {machine['cpu_count']} logical CPUs "
        f"({machine['torch_threads']} torch threads); {machine['platform']}; Python "
        f"{machine['python']}, torch {machine['torch']}, Detectron2 {machine['detectron2']}.", "",
        f"**Settings**: device {settings['device']}; random images {h}×{w}, batch "
        f"{settings['batch']}, {settings['instances']} instances per image; {settings['warmup']} "
        f"warm-up + {settings['iters']} timed training iterations (SGD, lr {settings['lr']}); "
        f"inference on one image at a time, {settings['infer_warmup']} warm-up + "
        f"{settings['infer_iters']} timed, {detections} per image; early stopping: TEST_STEPS = "
        f"STEPS, TEST_TOL = {settings['test_tol']:g} (relative residual); penalty exact unless "
        "the arm names a cheap one; common options "
        f"`{' '.join(settings['opts']) or '(none)'}`{cap}", "",
        legend, "",
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
        cells += [ratio_cell(r.get("train_cpu_s"), r.get("train_cpu_s_x")),
                  ratio_cell(t.get("cpu_s_per_img"), t.get("cpu_x"))]
    steps = r["steps"] or "—"
    row = [r["placement"], r["label"], str(steps), mem_cell,
           ratio_cell(r["train_s"], r.get("train_s_x")), *cells]
    return row, flagged


def _table_lines(results: List[Dict], settings: Dict) -> Tuple[List[str], bool]:
    cuda = settings["device"].startswith("cuda")
    head = ["placement", "config", "T", "train MiB", "s/iter", "infer s/img, T",
            "infer s/img, 2T", "infer s/img, ES [steps]"]
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
            lines.append(f"| {r['placement']} | {r['label']} | | {r['error']} |"
                         + " |" * (len(head) - 4))
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
        notes.append(f"Mask-head ROIs per image in training (FF): {ff['mask_rois_train']:.1f}; "
                     f"at inference {t['mask_rois']:.1f} (detections per image "
                     f"{t['detections']:.1f}).")
    for p in settings["placements"]:
        c20 = _find(results, p, "crbp:20")
        if c20 is not None and c20["infer"]["T"].get("residual") is not None:
            notes.append(
                f"{p}: C-RBP-20 relative residual ||h_t - h_(t-1)|| / ||h_t|| at inference "
                f"(largest over the solves): {c20['infer']['T']['residual']:.2g} after T steps, "
                f"{c20['infer']['2T']['residual']:.2g} after 2T. These are the dynamics of the "
                "weights measured (random init unless MODEL.WEIGHTS is given), not of a trained "
                "model; early stopping saves steps only once the residual falls below TEST_TOL.")
    bad = [f"{r['placement']}/{r['label']}" for r in results if r.get("nonfinite_loss")]
    if bad:
        notes.append(f"Non-finite training loss in: {', '.join(bad)} (timings still valid, "
                     "losses are not).")
    if not cuda:
        notes.append("CPU timings are noisy: the cores may be shared with other work, and each "
                     "figure is the median of few iterations.")
        if any(r.get("peak_reset") is False for r in results):
            notes.append("This kernel could not reset the peak resident set; a configuration's "
                         "peak then includes its model build and timed iterations.")
        if any(r.get("rss_exact") is False for r in results):
            notes.append("The mmap threshold was not fixed (in-process run, or not glibc): memory "
                         "figures include allocator slack.")
        if not settings.get("isolated", True):
            notes.append("All configurations ran in one process (--in-process): memory figures "
                         "are only indicative.")
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
        lines += ["† the allocator's reserve reached the memory cap: cuDNN may have used "
                  "workspace up to the cap, so the true need can be lower (rerun with a lower "
                  "cap).", ""]
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
    rows = [("train_mib", "training memory (MiB)"), ("train_s", "training s/iter"),
            ("infer_T", "inference s/img (T steps)")]

    def value(r, key):
        return r["infer"]["T"]["s_per_img"] if key == "infer_T" else r.get(key)

    fig, axes = plt.subplots(len(rows), len(placements), figsize=(5.5 * len(placements), 9),
                             squeeze=False, sharex=True)
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
                ax.plot([r["steps"] for r in rs], [value(r, key) for r in rs],
                        marker=markers.get(name.split(" ")[0], "D"), label=name)
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


if __name__ == "__main__":  # the child process of measure_in_child
    child_main(sys.argv[1])
