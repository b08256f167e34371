"""Writing reports: number formats, the markdown table, the report skeleton, atomic writes,
finished figures."""

import json
import math
import os
import tempfile
from typing import Dict, Optional, Sequence

from .machine import describe

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
    return f"{x:.0f}" if x == 0 or abs(x) >= 10**digits else f"{x:.{digits}g}"


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """``value / base``, or None when either is missing (or ``base`` is 0)."""
    return None if value is None or not base else value / base


def ratio_cell(value: Optional[float], x: Optional[float], digits: int = 3) -> str:
    """A figure with its ratio to a baseline in brackets: ``"1260 (1.26×)"``."""
    if value is None:
        return MISSING
    return f"{fmt_num(value, digits)} ({x:.2f}×)" if x is not None else fmt_num(value, digits)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence]) -> list:
    """The lines of a markdown table (no trailing blank line); cells go through ``str``."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render(title: str, command: str, machine: Dict, body: Sequence[str], notes=()) -> str:
    """Every report's skeleton: title, command, ``machine`` (:func:`~.machine.machine_info`),
    the ``body``'s markdown lines, then the ``notes`` (sentences) as a list."""
    lines = [f"# {title}", "", f"Command: `{command}`", "", f"Machine: {describe(machine)}.", ""]
    lines += list(body) + ([""] + [f"- {n}" for n in notes] if notes else [])
    return "\n".join(lines) + "\n"


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written),
    with the permissions a plain ``open`` would give it (the process's umask)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def publish(text: str, path=None, data: Optional[Dict] = None, echo: bool = True) -> str:
    """Print a report (unless not ``echo``); with ``path`` also write it there, and ``data``
    beside it as JSON (same name, ``.json``)."""
    if echo:
        print(text)
    if data is not None:
        write_atomic(os.path.splitext(str(path))[0] + ".json", json.dumps(data, indent=1))
    if path:
        write_atomic(str(path), text)
    return text


def save_figure(fig, axes, path: str, dpi: int = 100) -> str:
    """Grid and legend on each of ``axes``, then ``fig`` laid out, written to ``path`` and
    closed; returns ``path``."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
