"""Evaluate a comparison's trained runs again, e.g. on a larger test split
(``tools/compare_configs.py --rescore DIR``).

:func:`rescore_summary` reads ``<DIR>/summary.json`` of :func:`.runner.run_plan` (or of a
merge) and evaluates every finished entry once more with ``tools/train_net.py --eval-only``:
its config, its weights and its opts followed by the given overrides (typically
``DATASETS.TEST``). Nothing is trained. The new ``summary.json`` has the same entries with
the new metrics; each entry's opts include the overrides, so it reproduces its PQ as any
entry does. The training record (parameters, curves, dynamics, the warm-up) is kept; the
floors and true-box scores are computed on the new test split; residual curves, measured on
the old one, are dropped.
"""

import concurrent.futures
import json
import os
import sys
import threading
import time
from typing import Sequence

from .machine import machine_info
from .report import write_atomic
from .runner import METRICS, _cfg, _check_opts, _child_env, evaluate_again
from .suites import FLOORS, suite_floors

__all__ = ["rescore_summary"]


def _eval_dir(output_dir: str, entry: dict) -> str:
    run_dir = os.path.join(
        output_dir, "runs", entry["arm"].replace(":", "_"), f"seed{entry['seed']}"
    )
    first = entry.get("steps_multiple") in (None, 1)
    return run_dir if first else os.path.join(run_dir, f"test_steps{entry['test_steps']}")


def rescore_summary(
    source: str,
    output_dir: str,
    opts: Sequence[str],
    python: str = sys.executable,
    command: str = "",
    log=print,
    jobs: int = 1,
) -> dict:
    """Evaluate the finished entries of ``<source>/summary.json`` again, with ``opts`` after
    each entry's own, into ``output_dir`` (``runs/<arm>/seed<seed>[/test_steps<t>]``;
    a rerun reuses finished evaluations), ``jobs`` at a time. Writes and returns the new
    summary (``rescored_from`` and ``rescore_opts`` record where it came from,
    ``training_machine`` the source's ``machine``); failed evaluations are recorded as failed.

    Raises:
        ValueError: ``source`` has no readable summary, it has no finished entry, ``opts``
            are not KEY VALUE pairs or set a key the runner sets, ``jobs`` < 1, or
            ``output_dir`` is ``source``.
    """
    from .runner_report import markdown, plot

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}; expected an integer >= 1 (evaluations at a time)")
    _check_opts(list(opts), "rescore overrides")
    if os.path.abspath(output_dir) == os.path.abspath(source):
        raise ValueError(f"rescore: --output {output_dir} is the source folder; choose another")
    try:
        with open(os.path.join(source, "summary.json")) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"rescore: {source}/summary.json cannot be read ({e})") from None
    done = {i: r for i, r in enumerate(old["runs"]) if r.get("status") == "ok" and r.get("weights")}
    if not done:
        raise ValueError(f"rescore: {source}/summary.json has no finished run to evaluate")

    start, env = time.time(), _child_env(jobs)
    os.makedirs(output_dir, exist_ok=True)
    summary = dict(old, command=command, machine=machine_info(), runs=[])
    summary["training_machine"] = old.get("training_machine", old.get("machine"))
    summary.update(rescored_from=os.path.abspath(source), rescore_opts=list(opts), jobs=jobs)
    summary["child_threads"] = env.get("OMP_NUM_THREADS", "unset")
    summary.pop("merged_from", None)
    if old.get("floors"):
        first = next(iter(done.values()))
        test_set = _cfg(first["config"], first["opts"] + list(opts)).DATASETS.TEST[0]
        summary["floors"] = suite_floors(test_set, [k for k in FLOORS if k in old["floors"]])
    # entries by their place in the source; one it could not evaluate stays as it was
    results = {i: r for i, r in enumerate(old["runs"]) if i not in done}
    guard, in_process = threading.Lock(), threading.Lock()

    def write():
        runs = sum(r.get("seconds") or 0.0 for r in summary["runs"])
        summary["seconds"] = {"warmup": 0.0, "runs": runs, "total": runs}
        summary["seconds"]["this_invocation"] = time.time() - start
        write_atomic(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=1))

    def evaluate(i: int, entry: dict):
        eval_opts = list(entry["opts"]) + list(opts)
        what = f"evaluate {entry['arm']} seed {entry['seed']} at {entry.get('test_steps')} steps"
        boxes = in_process if "true_box_masks" in entry else None
        fields = evaluate_again(
            python, entry["config"], eval_opts, entry["weights"], _eval_dir(output_dir, entry),
            what, log, env, boxes,
        )  # fmt: skip
        new = {k: v for k, v in entry.items() if k not in ("residual", "true_box_masks")}
        new.update(dict.fromkeys(METRICS), opts=eval_opts)
        new.update(fields)
        with guard:
            results[i] = new
            summary["runs"] = [results[k] for k in sorted(results)]
            write()

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(evaluate, i, r) for i, r in done.items()]
        for future in futures:
            future.result()
    summary["plot"] = plot(summary, os.path.join(output_dir, "pq_vs_steps.png"))
    write()
    write_atomic(os.path.join(output_dir, "summary.md"), markdown(summary))
    return summary
