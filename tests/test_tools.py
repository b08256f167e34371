"""Every command-line tool in tools/ starts and prints its usage (the logic is tested in the
package's own tests)."""

import os
import subprocess
import sys

import pytest

from tests.tiny import REPO

TOOLS = sorted(p.name for p in (REPO / "tools").glob("*.py"))


def _env():
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path)


def test_the_tools_folder_has_the_tools_the_readme_lists():
    listed = (REPO / "tools" / "README.md").read_text()
    scripts = sorted(p.name for p in (REPO / "tools").iterdir() if p.suffix in (".py", ".sh"))
    assert scripts and all(f"`{name}`" in listed for name in scripts), listed


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_prints_usage_with_a_one_line_description(tool):
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), "--help"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    usage, _, rest = done.stdout.partition("\n\n")
    assert usage.startswith("usage:"), done.stdout
    # the first paragraph after the usage (argparse may wrap it) is a description, not
    # the list of arguments
    description = " ".join(rest.split("\n\n")[0].split())
    assert not description.startswith(("positional arguments:", "options:")), rest
    assert len(description.split()) >= 4, description


def test_benchmark_lists_its_plan_and_rejects_a_bad_arm():
    env = _env()
    cmd = [
        sys.executable,
        str(REPO / "tools" / "benchmark.py"),
        "--task",
        "train",
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


def test_analyze_model_counts_parameters_and_multiply_adds(tmp_path):
    syn = "configs/Synthetic-PanopticSegmentation/"
    cmd = [sys.executable, str(REPO / "tools" / "analyze_model.py"), "--tasks", "parameter", "flop"]
    cmd += ["activation"]
    cmd += ["--config-file", syn + "panoptic_fpn_R_18_quick.yaml"]
    cmd += [syn + "panoptic_crbp_fpn_R_18_quick.yaml::MODEL.CRBP.FPN_LEVELS=['p5']"]
    cmd += ["--size", "64", "64", "--rois", "2", "--output", str(tmp_path), "MODEL.CRBP.STEPS", "2"]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    params = (tmp_path / "parameter.md").read_text().splitlines()
    ff, rec = params[2].split(" | "), params[3].split(" | ")
    assert ff[0] == "| panoptic_fpn_R_18_quick.yaml" and ff[-1] == "0 |"  # no recurrent part
    assert rec[0] == "| panoptic_crbp_fpn_R_18_quick.yaml MODEL.CRBP.FPN_LEVELS=['p5']"
    assert int(rec[-1].rstrip(" |").replace(",", "")) > 0
    flop = (tmp_path / "flop.md").read_text().splitlines()
    assert flop[4].endswith("| 1.00 |") and "| 2 |" in flop[5]  # STEPS 2 reaches every config
    activations = (tmp_path / "activation.md").read_text().splitlines()
    assert len(activations) == 4 and all(
        float(r.split(" | ")[-1][:-2]) > 0 for r in activations[2:]
    )
    bad = subprocess.run(
        cmd[:4] + ["--config-file", "x.yaml::MODEL.CRBP.STEPS"], cwd=REPO, env=_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "override 'MODEL.CRBP.STEPS' must be KEY=VALUE" in bad.stderr


def test_benchmark_engine_task_writes_its_table_and_refuses_config_options(tmp_path):
    tool = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--task", "engine"]
    cmd = tool + ["--channels", "8", "--rois", "2", "--roi-size", "4", "--images", "1"]
    cmd += ["--fpn-hw", "4x4", "--num-groups", "4", "--arms", "bptt:1", "rbp:2"]
    cmd += ["--neumann-steps", "2", "--threads", "1", "--output", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [r for r in (tmp_path / "engine.md").read_text().splitlines() if r.startswith("| m")]
    assert [r.split(" | ")[:3] for r in rows] == [
        ["| mask", "2x8x4x4", "bptt:1"],
        ["| mask", "2x8x4x4", "rbp:2"],
    ]
    bad = subprocess.run(
        cmd + ["MODEL.CRBP.STEPS", "2"], cwd=REPO, env=_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "taken by --task train only" in bad.stderr
