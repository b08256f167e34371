"""The runner behind tools/compare_configs.py: the declared suites, the other ways to name arms,
bad input, the shared warm start, runs with a stand-in for tools/train_net.py and end to end on a
tiny suite, the residual curves, the report and the plot."""

import dataclasses
import json
import os
import socket
import stat
import statistics
import subprocess
import sys

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402

from crbp_panoptic.experiments.runner import (  # noqa: E402
    RESERVED_KEYS,
    Plan,
    config_arms,
    plan_suite,
    rule_arms,
    run_plan,
)
from crbp_panoptic.experiments.runner_report import plot  # noqa: E402
from crbp_panoptic.experiments.suites import SUITES, Suite, get_suite, suite_floors  # noqa: E402
from crbp_panoptic.modeling import placement  # noqa: E402

from tests.tiny import REPO, load_tool, tiny_cfg, tiny_train_opts  # noqa: E402

S = "configs/Synthetic-PanopticSegmentation/"
FF_QUICK = S + "panoptic_fpn_R_18_quick.yaml"
FPN_QUICK = S + "panoptic_crbp_fpn_R_18_quick.yaml"
MASK_QUICK = S + "panoptic_crbp_mask_R_18_quick.yaml"
FF_LONG = S + "longrange_panoptic_fpn_R_18.yaml"
MASK_LONG = S + "longrange_panoptic_crbp_mask_R_18.yaml"
TRAIN, VAL = "synthetic_panoptic_tiny_train_separated", "synthetic_panoptic_tiny_val_separated"
CONTRACT = {
    "arm",
    "seed",
    "config",
    "opts",
    "weights",
    "params",
    "steps_multiple",
    "pq",
    "pq_th",
    "pq_st",
    "box_ap",
}


def _opt(opts, key):
    return opts[opts.index(key) + 1]


def _tiny_opts(*extra):
    """Tiny sizes and the tiny synthetic splits (registered by default, so children see them),
    without the keys the runner sets; MODEL.CRBP.STEPS 3 makes T = 3."""
    opts = tiny_train_opts("unused", TRAIN, VAL)
    pairs = [(k, v) for k, v in zip(opts[::2], opts[1::2]) if k not in RESERVED_KEYS]
    return [x for pair in pairs for x in pair] + list(extra)


def _tiny_suite(**changes):
    suite = Suite(
        name="tiny",
        description="test suite: tiny recurrent FPN on tiny synthetic data",
        placement="fpn",
        feedforward_config=FF_QUICK,
        recurrent_config=FPN_QUICK,
        warmup_iterations=5,
        iterations=2,
        opts=tuple(_tiny_opts()),
    )
    return dataclasses.replace(suite, **changes)


# --- the declared suites -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, ff, recurrent, where, T, head_lr, test_set",
    [
        ("quick", FF_QUICK, FPN_QUICK, "fpn", 10, None, "synthetic_panoptic_test_separated"),
        (
            "longrange",
            FF_LONG,
            MASK_LONG,
            "mask_head",
            20,
            "5.0",
            "synthetic_longrange_val_separated",
        ),
    ],
)
def test_declared_suite_maps_its_four_arms_to_configs_and_opts(
    tmp_path, name, ff, recurrent, where, T, head_lr, test_set
):
    suite = get_suite(name)
    assert sorted(SUITES) == ["longrange", "quick", "quick_mask"] and SUITES[name] is suite
    assert (suite.feedforward_config, suite.recurrent_config) == (ff, recurrent)
    assert placement(tiny_cfg(recurrent[len("configs/") :])) == where
    plan = plan_suite(suite, [0, 1, 2], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # planning writes nothing
    assert [a.name for a in plan.arms] == ["ff", "bptt:1", "bptt:3", f"crbp:{T}"]
    assert _opt(plan.warmup["opts"], "SOLVER.MAX_ITER") == str(suite.warmup_iterations)
    assert plan.warmup["config"] == ff and plan.warmup["dir"] == str(tmp_path / "out" / "warmup")
    runs = {(r.arm, r.seed): r for r in plan.runs}
    assert len(runs) == 12 and len({r.run_dir for r in plan.runs}) == 12
    for (arm, seed), run in runs.items():
        assert _opt(run.opts, "SEED") == str(seed)
        assert _opt(run.opts, "SOLVER.MAX_ITER") == str(suite.iterations)
        assert "MODEL.WEIGHTS" not in run.opts and "OUTPUT_DIR" not in run.opts
    # the arms' mask-head learning-rate factor (arm_opts), in every arm and not in the warm-up
    factor = "MODEL.CRBP.MASK_HEAD_LR_FACTOR"
    assert factor not in plan.warmup["opts"]
    assert {_opt(r.opts, factor) if factor in r.opts else None for r in plan.runs} == {head_lr}
    for run in plan.runs:  # the quick suites test on the 500-image split, not on val's 12
        assert _test_sets(run.config, run.opts) == (test_set,)
    assert _test_sets(ff, plan.warmup["opts"]) == (test_set,)
    ff_run = runs[("ff", 1)]
    assert ff_run.config == ff and ff_run.test_steps == []
    assert not [k for k in ff_run.opts[::2] if k.startswith("MODEL.CRBP") and k != factor]
    rules = (("bptt:1", "bptt", 1), ("bptt:3", "bptt", 3), (f"crbp:{T}", "crbp", T))
    for arm, grad, steps in rules:
        run = runs[(arm, 2)]
        assert run.config == recurrent and run.test_steps == [steps, 3 * steps]
        assert (_opt(run.opts, "MODEL.CRBP.GRAD"), _opt(run.opts, "MODEL.CRBP.STEPS")) == (
            grad,
            str(steps),
        )
        assert _opt(run.opts, "MODEL.CRBP.TEST_STEPS") == str(steps)
        assert _opt(run.eval_opts(3 * steps), "MODEL.CRBP.TEST_STEPS") == str(3 * steps)
        assert _opt(run.eval_opts(3 * steps), "MODEL.CRBP.TEST_TOL") == "0.0"

    other = plan_suite(
        suite,
        [4],
        str(tmp_path / "o2"),
        iterations=7,
        warmup_iterations=9,
        opts=["MODEL.CRBP.STEPS", "6"],
    )
    assert [a.name for a in other.arms][-1] == "crbp:6"  # T: the config's STEPS (after overrides)
    assert _opt(other.warmup["opts"], "SOLVER.MAX_ITER") == "9"
    assert {_opt(r.opts, "SOLVER.MAX_ITER") for r in other.runs} == {"7"}


def _test_sets(config, opts):
    from crbp_panoptic.engine import setup_cfg

    return tuple(setup_cfg(REPO / config, list(opts)).DATASETS.TEST)


def test_a_subset_of_the_suites_arms_plans_those_runs_where_the_full_suite_would(tmp_path):
    suite, out = get_suite("longrange"), str(tmp_path / "out")
    full = plan_suite(suite, [0, 1], out)
    part = plan_suite(suite, [0, 1], out, arms=["crbp:T", "ff"])
    assert [a.name for a in part.arms] == ["ff", "crbp:20"]  # in the suite's order
    same = {(r.arm, r.seed): (r.run_dir, r.opts) for r in full.runs}
    assert {(r.arm, r.seed): (r.run_dir, r.opts) for r in part.runs} == {
        k: v for k, v in same.items() if k[0] in ("ff", "crbp:20")
    }  # the full call finds these runs where it looks for them, with the same settings
    assert part.warmup == full.warmup
    assert [a.name for a in plan_suite(suite, [0], out, arms=["crbp:20"]).arms] == ["crbp:20"]
    for bad in (["crbp:10"], ["ff", "ff"], [], ["rbp:20"]):
        with pytest.raises(ValueError, match=r"allowed: distinct arms of suite 'longrange', ff, "):
            plan_suite(suite, [0], out, arms=bad)
    assert not (tmp_path / "out").exists()


def test_quick_mask_suite_trains_the_papers_head_against_the_stock_head(tmp_path):
    from crbp_panoptic.engine import setup_cfg

    suite = get_suite("quick_mask")
    assert placement(tiny_cfg(suite.recurrent_config[len("configs/") :])) == "mask_head"
    plan = plan_suite(suite, [0], str(tmp_path / "out"))
    assert [a.name for a in plan.arms] == ["ff", "bptt:1", "crbp:20"]
    assert plan.warmup["start"] == str(tmp_path / "out" / "warm_start.pth")
    for run in plan.runs:  # the head of the long-range suite, in every recurrent arm
        cfg = setup_cfg(REPO / run.config, run.opts)
        if run.arm != "ff":
            assert cfg.MODEL.CRBP.CELL == "less_softplus" and cfg.MODEL.CRBP.GALA
            assert cfg.MODEL.CRBP.GATE_BIAS_INIT == "chronos"
            assert list(cfg.MODEL.CRBP.GATE_BIAS_RANGE) == [1.0, 3.0]
            assert cfg.MODEL.CRBP.STEPS == (20 if run.arm == "crbp:20" else 1)
        assert cfg.DATASETS.TEST == ("synthetic_panoptic_test_separated",)
        assert cfg.MODEL.CRBP.MASK_HEAD_LR_FACTOR == 5.0  # every head, the stock one included
    assert "MODEL.CRBP.MASK_HEAD_LR_FACTOR" not in plan.warmup["opts"]


def test_schedule_restarts_and_scales_the_decay_points(tmp_path):
    plan = plan_suite(get_suite("quick"), [0], str(tmp_path), iterations=600, warmup_iterations=60)
    # The quick configs decay at 250 of 300 iterations.
    assert _opt(plan.warmup["opts"], "SOLVER.STEPS") == "(50,)"
    assert {_opt(r.opts, "SOLVER.STEPS") for r in plan.runs} == {"(500,)"}
    assert {_opt(r.opts, "SOLVER.CHECKPOINT_PERIOD") for r in plan.runs} == {"601"}


# --- bad input, before anything trains ---------------------------------------------------------


def _tool_error(capsys, argv):
    tool = load_tool("compare_configs")
    with pytest.raises(SystemExit) as e:
        tool.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_unknown_suite_names_the_value_and_the_suites(tmp_path, capsys):
    allowed = r"allowed: \['longrange', 'quick', 'quick_mask'\]"
    with pytest.raises(ValueError, match=r"suite 'nope'.*" + allowed):
        get_suite("nope")
    err = _tool_error(capsys, ["--suite", "nope", "--output", str(tmp_path / "out")])
    assert "suite 'nope'" in err and "'longrange', 'quick'" in err
    assert not (tmp_path / "out").exists()


def test_missing_warmup_weights_fail_before_anything_trains(tmp_path, capsys):
    missing = str(tmp_path / "warm" / "model_final.pth")
    with pytest.raises(FileNotFoundError, match="warm-up weights .*model_final.pth.*no such file"):
        plan_suite(get_suite("quick"), [0], str(tmp_path / "out"), warmup_weights=missing)
    err = _tool_error(
        capsys,
        ["--suite", "quick", "--warmup-weights", missing, "--output", str(tmp_path / "out")],
    )
    assert missing in err and "panoptic_fpn_R_18_quick.yaml" in err
    assert not (tmp_path / "out").exists()


def test_config_whose_placement_does_not_match_the_suite_fails(tmp_path, capsys):
    quick = get_suite("quick")
    with pytest.raises(ValueError, match=r"recurrent config .*panoptic_crbp_mask_R_18_quick.yaml"):
        plan_suite(dataclasses.replace(quick, recurrent_config=MASK_QUICK), [0], str(tmp_path))
    with pytest.raises(ValueError, match="placement 'fpn'.*suite 'longrange'.*CRBPMaskHead"):
        plan_suite(
            dataclasses.replace(get_suite("longrange"), recurrent_config=FPN_QUICK),
            [0],
            str(tmp_path),
        )
    with pytest.raises(ValueError, match="feedforward config .*placement 'fpn'"):
        plan_suite(dataclasses.replace(quick, feedforward_config=FPN_QUICK), [0], str(tmp_path))
    err = _tool_error(
        capsys,
        ["--suite", "quick", "--recurrent-config", MASK_QUICK, "--output", str(tmp_path / "o")],
    )
    assert "placement 'mask_head'" in err and "build_resnet_crbp_fpn_backbone" in err
    assert not (tmp_path / "o").exists()


def test_overrides_of_what_the_runner_sets_and_bad_values_are_rejected(tmp_path):
    quick = get_suite("quick")
    for key, flag in (("SOLVER.MAX_ITER", "--iterations"), ("SEED", "--seeds")):
        with pytest.raises(ValueError, match=f"{key} is set by the runner.*{flag}"):
            plan_suite(quick, [0], str(tmp_path), opts=[key, "5"])
    with pytest.raises(ValueError, match="MODEL.CRBP.GRAD is set by the runner.*arms"):
        plan_suite(quick, [0], str(tmp_path), opts=["MODEL.CRBP.GRAD", "rbp"])
    odd = dataclasses.replace(quick, arm_opts=("MODEL.CRBP.MASK_HEAD_LR_FACTOR",))
    with pytest.raises(ValueError, match="suite 'quick' arm_opts: config overrides come in KEY"):
        plan_suite(odd, [0], str(tmp_path))
    with pytest.raises(ValueError, match="iterations=0"):
        plan_suite(quick, [0], str(tmp_path), iterations=0)
    with pytest.raises(ValueError, match=r"seeds=\[-1\]; expected .* >= 0"):
        plan_suite(quick, [-1], str(tmp_path))
    with pytest.raises(ValueError, match=r"seeds=\[1, 1\]"):
        plan_suite(quick, [1, 1], str(tmp_path))
    with pytest.raises(ValueError, match=r"multiples \[3\].*1 among them"):
        plan_suite(quick, [0], str(tmp_path), multiples=[3])
    with pytest.raises(ValueError, match="placement='nowhere'"):
        dataclasses.replace(quick, placement="nowhere")


def test_output_with_runs_made_otherwise_is_an_error_not_overwritten(tmp_path):
    plan = plan_suite(_tiny_suite(), [0], str(tmp_path))
    run = plan.runs[1]
    os.makedirs(run.run_dir)
    spec = {"config": run.config, "opts": run.opts[:-2] + ["SEED", "9"], "init_weights": None}
    (tmp_path / "runs" / "bptt_1" / "seed0" / "run.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"seed0 holds a run made with other settings \(opts"):
        plan_suite(_tiny_suite(), [0], str(tmp_path))
    assert json.loads((tmp_path / "runs" / "bptt_1" / "seed0" / "run.json").read_text()) == spec


# --- the runner, with a stand-in for tools/train_net.py ----------------------------------------

LOG = """[12/01 10:00:00 d2.evaluation.testing]: copypaste: Task: bbox
[12/01 10:00:00 d2.evaluation.testing]: copypaste: AP,AP50,AP75,APs,APm,APl
[12/01 10:00:00 d2.evaluation.testing]: copypaste: {ap},50.0,10.0,nan,nan,nan
[12/01 10:00:00 d2.evaluation.testing]: copypaste: Task: panoptic_seg
[12/01 10:00:00 d2.evaluation.testing]: copypaste: PQ,SQ,RQ,PQ_th,SQ_th,RQ_th,PQ_st,SQ_st,RQ_st
[12/01 10:00:00 d2.evaluation.testing]: copypaste: {pq},48.7,51.0,{th},0.0,0.0,{st},81.3,85.1
"""

# Writes what tools/train_net.py would (log.txt with copypaste lines; model_final.pth, a copy
# of a real feedforward checkpoint) with PQ = 40 + SEED + TEST_STEPS / 10 + 1 (bptt) or 5
# (crbp), 0.25 more with the tiny train split as DATASETS.TEST; records its command line, its
# OMP_NUM_THREADS and how many runs summary.json held when it started; fails (exit 3) when its
# OUTPUT_DIR contains $FAKE_FAIL. With $FAKE_MEET (a folder), an arm's child leaves a file
# there and waits up to 10 s for a second one: "met" records how many it saw (2: another child
# was running at the same time).
FAKE_TRAIN = r"""
import json, os, shutil, sys, time
args = sys.argv[2:]
rest = [a for a in args if a != "--eval-only"]
i = rest.index("--config-file")
pairs = rest[:i] + rest[i + 2 :]
opts = dict(zip(pairs[::2], pairs[1::2]))
out = opts["OUTPUT_DIR"]
summary = os.path.join(os.environ["FAKE_OUTPUT"], "summary.json")
held = len(json.load(open(summary))["runs"]) if os.path.exists(summary) else None
meet, met = os.environ.get("FAKE_MEET"), None
if meet and "warmup" not in out:
    open(os.path.join(meet, str(os.getpid())), "w").close()
    deadline = time.time() + 10
    while len(os.listdir(meet)) < 2 and time.time() < deadline:
        time.sleep(0.02)
    met = len(os.listdir(meet))
threads = os.environ.get("OMP_NUM_THREADS")
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "runs_in_summary": held, "met": met,
                        "threads": threads}) + "\n")
os.makedirs(out, exist_ok=True)
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in out:
    print("simulated failure: out of memory")
    sys.exit(3)
grad = opts.get("MODEL.CRBP.GRAD", "ff")
pq = 40 + int(opts["SEED"]) + int(opts.get("MODEL.CRBP.TEST_STEPS", 0)) / 10
pq += {"ff": 0, "bptt": 1, "crbp": 5}[grad]
pq += 0.25 * ("tiny_train" in opts.get("DATASETS.TEST", ""))  # another test split
with open(os.path.join(out, "log.txt"), "a") as f:
    f.write(LOG.format(ap=pq / 2, pq=pq, th=pq - 10, st=pq + 10))
if "--eval-only" not in args:
    shutil.copy(os.environ["FAKE_CKPT"], os.path.join(out, "model_final.pth"))
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """(python, calls file, output dir): the stand-in interpreter and where it reports."""
    from detectron2.modeling import build_model

    from crbp_panoptic.engine import setup_cfg

    script = tmp_path / "fake_train.py"
    script.write_text(f"LOG = {LOG!r}\n" + FAKE_TRAIN)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    torch.manual_seed(0)
    ff = build_model(setup_cfg(REPO / FF_QUICK, _tiny_opts("MODEL.DEVICE", "cpu")))
    torch.save({"model": ff.state_dict()}, tmp_path / "ff.pth")
    calls, out = tmp_path / "calls.jsonl", tmp_path / "suite"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_CKPT", str(tmp_path / "ff.pth"))
    monkeypatch.setenv("FAKE_OUTPUT", str(out))
    return str(python), calls, str(out)


def _calls(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _expected_pq(arm, seed, test_steps):
    return 40 + seed + (test_steps or 0) / 10 + {"ff": 0, "bptt": 1, "crbp": 5}[arm.split(":")[0]]


def test_suite_trains_every_arm_from_one_warm_up_and_reuses_finished_runs(fake, monkeypatch):
    from detectron2.modeling import build_model

    from crbp_panoptic.modeling import recurrent_modules

    python, calls_path, out = fake
    suite = _tiny_suite(arms=("ff", "bptt:1", "bptt:3", "crbp:T"))
    plan = plan_suite(suite, [0, 1], out)
    messages = []
    summary = run_plan(plan, python=python, log=messages.append)
    calls = _calls(calls_path)
    warm = os.path.join(out, "warmup", "model_final.pth")

    # The warm-up: once, the feedforward config from its own initialisation.
    argv = calls[0]["argv"]
    assert _opt(argv, "OUTPUT_DIR") == os.path.join(out, "warmup")
    assert "MODEL.WEIGHTS" not in argv and _opt(argv, "SOLVER.MAX_ITER") == "5"
    assert _opt(argv, "--config-file") == FF_QUICK and _opt(argv, "SEED") == "0"
    trains = [c["argv"] for c in calls[1:] if "--eval-only" not in c["argv"]]
    evals = [c["argv"] for c in calls[1:] if "--eval-only" in c["argv"]]
    assert len(trains) == 8 and len(evals) == 6  # 2 seeds x 4 arms; 3 recurrent arms at 3T
    for argv in trains:  # every arm from the warm-up, a fresh schedule, the run's seed
        assert _opt(argv, "MODEL.WEIGHTS") == warm and "--resume" not in argv
        assert _opt(argv, "SOLVER.MAX_ITER") == "2"
    assert sorted((_opt(a, "--config-file"), _opt(a, "SEED")) for a in trains) == sorted(
        [(FF_QUICK, s) for s in "01"] + [(FPN_QUICK, s) for s in "01" for _ in range(3)]
    )
    # summary.json is rewritten after every run: each child sees the runs before it.
    assert [c["runs_in_summary"] for c in calls] == [0] + list(range(14))

    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["runs"] == summary["runs"]
    assert summary["suite"] == "tiny"
    assert summary["warmup"]["config"] == FF_QUICK and summary["warmup"]["iterations"] == 5
    assert summary["warmup"]["weights"] == warm and summary["warmup"]["status"] == "ok"
    runs = summary["runs"]
    assert len(runs) == 14 and all(r["status"] == "ok" for r in runs)
    assert all(CONTRACT <= set(r) for r in runs)
    assert sorted((r["arm"], r["seed"], r["steps_multiple"]) for r in runs) == sorted(
        [("ff", s, 1) for s in (0, 1)]
        + [(a, s, m) for a in ("bptt:1", "bptt:3", "crbp:3") for s in (0, 1) for m in (1, 3)]
    )
    for r in runs:
        steps = int(r["arm"].split(":")[1]) * r["steps_multiple"] if ":" in r["arm"] else None
        assert r["pq"] == pytest.approx(_expected_pq(r["arm"], r["seed"], steps))
        assert r["pq_th"] == pytest.approx(r["pq"] - 10) and r["pq_st"] == pytest.approx(
            r["pq"] + 10
        )
        assert r["box_ap"] == pytest.approx(r["pq"] / 2)
        assert r["weights"].endswith("model_final.pth") and os.path.isfile(r["weights"])
        assert r["seconds"] >= 0
    for argv in evals:  # an entry's config, opts and weights are what its evaluation ran
        entry = next(
            r
            for r in runs
            if r["weights"] == _opt(argv, "MODEL.WEIGHTS") and r["steps_multiple"] == 3
        )
        i = argv.index("--config-file")
        assert argv[i + 1] == entry["config"]
        assert argv[i + 2 : argv.index("MODEL.WEIGHTS", i + 2)] == entry["opts"]
    total = summary["seconds"]["total"]
    assert total == pytest.approx(summary["seconds"]["warmup"] + sum(r["seconds"] for r in runs))

    # Parameters: the same model for every recurrent arm; the refiner is what is new.
    model = build_model(tiny_cfg(FPN_QUICK[len("configs/") :], *_tiny_opts()))
    refiner = sum(p.numel() for _, m in recurrent_modules(model) for p in m.parameters())
    params = {r["arm"]: r["params"] for r in runs}
    assert params["ff"]["recurrent"] == 0
    assert params["bptt:1"] == params["bptt:3"] == params["crbp:3"]
    assert params["crbp:3"]["recurrent"] == refiner > 0
    assert params["crbp:3"]["total"] == params["ff"]["total"] + refiner
    assert params["crbp:3"]["mask_head"] == params["ff"]["mask_head"]
    assert any("reusing" not in m and "crbp:3 seed 1" in m for m in messages)

    # Floors: the grouping-free mask on the tiny val split, from its generator.
    from crbp_panoptic.data import CATEGORIES, box_class_mask_iou, render_sample

    samples = [render_sample(i, "val", (64, 64), 0) for i in range(4)]
    ious = [v for s in samples for v in box_class_mask_iou(s.panoptic, s.segments_info, CATEGORIES)]
    assert summary["floors"]["dataset"] == VAL
    assert summary["floors"]["grouping_free_mask_iou"] == pytest.approx(statistics.median(ious))
    assert os.path.isfile(os.path.join(out, "pq_vs_steps.png"))
    assert "| C-RBP-3 |" in open(os.path.join(out, "summary.md")).read()
    kernels = torch.backends.cpu.get_cpu_capability()
    assert summary["machine"]["cpu_capability"] == kernels
    assert f"({kernels} kernels)" in open(os.path.join(out, "summary.md")).read()

    again = run_plan(plan_suite(suite, [0, 1], out), python=python, log=lambda m: None)
    assert len(_calls(calls_path)) == len(calls)  # every run and the warm-up reused
    assert [r["pq"] for r in again["runs"]] == [r["pq"] for r in runs]


def test_arms_run_as_separate_calls_are_reused_by_the_call_with_every_arm(fake):
    python, calls_path, out = fake
    suite = _tiny_suite(arms=("ff", "bptt:1", "crbp:T"))
    plan = plan_suite(suite, [0], out, arms=["crbp:T"])
    first = run_plan(plan, python=python, log=lambda m: None)
    entries = [(r["arm"], r["steps_multiple"]) for r in first["runs"]]
    assert entries == [("crbp:3", 1), ("crbp:3", 3)]
    assert first["arms"] == ["crbp:3"]
    warm = os.path.join(out, "warmup", "model_final.pth")
    plan = plan_suite(suite, [0], out, arms=["ff", "bptt:1"], warmup_weights=warm)
    run_plan(plan, python=python, log=lambda m: None)
    trained = [c["argv"] for c in _calls(calls_path)]
    assert len(trained) == 1 + 2 + 3  # the warm-up; crbp:3 and its 3T; ff, bptt:1 and its 3T
    messages = []
    joint = run_plan(plan_suite(suite, [0], out), python=python, log=messages.append)
    assert len(_calls(calls_path)) == len(trained)  # nothing trained or evaluated again
    assert sum("reusing" in m for m in messages) == 1 + 5
    assert joint["arms"] == ["ff", "bptt:1", "crbp:3"] and joint["warmup"]["status"] == "ok"
    assert sorted((r["arm"], r["steps_multiple"]) for r in joint["runs"]) == [
        ("bptt:1", 1), ("bptt:1", 3), ("crbp:3", 1), ("crbp:3", 3), ("ff", 1)
    ]  # fmt: skip
    for r in joint["runs"]:
        steps = int(r["arm"].split(":")[1]) * r["steps_multiple"] if ":" in r["arm"] else None
        assert r["pq"] == pytest.approx(_expected_pq(r["arm"], 0, steps))


def test_jobs_train_runs_side_by_side_and_report_them_in_the_plans_order(
    fake, tmp_path, monkeypatch
):
    python, calls_path, out = fake
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    suite = _tiny_suite(arms=("ff", "bptt:1", "crbp:T"))
    one = run_plan(plan_suite(suite, [0, 1], out + "_one"), python=python, log=lambda m: None)
    assert one["jobs"] == 1 and all(c["threads"] is None for c in _calls(calls_path))

    calls_path.unlink()
    (tmp_path / "meet").mkdir()
    monkeypatch.setenv("FAKE_MEET", str(tmp_path / "meet"))
    both = run_plan(plan_suite(suite, [0, 1], out), python=python, log=lambda m: None, jobs=2)
    calls = _calls(calls_path)
    # The first two arm children ran at the same time, each with half of the cores.
    assert [c["met"] for c in calls[1:3]] == [2, 2]
    assert {c["threads"] for c in calls} == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert len(calls) == 1 + 6 + 4  # the warm-up; 2 seeds x 3 arms; 2 x 2 recurrent at 3T
    key = ("arm", "seed", "steps_multiple", "pq", "pq_th", "status")
    assert [tuple(r[k] for k in key) for r in both["runs"]] == [
        tuple(r[k] for k in key) for r in one["runs"]
    ]
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["runs"] == both["runs"] and both["jobs"] == 2
    assert both["child_threads"] == str(max(1, (os.cpu_count() or 1) // 2))
    with open(os.path.join(out, "summary.md")) as f:
        assert "2 run(s) at a time (OMP_NUM_THREADS " in f.read()

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a thread count the user set is kept
    from crbp_panoptic.experiments.runner import _child_env

    assert _child_env(2)["OMP_NUM_THREADS"] == "1"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"jobs=.*expected an integer >= 1"):
            run_plan(plan_suite(suite, [0], out + "_bad"), python=python, jobs=bad)
    assert not os.path.exists(out + "_bad")


def test_an_error_in_a_job_stops_the_runs_not_yet_started(fake, monkeypatch):
    from crbp_panoptic.experiments import runner

    python, calls_path, out = fake

    def broken(run_dir):
        raise RuntimeError("metrics.json unreadable")

    monkeypatch.setattr(runner, "_training_log", broken)
    suite = _tiny_suite(arms=("ff", "bptt:1", "crbp:T"))
    with pytest.raises(RuntimeError, match="metrics.json unreadable"):
        run_plan(plan_suite(suite, [0, 1], out), python=python, log=lambda m: None)
    assert len(_calls(calls_path)) == 1 + 1  # the warm-up and the first run only


def test_fresh_modules_start_every_arm_from_their_initialisation(fake):
    python, calls_path, out = fake
    assert get_suite("longrange").fresh == ("roi_heads.mask_head.",)
    assert get_suite("quick").fresh == ()
    suite = _tiny_suite(arms=("ff", "crbp:T"), fresh=("roi_heads.mask_head.",))
    summary = run_plan(plan_suite(suite, [0], out), python=python, log=lambda m: None)
    start = os.path.join(out, "warm_start.pth")
    warm = torch.load(os.path.join(out, "warmup", "model_final.pth"), weights_only=False)
    kept = torch.load(start, weights_only=False)["model"]
    mask = {k for k in warm["model"] if k.startswith("roi_heads.mask_head.")}
    assert mask and set(kept) == set(warm["model"]) - mask
    trains = [c["argv"] for c in _calls(calls_path)[1:] if "--eval-only" not in c["argv"]]
    assert len(trains) == 2 and all(_opt(a, "MODEL.WEIGHTS") == start for a in trains)
    assert summary["warmup"]["fresh"] == ["roi_heads.mask_head."]
    assert summary["warmup"]["start"] == start and summary["warmup"]["fresh_keys"] == len(mask)


def test_a_fresh_mask_head_may_differ_from_the_warm_ups_and_the_rest_must_fit(fake):
    python, calls_path, out = fake
    warm = os.path.join(out, "warmup", "model_final.pth")
    run_plan(
        plan_suite(_tiny_suite(arms=("ff", "crbp:T")), [0], out, arms=["ff"]),
        python=python,
        log=lambda m: None,
    )
    one_conv = ("MODEL.ROI_MASK_HEAD.NUM_CONV", "1")  # a shallower stock head than the warm-up's
    suite = _tiny_suite(arms=("ff", "crbp:T"), fresh=("roi_heads.mask_head.",))
    plan = plan_suite(suite, [0], out + "_conv1", warmup_weights=warm, arms=["ff"], opts=one_conv)
    summary = run_plan(plan, python=python, log=lambda m: None)
    assert [r["status"] for r in summary["runs"]] == ["ok"]
    assert summary["runs"][0]["params"]["mask_head"] < _summary_params(out)["mask_head"]
    with pytest.raises(ValueError) as e:  # without fresh, the head must be the warm-up's
        run_plan(
            plan_suite(
                _tiny_suite(arms=("ff", "crbp:T")),
                [0],
                out + "_strict",
                warmup_weights=warm,
                arms=["ff"],
                opts=one_conv,
            ),
            python=python,
            log=lambda m: None,
        )
    assert "roi_heads.mask_head.mask_fcn2.{bias, weight}" in str(e.value)
    assert "the warm-up weights do not fit arm 'ff'" in str(e.value)
    four = ("MODEL.ROI_HEADS.NUM_CLASSES", "4")  # fresh covers the mask head, not the box head
    with pytest.raises(ValueError) as e:
        run_plan(
            plan_suite(
                suite, [0], out + "_four", warmup_weights=warm, arms=["ff"], opts=one_conv + four
            ),
            python=python,
            log=lambda m: None,
        )
    assert "roi_heads.box_predictor.cls_score.weight" in str(e.value)
    assert "whatever is under ['roi_heads.mask_head.']" in str(e.value)
    assert "roi_heads.mask_head" not in str(e.value).split("whatever")[0]


def _summary_params(out):
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)["runs"][0]["params"]


def test_rescore_evaluates_every_finished_run_again_with_the_overrides(fake, monkeypatch):
    from crbp_panoptic.experiments.rescore import rescore_summary

    python, calls_path, out = fake
    monkeypatch.setenv("FAKE_FAIL", os.path.join("bptt_1", "seed1"))
    suite = _tiny_suite(arms=("ff", "bptt:1", "crbp:T"), true_box_masks=True)
    source = run_plan(plan_suite(suite, [0, 1], out), python=python, log=lambda m: None)
    trained = len(_calls(calls_path))
    other = ["DATASETS.TEST", "('synthetic_panoptic_tiny_train_separated',)"]
    new_dir = out + "_rescored"
    summary = rescore_summary(out, new_dir, other, python=python, log=lambda m: None, jobs=2)

    calls = _calls(calls_path)[trained:]
    finished = [r for r in source["runs"] if r["status"] == "ok"]
    assert len(calls) == len(finished) and all("--eval-only" in c["argv"] for c in calls)
    assert [(r["arm"], r["seed"], r["test_steps"]) for r in summary["runs"]] == [
        (r["arm"], r["seed"], r["test_steps"]) for r in source["runs"]
    ]  # the source's order, its failed run included
    for old, new in zip(source["runs"], summary["runs"]):
        if old["status"] != "ok":
            assert new == old
            continue
        assert new["status"] == "ok" and new["opts"] == old["opts"] + other
        assert new["pq"] == pytest.approx(
            _expected_pq(old["arm"], old["seed"], old["test_steps"]) + 0.25
        )
        assert new["weights"] == old["weights"] and new.get("curves") == old.get("curves")
        assert new["true_box_masks"]["things"] > 0 and new["log"].startswith(new_dir)
    assert summary["floors"]["dataset"] == "synthetic_panoptic_tiny_train_separated"
    assert summary["rescored_from"] == os.path.abspath(out) and summary["rescore_opts"] == other
    assert summary["training_machine"] == source["machine"]
    assert "Rescored: the runs of" in open(os.path.join(new_dir, "summary.md")).read()
    assert json.load(open(os.path.join(new_dir, "summary.json")))["runs"] == summary["runs"]

    again = rescore_summary(out, new_dir, other, python=python, log=lambda m: None)
    assert len(_calls(calls_path)) == trained + len(calls)  # finished evaluations are reused
    assert [r["pq"] for r in again["runs"]] == [r["pq"] for r in summary["runs"]]

    for bad, match in [
        ((out, out, other), "is the source folder"),
        ((out + "_none", new_dir, other), "summary.json cannot be read"),
        ((out, new_dir, other[:1]), "KEY VALUE pairs"),
        ((out, new_dir, ["MODEL.CRBP.TEST_STEPS", "5"]), "is set by the runner"),
    ]:
        with pytest.raises(ValueError, match=match):
            rescore_summary(*bad, python=python, log=lambda m: None)


def test_mask_head_suites_score_every_model_on_the_true_boxes(fake, monkeypatch):
    import crbp_panoptic.experiments.true_boxes as true_boxes

    assert get_suite("longrange").true_box_masks and get_suite("quick_mask").true_box_masks
    assert not get_suite("quick").true_box_masks
    python, calls_path, out = fake
    suite = _tiny_suite(arms=("ff", "crbp:T"), true_box_masks=True)
    summary = run_plan(plan_suite(suite, [0], out), python=python, log=lambda m: None)
    assert summary["true_box_masks"] is True
    assert [(r["arm"], r["test_steps"]) for r in summary["runs"]] == [
        ("ff", None), ("crbp:3", 3), ("crbp:3", 9)
    ]  # fmt: skip
    dirs = [os.path.join(out, "runs", "ff", "seed0"), os.path.join(out, "runs", "crbp_3", "seed0")]
    dirs.append(os.path.join(dirs[1], "test_steps9"))
    for r, d in zip(summary["runs"], dirs):
        probe = r["true_box_masks"]
        assert probe["things"] > 0 and 0.0 <= probe["iou_median"] <= 1.0, probe
        with open(os.path.join(d, "true_box_masks.json")) as f:
            assert json.load(f) == probe
    assert "true-box mask IoU, seeds 0" in open(os.path.join(out, "summary.md")).read()

    def fail(*args):
        raise AssertionError("scored again")

    monkeypatch.setattr(true_boxes, "true_box_masks", fail)  # a rerun reads what was kept
    again = run_plan(plan_suite(suite, [0], out), python=python, log=lambda m: None)
    assert [r["true_box_masks"] for r in again["runs"]] == [
        r["true_box_masks"] for r in summary["runs"]
    ]


def test_a_failed_run_is_recorded_not_dropped_and_retried_on_rerun(fake, monkeypatch):
    python, calls_path, out = fake
    suite = _tiny_suite(arms=("ff", "bptt:1", "crbp:T"))
    monkeypatch.setenv("FAKE_FAIL", os.path.join("crbp_3", "seed1"))
    summary = run_plan(plan_suite(suite, [0, 1], out), python=python, log=lambda m: None)
    failed = [r for r in summary["runs"] if r["status"] == "failed"]
    assert [(r["arm"], r["seed"], r["steps_multiple"]) for r in failed] == [
        ("crbp:3", 1, 1),
        ("crbp:3", 1, 3),
    ]
    assert "exit code 3" in failed[0]["error"] and "simulated failure" in failed[0]["error"]
    assert failed[0]["log"].endswith(os.path.join("crbp_3", "seed1", "stdout.txt"))
    assert os.path.isfile(failed[0]["log"]) and failed[0]["pq"] is None
    assert len(summary["runs"]) == 10 and sum(r["status"] == "ok" for r in summary["runs"]) == 8
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["runs"] == summary["runs"]

    before = len(_calls(calls_path))
    monkeypatch.delenv("FAKE_FAIL")
    summary = run_plan(plan_suite(suite, [0, 1], out), python=python, log=lambda m: None)
    new = [c["argv"] for c in _calls(calls_path)[before:]]
    assert [_opt(a, "OUTPUT_DIR") for a in new] == [
        os.path.join(out, "runs", "crbp_3", "seed1"),
        os.path.join(out, "runs", "crbp_3", "seed1", "test_steps9"),
    ]
    assert all(r["status"] == "ok" for r in summary["runs"]) and len(summary["runs"]) == 10


def test_a_failed_warm_up_stops_the_suite_and_is_recorded(fake, monkeypatch):
    python, calls_path, out = fake
    monkeypatch.setenv("FAKE_FAIL", "warmup")
    with pytest.raises(RuntimeError, match="the warm-up failed .*exit code 3"):
        run_plan(plan_suite(_tiny_suite(), [0], out), python=python, log=lambda m: None)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["warmup"]["status"] == "failed" and summary["runs"] == []
    assert "simulated failure" in summary["warmup"]["error"]
    assert len(_calls(calls_path)) == 1


def _hold_lock(run_dir, pid):
    """Write ``<run_dir>.lock`` as a process ``pid`` of this host would, and a file in
    ``run_dir`` that a rerun would delete."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "mine.txt"), "w") as f:
        f.write("the other process's")
    with open(run_dir + ".lock", "w") as f:
        f.write(f"{socket.gethostname()} {pid}\n")


def test_a_run_that_another_process_is_training_is_left_alone_and_reported(fake):
    python, calls_path, out = fake
    suite = _tiny_suite(arms=("ff", "crbp:T"))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # the warm-up: the suite stops before anything trains, the other call's folder kept
        warmup = os.path.join(out, "warmup")
        _hold_lock(warmup, other.pid)
        with pytest.raises(RuntimeError, match=f"{warmup} is being trained by another process"):
            run_plan(plan_suite(suite, [0], out), python=python, log=lambda m: None)
        assert _calls(calls_path) == [] and os.listdir(warmup) == ["mine.txt"]
        os.remove(warmup + ".lock")
        os.remove(os.path.join(warmup, "mine.txt"))

        # an arm: recorded as failed with the reason, its folder kept, every other run done
        run_dir = os.path.join(out, "runs", "crbp_3", "seed0")
        _hold_lock(run_dir, other.pid)
        summary = run_plan(plan_suite(suite, [0], out), python=python, log=lambda m: None)
        failed = [r for r in summary["runs"] if r["status"] == "failed"]
        assert [(r["arm"], r["steps_multiple"]) for r in failed] == [("crbp:3", 1), ("crbp:3", 3)]
        holder = f"({socket.gethostname()} {other.pid}, {run_dir}.lock)"
        assert f"{run_dir} is being trained by another process {holder}" in failed[0]["error"]
        assert "--warmup-weights" in failed[0]["error"]
        assert os.listdir(run_dir) == ["mine.txt"]
        trained = [_opt(c["argv"], "OUTPUT_DIR") for c in _calls(calls_path)]
        assert run_dir not in trained and os.path.join(out, "runs", "ff", "seed0") in trained
    finally:
        other.kill()
        other.wait()

    # the holder has ended: its lock is stale, the run trains, and no lock is left behind
    summary = run_plan(plan_suite(suite, [0], out), python=python, log=lambda m: None)
    assert all(r["status"] == "ok" for r in summary["runs"]) and len(summary["runs"]) == 3
    assert run_dir in [_opt(c["argv"], "OUTPUT_DIR") for c in _calls(calls_path)]
    assert not os.path.exists(os.path.join(run_dir, "mine.txt"))
    locks = [f for _, _, files in os.walk(out) for f in files if f.endswith(".lock")]
    assert locks == []


def test_given_warmup_weights_that_do_not_fit_fail_before_any_arm_trains(fake, tmp_path, capsys):
    from detectron2.modeling import build_model

    python, calls_path, out = fake
    other = build_model(tiny_cfg(FF_QUICK[len("configs/") :], "MODEL.FPN.OUT_CHANNELS", "16"))
    torch.save({"model": other.state_dict()}, tmp_path / "other.pth")
    plan = plan_suite(_tiny_suite(), [0], out, warmup_weights=str(tmp_path / "other.pth"))
    with pytest.raises(ValueError, match="(?s)warm-up weights .*other.pth.* do not fit arm 'ff'"):
        run_plan(plan, python=python, log=lambda m: None)
    assert _calls(calls_path) == []
    assert not os.path.exists(os.path.join(out, "runs"))

    tool = load_tool("compare_configs")
    argv = ["--suite", "quick", "--seeds", "0", "--output", str(tmp_path / "tool")]
    with pytest.raises(SystemExit) as e:
        tool.main(argv + ["--warmup-weights", str(tmp_path / "other.pth")])
    assert e.value.code == 1
    assert "do not fit arm 'ff'" in capsys.readouterr().err
    assert not (tmp_path / "tool" / "runs").exists()


def test_merge_joins_seeds_run_side_by_side_from_one_warm_up(fake, capsys):
    python, calls_path, out = fake
    suite = _tiny_suite(arms=("ff", "crbp:T"))
    first = run_plan(plan_suite(suite, [0], out), python=python, log=lambda m: None)
    warm = os.path.join(out, "warmup", "model_final.pth")
    second_dir = out + "_s1"
    plan = plan_suite(suite, [1], second_dir, warmup_weights=warm)
    second = run_plan(plan, python=python, log=lambda m: None)
    trained = len(_calls(calls_path))

    tool = load_tool("compare_configs")
    merged_dir = out + "_merged"
    merged = tool.main(["--merge", out, second_dir, "--output", merged_dir])
    assert len(_calls(calls_path)) == trained  # nothing trains again
    assert merged["seeds"] == [0, 1] and merged["suite"] == "tiny"
    assert sorted(map(json.dumps, merged["runs"])) == sorted(
        map(json.dumps, first["runs"] + second["runs"])
    )
    assert [(r["seed"], r["arm"]) for r in merged["runs"]] == [
        (0, "ff"), (0, "crbp:3"), (0, "crbp:3"), (1, "ff"), (1, "crbp:3"), (1, "crbp:3")
    ]  # fmt: skip
    assert merged["warmup"]["status"] == "ok" and merged["warmup"]["weights"] == warm
    runs_s = sum(r["seconds"] for r in merged["runs"])
    assert merged["seconds"]["total"] == pytest.approx(first["warmup"]["seconds"] + runs_s)
    assert merged["merged_from"] == [out, second_dir]
    with open(os.path.join(merged_dir, "summary.json")) as f:
        assert json.load(f) == merged
    table = open(os.path.join(merged_dir, "summary.md")).read()
    pq = {s: _expected_pq("crbp:3", s, 3) for s in (0, 1)}
    assert f"| {pq[0]:.1f} / {pq[1]:.1f} |" in table
    assert os.path.isfile(os.path.join(merged_dir, "pq_vs_steps.png"))
    assert "| C-RBP-3 |" in capsys.readouterr().out

    # Not one comparison, the same run twice, a folder without a summary: errors that say so.
    err = _tool_error(capsys, ["--merge", out, out, "--output", merged_dir + "2"])
    assert "run ('ff', 0, None) (arm, seed, test steps) in" in err
    other = plan_suite(_tiny_suite(arms=("ff", "crbp:T"), iterations=3), [2], out + "_it3",
                       warmup_weights=warm)  # fmt: skip
    run_plan(other, python=python, log=lambda m: None)
    err = _tool_error(capsys, ["--merge", out, out + "_it3", "--output", merged_dir + "3"])
    assert "are not one comparison (iterations: [2] against [3])" in err
    err = _tool_error(capsys, ["--merge", out, out + "_none", "--output", merged_dir + "4"])
    assert "_none/summary.json cannot be read" in err
    assert "--merge needs --output" in _tool_error(capsys, ["--merge", out, second_dir])
    assert not any(os.path.exists(merged_dir + x) for x in "234")


def test_merge_joins_arms_run_as_separate_calls_and_refuses_other_overrides(fake, capsys):
    python, calls_path, out = fake
    suite = _tiny_suite(arms=("ff", "bptt:1", "crbp:T"))
    run_plan(plan_suite(suite, [0], out, arms=["crbp:T"]), python=python, log=lambda m: None)
    warm = os.path.join(out, "warmup", "model_final.pth")
    calls = {}
    for arms in (["bptt:1"], ["ff"]):
        d = calls[arms[0]] = f"{out}_{arms[0].replace(':', '_')}"
        run_plan(plan_suite(suite, [0], d, arms=arms, warmup_weights=warm), python=python,
                 log=lambda m: None)  # fmt: skip

    tool = load_tool("compare_configs")
    merged = tool.main(["--merge", out, calls["bptt:1"], calls["ff"], "--output", out + "_m"])
    assert merged["arms"] == ["ff", "bptt:1", "crbp:3"]  # every arm, in the suite's order
    assert merged["labels"] == {"ff": "feedforward", "bptt:1": "BPTT-1", "crbp:3": "C-RBP-3"}
    assert [r["arm"] for r in merged["runs"]] == ["ff", "bptt:1", "bptt:1", "crbp:3", "crbp:3"]
    table = open(os.path.join(out + "_m", "summary.md")).read()
    assert all(f"| {label} |" in table for label in ("feedforward", "BPTT-1", "C-RBP-3"))

    # the same arms with another override (not the seed, not the rule) are another comparison
    other = out + "_lr"
    plan = plan_suite(suite, [1], other, arms=["ff"], warmup_weights=warm,
                      opts=["SOLVER.BASE_LR", "0.02"])  # fmt: skip
    run_plan(plan, python=python, log=lambda m: None)
    err = _tool_error(capsys, ["--merge", out, other, "--output", out + "_m2"])
    assert "are not one comparison (the runs' overrides differ: SOLVER.BASE_LR" in err
    assert not os.path.exists(out + "_m2")


# --- end to end: real tools/train_net.py children ----------------------------------------------


def test_tiny_suite_end_to_end_eval_only_reproduces_every_entry(tmp_path):
    import subprocess

    from crbp_panoptic.engine.results import parse_copypaste

    suite = _tiny_suite(
        arms=("ff", "crbp:T"),
        warmup_iterations=20,
        opts=tuple(_tiny_opts("SOLVER.BASE_LR", "0.02")),
    )
    out = str(tmp_path / "suite")
    summary = run_plan(plan_suite(suite, [0], out), log=lambda m: None)
    runs = summary["runs"]
    assert [(r["arm"], r["steps_multiple"], r["status"]) for r in runs] == [
        ("ff", 1, "ok"),
        ("crbp:3", 1, "ok"),
        ("crbp:3", 3, "ok"),
    ]
    assert max(r["pq"] for r in runs) > 0  # the comparison below is not 0 against 0

    # The arm started at iteration 0 from the warm-up, whose checkpoint lacks only the refiner.
    with open(os.path.join(out, "runs", "crbp_3", "seed0", "log.txt")) as f:
        log = f.read()
    assert "Starting training from iteration 0" in log
    assert "not found in the checkpoint" in log and "fpn_lateral3.recurrent.cell" in log

    env = dict(os.environ, PYTHONPATH=str(REPO))
    for r in runs:
        eval_dir = str(tmp_path / f"again_{r['arm'].replace(':', '_')}_{r['steps_multiple']}")
        cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--eval-only"]
        cmd += ["--config-file", r["config"], *r["opts"], "MODEL.WEIGHTS", r["weights"]]
        cmd += ["OUTPUT_DIR", eval_dir]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        with open(os.path.join(eval_dir, "log.txt")) as f:
            assert parse_copypaste(f.read())["panoptic_seg"]["PQ"] == r["pq"]


# --- floors and the plot -----------------------------------------------------------------------


def test_floor_of_a_split_that_is_not_synthetic_says_why_it_is_missing():
    floors = suite_floors("coco_2017_val_panoptic_separated")
    assert floors["grouping_free_mask_iou"] is None
    assert "not a synthetic split" in floors["reason"]


def _summary_for_plot(status="ok"):
    runs = []
    for seed in (0, 1, 2):
        runs.append({"arm": "ff", "seed": seed, "steps_multiple": 1, "test_steps": None})
        runs[-1]["pq"] = 70.0 + seed
        for arm, base, T in (("bptt:1", 68.0, 1), ("crbp:10", 75.0, 10)):
            for m in (1, 3):
                runs.append({"arm": arm, "seed": seed, "steps_multiple": m, "test_steps": m * T})
                runs[-1]["pq"] = base - m + seed
    for r in runs:
        r["status"] = status
    return {
        "suite": "quick",
        "arms": ["ff", "bptt:1", "crbp:10"],
        "labels": {"ff": "feedforward", "bptt:1": "BPTT-1", "crbp:10": "C-RBP-10"},
        "multiples": [1, 3],
        "runs": runs,
    }


def test_plot_pq_vs_steps_writes_a_png(tmp_path):
    from PIL import Image

    path = str(tmp_path / "pq_vs_steps.png")
    assert plot(_summary_for_plot(), path) == path
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    nothing = str(tmp_path / "none.png")
    assert plot(_summary_for_plot("failed"), nothing) is None
    assert not os.path.exists(nothing)


# --- the command line --------------------------------------------------------------------------


def test_compare_configs_flags_and_output_dir_alias(tmp_path, capsys):
    tool = load_tool("compare_configs")
    _, args = tool.parse_args(["--configs", FF_QUICK, "--output-dir", "x", "SOLVER.BASE_LR", "1"])
    assert (args.configs, args.output, args.opts) == ([FF_QUICK], "x", ["SOLVER.BASE_LR", "1"])
    _, args = tool.parse_args(["--suite", "quick", "--seeds", "0", "1", "2", "--output", "y"])
    assert (args.suite, args.seeds, args.output) == ("quick", [0, 1, 2], "y")
    _, args = tool.parse_args(["--config-file", FPN_QUICK, "--arms", "bptt:3", "crbp:10"])
    assert args.arms == ["bptt:3", "crbp:10"] and args.test_steps == ()
    err = _tool_error(capsys, ["--configs", FF_QUICK, "--warmup-weights", "w.pth"])
    assert "--warmup-weights can only be used with --suite" in err
    err = _tool_error(capsys, ["--configs", FF_QUICK, "--arms", "crbp:3"])
    assert "--arms goes with --config-file (its rules) or --suite" in err
    assert "--config-file needs --arms" in _tool_error(capsys, ["--config-file", FPN_QUICK])
    err = _tool_error(capsys, ["--suite", "quick", "--arms", "crbp:3", "--output", str(tmp_path)])
    assert "arms ['crbp:3']: allowed: distinct arms of suite 'quick', ff, bptt:1, bptt:3" in err
    err = _tool_error(capsys, ["--config-file", FPN_QUICK, "--arms", "ff", "crbp:3"])
    assert "need distinct recurrent arms" in err
    _, args = tool.parse_args(["--suite", "quick", "--jobs", "2"])
    assert (args.jobs, tool.parse_args(["--suite", "quick"])[1].jobs) == (2, 1)
    err = _tool_error(capsys, ["--suite", "quick", "--jobs", "0"])
    assert "--jobs 0: expected an integer >= 1" in err
    _, args = tool.parse_args(["--rescore", "a", "--output", "b", "DATASETS.TEST", "('t',)"])
    assert (args.rescore, args.output, args.opts) == ("a", "b", ["DATASETS.TEST", "('t',)"])
    assert "--rescore needs --output" in _tool_error(capsys, ["--rescore", "a"])
    err = _tool_error(capsys, ["--rescore", "a", "--output", "b", "--iterations", "5"])
    assert "--rescore evaluates the runs at their recorded test steps" in err
    err = _tool_error(capsys, ["--rescore", str(tmp_path / "none"), "--output", "b"])
    assert "none/summary.json cannot be read" in err
    with pytest.raises(SystemExit):
        tool.main(["--help"])
    assert "Train and compare Panoptic FPN configs over seeds" in capsys.readouterr().out


# --- the other ways to name arms ---------------------------------------------------------------


def test_rule_arms_train_one_recurrent_config_and_evaluate_on_a_grid(tmp_path):
    arms = rule_arms(FPN_QUICK, ["bptt:3", "crbp:10:sub0.25"])
    assert [(a.name, a.label, a.steps) for a in arms] == [
        ("bptt:3", "BPTT-3", 3),
        ("crbp:10:sub0.25", "C-RBP-10 (LCP on 25% of rows)", 10),
    ]
    plan = Plan("rules", arms, [0], str(tmp_path), iterations=60, test_steps=[1, 5, 9])
    bptt, crbp = plan.runs
    assert bptt.test_steps == [3, 1, 5, 9] and crbp.test_steps == [10, 1, 5, 9, 30]
    assert crbp.run_dir == str(tmp_path / "runs" / "crbp_10_sub0.25" / "seed0")
    assert (_opt(crbp.opts, "MODEL.CRBP.LCP_SUBSAMPLE"), _opt(crbp.opts, "SEED")) == ("0.25", "0")
    assert _opt(crbp.opts, "SOLVER.STEPS") == "(50,)"  # the quick configs decay at 250 of 300
    assert crbp.eval_opts(10) == crbp.opts and _opt(crbp.opts, "MODEL.CRBP.TEST_TOL") == "0.0"
    assert _opt(crbp.eval_opts(5), "MODEL.CRBP.TEST_STEPS") == "5"
    with pytest.raises(ValueError, match="need distinct recurrent arms"):
        rule_arms(FPN_QUICK, ["crbp:3", "crbp:3"])
    with pytest.raises(ValueError, match="panoptic_fpn_R_18_quick.yaml' has no recurrent module"):
        rule_arms(FF_QUICK, ["crbp:3"])
    with pytest.raises(ValueError, match=r"test steps \[0\]"):
        Plan("rules", arms, [0], str(tmp_path), test_steps=[0])


def test_config_arms_keep_each_configs_own_rule():
    ff, mask = config_arms([FF_LONG, MASK_LONG])
    assert (ff.name, ff.steps, ff.opts) == ("longrange_panoptic_fpn_R_18", None, ())
    assert (mask.name, mask.steps, mask.opts) == ("longrange_panoptic_crbp_mask_R_18", 20, ())
    plan = Plan("configs", [ff, mask], [1], "out")
    assert [r.test_steps for r in plan.runs] == [[], [20, 60]]
    assert "MODEL.CRBP.TEST_STEPS" not in plan.runs[1].eval_opts(20)  # the config's own rule
    assert _opt(plan.runs[1].eval_opts(60), "MODEL.CRBP.TEST_TOL") == "0.0"
    with pytest.raises(ValueError, match="share a file name"):
        config_arms([FF_LONG, FF_LONG])


def test_rule_arms_with_residual_curves_report_and_plot(fake, tmp_path):
    python, calls_path, out = fake
    arms = rule_arms(FPN_QUICK, ["bptt:1", "crbp:2"], _tiny_opts())
    plan = Plan("rules", arms, [0], out, opts=_tiny_opts(), test_steps=[3], residual_images=1)
    summary = run_plan(plan, python=python, log=lambda m: None)
    got = [(r["arm"], r["test_steps"], r["steps_multiple"]) for r in summary["runs"]]
    assert got == [("bptt:1", 1, 1), ("bptt:1", 3, 3), ("crbp:2", 2, 1), ("crbp:2", 3, 1.5)] + [
        ("crbp:2", 6, 3)
    ]
    for r in summary["runs"]:
        assert r["pq"] == pytest.approx(_expected_pq(r["arm"], 0, r["test_steps"]))
    curves = [r["residual"] for r in summary["runs"] if "residual" in r]
    assert len(curves) == 2  # once per trained run, on its entry at T
    levels = {f"backbone.fpn_lateral{k}.recurrent" for k in (3, 4, 5)}
    for c in curves:
        assert set(c) == levels | {"mean"}
        assert len(c["mean"]["residual"]) == 4 and c["mean"]["residual"][0] == pytest.approx(1.0)
    crbp = next(r for r in summary["runs"] if r["arm"] == "crbp:2")["residual"]["mean"]
    assert crbp["drift"][1] == 0  # the drift is measured from the trained steps T = 2
    text = open(os.path.join(out, "summary.md")).read()
    assert "| residual | drift |" in text and "| C-RBP-2 | mean |" in text
    assert "| 6 (3T) |" in text and "| 3 (1.5T) |" in text
    assert os.path.isfile(os.path.join(out, "pq_vs_steps.png"))
    assert summary["warmup"] is None and not [c for c in _calls(calls_path) if "warmup" in str(c)]
