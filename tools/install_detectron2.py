#!/usr/bin/env python
"""Install Detectron2 into this Python: from a local source tree, or the PyPI sdist of 0.6.

From a source tree (``--source DIR``, or the environment variable
``DETECTRON2_SOURCE``; e.g. a clone of the official repository): the tree is copied
to a temporary directory (yours is left untouched) and installed from there. By
default no C++ extension is built (``ext_modules`` emptied in the copy's
``setup.py``): Detectron2 then runs without ``detectron2._C`` (no deformable conv, no
rotated boxes, no fast COCO evaluation; Panoptic FPN needs none of them). With
``--build-ext`` (or ``DETECTRON2_BUILD_EXT=1``) the tree is installed unchanged and
its C++/CUDA ops are compiled, which needs a compiler (and nvcc for CUDA).

Without a source tree, where only PyPI is reachable: ``pb1-detectron2==0.6`` carries
the official v0.6 Python code, but its sdist lacks the C++ sources and predates
Pillow 10 and NumPy 1.24. This script downloads that sdist and makes the smallest
edits that let it install and run:

1. ``setup.py``: build no C++ extension (the sources are not in the sdist).
2. ``detectron2/_C.py``: a stand-in for the missing extension. It answers the three
   queries ``collect_env_info`` makes and raises a clear AttributeError for any C++ op
   (deformable conv, rotated boxes, fast COCO eval). Panoptic FPN needs none of them:
   ROIAlign and NMS come from torchvision.
3. Model-zoo configs moved to a top-level ``configs/`` so ``setup.py`` packages them and
   ``detectron2.model_zoo.get_config_file`` finds them.
4. ``Image.LINEAR`` (removed in Pillow 10) -> ``Image.BILINEAR``, its old alias.
5. ``np.int/float/bool/str/object`` (removed in NumPy 1.24) -> the builtins they aliased.
6. ``detectron2/export/__init__.py``: the caffe2 exporter (``.api``) is imported only when
   caffe2 is importable, as upstream Detectron2 does; caffe2 left torch in 2.0, and without
   the guard ``import detectron2.export`` (``TracingAdapter``, scripting) fails.

Every edit checks that its pattern matched where expected and stops otherwise, so a
changed sdist fails loudly here instead of breaking at run time.

Usage, with the target environment's python::

    python tools/install_detectron2.py                        # PyPI sdist, pure Python
    python tools/install_detectron2.py --source ~/detectron2  # a source tree, pure Python
    python tools/install_detectron2.py --source ~/detectron2 --build-ext   # compiled
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"

STANDIN_C = '''"""Stand-in for Detectron2's C++ extension, which this build does not compile.

Written by crbp_panoptic's tools/install_detectron2.py. Detectron2 imports this module
at import time and queries it from ``collect_env_info``; any compiled op raises
AttributeError with an explanation.
"""


def get_compiler_version():
    return "not built (pure-Python install)"


def get_cuda_version():
    return "not built (pure-Python install)"


def has_cuda():
    return False


def __getattr__(name):
    # AttributeError (not a crash) so that hasattr(_C, ...) can probe for the compiled ops.
    raise AttributeError(
        f"detectron2._C.{name} is unavailable: this Detectron2 was installed without its "
        "C++ extension (tools/install_detectron2.py). Deformable conv, rotated boxes and the "
        "fast COCO evaluation need the official build (see INSTALL.md)."
    )
'''

# Files known to use the NumPy aliases removed in 1.24; each must still contain one.
NUMPY_ALIAS_FILES = [
    "detectron2/evaluation/sem_seg_evaluation.py",
    "detectron2/structures/masks.py",
    "detectron2/data/build.py",
    "detectron2/utils/visualizer.py",
]
NUMPY_ALIAS = re.compile(r"\bnp\.(int|float|bool|str|object)\b(?![\w.])")


# Edit 6: upstream Detectron2's guard around the caffe2-only exporter.
EXPORT_API_IMPORT = "from .api import *\n"
EXPORT_API_GUARDED = """try:
    from caffe2.proto import caffe2_pb2 as _tmp  # noqa: F401
    from caffe2.python import core  # noqa: F401
except ImportError:
    pass  # caffe2 is optional: torch >= 2.0 has none; tracing and scripting need none
else:
    from .api import *  # noqa: F401,F403
"""


class EditError(RuntimeError):
    pass


def replace_exactly(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace ``old`` by ``new`` in ``path``; fail unless it occurs exactly ``count`` times."""
    text = path.read_text()
    found = text.count(old)
    if found != count:
        raise EditError(f"{path}: expected {count} occurrence(s) of {old!r}, found {found}")
    path.write_text(text.replace(old, new))


def guard_caffe2_export(package: Path) -> None:
    """Edit 6 on a ``detectron2`` package directory (an unpacked sdist's or an installed one)."""
    replace_exactly(package / "export" / "__init__.py", EXPORT_API_IMPORT, EXPORT_API_GUARDED)


def patch_source(src: Path) -> None:
    """Apply the install-time edits described in the module docstring to an unpacked sdist."""
    replace_exactly(src / "setup.py", "ext_modules=get_extensions(),", "ext_modules=[],")

    (src / "detectron2" / "_C.py").write_text(STANDIN_C)

    zoo_configs = src / "detectron2" / "model_zoo" / "configs"
    if not zoo_configs.is_dir():
        raise EditError(f"{zoo_configs}: model-zoo configs not found in the sdist")
    if (src / "configs").exists():
        raise EditError(f"{src / 'configs'} already exists; refusing to overwrite it")
    shutil.move(str(zoo_configs), str(src / "configs"))

    replace_exactly(
        src / "detectron2" / "data" / "transforms" / "transform.py",
        "interp=Image.LINEAR",
        "interp=Image.BILINEAR",
    )

    patched = {}
    for path in sorted((src / "detectron2").rglob("*.py")):
        text = path.read_text()
        new, n = NUMPY_ALIAS.subn(lambda m: m.group(1), text)
        if n:
            path.write_text(new)
            patched[path.relative_to(src).as_posix()] = n
    missing = [f for f in NUMPY_ALIAS_FILES if f not in patched]
    if missing:
        raise EditError(f"expected NumPy aliases (np.int, np.bool, ...) in {missing}; none found")
    print(f"[install_detectron2] replaced NumPy aliases in {len(patched)} files")

    guard_caffe2_export(src / "detectron2")


def prepare_source_tree(source: Path, dest: Path, build_ext: bool) -> Path:
    """Copy a Detectron2 source tree to ``dest`` and, unless ``build_ext``, drop its extension.

    Raises:
        EditError: ``source`` is not a Detectron2 source tree, or its ``setup.py`` does not
            declare ``ext_modules=get_extensions()`` where the edit expects it.
    """
    source = Path(source).expanduser().resolve()
    if not (source / "setup.py").is_file() or not (source / "detectron2" / "__init__.py").is_file():
        raise EditError(
            f"DETECTRON2_SOURCE={source}: not a Detectron2 source tree "
            "(expected setup.py and detectron2/__init__.py in it)"
        )
    ignore = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "*.so")
    shutil.copytree(source, dest, ignore=ignore, symlinks=True)
    if not build_ext:
        replace_exactly(dest / "setup.py", "ext_modules=get_extensions(),", "ext_modules=[],")
    return dest


def run(cmd):
    print("[install_detectron2] $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdist", default=SDIST, help="pip requirement of the sdist to patch")
    parser.add_argument("--keep", metavar="DIR", help="also copy the patched source to DIR")
    parser.add_argument(
        "--source",
        default=os.environ.get("DETECTRON2_SOURCE") or None,
        metavar="DIR",
        help="install this Detectron2 source tree instead of the "
        "sdist (default: $DETECTRON2_SOURCE)",
    )
    parser.add_argument(
        "--build-ext",
        action="store_true",
        default=os.environ.get("DETECTRON2_BUILD_EXT", "0") not in ("", "0"),
        help="with --source: compile the C++/CUDA ops (default: $DETECTRON2_BUILD_EXT=1)",
    )
    args = parser.parse_args(argv)

    pip = [sys.executable, "-m", "pip"]
    if args.source:
        install_source_tree(args, pip)
    else:
        install_sdist(args, pip)
    check_installed(require_c=not args.source or args.build_ext)


def install_source_tree(args, pip) -> None:
    """Install ``args.source`` from a temporary copy (see :func:`prepare_source_tree`)."""
    with tempfile.TemporaryDirectory(prefix="d2-source-") as tmp:
        src = prepare_source_tree(Path(args.source), Path(tmp) / "detectron2", args.build_ext)
        if args.keep:
            shutil.copytree(src, args.keep, dirs_exist_ok=True)
        # setup.py imports torch: build in this environment, not an isolated one. The
        # dependencies come from tools/setup_env.sh (setup.py's list pins black, etc.).
        run(pip + ["install", "-q", "--no-deps", "--no-build-isolation", str(src)])


def install_sdist(args, pip) -> None:
    """Download the PyPI sdist, patch it (module docstring) and install it."""
    with tempfile.TemporaryDirectory(prefix="d2-sdist-") as tmp:
        tmp = Path(tmp)
        run(
            pip
            + ["download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(tmp), args.sdist]
        )
        archives = list(tmp.glob("*.tar.gz"))
        if len(archives) != 1:
            raise EditError(f"expected one sdist archive in {tmp}, found {archives}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(tmp, filter="data")
        (src,) = [p for p in tmp.iterdir() if p.is_dir()]
        patch_source(src)
        if args.keep:
            shutil.copytree(src, args.keep, dirs_exist_ok=True)
        # The sdist's setup.py imports torch: build in this environment, not an isolated one.
        # Its dependencies are installed by tools/setup_env.sh (it pins black==21.4b2, which
        # is only needed to pretty-print LazyConfig files).
        run(pip + ["install", "-q", "--no-deps", "--no-build-isolation", str(src)])


def check_installed(require_c: bool) -> None:
    """Import the installed Detectron2 from a neutral directory (no source tree shadowing it)."""
    check = (
        "import detectron2" + (", detectron2._C" if require_c else "") + "; "
        "from detectron2 import model_zoo; "
        "from detectron2.data.transforms import transform; "
        "model_zoo.get_config_file('COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml'); "
        "print('[install_detectron2] detectron2', detectron2.__version__, 'OK')"
    )
    subprocess.run([sys.executable, "-c", check], check=True, cwd=os.path.expanduser("~"))


if __name__ == "__main__":
    try:
        main()
    except (EditError, subprocess.CalledProcessError) as e:
        sys.exit(f"[install_detectron2] FAILED: {e}")
