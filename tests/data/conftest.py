"""Fixtures of the data tests."""

import pytest

from crbp_panoptic.data import generate_split

from tests.data.common import NUM_IMAGES, SIZE


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    """A train split of the quick data: NUM_IMAGES images of SIZE, seed 0."""
    return generate_split(
        str(tmp_path_factory.mktemp("shapes") / "train"), "train", NUM_IMAGES, SIZE, 0
    )
