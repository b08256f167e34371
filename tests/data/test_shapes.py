"""The quick synthetic data (kind "shapes"): deterministic images with things and stuff,
touching and occluding."""

import numpy as np
import pytest

from crbp_panoptic.data import (
    render_sample,
    split_paths,
)

from tests.data.common import NUM_IMAGES, SIZE, STUFF_IDS, THING_IDS, load_json, validate


def test_render_is_deterministic():
    a, b = render_sample(5, "train", SIZE, 7), render_sample(5, "train", SIZE, 7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    assert a.segments_info == b.segments_info
    for other in (render_sample(5, "train", SIZE, 8), render_sample(5, "val", SIZE, 7)):
        assert not np.array_equal(a.image, other.image)


def test_content_things_stuff_empty_images_and_occlusion(split_dir):
    stats = validate(split_dir)
    assert stats["thing_segments"] > 0 and stats["stuff_segments"] > 0
    assert stats["images_without_things"] == 1  # image 3
    pan = load_json(split_paths(split_dir).panoptic_json)
    cats = {s["category_id"] for a in pan["annotations"] for s in a["segments_info"]}
    assert THING_IDS <= cats and len(cats & set(STUFF_IDS)) >= 2
    # Occlusion: somewhere two things touch (4-neighbours with different thing ids).
    touching = False
    for i in range(NUM_IMAGES):
        s = render_sample(i, "train", SIZE, 0)
        is_thing = np.isin(s.panoptic // 1000, list(THING_IDS))
        pan = s.panoptic
        for a, b, ta, tb in (
            (pan[1:], pan[:-1], is_thing[1:], is_thing[:-1]),
            (pan[:, 1:], pan[:, :-1], is_thing[:, 1:], is_thing[:, :-1]),
        ):
            touching |= bool((ta & tb & (a != b)).any())
    assert touching


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="image_size"):
        render_sample(0, "train", (16, 64))
    with pytest.raises(ValueError, match="split"):
        render_sample(0, "train/val")
