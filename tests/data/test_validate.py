"""The COCO panoptic checker names the file that disagrees with the format."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from crbp_panoptic.data import (
    PanopticFormatError,
    generate_split,
    split_paths,
)

from tests.data.common import load_json, validate


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return generate_split(str(tmp_path_factory.mktemp("v") / "val"), "val", 4, (48, 64), 0)


@pytest.mark.parametrize(
    "corruption",
    [
        "invalid_json",
        "segment_absent_from_png",
        "wrong_area",
        "missing_png",
        "wrong_semantic",
        "instances_area",
    ],
)
def test_corrupt_file_is_named(split_dir, tmp_path, corruption):
    d = str(tmp_path / "copy")
    shutil.copytree(split_dir, d)
    p = split_paths(d)
    pan = load_json(p.panoptic_json)
    ann = pan["annotations"][1]
    png = os.path.join(p.panoptic_dir, ann["file_name"])
    if corruption == "invalid_json":
        with open(p.panoptic_json, "a") as f:
            f.write("}")
        culprit, error = p.panoptic_json, PanopticFormatError
    elif corruption in ("segment_absent_from_png", "wrong_area"):
        seg = ann["segments_info"][0]
        if corruption == "wrong_area":
            seg["area"] += 1
        else:
            seg["id"] += 7
        with open(p.panoptic_json, "w") as f:
            json.dump(pan, f)
        culprit, error = png, PanopticFormatError
    elif corruption == "missing_png":
        os.remove(png)
        culprit, error = png, FileNotFoundError
    elif corruption == "wrong_semantic":
        culprit = os.path.join(p.sem_seg_dir, ann["file_name"])
        sem = np.asarray(Image.open(culprit)).copy()
        sem[0, 0] = 7
        Image.fromarray(sem).save(culprit)
        error = PanopticFormatError
    else:
        inst = load_json(p.instances_json)
        inst["annotations"][0]["area"] += 3
        with open(p.instances_json, "w") as f:
            json.dump(inst, f)
        culprit, error = p.instances_json, PanopticFormatError
    with pytest.raises(error) as info:
        validate(d)
    assert culprit in str(info.value)
