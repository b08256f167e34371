#!/usr/bin/env bash
# Creates (or completes) the project's virtual environment; idempotent, so a second run
# only checks. Used by `make demo` and `make test`; see INSTALL.md for other set-ups.
#   tools/setup_env.sh [VENV_DIR]        (default .venv)
# Each step names itself when it fails. torch and Detectron2 already importable in the
# environment are kept (GPU users bring their own builds).
# Environment: DETECTRON2_SOURCE=/path/to/detectron2 installs Detectron2 from that source
# tree (e.g. a clone of the official repository) instead of the PyPI sdist of 0.6, pure
# Python unless DETECTRON2_BUILD_EXT=1 (then its C++/CUDA ops are compiled).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY="$VENV/bin/python"
# Detectron2 0.6's model_zoo imports pkg_resources, which setuptools 81 dropped.
SETUPTOOLS='setuptools<81'

step() {
  local name=$1; shift
  echo "[setup] $name"
  if ! "$@"; then
    echo "[setup] FAILED at step '$name' (command: $*)" >&2
    exit 1
  fi
}
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$SETUPTOOLS" "$@"; }
importable() { "$PY" -c "import $1" >/dev/null 2>&1; }

if [ ! -x "$PY" ]; then
  step "create virtual environment $VENV" python3 -m venv "$VENV"
fi
if ! importable torch || ! importable torchvision; then
  # Pinned: the versions the tests run on; an unpinned torch is a multi-GB CUDA download.
  step "install torch==2.14.1 torchvision==0.29.1" pip_install wheel torch==2.14.1 torchvision==0.29.1
fi
DEPS=(numpy Pillow matplotlib pycocotools opencv-python-headless termcolor yacs tabulate
      cloudpickle tqdm tensorboard 'fvcore>=0.1.5,<0.1.6' 'iopath>=0.1.7,<0.1.10'
      'omegaconf>=2.1' 'hydra-core>=1.1' packaging pytest scipy ruff faster-coco-eval)
if ! importable "fvcore, pycocotools, cv2, tensorboard, yacs, omegaconf, hydra, packaging, pytest, scipy, ruff, faster_coco_eval"; then
  step "install Detectron2's dependencies" pip_install "${DEPS[@]}"
fi
if ! importable panopticapi; then
  # panopticapi-lite carries the official panopticapi; its metadata over-constrains numpy.
  step "install panopticapi (panopticapi-lite, --no-deps)" pip_install --no-deps panopticapi-lite==0.2.0
fi
if ! importable detectron2; then
  if [ -n "${DETECTRON2_SOURCE:-}" ]; then
    step "install Detectron2 from $DETECTRON2_SOURCE" "$PY" tools/install_detectron2.py \
      --source "$DETECTRON2_SOURCE"
  else
    step "install Detectron2 0.6 (pure Python, from PyPI)" "$PY" tools/install_detectron2.py
  fi
fi
# Installed (editable, from this checkout)? Look with the current directory off sys.path:
# `python -c` puts it first, where the source tree alone would pass for an install.
if ! "$PY" -c "import importlib.util as u, os, sys
sys.path = [p for p in sys.path if p and os.path.abspath(p) != os.getcwd()]
s = u.find_spec('crbp_panoptic'); sys.exit(not (s and s.origin.startswith('$PWD/')))" >/dev/null 2>&1; then
  step "install crbp_panoptic (editable)" pip_install --no-deps --no-build-isolation -e .
fi
echo "[setup] environment ready: $VENV"
