"""The set-up installs this checkout into the environment (not merely beside it)."""

import os
import subprocess
import sys

from tests.tiny import REPO


def test_package_is_installed_from_this_checkout(tmp_path):
    # From another directory and without PYTHONPATH, only an installed package is importable:
    # tools/*.py and `python -m` users elsewhere rely on that (`make demo` did, and broke).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", "import crbp_panoptic; print(crbp_panoptic.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(REPO / "crbp_panoptic" / "__init__.py")
