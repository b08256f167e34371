#!/usr/bin/env python
"""Training memory and speed of every C-RBP configuration next to the feedforward Panoptic FPN.

Each configuration is built from its YAML (random init, no downloads) and trained for a
few iterations on random images of a chosen size and batch; then it runs inference.
One run reports, side by side, and each as a ratio to the feedforward model (FF):

* peak training memory -- CUDA: ``torch.cuda.max_memory_allocated`` (every tensor,
  weights and optimizer state included) under a memory cap
  (``torch.cuda.set_per_process_memory_fraction``), because without one cuDNN takes
  workspace it does not need (a double backward once took ~35 GB for a 5 GB step);
  CPU: each configuration runs in a fresh child process; after the timed iterations it
  runs ``--mem-iters`` more, with glibc's mmap threshold fixed (:func:`trim_allocator`)
  so that the resident set follows the live tensors, and reports the least growth of the
  peak resident set over one of them, above the resident set just before it
  (activations, gradients and temporaries; weights and optimizer state are in the
  baseline; allocator and library caches only add, hence the least);
* seconds per training iteration (forward + backward + SGD step in an ``EventStorage``;
  median over the timed iterations after warm-up; CUDA synchronised);
* seconds per image at inference (batch of one, ``torch.no_grad()``) with
  ``MODEL.CRBP.TEST_STEPS`` = STEPS, = 2 x STEPS, and with early stopping
  (``TEST_STEPS`` = STEPS, ``TEST_TOL`` = ``--test-tol``), plus the mean number of steps
  the early-stopped solves used.

Configurations (``--configs``; FF always runs, the ratios need it), for each placement
(``--placements``: ``fpn`` = recurrent FPN backbone, ``mask`` = recurrent mask head):
``BPTT-1/3/5``, ``RBP-20``, ``C-RBP-5/10/20/40`` with the exact penalty, and
``C-RBP-20-cheap``: C-RBP-20 with the placement's cheap penalty (:func:`cheap_penalty`: the
mask head's on a quarter of the ROIs, ``MODEL.CRBP.LCP_SUBSAMPLE`` 0.25; the FPN's on a
random 32x32 window per level, ``MODEL.CRBP.LCP_CROP`` 32, as its COCO YAML selects;
``--lcp-subsample`` and ``--lcp-crop`` change them).
``--list`` prints them.

Writes ``benchmark.md`` (a markdown table headed by the machine and the settings),
``benchmark.json`` (everything measured) and ``benchmark.png`` (memory, time per
iteration and time per image against the step count, per training rule and placement)
to ``--out``; the table and the JSON are rewritten after every configuration, so a run
cut short keeps what it measured.

Faithful defaults (R-50, 800x1216, batch 2) are the COCO setting, for a GPU
(``tools/gpu_benchmark.sh``). A CPU run of every configuration with a smaller model and
input (R-18, 64 FPN channels; ``--opts`` comes last, it takes the rest of the line)::

    python tools/benchmark.py --device cpu --depth 18 --size 192 288 --batch 1 \\
        --instances 16 --detections 20 --iters 2 --warmup 1 --infer-iters 1 \\
        --infer-warmup 1 --out output/benchmark_cpu \\
        --opts MODEL.FPN.OUT_CHANNELS 64 MODEL.ROI_MASK_HEAD.CONV_DIM 64 \\
               MODEL.SEM_SEG_HEAD.CONVS_DIM 64 MODEL.CRBP.NUM_GROUPS 16

Weights: random init (``MODEL.WEIGHTS`` ""), and the SGD step uses ``--lr`` 0 by default,
so every iteration does a full step's work on the same weights (random data would make a
random-init model diverge at any useful rate). ``--opts MODEL.WEIGHTS path.pth`` loads a
trained checkpoint into every configuration run (select the matching one with
``--placements`` and ``--configs``): then the early-stopping figures show the trained
dynamics, and ``--detections 0`` keeps its own box predictor.

Synthetic data: every image has ``--instances`` random boxes with elliptic masks and
coarse random semantic labels. A random-init box predictor rarely scores a class above
``SCORE_THRESH_TEST`` = 0.05, so at inference it would detect nothing and the mask head
would run on zero ROIs. Before inference the box regressions are therefore made constant
(:func:`force_detections`: anchors become proposals, every proposal a class-0 detection
of score 0.3) and ``TEST.DETECTIONS_PER_IMAGE`` = ``--detections`` (default 100, COCO's
cap): each test image brings that many boxes to the mask head and the mask pasting, like
a trained model's at ``SCORE_THRESH_TEST`` 0.05, while the panoptic merge (threshold 0.5)
takes none of them (0 = leave the random-init predictor alone). In training, a random-init RPN finds few positive
proposals beyond the ground-truth boxes that Detectron2 appends to them, so the mask head
trains on about ``--instances`` ROIs per image; a trained RPN gives it up to 128
(``ROI_HEADS.BATCH_SIZE_PER_IMAGE`` x ``POSITIVE_FRACTION``). The default of 64 instances
per image (COCO averages ~7 objects, but a trained RPN finds many positives around each)
puts the mask head's training load in that range. The mean mask-head ROI counts
(training and inference) are under the table and in the JSON.
"""
import argparse
import ctypes
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "COCO-PanopticSegmentation"
BASELINE_YAML = CONFIGS / "panoptic_fpn_R_50_1x.yaml"
PLACEMENT_YAMLS = {
    "fpn": CONFIGS / "panoptic_crbp_fpn_R_50_1x.yaml",
    "mask": CONFIGS / "panoptic_crbp_mask_R_50_1x.yaml",
}
#: The early-stopping tolerance used unless ``--test-tol`` says otherwise.
DEFAULT_TEST_TOL = 1e-3
#: Score of every forced test detection (see :func:`force_detections`).
DETECTION_SCORE = 0.3
#: Options selecting the exact penalty (the recurrent FPN's YAML selects a cheap one).
EXACT_PENALTY = ("MODEL.CRBP.LCP_SUBSAMPLE", "0.0", "MODEL.CRBP.LCP_CROP", "0")
#: Each placement's cheap penalty (crbp/lcp.py) is a row subset where the state has many
#: rows (ROIs) and a spatial window where it has a few large maps (FPN levels).
def cheap_penalty(placement: str, subsample: float = 0.25, crop: int = 32) -> List[str]:
    """Options selecting ``placement``'s cheap penalty (``--lcp-subsample``, ``--lcp-crop``)."""
    if placement == "fpn":
        return ["MODEL.CRBP.LCP_SUBSAMPLE", "0.0", "MODEL.CRBP.LCP_CROP", str(crop)]
    return ["MODEL.CRBP.LCP_SUBSAMPLE", str(subsample), "MODEL.CRBP.LCP_CROP", "0"]
#: Inference variants of a recurrent model: (key, TEST_STEPS as a multiple of STEPS, early stop).
INFER_VARIANTS = (("T", 1, False), ("2T", 2, False), ("ES", 1, True))
MIB = 2.0 ** 20


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained configuration of a placement.

    Attributes:
        name: as in the table, e.g. ``"C-RBP-20"``.
        rule: ``MODEL.CRBP.GRAD`` (``None`` for the feedforward model).
        steps: ``MODEL.CRBP.STEPS`` (0 for the feedforward model).
        cheap: the placement's cheap penalty (:func:`cheap_penalty`) instead of the exact one.
    """

    name: str
    rule: Optional[str]
    steps: int
    cheap: bool = False

    @property
    def series(self) -> str:
        """The plot line this variant belongs to (one per training rule)."""
        if self.rule is None:
            return "FF"
        label = {"bptt": "BPTT", "cbptt": "C-BPTT", "rbp": "RBP", "crbp": "C-RBP"}[self.rule]
        return f"{label} (cheap LCP)" if self.cheap else label

    def opts(self, placement: str, subsample: float = 0.25, crop: int = 32) -> List[str]:
        """``merge_from_list`` options selecting this variant in ``placement``'s YAML
        (``subsample`` and ``crop`` size the cheap penalty, see :func:`cheap_penalty`)."""
        if self.rule is None:
            return []
        penalty = cheap_penalty(placement, subsample, crop) if self.cheap else EXACT_PENALTY
        return ["MODEL.CRBP.GRAD", self.rule, "MODEL.CRBP.STEPS", str(self.steps), *penalty]


FF = Variant("FF", None, 0)
VARIANTS = [
    Variant("BPTT-1", "bptt", 1),
    Variant("BPTT-3", "bptt", 3),
    Variant("BPTT-5", "bptt", 5),
    Variant("RBP-20", "rbp", 20),
    Variant("C-RBP-5", "crbp", 5),
    Variant("C-RBP-10", "crbp", 10),
    Variant("C-RBP-20", "crbp", 20),
    Variant("C-RBP-40", "crbp", 40),
    Variant("C-RBP-20-cheap", "crbp", 20, cheap=True),
]
BY_NAME = {v.name: v for v in [FF] + VARIANTS}
#: Run order: the figures the goals need first, so a run stopped by --time-budget has them.
PRIORITY = ["C-RBP-20", "BPTT-1", "C-RBP-5", "C-RBP-40", "C-RBP-20-cheap", "BPTT-3", "BPTT-5",
            "RBP-20", "C-RBP-10"]


def select_variants(names: Optional[Sequence[str]]) -> List[Variant]:
    """The recurrent variants named (all when ``names`` is empty), in table order.

    Raises:
        ValueError: naming an unknown variant and the valid ones.
    """
    if not names:
        return list(VARIANTS)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"--configs {unknown}; choose from {list(BY_NAME)}")
    return [v for v in VARIANTS if v.name in names]


def run_order(placements: Sequence[str], variants: Sequence[Variant]) -> List[tuple]:
    """``[(placement, variant)]``: FF first, then by :data:`PRIORITY`, placements interleaved."""
    ranked = sorted(variants, key=lambda v: PRIORITY.index(v.name))
    return [("-", FF)] + [(p, v) for v in ranked for p in placements]


# --------------------------------------------------------------------------- configs, data


def common_opts(args) -> List[str]:
    """Options applied to every configuration before the variant's and the user's."""
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device, "SOLVER.BASE_LR", str(args.lr)]
    if args.detections > 0:
        opts += ["TEST.DETECTIONS_PER_IMAGE", str(args.detections)]
    if args.depth is not None:
        opts += ["MODEL.RESNETS.DEPTH", str(args.depth)]
        if args.depth in (18, 34):  # Detectron2's basic-block ResNets require res2 = 64 channels
            opts += ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    return opts


def build_cfg(config_file, opts: Sequence[str]):
    """get_cfg -> add_crbp_config -> merge_from_file -> merge_from_list(opts), frozen.

    ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` is raised to 0.05 if lower (below that, mask
    pasting of near-zero-score detections dominates the inference time).
    """
    from detectron2.config import get_cfg

    from crbp_panoptic import add_crbp_config

    cfg = get_cfg()
    add_crbp_config(cfg)
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = max(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, 0.05)
    cfg.freeze()
    return cfg


def synthetic_batch(num_images, size, *, instances=8, num_classes=80, num_stuff=54, seed=0,
                    device="cpu"):
    """Random Detectron2 training inputs (the ``DatasetMapper`` output format).

    Args:
        num_images (int): images in the batch.
        size (tuple[int, int]): (H, W) of every image (the model pads to its divisibility).
        instances (int): instances per image: log-uniform box sides from 1/16 to 1/2 of the
            image side, an ellipse inscribed in each box as its mask, uniform classes.
        num_classes (int): thing classes (``MODEL.ROI_HEADS.NUM_CLASSES``).
        num_stuff (int): semantic classes (``MODEL.SEM_SEG_HEAD.NUM_CLASSES``); labels are
            constant on 32x32 blocks.
        seed (int): seed of the generator (same seed, same batch).
        device (str): where the tensors are put (so the model's own copies are no-ops).

    Returns:
        list[dict]: per image ``"image"`` (uint8, (3, H, W)), ``"instances"``
        (``gt_boxes``, ``gt_classes``, ``gt_masks`` as ``BitMasks`` (n, H, W)),
        ``"sem_seg"`` (int64, (H, W)), ``"height"``, ``"width"``.
    """
    from detectron2.structures import BitMasks, Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    side = min(h, w)
    batch = []
    for _ in range(num_images):
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        n = instances
        bw, bh = (side * torch.exp(torch.empty(n).uniform_(math.log(1 / 16), math.log(1 / 2), generator=g))
                  for _ in range(2))
        x0 = torch.rand(n, generator=g) * (w - bw)
        y0 = torch.rand(n, generator=g) * (h - bh)
        boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)
        cx, cy, rx, ry = ((x0 + bw / 2).view(n, 1, 1), (y0 + bh / 2).view(n, 1, 1),
                          (bw / 2).view(n, 1, 1), (bh / 2).view(n, 1, 1))
        masks = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
        inst.gt_masks = BitMasks(masks)
        coarse = torch.randint(0, num_stuff, (math.ceil(h / 32), math.ceil(w / 32)), generator=g)
        sem = coarse.repeat_interleave(32, 0).repeat_interleave(32, 1)[:h, :w].contiguous()
        batch.append({"image": image.to(device), "instances": inst.to(device),
                      "sem_seg": sem.to(device), "height": h, "width": w})
    return batch


# --------------------------------------------------------------------------- memory, time


def rss_mib() -> float:
    """Current resident set of this process, MiB (Linux ``/proc``; else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set of this process, MiB (``VmHWM``, resettable; else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (MIB if sys.platform == "darwin" else 1024)  # macOS counts bytes


#: glibc's ``mallopt`` parameter number of the mmap threshold.
M_MMAP_THRESHOLD = -3


def trim_allocator(threshold: int = 128 * 1024) -> bool:
    """Make the resident set follow the live tensors (glibc only; False elsewhere).

    glibc serves allocations below a moving threshold (up to 32 MiB) from its heap and
    keeps freed chunks there, so a peak resident set also counts whatever earlier work
    left behind. Fixing the threshold at ``threshold`` bytes serves every tensor larger
    than that from its own mapping, returned to the OS when freed; ``malloc_trim(0)``
    then releases the heap's free pages. Slower allocations: use for a memory pass only.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1
        libc.malloc_trim(0)
        return bool(ok)
    except (OSError, AttributeError):
        return False


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Clock:
    """Wall-clock and process CPU seconds of a block, synchronising CUDA around it.

    On a CPU shared with other work the process CPU time (all threads) is the less
    disturbed of the two: waiting for a core does not count.
    """

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        if self.cuda and exc[0] is None:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start
        return False


def _median(values):
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- one configuration


def measure(spec: Dict) -> Dict:
    """Build, train and run inference for one configuration; return its figures.

    Args:
        spec (dict): ``placement``, ``variant`` (a name in :data:`BY_NAME`), ``opts``
            (common options; the variant's and then ``user_opts`` follow), ``user_opts``,
            ``device``, ``size``, ``batch``, ``instances``, ``iters``, ``warmup``,
            ``infer_iters``, ``infer_warmup``, ``test_tol``, ``detections``, ``seed``,
            ``threads``, ``lcp_subsample`` and ``lcp_crop`` (the cheap penalty of
            ``C-RBP-20-cheap``) and, on a CPU, ``mem_iters`` (iterations of the memory
            pass, default 1) and ``isolated`` (a fresh process of its own).

    Returns:
        dict: the spec's names plus ``train_mib`` (the memory figure of the device; on a
        CPU the least of ``train_mib_all``, one growth per memory-pass iteration),
        ``train_s`` (median seconds per iteration), ``infer`` (per inference variant:
        ``s_per_img``, ``steps``, ``residual``), ROI counts, losses; or ``error``.
    """
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    import crbp_panoptic  # noqa: F401  (registers the C-RBP backbone, mask head, meta-architecture)
    from crbp_panoptic.modeling import recurrent_modules

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    variant = BY_NAME[spec["variant"]]
    config_file = BASELINE_YAML if variant.rule is None else PLACEMENT_YAMLS[spec["placement"]]
    opts = list(spec["opts"]) + variant.opts(spec["placement"], spec["lcp_subsample"], spec["lcp_crop"]) + list(spec["user_opts"])
    cfg = build_cfg(config_file, opts)
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    out = {"placement": spec["placement"], "variant": variant.name, "rule": variant.rule,
           "steps": cfg.MODEL.CRBP.STEPS if variant.rule else 0, "series": variant.series,
           "config_file": str(Path(config_file).relative_to(REPO)), "opts": opts}

    torch.manual_seed(spec["seed"])
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:  # only when --opts names a checkpoint: the default is random init
        from detectron2.checkpoint import DetectionCheckpointer

        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    optimizer = build_optimizer(cfg, model)
    recurrent = [m for _, m in recurrent_modules(model)]
    out["params"] = sum(p.numel() for p in model.parameters())
    # One batch, put on the device once and reused: iterations time the model, not copies;
    # on CUDA its tensors (masks mostly) count in the memory figure of every configuration.
    batch = synthetic_batch(spec["batch"], spec["size"], instances=spec["instances"],
                            num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                            num_stuff=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                            seed=spec["seed"], device=cfg.MODEL.DEVICE)
    mask_rois: List[int] = []
    hook = model.roi_heads.mask_head.register_forward_pre_hook(
        lambda module, args: mask_rois.append(int(args[0].shape[0])))

    # ---- training
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        out["before_mib"] = torch.cuda.memory_allocated() / MIB
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
                with _Clock(cuda) as clock:
                    train_step(storage)
                if it >= spec["warmup"]:
                    times.append(clock.seconds)
                    cpu_times.append(clock.cpu_seconds)
            if not cuda:  # memory pass: more iterations, the resident set following the tensors
                # only in a process of its own: the setting lasts for the whole process
                isolated = bool(spec.get("isolated"))
                growth = []
                for _ in range(spec.get("mem_iters", 1)):
                    optimizer.zero_grad(set_to_none=True)
                    gc.collect()
                    out["rss_exact"] = isolated and trim_allocator()
                    before = rss_mib()
                    out["peak_reset"] = reset_peak_rss()
                    train_step(storage)
                    growth.append(peak_rss_mib() - before)
                # Allocator and library caches only ever add to a growth: the least is the need.
                out["train_mib_all"] = growth
                out["train_mib"] = min(growth)
    except torch.cuda.OutOfMemoryError as e:  # only under the CUDA memory cap
        out["error"] = f"CUDA out of memory under the cap: {str(e).splitlines()[0]}"
    if cuda:
        out["train_mib"] = torch.cuda.max_memory_allocated() / MIB
        out["reserved_mib"] = torch.cuda.max_memory_reserved() / MIB
    out["train_s"] = _median(times)
    out["train_times"] = times
    out["train_cpu_s"] = _median(cpu_times)
    out["mask_rois_train"] = sum(mask_rois) / max(len(mask_rois), 1) / spec["batch"]
    out["loss_last"] = losses_seen[-1] if losses_seen else {}
    out["nonfinite_loss"] = any(not math.isfinite(v) for d in losses_seen for v in d.values())
    if "error" in out:
        return out

    # ---- inference, one image at a time
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    model.eval()
    if spec["detections"] > 0:
        force_detections(model)
    images = [{"image": x["image"], "height": x["height"], "width": x["width"]} for x in batch]
    variants = INFER_VARIANTS if recurrent else (("T", 1, False),)
    out["infer"] = {}
    for key, mult, early in variants:
        for m in recurrent:
            m.test_steps = mult * m.steps
            m.test_tol = spec["test_tol"] if early else 0.0
        mask_rois.clear()
        seconds, cpu_seconds, steps, residuals, detections = [], [], [], [], []
        with torch.no_grad():
            for i in range(spec["infer_warmup"] + spec["infer_iters"]):
                with _Clock(cuda) as clock:
                    (pred,) = model([images[i % len(images)]])
                if i < spec["infer_warmup"]:
                    continue
                seconds.append(clock.seconds)
                cpu_seconds.append(clock.cpu_seconds)
                detections.append(len(pred["instances"]))
                for m in recurrent:
                    if m.last_result is not None:
                        steps.append(m.last_result.steps)
                        residuals.append(m.last_result.residual)
        out["infer"][key] = {
            "test_steps": mult * out["steps"], "test_tol": spec["test_tol"] if early else 0.0,
            "s_per_img": _median(seconds), "times": seconds, "cpu_s_per_img": _median(cpu_seconds),
            "steps": sum(steps) / len(steps) if steps else None,
            "residual": max(residuals) if residuals else None,
            "detections": sum(detections) / max(len(detections), 1),
            "mask_rois": sum(mask_rois) / max(len(mask_rois), 1),
        }
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


def _child_main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        result = measure(spec)
    except Exception as e:  # reported in the table, the run goes on
        result = {"placement": spec["placement"], "variant": spec["variant"],
                  "error": f"{type(e).__name__}: {e}"}
    with open(spec["result_path"], "w") as f:
        json.dump(result, f)


def measure_in_child(spec: Dict, timeout: Optional[float] = None) -> Dict:
    """:func:`measure` in a fresh Python process (its own peak resident set)."""
    with tempfile.TemporaryDirectory(prefix="crbp_bench_") as tmp:
        spec = dict(spec, result_path=os.path.join(tmp, "result.json"), isolated=True)
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", spec_path]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"placement": spec["placement"], "variant": spec["variant"],
                    "error": f"timed out after {timeout:.0f} s"}
        if os.path.exists(spec["result_path"]):
            with open(spec["result_path"]) as f:
                return json.load(f)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"placement": spec["placement"], "variant": spec["variant"],
                "error": f"child exited with {proc.returncode}: {' | '.join(tail)}"}


# --------------------------------------------------------------------------- report


def machine_info(device: str) -> Dict:
    """What the numbers were measured on."""
    import detectron2

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "detectron2": detectron2.__version__, "torch_threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor() or platform.machine()
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_mib=props.total_memory / MIB, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), cudnn_tf32=torch.backends.cudnn.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    return info


def _ratio(value, base):
    if value is None or not base:
        return None
    return value / base


def add_ratios(results: List[Dict]) -> None:
    """Add ``train_mib_x``, ``train_s_x`` and ``infer[*]["x"]``: each figure over FF's."""
    ff = next((r for r in results if r["variant"] == "FF" and "error" not in r), None)
    for r in results:
        if ff is None or "error" in r:
            continue
        r["train_mib_x"] = _ratio(r.get("train_mib"), ff.get("train_mib"))
        r["train_s_x"] = _ratio(r.get("train_s"), ff.get("train_s"))
        r["train_cpu_s_x"] = _ratio(r.get("train_cpu_s"), ff.get("train_cpu_s"))
        for fig in r.get("infer", {}).values():
            fig["x"] = _ratio(fig["s_per_img"], ff["infer"]["T"]["s_per_img"])
            fig["cpu_x"] = _ratio(fig.get("cpu_s_per_img"), ff["infer"]["T"].get("cpu_s_per_img"))


def _num(x, digits=3):
    if x is None:
        return "—"
    if x == 0 or abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _cell(value, ratio, digits=3):
    if value is None:
        return "—"
    return f"{_num(value, digits)} ({ratio:.2f}×)" if ratio is not None else _num(value, digits)


def _find(results, placement, name):
    return next((r for r in results if r["variant"] == name and r["placement"] in (placement, "-")
                 and "error" not in r), None)


def goal_lines(results: List[Dict], placements: Sequence[str]) -> List[str]:
    """The issue's goals, each with what this run measured (or that it did not)."""

    def check(a, b, limit):
        if a is None or b is None or a.get("train_mib") is None:
            return None
        return a, b, limit

    lines = []
    for p in placements:
        c5, c20, c40 = (_find(results, p, n) for n in ("C-RBP-5", "C-RBP-20", "C-RBP-40"))
        b1, sub = _find(results, p, "BPTT-1"), _find(results, p, "C-RBP-20-cheap")
        tests = [
            ("C-RBP training memory flat in steps: C-RBP-40 / C-RBP-5", c40, c5, 1.05, "train_mib"),
            ("C-RBP-20 training memory / BPTT-1", c20, b1, 1.10, "train_mib"),
            ("C-RBP-20-cheap training memory / BPTT-1", sub, b1, 1.10, "train_mib"),
        ]
        for text, a, b, limit, key in tests:
            if a is None or b is None or not a.get(key) or not b.get(key):
                lines.append(f"- {p}: {text} ≤ {limit:.2f}: not measured in this run.")
                continue
            value = a[key] / b[key]
            verdict = "met" if value <= limit else "not met"
            lines.append(f"- {p}: {text} ≤ {limit:.2f}: {value:.3f} here ({verdict}).")
        es = c20["infer"].get("ES", {}).get("x") if c20 else None
        if es is None:
            lines.append(f"- {p}: C-RBP-20 inference with early stopping ≤ 1.20× FF: not measured in this run.")
        else:
            verdict = "met" if es <= 1.2 else "not met"
            lines.append(f"- {p}: C-RBP-20 inference with early stopping ≤ 1.20× FF: {es:.2f}× here "
                         f"({verdict}; {c20['infer']['ES']['steps']:.1f} steps on average).")
    return lines


def markdown(results: List[Dict], machine: Dict, settings: Dict) -> str:
    """The report: machine, settings, the table (ratios to FF), goals and notes."""
    cuda = settings["device"].startswith("cuda")
    lines = ["# crbp_panoptic: training memory and speed against the feedforward Panoptic FPN", ""]
    lines.append(f"Generated {settings['date']} by `{settings['command']}`.")
    lines.append("")
    gpu = (f"{machine['gpu']} ({machine['gpu_mib'] / 1024:.0f} GiB, CUDA {machine['cuda']}, cuDNN "
           f"{machine['cudnn']}, cuDNN TF32 {machine['cudnn_tf32']}, cudnn.benchmark "
           f"{machine['cudnn_benchmark']}); ") if cuda else ""
    lines.append(f"**Machine**: {gpu}{machine['cpu']}, {machine['cpu_count']} logical CPUs "
                 f"({machine['torch_threads']} torch threads); {machine['platform']}; Python "
                 f"{machine['python']}, torch {machine['torch']}, Detectron2 {machine['detectron2']}.")
    lines.append("")
    h, w = settings["size"]
    lines.append(
        f"**Settings**: device {settings['device']}; random images {h}×{w}, batch {settings['batch']}, "
        f"{settings['instances']} instances per image; {settings['warmup']} warm-up + {settings['iters']} timed "
        f"training iterations (SGD, lr {settings['lr']}); inference on one image at a time, "
        f"{settings['infer_warmup']} warm-up + {settings['infer_iters']} timed, "
        f"{(str(settings['detections']) + ' forced detections (score ' + str(DETECTION_SCORE) + ')') if settings['detections'] else 'the random-init detections'} per image; early stopping: TEST_STEPS = STEPS, "
        f"TEST_TOL = {settings['test_tol']:g} (relative residual); penalty exact except in C-RBP-20-cheap "
        f"(mask head: LCP_SUBSAMPLE {settings.get('lcp_subsample', 0.25):g}; FPN: LCP_CROP "
        f"{settings.get('lcp_crop', 32)}); "
        f"common options `{' '.join(settings['opts']) or '(none)'}`"
        + (f"; memory cap {settings['mem_cap_mib'] / 1024:.1f} GiB "
           f"(fraction {settings['mem_fraction']:.3f})." if cuda else "."))
    lines.append("")
    mem = ("peak `max_memory_allocated` in training (MiB; all tensors, weights and optimizer "
           "state included)" if cuda else
           "least growth of the peak resident set of the configuration's own process over "
           f"one of {settings.get('mem_iters', 1)} training iterations after the timed ones, "
           "above the resident set just before it (MiB; activations, gradients, temporaries; "
           "glibc's mmap threshold fixed at 128 KiB so that freed tensors leave the resident set)")
    lines.append(f"Train MiB: {mem}. s/iter: median seconds per training iteration. Inference: "
                 "median seconds per image with TEST_STEPS = T (= STEPS), 2T, and early stopping "
                 "(ES; the mean steps used per recurrent solve in brackets). "
                 "In brackets after each figure: its ratio to FF.")
    lines.append("")
    head = ("| placement | config | T | train MiB | s/iter | infer s/img, T | infer s/img, 2T "
            "| infer s/img, ES [steps] |")
    if not cuda:
        lines[-2] += (" On a CPU, CPU-s columns give the process CPU time (all threads) of the same "
                      "iteration and image (T): the less disturbed figure where cores are shared.")
        head += " train CPU-s/iter | infer CPU-s/img, T |"
    lines.append(head)
    lines.append("|---" * (head.count("|") - 1) + "|")
    order = {v.name: i for i, v in enumerate([FF] + VARIANTS)}
    placement_order = {"-": -1, **{p: i for i, p in enumerate(PLACEMENT_YAMLS)}}
    flagged = False
    for r in sorted(results, key=lambda r: (placement_order.get(r["placement"], 9), order[r["variant"]])):
        if "error" in r:
            lines.append(f"| {r['placement']} | {r['variant']} | | {r['error']} |" + " |" * (head.count("|") - 5))
            continue
        mem_cell = _cell(r["train_mib"], r.get("train_mib_x"), 4)
        if cuda and r.get("reserved_mib", 0) >= 0.95 * settings["mem_cap_mib"]:
            mem_cell += " †"
            flagged = True
        inf = r.get("infer", {})
        t = inf.get("T", {})
        cells = [_cell(t.get("s_per_img"), t.get("x"))]
        for key in ("2T", "ES"):
            fig = inf.get(key)
            if fig is None:
                cells.append("—")
                continue
            cell = _cell(fig["s_per_img"], fig.get("x"))
            if key == "ES" and fig["steps"] is not None:
                cell += f" [{fig['steps']:.1f}]"
            cells.append(cell)
        if not cuda:
            cells += [_cell(r.get("train_cpu_s"), r.get("train_cpu_s_x")),
                      _cell(t.get("cpu_s_per_img"), t.get("cpu_x"))]
        steps = r["steps"] or "—"
        lines.append(f"| {r['placement']} | {r['variant']} | {steps} | {mem_cell} | "
                     f"{_cell(r['train_s'], r.get('train_s_x'))} | {' | '.join(cells)} |")
    lines.append("")
    if flagged:
        lines.append("† the allocator's reserve reached the memory cap: cuDNN may have used workspace "
                     "up to the cap, so the true need can be lower (rerun with a lower cap).")
        lines.append("")
    lines.append("Goals of the issue (goals, not claims; the verdicts are this run's only):")
    lines.extend(goal_lines(results, settings["placements"]))
    lines.append("")
    ff = next((r for r in results if r["variant"] == "FF" and "error" not in r), None)
    notes = []
    if ff is not None:
        notes.append(f"Mask-head ROIs per image in training (FF): {ff['mask_rois_train']:.1f}; at inference "
                     f"{ff['infer']['T']['mask_rois']:.1f} (detections per image {ff['infer']['T']['detections']:.1f}).")
    for p in settings["placements"]:
        c20 = _find(results, p, "C-RBP-20")
        if c20 is not None and c20["infer"]["T"].get("residual") is not None:
            notes.append(f"{p}: C-RBP-20 relative residual ||h_t - h_(t-1)|| / ||h_t|| at inference (largest over "
                         f"the solves): {c20['infer']['T']['residual']:.2g} after T steps, "
                         f"{c20['infer']['2T']['residual']:.2g} after 2T. These are the dynamics of the weights "
                         "measured (random init unless MODEL.WEIGHTS is given), not of a trained model; "
                         "early stopping saves steps only once the residual falls below TEST_TOL.")
    bad = [f"{r['placement']}/{r['variant']}" for r in results if r.get("nonfinite_loss")]
    if bad:
        notes.append(f"Non-finite training loss in: {', '.join(bad)} (timings still valid, losses are not).")
    if not cuda:
        notes.append("CPU timings are noisy: the cores may be shared with other work, and each figure is "
                     "the median of few iterations.")
        if any(r.get("peak_reset") is False for r in results):
            notes.append("This kernel could not reset the peak resident set; a configuration's peak "
                         "then includes its model build and timed iterations.")
        if any(r.get("rss_exact") is False for r in results):
            notes.append("The mmap threshold was not fixed (in-process run, or not glibc): memory "
                         "figures include allocator slack.")
        if not settings.get("isolated", True):
            notes.append("All configurations ran in one process (--in-process): memory figures are "
                         "only indicative.")
    if settings.get("total_s") is not None:
        notes.append(f"Whole run: {settings['total_s']:.0f} s wall clock.")
    lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines) + "\n"


def plot(results: List[Dict], placements: Sequence[str], path: Path, title: str) -> bool:
    """Memory, s/iter and inference s/img (T) against steps, one line per rule; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    ok = [r for r in results if "error" not in r]
    ff = next((r for r in ok if r["variant"] == "FF"), None)
    rows = [("train_mib", "training memory (MiB)"), ("train_s", "training s/iter"),
            ("infer_T", "inference s/img (T steps)")]

    def value(r, key):
        return r["infer"]["T"]["s_per_img"] if key == "infer_T" else r.get(key)

    fig, axes = plt.subplots(len(rows), len(placements), figsize=(5.5 * len(placements), 9),
                             squeeze=False, sharex=True)
    markers = {"BPTT": "o", "RBP": "s", "C-RBP": "^"}
    for col, p in enumerate(placements):
        series = {}
        for r in ok:
            if r["placement"] == p:
                series.setdefault(r["series"], []).append(r)
        for row, (key, label) in enumerate(rows):
            ax = axes[row][col]
            for name, rs in sorted(series.items()):
                rs = sorted(rs, key=lambda r: r["steps"])
                xs = [r["steps"] for r in rs]
                ys = [value(r, key) for r in rs]
                ax.plot(xs, ys, marker=markers.get(name.split(" ")[0], "D"), label=name)
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


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--placements", nargs="+", default=list(PLACEMENT_YAMLS), choices=list(PLACEMENT_YAMLS))
    p.add_argument("--configs", nargs="+", default=None, metavar="NAME",
                   help=f"subset of {[v.name for v in VARIANTS]} (FF always runs)")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    p.add_argument("--depth", type=int, default=None, help="MODEL.RESNETS.DEPTH (default: the YAML's, 50)")
    p.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=2, help="images per training iteration")
    p.add_argument("--instances", type=int, default=64,
                   help="random instances per training image (~ mask-head ROIs per image in training)")
    p.add_argument("--iters", type=int, default=5, help="timed training iterations")
    p.add_argument("--mem-iters", type=int, default=3,
                   help="CPU: memory-pass iterations after the timed ones (the least growth is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed training iterations first")
    p.add_argument("--infer-iters", type=int, default=3, help="timed images per inference variant")
    p.add_argument("--infer-warmup", type=int, default=1, help="untimed images per inference variant")
    p.add_argument("--lcp-subsample", type=float, default=0.25,
                   help="C-RBP-20-cheap, mask head: MODEL.CRBP.LCP_SUBSAMPLE (fraction of the ROIs)")
    p.add_argument("--lcp-crop", type=int, default=32,
                   help="C-RBP-20-cheap, FPN: MODEL.CRBP.LCP_CROP (side of the window, positions)")
    p.add_argument("--test-tol", type=float, default=DEFAULT_TEST_TOL,
                   help="MODEL.CRBP.TEST_TOL of the early-stopping inference")
    p.add_argument("--detections", type=int, default=100,
                   help="detections per test image (0 = the random-init classifier's own)")
    p.add_argument("--lr", type=float, default=0.0,
                   help="SOLVER.BASE_LR (default 0: the SGD step runs in full, but the random-init "
                        "weights stay put, so random data cannot make them diverge)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--mem-fraction", type=float, default=0.25,
                   help="CUDA: torch.cuda.set_per_process_memory_fraction cap")
    p.add_argument("--mem-cap-gib", type=float, default=None,
                   help="CUDA: the cap in GiB instead (same on any card); overrides --mem-fraction")
    p.add_argument("--in-process", action="store_true",
                   help="CPU: run every configuration in this process (faster; memory only indicative)")
    p.add_argument("--time-budget", type=float, default=0,
                   help="seconds; configurations not started by then are skipped (0 = no limit)")
    p.add_argument("--out", default="output/benchmark", help="folder for benchmark.md/.json/.png")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE ... config options applied to every configuration (last)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if len(args.opts) % 2:
        p.error(f"--opts needs KEY VALUE pairs; got {args.opts}")
    if not 0 < args.mem_fraction <= 1:
        p.error(f"--mem-fraction={args.mem_fraction}; must lie in (0, 1]")
    if min(args.iters, args.mem_iters, args.infer_iters, args.batch) < 1:
        p.error("--iters, --mem-iters, --infer-iters and --batch must be >= 1")
    try:
        args.variants = select_variants(args.configs)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None) -> List[Dict]:
    args = parse_args(argv)
    if args.child:
        _child_main(args.child)
        return []
    variants = args.variants
    if args.list:
        for placement, v in run_order(args.placements, variants):
            print(f"{placement:4s} {v.name:14s} {v.series:18s} {' '.join(v.opts(placement, args.lcp_subsample, args.lcp_crop))}")
        return []
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    if cuda:  # the memory statistics read the current device; the cap needs an index
        index = torch.device(args.device).index
        index = torch.cuda.current_device() if index is None else index
        torch.cuda.set_device(index)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"device": args.device, "size": args.size, "batch": args.batch, "instances": args.instances,
                "iters": args.iters, "mem_iters": args.mem_iters, "warmup": args.warmup,
                "infer_iters": args.infer_iters,
                "infer_warmup": args.infer_warmup, "test_tol": args.test_tol, "detections": args.detections,
                "lr": args.lr, "opts": args.opts, "placements": args.placements,
                "lcp_subsample": args.lcp_subsample, "lcp_crop": args.lcp_crop,
                "isolated": not (cuda or args.in_process),
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": "python tools/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if cuda:
        total = torch.cuda.get_device_properties(index).total_memory
        fraction = min(1.0, args.mem_cap_gib * 2 ** 30 / total) if args.mem_cap_gib else args.mem_fraction
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        settings.update(mem_fraction=fraction, mem_cap_mib=fraction * total / MIB)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info(args.device)
    base_spec = {"opts": common_opts(args), "user_opts": args.opts, "device": args.device,
                 "size": args.size, "batch": args.batch, "instances": args.instances, "iters": args.iters,
                 "mem_iters": args.mem_iters,
                 "warmup": args.warmup, "infer_iters": args.infer_iters, "infer_warmup": args.infer_warmup,
                 "test_tol": args.test_tol, "detections": args.detections, "seed": args.seed,
                 "threads": args.threads, "lcp_subsample": args.lcp_subsample, "lcp_crop": args.lcp_crop}
    start = time.perf_counter()
    results: List[Dict] = []
    for placement, variant in run_order(args.placements, variants):
        elapsed = time.perf_counter() - start
        if args.time_budget and elapsed > args.time_budget:
            results.append({"placement": placement, "variant": variant.name,
                            "error": f"skipped: --time-budget {args.time_budget:.0f} s spent"})
            continue
        spec = dict(base_spec, placement=placement, variant=variant.name)
        t0 = time.perf_counter()
        if cuda or args.in_process:
            try:
                r = measure(spec)
            except Exception as e:  # one failing configuration must not lose the others
                r = {"placement": placement, "variant": variant.name, "error": f"{type(e).__name__}: {e}"}
            if cuda:
                gc.collect()
                torch.cuda.empty_cache()
        else:
            r = measure_in_child(spec)
        r["wall_s"] = time.perf_counter() - t0
        results.append(r)
        status = r.get("error") or (f"train {r['train_mib']:.0f} MiB, {_num(r['train_s'])} s/iter, "
                                    f"infer {_num(r['infer']['T']['s_per_img'])} s/img")
        print(f"[{time.perf_counter() - start:7.1f} s] {placement:4s} {variant.name:13s} {status}", flush=True)
        add_ratios(results)
        _write(out_dir, results, machine, settings)
    settings["total_s"] = time.perf_counter() - start
    _write(out_dir, results, machine, settings)
    title = (f"{machine.get('gpu', machine['cpu'])}: {args.size[0]}x{args.size[1]}, batch {args.batch}, "
             f"{args.device}")
    plot(results, args.placements, out_dir / "benchmark.png", title)
    print((out_dir / "benchmark.md").read_text())
    print(f"wrote {out_dir}/benchmark.md, benchmark.json, benchmark.png in {settings['total_s']:.0f} s")
    return results


def _write(out_dir: Path, results, machine, settings) -> None:
    (out_dir / "benchmark.json").write_text(json.dumps(
        {"machine": machine, "settings": settings, "results": results}, indent=1))
    (out_dir / "benchmark.md").write_text(markdown(results, machine, settings))


if __name__ == "__main__":
    if "--child" not in sys.argv:
        print("Command Line Args:", sys.argv[1:], flush=True)
    try:
        import crbp_panoptic  # noqa: F401
    except ImportError:  # run from a checkout without installing: the package is beside tools/
        sys.path.insert(0, str(REPO))
    main()
