"""crbp_panoptic.pathfinder.report: the Neumann statistics of a training history, the
penalty arm, and the one-step-gradient control's comparison."""

import pytest

from crbp_panoptic.pathfinder.report import (
    ONE_STEP_MATCH,
    far_recall,
    neumann_summary,
    one_step_comparisons,
    penalty_arm,
    table,
)


def test_neumann_summary_counts_cut_and_short_series_after_the_warm_up():
    history = [
        {"iter": 100, "neumann": 0, "neumann_cut": True},  # before from_iter: ignored
        {"iter": 300, "neumann": 15, "neumann_cut": False},
        {"iter": 325, "neumann": 1, "neumann_cut": True},
        {"iter": 350, "neumann": 0, "neumann_cut": True},
        {"iter": 375, "neumann": 4, "neumann_cut": True},
    ]
    assert neumann_summary(history, from_iter=300) == {
        "from_iter": 300,
        "logged": 4,
        "cut": 3,
        "guard_cut_share": 0.75,
        "at_most_one": 2,
        # a history without stop reasons counts only the guard's
        "stops": {"cap": 0, "tolerance": 0, "guard": 3, "zero": 0},
        "mean_terms": 5.0,
    }


def test_neumann_summary_counts_every_stop_reason():
    history = [
        {"iter": 1, "neumann": 15, "neumann_cut": False, "neumann_stop": "cap"},
        {"iter": 2, "neumann": 6, "neumann_cut": False, "neumann_stop": "tolerance"},
        {"iter": 3, "neumann": 0, "neumann_cut": True, "neumann_stop": "guard"},
        {"iter": 4, "neumann": 1, "neumann_cut": False, "neumann_stop": "zero"},
    ]
    n = neumann_summary(history, from_iter=2)
    assert n["stops"] == {"cap": 0, "tolerance": 1, "guard": 1, "zero": 1}
    assert n["guard_cut_share"] == pytest.approx(1 / 3)


def test_neumann_summary_is_empty_for_bptt():
    assert neumann_summary([{"iter": 400, "neumann": None, "neumann_cut": None}]) == {}


def test_penalty_arm_is_the_spectral_arm():
    assert penalty_arm(["crbp:20", "bptt:6", "crbp:20:spectral"]) == "crbp:20:spectral"
    assert penalty_arm(["crbp:20:spectral:k0", "crbp:20:spectral"]) == "crbp:20:spectral"
    assert penalty_arm(["crbp:20", "bptt:6"]) is None


def _summary(one_step_iou, crbp_iou, floor=0.37):
    def arm(label, iou):
        return {
            "label": label,
            "iou": {"T": iou, "2T": iou, "3T": iou},
            "f1": {"T": iou, "2T": iou, "3T": iou},
            "residual": {"T": 1e-3, "3T": 1e-4},
            "best_iou": iou,
            "best_step": 1,
            "saved_tensor_bytes": 2**20,
            "train_time_s": 60.0,
        }

    summary = {
        "floor": {"all_paths": floor, "connectivity_oracle": 1.0},
        "floor_f1": {"all_paths": 0.5, "connectivity_oracle": 1.0},
        "arms": {
            "crbp:20": arm("C-RBP-20", crbp_iou),
            "crbp:20:k0": arm("C-RBP-20 (one-step gradient)", one_step_iou),
            "bptt:6": arm("BPTT-6", 0.7),
        },
        "settings": {
            "size": 48,
            "path_length": 7,
            "dash_length": 4.0,
            "gap": 1.0,
            "thickness": 2.0,
            "distractors": 2,
            "min_separation": 4.0,
            "dot_clearance": 6.0,
            "channels": 10,
            "kernel_size": 5,
            "variant": "pathfinder",
            "norm": "BN",
            "norm_gain": 1.0,
            "drive_gain": 10.0,
            "iters": 1000,
            "batch": 16,
            "n_test": 256,
            "lcp_tau": 0.9,
        },
        "device": "cpu",
    }
    summary["one_step"] = one_step_comparisons(summary)
    return summary


def test_the_report_says_whether_the_one_step_control_matches_c_rbp():
    same = _summary(0.885, 0.88)
    (c,) = same["one_step"]
    assert (c["arm"], c["twin"], c["matches"]) == ("crbp:20:k0", "crbp:20", True)
    assert c["difference"] == pytest.approx(0.005)
    assert "the Neumann terms are not what makes C-RBP-20 trace" in table(same)

    apart = _summary(0.80, 0.88)
    assert apart["one_step"][0]["matches"] is False and ONE_STEP_MATCH < 0.08
    text = table(apart)
    assert "differs from C-RBP-20 by -0.080 IoU at T" in text and "not what makes" not in text

    untrained = _summary(0.1, 0.1)  # both below the every-path floor: no claim
    text = table(untrained)
    assert "says nothing about what makes it trace" in text and "not what makes" not in text
    assert one_step_comparisons({"arms": {"crbp:20:k0": same["arms"]["crbp:20:k0"]}}) == []


def test_at_multiples_clamps_to_the_trajectory_and_load_arms_names_an_empty_folder(tmp_path):
    from crbp_panoptic.pathfinder.report import at_multiples, load_arms

    traj = {"iou": [0.1, 0.2, 0.3, 0.4, 0.5]}
    assert at_multiples(traj, 2, "iou") == {"T": 0.2, "2T": 0.4, "3T": 0.5}
    with pytest.raises(FileNotFoundError, match="no \\*/metrics.json under"):
        load_arms(str(tmp_path))


def test_far_recall_pools_the_bins_beyond_the_edge_weighted_by_pixels():
    profile = {
        "bins": [0, 20, 40, 60, 1000],
        "pixels": [10.0, 10.0, 6.0, 4.0],
        "20": [1.0, 1.0, 0.5, 0.25],
        "60": [1.0, 1.0, 1.0, 1.0],
    }
    recall, share = far_recall(profile)  # the fewest recorded steps: T = 20
    assert recall == pytest.approx((6 * 0.5 + 4 * 0.25) / 10) and share == pytest.approx(10 / 30)
    assert far_recall(profile, 60) == (pytest.approx(1.0), pytest.approx(10 / 30))
    assert far_recall(profile, from_px=60)[0] == pytest.approx(0.25)
    assert far_recall(None) is None
    assert far_recall({**profile, "pixels": [10.0, 10.0, 0.0, 0.0]}) is None
    with pytest.raises(ValueError, match="from_px=50; must be a bin edge"):
        far_recall(profile, from_px=50)
