"""crbp_panoptic.pathfinder.report: the Neumann statistics of a training history."""

from crbp_panoptic.pathfinder.report import neumann_summary


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
        "at_most_one": 2,
    }


def test_neumann_summary_is_empty_for_bptt():
    assert neumann_summary([{"iter": 400, "neumann": None, "neumann_cut": None}]) == {}
