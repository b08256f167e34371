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

:func:`run` measures a plan (:func:`.benchmark_plan.plan`: FF first, then the arms by
priority), adds ratios to FF and rewrites ``benchmark.md`` / ``benchmark.json``
(:mod:`.benchmark_report`) after every configuration, so a run cut short keeps what it
measured. The plan's and the report's names are re-exported here.
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
from .benchmark_plan import (  # noqa: F401  (re-exported: the plan is part of this module's API)
    BASELINE_YAML,
    DEFAULT_ARMS,
    DEFAULT_CHEAP_ARMS,
    DEFAULT_TEST_TOL,
    DETECTION_SCORE,
    FEEDFORWARD,
    INFER_VARIANTS,
    PLACEMENT_YAMLS,
    PRIORITY,
    is_cheap,
    parse_cheap_arms,
    plan,
    series,
    table_label,
)
from .benchmark_report import add_ratios, markdown, plot, target_lines  # noqa: F401
from .measure import MIB, Clock, median, peak_rss_mib, reset_peak_rss, rss_mib, trim_allocator
from .report import fmt_num, write_report

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
    out = {
        "placement": spec["placement"],
        "arm": arm.name,
        "label": table_label(effective_arm(cfg) if arm.recurrent else arm),
        "mode": arm.mode if arm.recurrent else None,
        "steps": cfg.MODEL.CRBP.STEPS if arm.recurrent else 0,
        "series": series(arm),
        "config_file": os.path.basename(spec["config_file"]),
        "opts": opts,
    }
    torch.manual_seed(spec["seed"])
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:  # only when the user's options name a checkpoint
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    optimizer = build_optimizer(cfg, model)
    out["params"] = sum(p.numel() for p in model.parameters())
    # One batch, put on the device once and reused: iterations time the model, not copies.
    batch = random_batch(
        spec["batch"],
        spec["size"],
        instances=spec["instances"],
        num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        num_stuff=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        seed=spec["seed"],
        device=cfg.MODEL.DEVICE,
    )
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
    out.update(
        train_s=median(times),
        train_times=times,
        train_cpu_s=median(cpu_times),
        loss_last=losses_seen[-1] if losses_seen else {},
        nonfinite_loss=any(not math.isfinite(v) for d in losses_seen for v in d.values()),
    )


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
            "s_per_img": median(seconds),
            "times": seconds,
            "cpu_s_per_img": median(cpu_seconds),
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
        lambda module, args: mask_rois.append(int(args[0].shape[0]))
    )
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
    return {
        "placement": spec["placement"],
        "arm": spec["arm"],
        "label": table_label(parse_arm(spec["arm"])),
        "error": message,
    }


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
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    )
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


def run(
    runs: Sequence[Tuple[str, Arm]],
    base_spec: Dict,
    config_dir,
    out_dir,
    machine: Dict,
    settings: Dict,
    *,
    in_process: bool = False,
    time_budget: float = 0,
) -> List[Dict]:
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
        spec = dict(
            base_spec,
            placement=placement,
            arm=arm.name,
            config_file=config_file(config_dir, placement, arm),
        )
        if time_budget and time.perf_counter() - start > time_budget:
            results.append(_error(spec, f"skipped: time budget {time_budget:.0f} s spent"))
            continue
        t0 = time.perf_counter()
        r = _measure_one(spec, cuda, in_process)
        r["wall_s"] = time.perf_counter() - t0
        results.append(r)
        status = r.get("error") or (
            f"train {r['train_mib']:.0f} MiB, {fmt_num(r['train_s'])} "
            f"s/iter, infer {fmt_num(r['infer']['T']['s_per_img'])} s/img"
        )
        print(
            f"[{time.perf_counter() - start:7.1f} s] {placement:4s} {arm.name:16s} {status}",
            flush=True,
        )
        add_ratios(results)
        write_report(
            str(out_dir),
            "benchmark",
            {"machine": machine, "settings": settings, "results": results},
            markdown(results, machine, settings),
        )
    settings["total_s"] = time.perf_counter() - start
    write_report(
        str(out_dir),
        "benchmark",
        {"machine": machine, "settings": settings, "results": results},
        markdown(results, machine, settings),
    )
    return results


if __name__ == "__main__":  # the child process of measure_in_child
    child_main(sys.argv[1])
