"""The COCO panoptic format: the RGB encoding of segment ids, RLE, semantic labels."""

import numpy as np
import pytest

from crbp_panoptic.data import coco_format
from crbp_panoptic.data.coco_format import mask_to_rle, panoptic_to_semantic, rle_to_mask


def test_id_encoding_matches_panopticapi():
    from panopticapi.utils import id2rgb, rgb2id

    ids = np.random.default_rng(0).integers(0, 256**3, (7, 5))
    rgb = coco_format.id2rgb(ids)
    np.testing.assert_array_equal(rgb, id2rgb(ids))
    np.testing.assert_array_equal(coco_format.rgb2id(rgb), ids)
    np.testing.assert_array_equal(rgb2id(rgb), ids)


def test_rle_round_trip_starts_with_zeros_and_runs_down_columns():
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = mask[1, 0] = mask[2, 3] = True
    rle = mask_to_rle(mask)
    assert rle == {"size": [3, 4], "counts": [0, 2, 9, 1]}
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    with pytest.raises(ValueError, match="expected H\\*W = 12"):
        rle_to_mask({"size": [3, 4], "counts": [0, 2]})


def test_semantic_labels_take_the_categories_of_the_data():
    categories = [
        {"id": 1, "isthing": 1},
        {"id": 92, "isthing": 0},
        {"id": 100, "isthing": 0},
    ]
    pan = np.array([[0, 1001, 92001], [100001, 100001, 1002]])
    segments = [{"id": i, "category_id": i // 1000} for i in (1001, 1002, 92001, 100001)]
    np.testing.assert_array_equal(
        panoptic_to_semantic(pan, segments, categories), [[255, 0, 1], [2, 2, 0]]
    )
