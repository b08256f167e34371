"""crbp_panoptic.experiments.engine_benchmark: one refiner step per arm."""

from crbp_panoptic.crbp import parse_arm
from crbp_panoptic.experiments import engine_benchmark as eb


def test_saved_memory_grows_with_bptt_steps_and_stays_flat_under_rbp():
    arms = [
        parse_arm(a)
        for a in ("bptt:1", "bptt:4", "rbp:2", "rbp:8", "crbp:8", "crbp:8:sub2", "crbp:8:crop2")
    ]
    shapes = eb.shapes(channels=8, rois=4, roi_size=6, images=1, fpn_hw=(6, 8))
    rows = eb.benchmark(arms, shapes, num_groups=4, neumann_steps=3)
    assert [(s, a.name) for s, _, a, _ in rows] == [
        (s, a.name) for s in ("mask", "fpn") for a in arms
    ]
    for scale in ("mask", "fpn"):
        saved = {a.name: r["saved"] for s, _, a, r in rows if s == scale}
        assert saved["bptt:4"] > 2 * saved["bptt:1"] > 0
        assert saved["rbp:8"] == saved["rbp:2"]  # the backward does not keep the unrolled steps
        assert all(v > 0 for v in saved.values())
    for _, shape, arm, r in rows:
        assert r["time"] > 0 and r["cpu"] >= 0 and r["peak"] is None  # CPU: no CUDA peak
        assert r["lcp"] == 0 if arm.mode == "rbp" or arm.mode == "bptt" else r["lcp"] >= 0
        assert r["neumann"] != "-" if arm.mode in ("rbp", "crbp") else r["neumann"] == "-"
    mask_rows = [line for line in eb.table(rows) if line.startswith("| mask |")]
    assert len(mask_rows) == len(arms) and "| 4x8x6x6 | bptt:1 |" in mask_rows[0]
    assert mask_rows[2].split(" | ")[4] == "-"  # no rbp:20 row to divide by
