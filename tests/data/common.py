"""What the data tests share: the size of a small split of the quick data, reading one back."""

import json

from crbp_panoptic.data import CATEGORIES, split_paths, validate_panoptic_split

SIZE = (64, 80)  # H != W catches transposed masks
NUM_IMAGES = 9  # image 3 has no things
THING_IDS = {c["id"] for c in CATEGORIES if c["isthing"]}
STUFF_IDS = [c["id"] for c in CATEGORIES if not c["isthing"]]


def load_json(path):
    with open(path) as f:
        return json.load(f)


def validate(split_dir, **kw):
    """validate_panoptic_split on the files of ``split_dir``."""
    p = split_paths(split_dir)
    return validate_panoptic_split(
        p.panoptic_json, p.panoptic_dir, p.image_dir, p.sem_seg_dir, p.instances_json, **kw
    )
