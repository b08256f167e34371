"""tools/gpu_benchmark.sh and tools/gpu_pathfinder.sh end to end on the CPU (DEVICE=cpu, smoke
sizes), from a checkout that is not installed: the Python a GPU run executes, in seconds."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.tiny import REPO

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="the scripts need bash and coreutils' timeout",
)

# Loaded by every Python the scripts start (through PYTHONPATH): crbp_panoptic is then found
# only where a checkout that is not installed would be, the running script's folder (or the
# current one) and PYTHONPATH, never through an installation.
_NOT_INSTALLED = """
import importlib.machinery, os, sys

class _NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "crbp_panoptic":
            return None
        dirs = [sys.path[0]] + os.environ.get("PYTHONPATH", "").split(os.pathsep)
        spec = importlib.machinery.PathFinder.find_spec(
            name, [os.path.abspath(d or os.curdir) for d in dirs]
        )
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return spec

sys.meta_path.insert(0, _NotInstalled)
"""


@pytest.fixture
def not_installed(tmp_path):
    """Environment of a shell whose Python has this project's requirements but not the
    project: PYTHONPATH holds only the folder of the ``sitecustomize`` above."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NOT_INSTALLED)
    env = dict(os.environ, PYTHONPATH=str(site), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("PYTHONSAFEPATH", None)
    # The premise: from elsewhere, this Python does not find the project.
    probe = subprocess.run(
        [sys.executable, "-c", "import crbp_panoptic"], cwd=tmp_path, env=env, capture_output=True
    )
    assert probe.returncode != 0 and b"No module named 'crbp_panoptic'" in probe.stderr
    return env


def _run(script, env, timeout=300, **extra):
    return subprocess.run(
        ["bash", str(REPO / "tools" / script)],
        cwd="/",  # "from anywhere"
        env=dict(env, **{k: str(v) for k, v in extra.items()}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_gpu_benchmark_smoke_runs_every_configuration_on_the_cpu(not_installed, tmp_path):
    out = tmp_path / "bench"
    done = _run("gpu_benchmark.sh", not_installed, DEVICE="cpu", SMOKE=1, OUT=out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "benchmark.json").read_text())
    runs = {(r["placement"], r["arm"]): r for r in report["results"]}
    assert set(runs) == {
        ("-", "ff"),
        ("fpn", "bptt:1"),
        ("fpn", "crbp:2"),
        ("fpn", "crbp:2:crop16"),
        ("mask", "bptt:1"),
        ("mask", "crbp:2"),
        ("mask", "crbp:2:sub0.5"),
    }
    for key, r in runs.items():
        assert "error" not in r, (key, r["error"])
        assert r["train_s"] > 0 and r["infer"]["T"]["s_per_img"] > 0, key
    assert report["settings"]["device"] == "cpu" and report["settings"]["size"] == [64, 96]
    assert (out / "benchmark.md").is_file() and (out / "benchmark.log").is_file()


def test_gpu_pathfinder_smoke_reports_a_failed_length_and_runs_the_next(not_installed, tmp_path):
    out = tmp_path / "pf"
    # Length 0 is invalid: that length fails at once, length 4 must still run.
    done = _run(
        "gpu_pathfinder.sh", not_installed, MODE="smoke", DEVICE="cpu", LENGTHS="0 4", OUT=out
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed lengths: 0 (exit status 1)" in done.stderr
    assert "--path-length=0; expected an integer >= 1" in (out / "L0.log").read_text()
    metrics = json.loads((out / "L4" / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"crbp:3", "bptt:2"}
    assert metrics["settings"]["path_length"] == 4 and metrics["settings"]["data_workers"] == 2
    tables = (out / "pathfinder_tables.md").read_text()
    assert "length 0 failed" in tables and "## path length 4 dashes" in tables


def test_gpu_pathfinder_timeout_stops_a_length_and_skips_the_rest(tmp_path):
    # A Python that hangs in training: the overall timeout must end the run, and report it.
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exec {sys.executable} "$@"\nexec sleep 60\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake))
    done = _run(
        "gpu_pathfinder.sh",
        env,
        timeout=60,
        DEVICE="cpu",
        LENGTHS="5 6",
        TIMEOUT=3,
        OUT=tmp_path / "pf",
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed lengths: 5 (stopped by the 3 s timeout) 6 (not run: out of time)" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
@pytest.mark.parametrize("script", ["gpu_benchmark.sh", "gpu_pathfinder.sh"])
def test_gpu_scripts_without_cuda_say_so_before_running(script, tmp_path):
    done = _run(script, dict(os.environ, PYTHON=sys.executable), OUT=tmp_path / "o")
    assert done.returncode == 1
    assert "no CUDA device (DEVICE=cpu runs on the CPU)" in done.stderr
    assert not (tmp_path / "o" / "benchmark.json").exists()
