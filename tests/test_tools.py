"""Every command-line tool in tools/ starts and prints its usage (the logic is tested in the
package's own tests)."""

import os
import subprocess
import sys

import pytest

from tests.tiny import REPO

TOOLS = [
    "benchmark.py",
    "benchmark_coco_eval.py",
    "benchmark_engine.py",
    "benchmark_speed.py",
    "benchmark_torchdeq.py",
    "compare_configs.py",
    "count_macs.py",
    "count_params.py",
    "demo.py",
    "export_model.py",
    "install_detectron2.py",
    "make_synthetic_dataset.py",
    "predict.py",
    "train_net.py",
    "train_pathfinder.py",
    "visualize_dynamics.py",
]


def test_every_python_tool_is_listed():
    assert sorted(p.name for p in (REPO / "tools").glob("*.py")) == sorted(TOOLS)


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_prints_usage(tool):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:") or "usage:" in done.stdout.splitlines()[1], done.stdout


def test_benchmark_lists_its_plan_and_rejects_a_bad_arm():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [
        sys.executable,
        str(REPO / "tools" / "benchmark.py"),
        "--device",
        "cpu",
        "--list",
        "--placements",
        "mask",
        "--arms",
        "bptt:1",
        "--cheap-arms",
        "mask=crbp:20:sub0.25",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    plan = [line.split()[:2] for line in done.stdout.splitlines() if line[:4] in ("-   ", "mask")]
    assert plan == [["-", "ff"], ["mask", "bptt:1"], ["mask", "crbp:20:sub0.25"]]
    bad = subprocess.run(
        cmd[:-4] + ["--arms", "crbp-20"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "arm='crbp-20'" in bad.stderr


def test_install_detectron2_rejects_a_folder_that_is_not_a_detectron2_tree(tmp_path):
    (tmp_path / "setup.py").write_text("")
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "install_detectron2.py"), "--source", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"DETECTRON2_SOURCE={tmp_path}: not a Detectron2 source tree" in done.stderr
