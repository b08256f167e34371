#!/usr/bin/env python
"""crbp_panoptic: contractor recurrent back-propagation (C-RBP) for Detectron2."""

from setuptools import find_packages, setup

setup(
    name="crbp_panoptic",
    version="0.1.0",
    description="Recurrent Panoptic FPN trained with contractor recurrent back-propagation, "
    "as a Detectron2 extension",
    packages=find_packages(include=["crbp_panoptic", "crbp_panoptic.*"]),
    python_requires=">=3.9",
    # torch, torchvision and Detectron2 are required but not pinned here: GPU users bring
    # builds that match their CUDA (INSTALL.md). Detectron2 is not installable from PyPI
    # by name; tools/install_detectron2.py installs its pure-Python 0.6 on CPU machines.
    install_requires=[
        "numpy",
        "Pillow",
        "pycocotools",
        "fvcore",
        "opencv-python-headless",
        "matplotlib",
    ],
    extras_require={
        "d2": ["detectron2", "panopticapi", "torch", "torchvision"],
        # COCO box/mask AP in C++ where Detectron2 was built without its extension.
        "eval": ["faster-coco-eval"],
        "dev": ["pytest", "scipy", "ruff"],
    },
)
