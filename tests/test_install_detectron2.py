"""tools/install_detectron2.py, edit 6: detectron2.export imports without caffe2."""

import importlib.util

import pytest

from tests.tiny import load_tool

# detectron2/export/__init__.py of the Detectron2 0.6 sdist, verbatim.
RELEASED = """# -*- coding: utf-8 -*-

from .api import *
from .flatten import TracingAdapter
from .torchscript import scripting_with_instances, dump_torchscript_IR

__all__ = [k for k in globals().keys() if not k.startswith("_")]
"""


def test_caffe2_exporter_is_imported_only_with_caffe2(tmp_path):
    tool = load_tool("install_detectron2")
    init = tmp_path / "detectron2" / "export" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text(RELEASED)
    tool.guard_caffe2_export(tmp_path / "detectron2")
    text = init.read_text()
    assert "\nfrom .api import *" not in text  # no unguarded import is left
    assert "except ImportError:\n    pass" in text and "else:\n    from .api import *" in text
    assert text.endswith(RELEASED.split("from .api import *\n", 1)[1])  # the rest unchanged
    with pytest.raises(tool.EditError, match="expected 1 occurrence"):
        tool.guard_caffe2_export(tmp_path / "detectron2")  # a changed file fails loudly


def test_installed_detectron2_export_imports():
    if importlib.util.find_spec("caffe2") is not None:
        pytest.skip("caffe2 is installed; the guard is not exercised")
    from detectron2.export import TracingAdapter  # noqa: F401  (fails without edit 6)
