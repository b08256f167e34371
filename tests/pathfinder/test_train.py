"""crbp_panoptic.pathfinder.train: the trivial "every path" floor of the report."""
import dataclasses

from crbp_panoptic.pathfinder.train import SCALES, all_paths_iou


def test_all_paths_floor_falls_with_every_distractor():
    def floor(distractors):
        s = dataclasses.replace(SCALES["cpu"], distractors=distractors,
                                near_distractors=min(distractors, 1), n_test=16)
        return all_paths_iou(s)

    alone, one, two = floor(0), floor(1), floor(2)
    assert alone > 0.6  # only the target path and its dot: marking every dash is nearly right
    assert alone > one > two > 0.1
