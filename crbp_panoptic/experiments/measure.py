"""Measuring a training step: process memory, wall and CPU time, saved-tensor bytes.

Torch only (no Detectron2). Resident-set figures read Linux ``/proc``; elsewhere they
fall back to what ``resource`` reports.
"""

import ctypes
import os
import resource
import statistics
import sys
import time
from typing import Callable, Optional, Sequence

import torch

from ..crbp.memory import SavedTensorBytes

__all__ = [
    "MIB",
    "Clock",
    "SavedTensorBytes",
    "median",
    "peak_allocated_bytes",
    "peak_rss_mib",
    "reset_peak_rss",
    "rss_mib",
    "trim_allocator",
]

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
    """Make the resident set follow the live tensors (glibc only; False elsewhere).

    glibc serves allocations below a moving threshold (up to 32 MiB) from its heap and
    keeps freed chunks there, so a peak resident set also counts whatever earlier work
    left behind. Fixing the threshold at ``threshold`` bytes serves every tensor larger
    than that from its own mapping, returned to the OS when freed; ``malloc_trim(0)``
    then releases the heap's free pages. The setting lasts for the whole process and
    slows allocation: use it in a process of its own, for a memory pass only.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1
        libc.malloc_trim(0)
        return bool(ok)
    except (OSError, AttributeError):
        return False


class Clock:
    """Context manager: wall-clock and process CPU seconds of a block.

    With ``cuda`` it synchronises the device before and after, so queued kernels count.
    On a CPU shared with other work the process CPU time (all threads) is the less
    disturbed of the two: waiting for a core does not count.

    Attributes (after the block):
        seconds (float): wall-clock seconds.
        cpu_seconds (float): process CPU seconds.
    """

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
    """Peak of the bytes torch allocated on the CPU while ``fn()`` ran, above the start.

    Read from the profiler's memory events (``profile_memory=True``): every allocation
    and release in time order, summed; tensors alive before the call count as zero and
    what ``fn`` returns counts until the call ends. Unlike the resident set, this is
    exact and does not depend on the allocator returning memory to the system.
    """
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
