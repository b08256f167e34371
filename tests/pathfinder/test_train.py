"""crbp_panoptic.pathfinder.train / report: floors, metrics, the metrics.json contract."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from crbp_panoptic.pathfinder.generator import PathfinderConfig
from crbp_panoptic.pathfinder.model import confusion
from crbp_panoptic.pathfinder.train import (
    GENERATOR_DEFAULTS,
    SCALES,
    Settings,
    build_model,
    check_settings,
    floors,
    geodesic_distance,
    held_out_data,
    run_experiment,
    run_length_sweep,
    write_length_report,
)

# The smoke preset, with one iteration fewer and telemetry from the first iteration.
TINY = dict(iters=2, telemetry_from_iter=1)


def _tiny(tmp_path, **kw):
    return dataclasses.replace(SCALES["smoke"], data_root=str(tmp_path / "data"), **{**TINY, **kw})


def test_floors_every_path_falls_with_distractors_and_the_oracle_is_exact(tmp_path):
    def floor(distractors):
        s = _tiny(tmp_path, size=48, path_length=7, distractors=distractors, n_test=16)
        return floors(held_out_data(s))

    alone, two = floor(0), floor(2)
    # only the target and its dot: marking all ink is the answer
    assert alone["all_paths"]["iou"] > 0.99
    assert 0.1 < two["all_paths"]["iou"] < 0.6 and two["all_paths"]["f1"] < 0.75
    for fl in (alone, two):
        assert fl["connectivity_oracle"]["iou"] > 0.99 and fl["connectivity_oracle"]["f1"] > 0.99


def test_pooled_counts_differ_from_the_per_image_mean():
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 0, :] = 1  # 4 target pixels
    target[1, 0, 0, 0] = 1  # 1 target pixel
    logits = -torch.ones(2, 1, 4, 4)
    logits[0, 0, 0, :] = 1  # image 0: perfect
    logits[1, 0, 1, :] = 1  # image 1: 4 false positives, 1 miss
    c = confusion(logits, target)
    assert c.tolist() == [[4, 0, 0], [0, 4, 1]]
    tp, fp, fn = c.sum(0).tolist()
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(8 / 13)  # pooled, not (1 + 0) / 2


def test_geodesic_distance_follows_the_mask():
    mask = np.zeros((5, 7), bool)
    mask[1, 1:6] = True
    mask[2:4, 5] = True
    d = geodesic_distance(mask, (1.0, 1.0))
    assert d[1, 1] == 0 and d[1, 5] == 4 and d[2, 5] == 4 and d[3, 5] == 5 and d[0, 0] == -1
    assert (geodesic_distance(mask, (0.0, 0.0)) == -1).all()


def check_length_contract(m: dict, arms, penalty):
    """The contract of one path length's metrics.json (a single-length run's, and each
    entry of a length sweep's)."""
    assert set(m["floor"]) == {"all_paths", "connectivity_oracle"}
    assert all(isinstance(v, float) for v in m["floor"].values())
    assert m["penalty_arm"] == penalty
    assert set(m["arms"]) == set(arms)
    for name, arm in m["arms"].items():
        for key in ("iou", "f1"):
            assert set(arm[key]) == {"T", "2T", "3T"} and all(
                0 <= v <= 1 for v in arm[key].values()
            )
        assert set(arm["residual"]) == {"T", "3T"}
        assert all(isinstance(v, float) and v >= 0 for v in arm["residual"].values())
        assert isinstance(arm["adjoint_growth"], float) and arm["adjoint_growth"] > 0
        if name.startswith("bptt"):  # no Neumann series
            assert arm["guard_cut_share"] is None
        else:
            assert 0 <= arm["guard_cut_share"] <= 1


def test_metrics_json_contract(tmp_path):
    out = tmp_path / "run"
    arms = ["crbp:3", "bptt:2", "crbp:3:spectral"]
    summary = run_experiment(_tiny(tmp_path), arms, str(out), log=lambda m: None)
    with open(out / "metrics.json") as fh:
        m = json.load(fh)
    assert m == json.loads(json.dumps(summary))
    check_length_contract(m, arms, "crbp:3:spectral")
    table = (out / "table.md").read_text()
    assert "every path" in table and "oracle" in table and "C-RBP-3" in table
    assert "C-RBP-3 (spectral penalty)" in table and "guard-cut share" in table
    assert (out / "crbp_3" / "model.pt").exists()
    # the per-iteration telemetry behind the share
    with open(out / "crbp_3_spectral" / "metrics.json") as fh:
        history = json.load(fh)["history"]
    assert [h["iter"] for h in history] == [1, 2]
    for h in history:
        assert h["neumann_stop"] in ("cap", "tolerance", "guard", "zero")
        assert isinstance(h["neumann_residual"], float) and isinstance(h["residual"], float)
        assert isinstance(h["lcp_growth"], float) and h["lcp_growth"] > 0
    with open(out / "crbp_3" / "metrics.json") as fh:
        assert json.load(fh)["history"][0]["lcp_growth"] is None  # colsum: no growth


def test_length_sweep_cli_writes_the_contract_and_the_curve(tmp_path, capsys):
    from PIL import Image

    from tests.tiny import load_tool

    tool = load_tool("train_pathfinder")
    out, arms = tmp_path / "lengths", ["bptt:2", "crbp:3", "crbp:3:spectral"]
    flags = ["--scale", "smoke", "--data-root", str(tmp_path / "data"), "--output", str(out)]
    tool.main([*flags, "--lengths", "3", "5", "--arms", *arms])
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["lengths"]) == {"3", "5"}
    assert m["arms"] == arms and m["penalty_arm"] == "crbp:3:spectral"
    assert m["wall_time_s"] > 0 and m["paper"]["lengths"] == [14, 20, 25]
    for length, per in m["lengths"].items():
        check_length_contract(per, arms, "crbp:3:spectral")
        assert per["settings"]["path_length"] == int(length)
        assert per == json.loads((out / f"L{length}" / "metrics.json").read_text())
    with Image.open(out / "length_curve.png") as png:
        assert png.format == "PNG" and png.size[0] > 100
    table = (out / "table.md").read_text()
    assert "3 dashes | 5 dashes" in table and "C-RBP-3 (spectral penalty)" in table
    assert "3 dashes" in capsys.readouterr().out
    # the report alone, from what the sweep left
    (out / "metrics.json").unlink()
    tool.main(["--out", str(out), "--lengths", "3", "5", "--report-only"])  # the old spelling
    again = json.loads((out / "metrics.json").read_text())
    assert set(again["lengths"]) == {"3", "5"} and again["arms"] == arms


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--lengths", "3", "9"], "--lengths=9; --size=32 holds paths of 1 to 5 dashes"),
        (["--lengths", "3", "9"], "9 dashes need --size >= "),
        (["--lengths", "0"], "--lengths=0; expected an integer >= 1"),
        (["--lengths", "3", "3"], "--lengths=[3, 3]; expected distinct"),
        (["--path-length", "9"], "--path-length=9; --size=32 holds paths of 1 to 5 dashes"),
        (["--neumann-steps", "-1"], "--neumann-steps=-1; expected an integer >= 0"),
        (["--arms", "crbp:3:k-1"], "option 'k-1' must be kN with N an integer >= 0"),
        (["--arms", "crbp:3:power"], "unknown option 'power'"),
        (["--arms", "bptt:3:spectral"], "needs a penalised mode"),
        (["--loss", "l2"], "--loss='l2'; choose from"),
        (["--dilation", "0"], "--dilation=0; expected an integer >= 1"),
        (["--path-length", "4", "--lengths", "3"], "give one"),
    ],
)
def test_cli_bad_input_fails_before_anything_is_written(tmp_path, argv, words):
    from tests.tiny import load_tool

    out = tmp_path / "never"
    with pytest.raises(SystemExit) as err:
        load_tool("train_pathfinder").main(
            ["--scale", "smoke", "--data-root", str(tmp_path / "data"), "--out", str(out), *argv]
        )
    assert words in str(err.value)
    assert not out.exists() and not (tmp_path / "data").exists()


def test_library_checks_name_the_field_and_the_range(tmp_path):
    s = _tiny(tmp_path)
    with pytest.raises(ValueError, match=r"lengths=6; size=32 holds paths of 1 to 5 dashes"):
        run_length_sweep(s, ["crbp:2"], [4, 6], str(tmp_path / "x"), log=lambda m: None)
    with pytest.raises(ValueError, match=r"neumann_steps=-2; expected an integer >= 0"):
        run_experiment(dataclasses.replace(s, neumann_steps=-2), ["crbp:2"], str(tmp_path / "y"))
    with pytest.raises(ValueError, match=r"arms=\['crbp:2', 'crbp:2'\]; expected one or more"):
        run_experiment(s, ["crbp:2", "crbp:2"], str(tmp_path / "z"))
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z", "data"))
    labels = {"path_length": "--path-length", "size": "--size"}
    with pytest.raises(ValueError, match=r"--path-length=9; --size=48 holds paths of 1 to 8"):
        check_settings(dataclasses.replace(SCALES["cpu"], path_length=9), labels)
    check_settings(SCALES["cpu"])  # the presets hold their own lengths
    check_settings(SCALES["gpu"])
    check_settings(SCALES["smoke"])


def test_time_limit_stops_training_and_the_table_says_so(tmp_path):
    out = tmp_path / "run"
    s = _tiny(tmp_path, iters=50, log_every=100, time_limit=1e-6)  # spent after one iteration
    logs = []
    summary = run_experiment(s, ["bptt:2"], str(out), log=logs.append)
    metrics = json.loads((out / "bptt_2" / "metrics.json").read_text())
    assert metrics["iters_run"] == 1 and [h["iter"] for h in metrics["history"]] == [1]
    # what the run ran on, as every comparison records it (the CPU kernels, the packages)
    assert metrics["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert metrics["machine"]["packages"]["numpy"] == np.__version__
    assert summary["arms"]["bptt:2"]["iters_run"] == 1
    assert any("time limit of 1e-06 s: stopping after 1 of 50" in m for m in logs)
    assert (
        "Stopped early (time limit or a non-finite loss), iterations done: BPTT-2 1."
        in (out / "table.md").read_text()
    )
    full = run_experiment(_tiny(tmp_path, iters=3), ["bptt:2"], str(tmp_path / "full"), log=print)
    assert full["arms"]["bptt:2"]["iters_run"] == 3
    assert "Stopped early" not in (tmp_path / "full" / "table.md").read_text()


def test_bad_arm_is_named(tmp_path):
    with pytest.raises(ValueError, match="arm"):
        run_experiment(_tiny(tmp_path), ["ff"], str(tmp_path / "x"), log=lambda m: None)


def test_cli_writes_the_contract_and_names_bad_input(tmp_path, capsys):
    from tests.tiny import load_tool

    tool = load_tool("train_pathfinder")
    flags = [
        "--size",
        "32",
        "--path-length",
        "4",
        "--distractors",
        "1",
        "--channels",
        "5",
        "--kernel-size",
        "3",
        "--gabor-size",
        "5",
        "--iters",
        "2",
        "--batch",
        "2",
        "--n-train",
        "4",
        "--n-test",
        "4",
        "--data-root",
        str(tmp_path / "data"),
    ]
    tool.main(["--scale", "cpu", "--arms", "crbp:2", "--out", str(tmp_path / "o"), *flags])
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert set(m["floor"]) == {"all_paths", "connectivity_oracle"} and "crbp:2" in m["arms"]
    assert m["settings"]["size"] == 32 and m["settings"]["kernel_size"] == 3
    assert "every path" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="arm"):
        tool.main(["--arms", "crbp", "--out", str(tmp_path / "x"), *flags])


def test_settings_take_the_generator_fields_from_the_generator_and_keep_its_cache_keys():
    generator = {f.name: f.type for f in dataclasses.fields(PathfinderConfig)}
    fields = dataclasses.fields(Settings)
    held = [f.name for f in fields[: len(GENERATOR_DEFAULTS)]]
    assert held == [n for n in generator if n not in ("margin", "max_tries")]
    assert all(f.type == generator[f.name] for f in fields[: len(held)])
    assert not set(generator) & {f.name for f in fields[len(held) :]}
    # the folders of cached images (named by the generator's digest), as before
    digests = {k: s.generator_config().digest() for k, s in SCALES.items()}
    assert digests == {"cpu": "3fc75b9ab7f9", "gpu": "9082f4c711b6", "smoke": "76222da1ae92"}
    wider = dataclasses.replace(SCALES["cpu"], dot_radius=4.0).generator_config()
    assert wider.margin == 5.0 and wider.digest() == "aeb52389027e"
    # metrics.json's settings: the same flat keys, read back to the same settings
    flat = dataclasses.asdict(SCALES["gpu"])
    assert list(flat)[:3] == ["size", "path_length", "dash_length"] and len(flat) == 38
    assert Settings.from_dict({**flat, "unknown": 1}) == SCALES["gpu"]


def test_dilation_reaches_the_cell_and_the_report(tmp_path):
    plain = build_model(SCALES["smoke"], "crbp:2").refiner.cell
    assert plain.w_inh.dilation == plain.w_exc.dilation == (1, 1)
    s = _tiny(tmp_path, dilation=2)
    cell = build_model(s, "crbp:2").refiner.cell
    assert cell.w_inh.dilation == cell.w_exc.dilation == (2, 2)
    assert cell.w_inh.weight.shape == plain.w_inh.weight.shape  # same parameters
    run = tmp_path / "o" / f"L{s.path_length}"
    run_experiment(s, ["crbp:2"], str(run), log=lambda m: None)
    m = json.loads((run / "metrics.json").read_text())
    assert m["settings"]["dilation"] == 2
    assert "kernel 3 dilated 2," in (run / "table.md").read_text()
    # a length sweep's table names it too
    write_length_report(str(tmp_path / "o"), [s.path_length])
    length_md = (tmp_path / "o" / "table.md").read_text()
    assert "px, kernel 3 dilated 2, " in length_md
    assert "| recall at >= 40 px from the dot, at T (share of the target) |" in length_md
