"""The evaluation results a Detectron2 run left in its output folder.

Detectron2's ``print_csv_format`` logs every evaluation as ``copypaste`` lines (a task, its
metric names, their values) to ``OUTPUT_DIR/log.txt``, for training's final evaluation and
for ``--eval-only`` alike: :func:`read_results` reads them back.
"""

import math
import os
import re
from typing import Dict

__all__ = ["parse_copypaste", "read_results"]

_COPYPASTE = re.compile(r"copypaste: (.*)$")


def parse_copypaste(text: str) -> Dict[str, Dict[str, float]]:
    """The last result of every task in a log's ``copypaste`` lines.

    Args:
        text (str): a log, with blocks of ``copypaste: Task: <task>``, a line of
            comma-separated names and a line of values.

    Returns:
        dict: task -> {metric: value} (NaN as None); a later block of a task replaces an
        earlier one.
    """
    lines = [m.group(1).strip() for m in map(_COPYPASTE.search, text.splitlines()) if m]
    out: Dict[str, Dict[str, float]] = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: ") and i + 2 < len(lines):
            names, values = lines[i + 1].split(","), [float(v) for v in lines[i + 2].split(",")]
            if len(names) == len(values):
                out[line[len("Task: ") :]] = {
                    n: None if math.isnan(v) else v for n, v in zip(names, values)
                }
    return out


def read_results(output_dir: str) -> Dict[str, Dict[str, float]]:
    """:func:`parse_copypaste` of ``<output_dir>/log.txt``; empty when there is none."""
    path = os.path.join(output_dir, "log.txt")
    if not os.path.isfile(path):
        return {}
    with open(path, errors="replace") as f:
        return parse_copypaste(f.read())
