"""crbp_panoptic.experiments.engine_benchmark: one refiner step per arm, and its table."""

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
    text = eb.table(rows, "Header.")
    assert text.startswith("Header.\n")
    mask_rows = [line for line in text.splitlines() if line.startswith("| mask |")]
    assert len(mask_rows) == len(arms) and "| 4x8x6x6 | bptt:1 |" in mask_rows[0]
    assert mask_rows[2].split(" | ")[4] == "-"  # no rbp:20 row to divide by


def test_compiled_step_times_both_and_reports_a_compile_failure(monkeypatch):
    import torch

    from crbp_panoptic.crbp import HGRUCell

    cell = HGRUCell(8, num_groups=4).eval()
    calls = []

    def fake_compile(module):  # stands in for torch.compile: same module, counted
        calls.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    ok = eb.compiled_step(cell, (2, 8, 5, 5), repeats=1)
    assert calls == [cell] and ok["error"] is None
    assert ok["eager"] > 0 and ok["compiled"] > 0 and ok["compile_seconds"] >= 0

    def failing_compile(module):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", failing_compile)
    failed = eb.compiled_step(cell, (2, 8, 5, 5), repeats=1)
    assert failed["compiled"] is None and failed["error"] == "RuntimeError: no C++ compiler found"
    text = eb.compile_table([("mask", (2, 8, 5, 5), ok), ("fpn", (1, 8, 6, 6), failed)], "H.")
    assert "| mask | 2x8x5x5 |" in text and "| fpn | 1x8x6x6 |" in text
    assert "RuntimeError: no C++ compiler found | - | - |" in text
