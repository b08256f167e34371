"""Report writing (crbp_panoptic/experiments/report.py): atomic writes."""

import os

from crbp_panoptic.experiments.report import write_atomic


def test_write_atomic_replaces_the_file_with_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        path = tmp_path / "report.md"
        path.write_text("old")
        write_atomic(str(path), "new text")
    finally:
        os.umask(old)
    assert path.read_text() == "new text"
    assert oct(path.stat().st_mode & 0o777) == oct(plain.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "report.md"]
