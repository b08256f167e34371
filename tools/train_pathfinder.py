#!/usr/bin/env python
"""Pathfinder (PF-SEG): BPTT at few steps vs C-RBP at many, against two floors.

Trains each arm (``MODE:STEPS``, the shared arm grammar), evaluates per-image IoU
and pooled F1 on held-out images at every test-time step from 1 to 3x the
training steps, scores the floors ("every path" and the connectivity oracle) on
the same images, and writes into ``--out``:

* ``<mode>_<steps>/model.pt`` and ``metrics.json`` per arm,
* ``metrics.json`` (floors and every arm at T / 2T / 3T), ``table.md`` (also
  printed) and ``accuracy_vs_steps.png`` (if matplotlib is installed).

Generated images are cached under ``--data-root`` (default datasets/pathfinder),
in a folder named by the hash of the generator's parameters.

Examples::

    python tools/train_pathfinder.py --scale cpu --out output/pathfinder
    python tools/train_pathfinder.py --scale gpu --path-length 25 --device cuda --out out/L25
    python tools/train_pathfinder.py --out output/pathfinder --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crbp_panoptic.crbp import parse_arm  # noqa: E402
from crbp_panoptic.pathfinder.generator import save_examples  # noqa: E402
from crbp_panoptic.pathfinder.model import LOSSES  # noqa: E402
from crbp_panoptic.pathfinder.report import table  # noqa: E402
from crbp_panoptic.pathfinder.train import (  # noqa: E402
    SCALES,
    Settings,
    run_experiment,
    write_report,
)

_TYPES = {"int": int, "float": float, "str": str, "Optional[float]": float}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="settings preset")
    p.add_argument("--arms", default="crbp:20,bptt:6", help="comma-separated MODE:STEPS")
    p.add_argument("--out", default="output/pathfinder", help="output folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--report-only", action="store_true", help="only rebuild metrics.json/table")
    p.add_argument("--examples", default=None, help="also render generator examples to this PNG")
    for f in dataclasses.fields(Settings):
        kind = f.type if isinstance(f.type, type) else _TYPES.get(str(f.type), str)
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"override the preset's {f.name}",
        )
    return p


def main(argv=None):
    a = _parser().parse_args(argv)
    overrides = {
        f.name: getattr(a, f.name)
        for f in dataclasses.fields(Settings)
        if getattr(a, f.name) is not None
    }
    settings = dataclasses.replace(SCALES[a.scale], **overrides)
    if a.report_only:
        print(table(write_report(a.out, settings if overrides else None)))
        return
    if settings.loss not in LOSSES:
        raise SystemExit(f"--loss={settings.loss!r}; choose from {sorted(LOSSES)}")
    if a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device={a.device!r} but torch sees no CUDA device")
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    for arm in arms:  # bad arms fail here, before any data is generated
        try:
            if not parse_arm(arm).recurrent:
                raise ValueError(f"arm={arm!r}; Pathfinder arms are MODE:STEPS, e.g. crbp:20")
        except ValueError as err:
            raise SystemExit(f"--arms: {err}") from None
    os.makedirs(a.out, exist_ok=True)
    if a.examples:
        scale = 2 if settings.size < 100 else 1
        save_examples(settings.generator_config(), a.examples, n=4, seed=settings.seed, scale=scale)
    summary = run_experiment(
        settings, arms, a.out, device=a.device, log=lambda m: print(m, flush=True)
    )
    print(table(summary))


if __name__ == "__main__":
    main()
