"""crbp_panoptic.pathfinder.train / report: floors, metrics, the metrics.json contract."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from crbp_panoptic.pathfinder.model import confusion
from crbp_panoptic.pathfinder.train import (
    SCALES,
    floors,
    geodesic_distance,
    held_out_data,
    run_experiment,
)

TINY = dict(
    size=32,
    path_length=4,
    distractors=1,
    channels=5,
    kernel_size=3,
    gabor_size=5,
    iters=2,
    batch=2,
    n_train=4,
    n_test=4,
    log_every=1,
)


def _tiny(tmp_path, **kw):
    return dataclasses.replace(SCALES["cpu"], data_root=str(tmp_path / "data"), **{**TINY, **kw})


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


def test_metrics_json_contract(tmp_path):
    out = tmp_path / "run"
    summary = run_experiment(_tiny(tmp_path), ["crbp:3", "bptt:2"], str(out), log=lambda m: None)
    with open(out / "metrics.json") as fh:
        m = json.load(fh)
    assert m == json.loads(json.dumps(summary))
    assert set(m["floor"]) == {"all_paths", "connectivity_oracle"}
    assert all(isinstance(v, float) for v in m["floor"].values())
    assert set(m["arms"]) == {"crbp:3", "bptt:2"}
    for arm in m["arms"].values():
        for key in ("iou", "f1"):
            assert set(arm[key]) == {"T", "2T", "3T"} and all(
                0 <= v <= 1 for v in arm[key].values()
            )
    table = (out / "table.md").read_text()
    assert "every path" in table and "oracle" in table and "C-RBP-3" in table
    assert (out / "crbp_3" / "model.pt").exists()


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
