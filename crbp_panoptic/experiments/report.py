"""Writing reports: numbers for tables, markdown tables, and the JSON + markdown pair."""

import json
import math
import os
import tempfile
from typing import Optional, Sequence

__all__ = [
    "fmt",
    "fmt_num",
    "markdown_table",
    "publish",
    "ratio",
    "ratio_cell",
    "write_atomic",
    "write_report",
]

#: What a table shows for a figure that was not measured.
MISSING = "—"


def fmt(value, spec: str = ".1f", missing: str = "-") -> str:
    """``format(value, spec)``; ``missing`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def fmt_num(x: Optional[float], digits: int = 3) -> str:
    """``digits`` significant digits; integers of ``digits`` digits or more as they are."""
    if x is None:
        return MISSING
    if x == 0 or abs(x) >= 10**digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """``value / base``, or None when either is missing (or ``base`` is 0)."""
    if value is None or not base:
        return None
    return value / base


def ratio_cell(value: Optional[float], x: Optional[float], digits: int = 3) -> str:
    """A figure with its ratio to a baseline in brackets: ``"1260 (1.26×)"``."""
    if value is None:
        return MISSING
    return f"{fmt_num(value, digits)} ({x:.2f}×)" if x is not None else fmt_num(value, digits)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list:
    """The lines of a markdown table (no trailing blank line)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def publish(text: str, path: Optional[str] = None) -> str:
    """Print a report and, when ``path`` is given, also write it there (atomically)."""
    print(text)
    if path:
        write_atomic(path, text)
    return text


def write_report(out_dir: str, stem: str, report: dict, markdown: str) -> str:
    """Write ``<stem>.json`` (``report``) and ``<stem>.md`` (``markdown``) into ``out_dir``.

    Returns:
        str: ``markdown``.
    """
    write_atomic(os.path.join(out_dir, stem + ".json"), json.dumps(report, indent=1))
    write_atomic(os.path.join(out_dir, stem + ".md"), markdown)
    return markdown
