"""The set-up installs this checkout into the environment (not merely beside it), and the
test run removes what its passing tests wrote."""

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


def test_the_suite_removes_a_passing_tests_tmp_path_and_keeps_a_failing_ones(tmp_path):
    # make test writes gigabytes of checkpoints under tmp_path; pyproject.toml's pytest
    # settings must drop each passing test's folder (and keep a failing one's to debug).
    (tmp_path / "test_inner.py").write_text(
        "def test_passes(tmp_path):\n"
        "    (tmp_path / 'ckpt.pth').write_bytes(b'x')\n"
        "\n"
        "def test_fails(tmp_path):\n"
        "    (tmp_path / 'ckpt.pth').write_bytes(b'x')\n"
        "    assert False\n"
    )
    base = tmp_path / "base"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(REPO / "pyproject.toml"),
            f"--basetemp={base}",
            str(tmp_path / "test_inner.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-2000:]
    assert not (base / "test_passes0").exists()
    assert (base / "test_fails0" / "ckpt.pth").exists()
