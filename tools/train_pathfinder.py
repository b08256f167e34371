#!/usr/bin/env python
"""Pathfinder (PF-SEG): BPTT at few steps vs C-RBP at many, against two floors.

Trains each arm (``MODE:STEPS[:OPTION...]``, the shared arm grammar: ``crbp:20:spectral``
is C-RBP with the spectral penalty, ``crbp:20:k0`` its one-step-gradient control),
evaluates per-image IoU and pooled F1 on held-out images at every test-time step from 1 to
3x the training steps, scores the floors ("every path" and the connectivity oracle) on
the same images, and writes into the folder ``--output`` (old spelling ``--out``):

* ``<mode>_<steps>[_<option>...]/model.pt`` and ``metrics.json`` per arm,
* ``metrics.json`` (floors, ``penalty_arm``, and every arm at T / 2T / 3T with its
  forward residual, adjoint growth and guard-cut share), ``table.md`` (also printed) and
  ``accuracy_vs_steps.png`` (if matplotlib is installed).

With ``--lengths L1 L2 ...`` it does that at every path length, into ``OUTPUT/L<length>/``,
and writes ``OUTPUT/metrics.json`` (``{"lengths": {"<length>": <that contract>, ...}}``),
``OUTPUT/table.md`` and ``OUTPUT/length_curve.png`` (pooled F1 at T against path length, the
floor, and the paper's curve for reference). Every length must fit the image size: a
length it cannot hold fails before anything runs, naming the range it holds.

Generated images are cached under ``--data-root`` (default datasets/pathfinder),
in a folder named by the hash of the generator's parameters.

Examples::

    python tools/train_pathfinder.py --scale cpu --output output/pathfinder
    python tools/train_pathfinder.py --scale cpu --size 72 --lengths 5 9 14 --output out/lengths
    python tools/train_pathfinder.py --scale cpu --arms crbp:20:spectral --dilation 2 \
        --output output/pathfinder_dilated
    python tools/train_pathfinder.py --scale smoke --lengths 3 4 5 --arms bptt:2 crbp:3 \
        --output /tmp/pf_smoke
    python tools/train_pathfinder.py --scale gpu --path-length 25 --device cuda --output out/L25
    python tools/train_pathfinder.py --output output/pathfinder --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crbp_panoptic.pathfinder.generator import save_examples  # noqa: E402
from crbp_panoptic.pathfinder.report import length_table, table  # noqa: E402
from crbp_panoptic.pathfinder.train import (  # noqa: E402
    DEFAULT_ARMS,
    LENGTH_ARMS,
    SCALES,
    Settings,
    check_settings,
    length_dir,
    parse_arms,
    run_experiment,
    run_length_sweep,
    write_length_report,
    write_report,
)

_TYPES = {"int": int, "float": float, "str": str, "Optional[float]": float}
#: Settings fields as the command line spells them, for error messages.
FLAGS = {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(Settings)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="settings preset")
    p.add_argument(
        "--arms",
        nargs="+",
        default=None,
        metavar="ARM",
        help=f"arms, space-separated (commas also separate) (default: {' '.join(DEFAULT_ARMS)}; "
        f"with --lengths: {' '.join(LENGTH_ARMS)})",
    )
    p.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=None,
        metavar="L",
        help="path lengths (dashes) of a length sweep, each into OUT/L<length>/",
    )
    p.add_argument(
        "--output", "--out", default="output/pathfinder", help="output folder (a directory)"
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--report-only", action="store_true", help="only rebuild metrics.json/table")
    p.add_argument("--examples", default=None, help="also render generator examples to this PNG")
    for f in dataclasses.fields(Settings):
        kind = f.type if isinstance(f.type, type) else _TYPES.get(str(f.type), str)
        p.add_argument(
            FLAGS[f.name],
            type=kind,
            default=None,
            help=f"override the preset's {f.name}",
        )
    return p


def _examples(settings: Settings, path: str) -> None:
    scale = 2 if settings.size < 100 else 1
    save_examples(settings.generator_config(), path, n=4, seed=settings.seed, scale=scale)


def main(argv=None):
    a = _parser().parse_args(argv)
    overrides = {
        f.name: getattr(a, f.name)
        for f in dataclasses.fields(Settings)
        if getattr(a, f.name) is not None
    }
    settings = dataclasses.replace(SCALES[a.scale], **overrides)
    if a.lengths is not None and a.path_length is not None:
        raise SystemExit("--path-length and --lengths: give one (--lengths runs every length)")
    if a.report_only:
        if a.lengths is not None:
            for n in a.lengths:
                write_report(length_dir(a.output, n), None)
            print(length_table(write_length_report(a.output, a.lengths)))
        else:
            print(table(write_report(a.output, settings if overrides else None)))
        return
    arms = [x.strip() for item in a.arms or () for x in item.split(",") if x.strip()]
    if a.arms is None:
        arms = list(LENGTH_ARMS if a.lengths is not None else DEFAULT_ARMS)
    # Bad arms, settings and lengths fail here, before any data is generated.
    try:
        parse_arms(arms)
    except ValueError as err:
        raise SystemExit(f"--arms: {err}") from None
    labels = FLAGS if a.lengths is None else {**FLAGS, "path_length": "--lengths"}
    if a.lengths is not None and len(set(a.lengths)) != len(a.lengths):
        raise SystemExit(f"--lengths={a.lengths}; expected distinct path lengths")
    try:
        for n in [settings.path_length] if a.lengths is None else a.lengths:
            check_settings(dataclasses.replace(settings, path_length=n), labels)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device={a.device!r} but torch sees no CUDA device")
    os.makedirs(a.output, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    if a.lengths is None:
        if a.examples:
            _examples(settings, a.examples)
        print(table(run_experiment(settings, arms, a.output, device=a.device, log=log)))
        return
    if a.examples:
        root, ext = os.path.splitext(a.examples)
        for n in a.lengths:
            _examples(dataclasses.replace(settings, path_length=n), f"{root}_L{n}{ext or '.png'}")
    report = run_length_sweep(settings, arms, a.lengths, a.output, a.device, log, labels)
    print(length_table(report))


if __name__ == "__main__":
    main()
