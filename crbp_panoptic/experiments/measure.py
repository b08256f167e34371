"""Measuring a model: one step's time and memory (:func:`measure_step`, the one timing loop
of every benchmark), parameters, multiply-adds."""

import ctypes
import gc
import os
import resource
import statistics
import sys
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..crbp import RecurrentRefiner

MIB = 2.0**20
#: glibc's ``mallopt`` parameter number of the mmap threshold.
M_MMAP_THRESHOLD = -3


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


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_allocator(threshold: int = 128 * 1024) -> bool:
    """Make the resident set follow the live tensors (glibc only; False elsewhere): a fixed
    mmap threshold serves larger tensors from mappings returned when freed (glibc's moving
    one keeps up to 32 MiB in its heap), ``malloc_trim(0)`` frees the heap's pages. It lasts
    for the whole process: use it in a process of its own."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1
        libc.malloc_trim(0)
        return bool(ok)
    except (OSError, AttributeError):
        return False


class Clock:
    """Wall-clock ``seconds`` and process ``cpu_seconds`` (all threads: the less disturbed
    figure on shared cores) of a block; with ``cuda`` the device is synchronised."""

    def __init__(self, cuda: bool = False):
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


def median(values: Sequence[float]) -> Optional[float]:
    """The median of ``values``, or None for none."""
    return statistics.median(values) if values else None


def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Peak of the bytes torch allocated on the CPU while ``fn()`` ran, above the start (the
    profiler's memory events summed in time order: exact, whatever the allocator keeps)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    changes = sorted(
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    current = peak = 0
    for _, change in changes:
        current += change
        peak = max(peak, current)
    return peak


def _rss_growth(step, before_each, iters: int, isolated: bool) -> Dict:
    growth, exact, reset = [], False, False
    for _ in range(iters):
        before_each()
        gc.collect()
        exact = isolated and trim_allocator()
        before = rss_mib()
        reset = reset_peak_rss()
        step()
        growth.append(peak_rss_mib() - before)
    return {"rss_mib_all": growth, "rss_exact": exact, "peak_reset": reset}


def measure_step(
    step: Callable[[], object],
    *,
    iters: int = 1,
    warmup: int = 0,
    cuda: bool = False,
    memory: Optional[str] = None,
    mem_iters: int = 1,
    isolated: bool = False,
    before_each: Callable[[], object] = lambda: None,
) -> Dict:
    """Time ``warmup + iters`` calls of ``step``, then measure its memory.

    Args:
        iters, warmup: timed calls, after untimed ones.
        cuda: synchronise the device around each call (:class:`Clock`).
        memory: after the timed calls: ``"allocated"``: one call's peak of the bytes torch
            allocated (CUDA: ``max_memory_allocated``; CPU: :func:`peak_allocated_bytes`);
            ``"rss"`` (CPU): ``mem_iters`` calls' growth of the peak resident set
            (:func:`trim_allocator` when ``isolated``); None: time only.
        before_each: called before every call (e.g. to free the previous gradients).

    Returns:
        dict: ``times`` / ``cpu_times``, their medians ``seconds`` / ``cpu_seconds`` and
        minima ``fastest`` / ``fastest_cpu``; ``peak_bytes`` and ``base_bytes`` (CUDA) or
        ``rss_mib_all``, ``rss_mib`` (the least), ``rss_exact`` and ``peak_reset``.
    """
    times, cpu_times = [], []
    for i in range(warmup + iters):
        before_each()
        with Clock(cuda) as clock:
            step()
        if i >= warmup:
            times.append(clock.seconds)
            cpu_times.append(clock.cpu_seconds)
    out = {"times": times, "cpu_times": cpu_times, "seconds": median(times)}
    out.update(cpu_seconds=median(cpu_times), fastest=min(times), fastest_cpu=min(cpu_times))
    if memory == "allocated":
        before_each()
        if cuda:
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            out["base_bytes"] = torch.cuda.memory_allocated()
            step()
            out["peak_bytes"] = torch.cuda.max_memory_allocated() - out["base_bytes"]
        else:
            out["peak_bytes"] = peak_allocated_bytes(step)
    elif memory == "rss":
        out.update(_rss_growth(step, before_each, mem_iters, isolated))
        out["rss_mib"] = min(out["rss_mib_all"])
    elif memory is not None:
        raise ValueError(f"memory={memory!r}; choose from 'allocated', 'rss' or None")
    return out


def parameter_counts(model: nn.Module) -> Dict[str, int]:
    """Parameters of a Detectron2 model: ``total``, ``trainable`` (``requires_grad``, what the
    paper counts), ``backbone`` (+ FPN), ``mask_head`` and ``recurrent`` (in refiners)."""

    def count(module, trainable=False):
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)

    heads = getattr(model, "roi_heads", None)
    refiners = [m for m in model.modules() if isinstance(m, RecurrentRefiner)]
    return {
        "total": count(model),
        "trainable": count(model, trainable=True),
        "backbone": count(model.backbone) if hasattr(model, "backbone") else 0,
        "mask_head": count(heads.mask_head) if hasattr(heads, "mask_head") else 0,
        "recurrent": sum(count(m) for m in refiners),
    }


class _MaskLayers(nn.Module):
    """The mask head's ``layers`` alone, on (R, C, S, S) ROI features."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, x):
        return self.head.layers(x)


def count_macs(module, inputs, kind: str = "flop") -> Tuple[float, Dict[str, float]]:
    """Multiply-adds (``kind`` "flop": of convolutions, linear layers, matrix products) or
    activations ("activation") of ``module(*inputs)``, total and per submodule (``model.``
    prefixed), by fvcore on Detectron2's tracing adapter."""
    from fvcore.nn import ActivationCountAnalysis

    from detectron2.export import TracingAdapter
    from detectron2.utils.analysis import FlopCountAnalysis

    with torch.no_grad():
        if kind == "flop":
            count = FlopCountAnalysis(module, inputs)
        else:
            wrapper = TracingAdapter(module, inputs, allow_non_tensor=True)
            count = ActivationCountAnalysis(wrapper, wrapper.flattened_inputs)
        count.unsupported_ops_warnings(False)
        count.uncalled_modules_warnings(False)
        return float(count.total()), count.by_module()


def refiner_macs(model, by_module: Dict[str, float], prefix: str = "") -> float:
    """The part of :func:`count_macs`'s ``by_module`` inside ``model``'s refiners (those
    whose name starts with ``prefix``)."""
    names = [n for n, m in model.named_modules() if isinstance(m, RecurrentRefiner)]
    return sum(by_module.get(f"model.{n}", 0) for n in names if n.startswith(prefix))


def config_macs(model, cfg, size=(800, 1216), rois: Sequence[int] = (10, 100)) -> Dict:
    """Multiply-adds per ``size`` (H, W) image of ``model`` (from ``cfg``, eval mode, no early
    stopping): ``backbone`` (+ FPN, less its refiners), ``recurrent`` (those refiners),
    ``heads`` (the others at no detections), ``steps`` (0: feedforward) and ``mask`` ({R:
    the mask head's on R detections})."""
    height, width = size
    image = torch.zeros(3, height, width)
    total, by_module = count_macs(model, ([{"image": image, "height": height, "width": width}],))
    recurrent = refiner_macs(model, by_module, prefix="backbone.")
    has_refiner = any(isinstance(m, RecurrentRefiner) for m in model.modules())
    side = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
    layers = _MaskLayers(model.roi_heads.mask_head)
    shape = (cfg.MODEL.FPN.OUT_CHANNELS, side, side)
    mask = {r: count_macs(layers, (torch.zeros(r, *shape),))[0] for r in rois}
    c, backbone = cfg.MODEL.CRBP, by_module.get("model.backbone", 0)
    heads = total - backbone - by_module.get("model.roi_heads.mask_head", 0)
    steps = (c.TEST_STEPS or c.STEPS) if has_refiner else 0
    return dict(
        backbone=backbone - recurrent, recurrent=recurrent, heads=heads, steps=steps, mask=mask
    )
