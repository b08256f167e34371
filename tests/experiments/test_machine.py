"""The description of the machine that every report carries."""

import numpy as np
import torch

from crbp_panoptic.experiments import machine
from crbp_panoptic.experiments.machine import describe, machine_info


def test_machine_info_records_the_cpu_kernels_level_and_the_package_versions(monkeypatch):
    monkeypatch.setattr(machine, "PACKAGES", ("numpy", "no-such-distribution-here"))
    info = machine_info("cpu")
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["packages"] == {"numpy": np.__version__, "no-such-distribution-here": None}
    assert info["torch"] == torch.__version__ and info["gpu"] is None
    assert info["cpu_count"] >= 1 and info["torch_threads"] == torch.get_num_threads()
    assert f"torch {torch.__version__}" in describe(info) and "cores" in describe(info)


def test_machine_info_names_the_packages_that_move_cpu_numbers():
    assert {"numpy", "Pillow", "opencv-python-headless", "pycocotools"} <= set(machine.PACKAGES)
    installed = machine_info("cpu")["packages"]
    assert installed["Pillow"] is not None and installed["numpy"] is not None
