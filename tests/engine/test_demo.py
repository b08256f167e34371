"""crbp_panoptic.engine.demo (what tools/demo.py runs) end to end on tiny synthetic data."""

import pytest
from PIL import Image

from crbp_panoptic.engine.demo import pq_table, run_demo

from tests.tiny import REPO, register_tiny_datasets, tiny_train_opts

CONFIG = "configs/Synthetic-PanopticSegmentation/panoptic_crbp_fpn_R_18_quick.yaml"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    register_tiny_datasets(root, "demo_test")
    return root


def test_demo_reports_pq_and_writes_overlays(datasets, tmp_path):
    opts = tiny_train_opts(tmp_path, "demo_test_train_separated", "demo_test_val_separated")
    result = run_demo(REPO / CONFIG, str(tmp_path), 2, opts[2:])  # the demo sets OUTPUT_DIR
    pq = result["pq"]
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert 0 <= pq[key] <= 100
    table = pq_table(pq).splitlines()
    assert [line.split()[0] for line in table[1:]] == ["All", "Things", "Stuff"]
    assert table[1].split()[1] == f"{pq['PQ']:.2f}"
    overlays = sorted((tmp_path / "overlays").glob("*.png"))
    assert [str(p) for p in overlays] == sorted(result["overlays"]) and len(overlays) == 2
    width, height = Image.open(overlays[0]).size
    assert (width, height) == (2 * 3 * 64 + 4, 3 * 64)  # ground truth | prediction, scale 3
