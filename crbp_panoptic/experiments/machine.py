"""What a measurement ran on: one description shared by every report."""

import os
import platform
from importlib import metadata
from typing import Dict, Optional

import torch

#: Distributions besides torch whose version can move a CPU run's numbers: image decoding and
#: resizing (the data pipeline), pycocotools / faster-coco-eval (AP), fvcore (initialisers).
PACKAGES = (
    "numpy",
    "Pillow",
    "opencv-python-headless",
    "pycocotools",
    "faster-coco-eval",
    "fvcore",
    "torchvision",
)


def _version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            line = next(line for line in f if line.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_info(device: Optional[str] = None) -> Dict:
    """The machine, the software versions and, for a CUDA ``device``, the GPU.

    Args:
        device (str or None): "cpu", "cuda" or "cuda:N"; None = "cuda" where available.

    Returns:
        dict: ``host``, ``platform``, ``python``, ``cpu`` (model name), ``cpu_count``,
        ``cpu_capability`` (the vector instructions torch's CPU kernels use, e.g. "AVX2":
        another level gives other rounding), ``torch``, ``torch_threads``,
        ``omp_num_threads`` (or "unset"), ``detectron2`` (version or None), ``packages``
        (:data:`PACKAGES` -> version, None where not installed) and ``gpu`` (None on a CPU);
        on CUDA also ``gpu_mib``, ``cuda``, ``cudnn``, ``cudnn_tf32``, ``cudnn_benchmark``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        from detectron2 import __version__ as d2_version
    except ImportError:
        d2_version = None
    info = {
        "host": platform.node(), "platform": platform.platform(),
        "python": platform.python_version(), "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "detectron2": d2_version, "packages": {name: _version(name) for name in PACKAGES},
        "gpu": None,
    }  # fmt: skip
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_mib=props.total_memory / 2.0**20, cuda=torch.version.cuda)
        cudnn = torch.backends.cudnn
        info.update(cudnn=cudnn.version(), cudnn_tf32=cudnn.allow_tf32)
        info.update(cudnn_benchmark=cudnn.benchmark)
    return info


def describe(info: Dict) -> str:
    """One line for a report's header: the GPU (or the CPU and its cores), the software."""
    where = info["gpu"] or f"{info['cpu']} ({info['cpu_count']} cores)"
    return (
        f"{where}, Python {info['python']}, torch {info['torch']}, Detectron2 "
        f"{info['detectron2']}, {info['torch_threads']} torch thread(s)"
    )
