"""Train arms x seeds, evaluate each at several test-step counts (``tools/compare_configs.py``).

An *arm* is a config plus the overrides of one training rule (:func:`plan_suite`,
:func:`config_arms`, :func:`rule_arms`). :func:`run_plan` trains a suite's warm-up once
(``<output>/warmup``; its ``fresh`` modules dropped into ``<output>/warm_start.pth``), then
every arm and seed from it with ``tools/train_net.py`` in a child process, ``jobs`` runs at
a time (``<output>/runs/<arm>/seed<seed>``, evaluated at T test steps), re-evaluates recurrent
arms at each other count t (``.../test_steps<t>``) and, with ``residual_images``, records
residual curves and, with ``true_box_masks``, scores each mask head on the true boxes
(:mod:`.true_boxes`). ``<output>/summary.json``, rewritten after every child, has one entry
per (arm, seed, test steps) whose config, opts and weights reproduce its PQ with
``train_net.py --eval-only`` (failed runs too). A rerun reuses finished runs; a run folder
made with other settings is an error, never overwritten, and one that another call is still
training (it holds ``<folder>.lock``) is left alone and reported as failed. At the end:
``summary.md`` and ``pq_vs_steps.png``.
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.modeling import build_model

import crbp_panoptic  # noqa: F401  (registers the models)
from crbp_panoptic.crbp.arms import parse_arm
from crbp_panoptic.engine import setup_cfg
from crbp_panoptic.engine.checkpoint import (
    WeightsError,
    drop_modules,
    load_trained_weights,
    recurrent_key_groups,
)
from crbp_panoptic.engine.results import read_results
from crbp_panoptic.modeling import placement as _placement

from .machine import machine_info
from .report import write_atomic
from .suites import PLACEMENTS, Suite, check_count, check_multiples, suite_floors

__all__ = [
    "ArmSpec",
    "Plan",
    "config_arms",
    "merge_summaries",
    "plan_suite",
    "rule_arms",
    "run_plan",
]

REPO = Path(__file__).resolve().parents[2]

#: Keys the runner sets itself; overrides may not set them.
RESERVED_KEYS = {
    "SEED": "the seeds argument (--seeds)",
    "OUTPUT_DIR": "the output directory (--output)",
    "MODEL.WEIGHTS": "the warm-up checkpoint (--warmup-weights)",
    "SOLVER.MAX_ITER": "iterations / warmup_iterations (--iterations, --warmup-iterations)",
    "SOLVER.STEPS": "the runner (the config's decay points, scaled to the iterations)",
    "SOLVER.CHECKPOINT_PERIOD": "the runner (only model_final.pth is kept)",
    "MODEL.CRBP.GRAD": "the arms",
    "MODEL.CRBP.TEST_STEPS": "the test steps (--test-steps-multiples, --test-steps)",
    "MODEL.CRBP.TEST_TOL": "the runner (0: exactly the asked test steps)",
}

# Training curves kept per run from metrics.json, and the recurrent telemetry's prefix.
CURVES = ("loss_mask", "mask_rcnn/false_negative", "loss_cls", "fast_rcnn/fg_cls_accuracy")


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """One arm: ``name`` (``ff``, ``crbp:10`` or a config's stem), ``label`` (for tables),
    its ``config``, its own overrides ``opts`` and its trained steps T (None: feedforward)."""

    name: str
    label: str
    config: str
    opts: Tuple[str, ...]
    steps: Optional[int]


@dataclasses.dataclass
class Run:
    """One training run of an arm and seed, and the test-step counts it is evaluated at
    (T first; none for a feedforward arm). ``opts`` (with ``config`` and the run's
    ``model_final.pth``) reproduce the evaluation at T; :meth:`eval_opts` any other."""

    arm: str
    seed: int
    config: str
    opts: List[str]
    run_dir: str
    steps: Optional[int]
    test_steps: List[int]

    @property
    def weights(self) -> str:
        return os.path.join(self.run_dir, "model_final.pth")

    def eval_opts(self, t: Optional[int]) -> List[str]:
        if t == self.steps:
            return list(self.opts)
        return _set(_set(self.opts, "MODEL.CRBP.TEST_STEPS", str(t)), "MODEL.CRBP.TEST_TOL", "0.0")

    def eval_dir(self, t: int) -> str:
        return os.path.join(self.run_dir, f"test_steps{t}")


@dataclasses.dataclass
class Plan:
    """What :func:`run_plan` runs: ``arms`` x ``seeds`` (``SEED`` values >= 0) into
    ``output_dir``, resolved into ``runs`` and checked when made (nothing is written then).

    Attributes:
        iterations: of every run (decay points scaled); None: the config's schedule.
        multiples, test_steps: test-step multiples m of T (1 among them) and further counts.
        opts: ``KEY VALUE`` overrides for every run, before the arm's own.
        warmup: what every run starts from (:func:`plan_suite`), or None.
        floors: names in :data:`~.suites.FLOORS`; residual_images: 0 for no curves.
        true_box_masks: score every evaluated model's mask head on the true boxes.

    Raises:
        ValueError: a bad seed, count or override, or a run in ``output_dir`` made otherwise.
    """

    name: str
    arms: List[ArmSpec]
    seeds: List[int]
    output_dir: str
    description: str = ""
    iterations: Optional[int] = None
    multiples: Sequence[int] = (1, 3)
    test_steps: Sequence[int] = ()
    opts: Sequence[str] = ()
    warmup: Optional[dict] = None
    floors: Sequence[str] = ()
    residual_images: int = 0
    true_box_masks: bool = False
    placement: Optional[str] = None
    runs: List[Run] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        seeds, test_steps = list(self.seeds), list(self.test_steps)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(
                f"seeds={seeds}; expected one or more integers >= 0 (a negative SEED draws a "
                "random one: the run could not be repeated)"
            )
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={seeds}; each seed once")
        if self.iterations is not None:
            check_count(self.iterations, "iterations")
        check_multiples(self.multiples, f"{self.name!r}")
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in test_steps):
            raise ValueError(f"test steps {test_steps}; expected integers >= 1")
        if self.residual_images < 0:
            raise ValueError(f"residual_images={self.residual_images}; expected an integer >= 0")
        _check_opts(self.opts, "config overrides")
        self.output_dir, self.multiples = os.path.abspath(self.output_dir), sorted(self.multiples)
        weights = self.warmup["start"] if self.warmup else None
        for seed in seeds:
            for arm in self.arms:
                opts = list(self.opts)
                if self.iterations:
                    opts += _schedule_opts(_cfg(arm.config, self.opts), self.iterations)
                opts += list(arm.opts) + ["SEED", str(seed)]
                t = arm.steps
                others = {m * t for m in self.multiples} | set(test_steps) if t else set()
                grid = [t] + sorted(others - {t}) if t else []
                name = arm.name.replace(":", "_")
                run_dir = os.path.join(self.output_dir, "runs", name, f"seed{seed}")
                _check_no_other_runs(run_dir, _spec(arm.config, opts, weights))
                self.runs.append(Run(arm.name, seed, arm.config, opts, run_dir, t, grid))


def _set(opts: Sequence[str], key: str, value: str) -> List[str]:
    out = list(opts)
    for i in range(0, len(out), 2):
        if out[i] == key:
            out[i + 1] = value
            return out
    return out + [key, value]


def _config_path(path: str) -> str:
    """A config path as recorded: relative to the repository when inside it, else absolute."""
    full = os.path.abspath(path) if os.path.exists(path) else os.path.join(str(REPO), path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"config file {path!r}: no such file")
    rel = os.path.relpath(full, str(REPO))
    return full if rel.startswith("..") else rel


def _cfg(config: str, opts: Sequence[str]):
    return setup_cfg(os.path.join(str(REPO), config), list(opts) + ["MODEL.DEVICE", "cpu"])


def _check_opts(opts: Sequence[str], where: str):
    if len(opts) % 2:
        raise ValueError(f"{where}: config overrides come in KEY VALUE pairs, got {list(opts)}")
    for key in opts[::2]:
        if key in RESERVED_KEYS:
            use = RESERVED_KEYS[key]
            raise ValueError(f"{where}: {key} is set by the runner, not by overrides; use {use}")


def _schedule_opts(cfg, iterations: int) -> List[str]:
    """``SOLVER.MAX_ITER`` = iterations, the config's decay points scaled to it, and no
    checkpoint but ``model_final.pth``."""
    scale = iterations / cfg.SOLVER.MAX_ITER
    steps = tuple(s for s in (round(x * scale) for x in cfg.SOLVER.STEPS) if 0 < s < iterations)
    opts = ["SOLVER.MAX_ITER", iterations, "SOLVER.STEPS", steps]
    return [str(v) for v in opts + ["SOLVER.CHECKPOINT_PERIOD", iterations + 1]]


def _rule_opts(arm) -> Tuple[str, ...]:
    """The arm's ``MODEL.CRBP`` keys, and exactly T steps at test time."""
    opts = [str(v) for v in arm.config_opts()]
    return tuple(opts + ["MODEL.CRBP.TEST_STEPS", str(arm.steps), "MODEL.CRBP.TEST_TOL", "0.0"])


def rule_arms(config: str, names: Sequence[str], opts: Sequence[str] = ()) -> List[ArmSpec]:
    """Arms that train one recurrent ``config`` under the rules ``names`` (``crbp:10``, ...);
    ValueError for a malformed, feedforward or repeated arm, or a feedforward config."""
    config = _config_path(config)
    got = _placement(_cfg(config, opts))
    if got == "feedforward":
        raise ValueError(f"config {config!r} has no recurrent module for the arms {list(names)}")
    arms = [parse_arm(n) for n in names]
    if not arms or any(not a.recurrent for a in arms) or len(set(arms)) != len(arms):
        raise ValueError(
            f"arms {list(names)}: need distinct recurrent arms ('ff' has no recurrent steps; "
            "compare a feedforward config with --configs)"
        )
    return [ArmSpec(a.name, a.label, config, _rule_opts(a), a.steps) for a in arms]


def config_arms(configs: Sequence[str], opts: Sequence[str] = ()) -> List[ArmSpec]:
    """One arm per config, trained as the config says (its name: the file's stem)."""
    out = []
    for path in configs:
        config = _config_path(path)
        cfg = _cfg(config, opts)
        steps = int(cfg.MODEL.CRBP.STEPS) if _placement(cfg) != "feedforward" else None
        out.append(ArmSpec(Path(config).stem, Path(config).stem, config, (), steps))
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise ValueError(f"configs {list(configs)}: two share a file name {names}")
    return out


def _spec(config: str, opts: Sequence[str], weights: Optional[str]) -> dict:
    return {"config": config, "opts": list(opts), "init_weights": weights}


def _read_spec(run_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(run_dir, "run.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _check_no_other_runs(run_dir: str, spec: dict):
    """A run folder already made with other settings is an error (it is never overwritten)."""
    old = _read_spec(run_dir) or {}
    diff = [k for k in spec if k in old and old[k] != spec[k]]
    if diff:
        raise ValueError(
            f"{run_dir} holds a run made with other settings ({', '.join(diff)}: "
            f"{[old.get(k) for k in diff]} there, {[spec[k] for k in diff]} now); use another "
            "output directory, or delete that run to train it again"
        )


def plan_suite(
    suite: Suite,
    seeds: Sequence[int],
    output_dir: str,
    *,
    iterations: Optional[int] = None,
    warmup_iterations: Optional[int] = None,
    warmup_weights: Optional[str] = None,
    multiples: Optional[Sequence[int]] = None,
    test_steps: Sequence[int] = (),
    opts: Sequence[str] = (),
    residual_images: int = 0,
    arms: Optional[Sequence[str]] = None,
) -> Plan:
    """Resolve and check a suite (:mod:`.suites`); nothing is trained and nothing written.

    Args:
        iterations, warmup_iterations, multiples: override the suite's.
        arms: train only these of the suite's arms (``crbp:T`` or with T resolved), e.g.
            to run the arms side by side as several calls into one ``output_dir``; a call
            with every arm then reuses their runs and reports them together.
        warmup_weights: a warm-up ``model_final.pth`` to start from instead of training (or
            reusing) ``<output_dir>/warmup``.
        opts: overrides for every run, after the suite's; the rest as :class:`Plan`.

    Raises:
        ValueError / FileNotFoundError: as :class:`Plan`, a missing config or
            ``warmup_weights``, a config whose placement does not match the suite, or
            ``arms`` that are not the suite's.
    """
    if warmup_iterations is None:
        warmup_iterations = suite.warmup_iterations
    check_count(warmup_iterations, "warmup_iterations")
    _check_opts(suite.opts, f"suite {suite.name!r} opts")
    _check_opts(suite.arm_opts, f"suite {suite.name!r} arm_opts")
    _check_opts(opts, "config overrides")
    common = [str(o) for o in suite.opts] + [str(o) for o in opts]
    arm_common = [str(o) for o in suite.opts + suite.arm_opts] + [str(o) for o in opts]
    ff_config = _config_path(suite.feedforward_config)
    rec_config = _config_path(suite.recurrent_config)
    ff_cfg, rec_cfg = _cfg(ff_config, arm_common), _cfg(rec_config, arm_common)
    for config, cfg, expected, role in (
        (ff_config, ff_cfg, "feedforward", "feedforward"),
        (rec_config, rec_cfg, suite.placement, "recurrent"),
    ):
        got = _placement(cfg)
        if got != expected:
            raise ValueError(
                f"{role} config {config!r} has placement {got!r} (MODEL.BACKBONE.NAME "
                f"{cfg.MODEL.BACKBONE.NAME!r}, MODEL.ROI_MASK_HEAD.NAME "
                f"{cfg.MODEL.ROI_MASK_HEAD.NAME!r}); suite {suite.name!r} compares "
                f"{PLACEMENTS[suite.placement][0]} with the feedforward model: allowed for its "
                f"{role} config: {expected!r} placement, i.e. {PLACEMENTS[expected][1]}"
            )
    steps = int(rec_cfg.MODEL.CRBP.STEPS)
    declared = [parse_arm(text.replace(":T", f":{steps}")) for text in suite.arms]
    if arms is not None:
        names = [a.name for a in declared]
        wanted = [str(a).replace(":T", f":{steps}") for a in arms]
        if not wanted or set(wanted) - set(names) or len(set(wanted)) != len(wanted):
            raise ValueError(
                f"arms {list(arms)}: allowed: distinct arms of suite {suite.name!r}, "
                f"{', '.join(names)} (T = MODEL.CRBP.STEPS of {suite.recurrent_config})"
            )
        declared = [a for a in declared if a.name in wanted]
    arm_specs = []
    for arm in declared:
        if arm.recurrent:
            arm_specs.append(ArmSpec(arm.name, arm.label, rec_config, _rule_opts(arm), arm.steps))
        else:
            arm_specs.append(ArmSpec(arm.name, arm.label, ff_config, (), None))
    output_dir = os.path.abspath(output_dir)
    warmup = {"config": ff_config, "iterations": warmup_iterations}
    warmup["opts"] = common + _schedule_opts(_cfg(ff_config, common), warmup_iterations)
    warmup["opts"] += ["SEED", str(suite.warmup_seed)]
    if warmup_weights is not None:
        if not os.path.isfile(warmup_weights):
            raise FileNotFoundError(
                f"warm-up weights {warmup_weights!r}: no such file; allowed: the "
                f"model_final.pth of a finished warm-up run of {ff_config}, or none (the "
                f"warm-up is then trained into {os.path.join(output_dir, 'warmup')}, or reused "
                "from there)"
            )
        warmup.update(dir=None, weights=os.path.abspath(warmup_weights))
    else:
        warmup.update(dir=os.path.join(output_dir, "warmup"))
        warmup["weights"] = os.path.join(warmup["dir"], "model_final.pth")
        _check_no_other_runs(warmup["dir"], _spec(ff_config, warmup["opts"], None))
    # What every arm starts from: the warm-up, without the suite's fresh modules.
    warmup["fresh"] = list(suite.fresh)
    warmup["start"] = os.path.join(output_dir, "warm_start.pth") if suite.fresh else None
    warmup["start"] = warmup["start"] or warmup["weights"]
    return Plan(
        suite.name, arm_specs, seeds, output_dir, description=suite.description,
        iterations=suite.iterations if iterations is None else iterations,
        multiples=suite.multiples if multiples is None else multiples, test_steps=test_steps,
        opts=arm_common, warmup=warmup, floors=suite.floors, residual_images=residual_images,
        true_box_masks=suite.true_box_masks, placement=suite.placement,
    )  # fmt: skip


# --- children -------------------------------------------------------------------------------


def _train_net(python, config, opts, out_dir, weights=None, eval_only=False) -> List[str]:
    cmd = [python, str(REPO / "tools" / "train_net.py")] + ["--eval-only"] * eval_only
    cmd += ["--config-file", config, *opts] + ["MODEL.WEIGHTS", weights] * bool(weights)
    return cmd + ["OUTPUT_DIR", out_dir]


def _lock_holder(lock: str) -> Optional[str]:
    """``"<host> <pid>"`` of the process that holds ``lock``, or None when the file is gone or
    names a process of this host that has ended (a lock left by a killed run)."""
    try:
        with open(lock) as f:
            holder = f.read().strip()
    except FileNotFoundError:
        return None
    host, _, pid = holder.rpartition(" ")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, another user's
            pass
    return holder or "an unknown process"


def _take_lock(out_dir: str) -> Tuple[Optional[str], Optional[str]]:
    """Claim ``<out_dir>.lock`` for this process: (lock path, None), or (None, why not) when
    another live process holds it (two calls training the same run into one output)."""
    lock = out_dir.rstrip(os.sep) + ".lock"
    os.makedirs(os.path.dirname(lock) or ".", exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                return None, (
                    f"{out_dir} is being trained by another process ({holder}, {lock}); "
                    "wait for it, or give calls that share an output a finished warm-up "
                    "(--warmup-weights) and disjoint --arms / --seeds"
                )
            with contextlib.suppress(FileNotFoundError):  # stale: its process has ended
                os.remove(lock)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        return lock, None
    return None, f"{lock}: could not be claimed; delete it if no run is using {out_dir}"


def _child_env(jobs: int) -> Dict[str, str]:
    """The children's environment: this one, the repository on ``PYTHONPATH`` and, when
    ``jobs`` children share the machine and ``OMP_NUM_THREADS`` is not set, each child's
    share of the CPU cores as its thread count (torch would otherwise give every child them
    all)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _run_child(cmd: List[str], out_dir: str, spec: dict, env) -> Tuple[Optional[str], float]:
    """Claim ``out_dir`` (:func:`_take_lock`), then :func:`_run_locked`; the lock goes with
    the child, whatever its end. Returns (error or None, wall seconds)."""
    lock, busy = _take_lock(out_dir)
    if busy:
        return busy, 0.0
    try:
        return _run_locked(cmd, out_dir, spec, env)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)


def _run_locked(cmd: List[str], out_dir: str, spec: dict, env) -> Tuple[Optional[str], float]:
    """Empty ``out_dir``, record ``spec`` in its ``run.json``, run ``cmd`` there with ``env``
    (stdout and stderr to ``stdout.txt``). Returns (error or None, wall seconds)."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    write_atomic(os.path.join(out_dir, "run.json"), json.dumps(spec, indent=1))
    log_path, start = os.path.join(out_dir, "stdout.txt"), time.time()
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    seconds = time.time() - start
    write_atomic(os.path.join(out_dir, "wall_seconds.txt"), f"{seconds:.1f}\n")
    if code:
        with open(log_path, errors="replace") as f:
            tail = f.read().splitlines()[-8:]
        return f"exit code {code}; last lines of the log:\n" + "\n".join(tail), seconds
    if "panoptic_seg" not in read_results(out_dir):
        return f"{out_dir}/log.txt holds no panoptic evaluation", seconds
    return None, seconds


def _child(cmd, out_dir, spec, weights, log, what, env) -> Tuple[Optional[str], Optional[float]]:
    """Reuse a finished child in ``out_dir`` (same ``spec``, ``weights`` there) or run it."""
    done = _read_spec(out_dir) == spec and "panoptic_seg" in read_results(out_dir)
    if done and (weights is None or os.path.isfile(weights)):
        log(f"[{time.strftime('%H:%M:%S')}] {what}: reusing {out_dir}")
        try:
            with open(os.path.join(out_dir, "wall_seconds.txt")) as f:
                return None, float(f.read())
        except (OSError, ValueError):
            return None, None
    log(f"[{time.strftime('%H:%M:%S')}] {what} -> {out_dir}")
    return _run_child(cmd, out_dir, spec, env)


#: summary.json's metric fields -> (Detectron2's result group, key).
METRICS = {"pq": ("panoptic_seg", "PQ"), "pq_th": ("panoptic_seg", "PQ_th")}
METRICS.update(pq_st=("panoptic_seg", "PQ_st"), box_ap=("bbox", "AP"), mask_ap=("segm", "AP"))


def _metrics(out_dir: str) -> dict:
    r = read_results(out_dir)
    return {k: r.get(group, {}).get(key) for k, (group, key) in METRICS.items()}


def _training_log(run_dir: str) -> dict:
    """From ``metrics.json``: the curves of :data:`CURVES` ([[iteration, value], ...]) and the
    last value of each ``crbp/<module>/<name>`` telemetry, by ``<name>`` (mean over modules)."""
    curves: Dict[str, list] = {k: [] for k in CURVES}
    last: Dict[str, Dict[str, float]] = {}
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            rows = [json.loads(line) for line in f]
    except OSError:
        rows = []
    for row in rows:
        for k, v in row.items():
            if k in curves:
                curves[k].append([int(row.get("iteration", -1)), float(v)])
            elif k.startswith("crbp/"):
                module, stat = k[len("crbp/") :].rsplit("/", 1)
                last.setdefault(stat, {})[module] = float(v)
    dynamics = {s: sum(v.values()) / len(v) for s, v in last.items()}
    return {"curves": curves, "dynamics": dynamics}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _parameter_counts(model) -> dict:
    """``total``, ``mask_head`` and ``recurrent`` (added to a stock model) parameters."""
    added = set().union(*recurrent_key_groups(model).values())
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "mask_head": sum(p.numel() for p in model.roi_heads.mask_head.parameters()),
        "recurrent": sum(p.numel() for n, p in model.named_parameters() if n in added),
    }


def _models(plan: Plan):
    """Per arm: its model, built once (no weights), and its parameter counts."""
    models = {r.arm: build_model(_cfg(r.config, r.opts)) for r in plan.runs[: len(plan.arms)]}
    return models, {arm: _parameter_counts(m) for arm, m in models.items()}


def _warm_up(plan: Plan, summary: dict, models: dict, python: str, log, env) -> str:
    """Train or reuse the warm-up (or take the given weights), check that it fills every arm's
    model but the recurrent and the fresh modules, write the arms' start without the fresh
    modules.
    Returns its sha256."""
    w = plan.warmup
    if w["dir"]:
        spec = _spec(w["config"], w["opts"], None)
        cmd = _train_net(python, w["config"], w["opts"], w["dir"])
        error, seconds = _child(cmd, w["dir"], spec, w["weights"], log, "warm-up", env)
        log_path = os.path.join(w["dir"], "stdout.txt")
        summary["warmup"].update(seconds=seconds, log=log_path, **_metrics(w["dir"]))
        if error:
            summary["warmup"].update(status="failed", error=error)
            raise RuntimeError(f"the warm-up failed ({error}); log {log_path}")
    summary["warmup"]["status"] = "ok" if w["dir"] else "given"
    digest = summary["warmup"]["sha256"] = _sha256(w["weights"])
    for run in plan.runs:
        old = (_read_spec(run.run_dir) or {}).get("warmup_sha256")
        if old not in (None, digest):
            raise ValueError(
                f"{run.run_dir} was trained from another warm-up checkpoint (sha256 {old}, now "
                f"{digest}); use another output directory, or delete that run to train it again"
            )
    for arm, model in models.items():
        try:
            load_trained_weights(model, w["weights"], "warm-up weights", fresh=w["fresh"])
        except WeightsError as e:
            fresh = f", whatever is under {w['fresh']}" if w["fresh"] else ""
            raise ValueError(
                f"{e}\n(the warm-up weights do not fit arm {arm!r}; allowed: weights of "
                f"{w['config']} trained with the same overrides{fresh})"
            ) from None
    if w["fresh"]:
        dropped = drop_modules(w["weights"], w["fresh"], w["start"])
        summary["warmup"]["fresh_keys"] = len(dropped)
        log(
            f"every arm starts from {w['start']}: the warm-up without {len(dropped)} keys "
            f"under {w['fresh']} (those modules learn from their initialisation)"
        )
    return digest


def _entry(run: Run, t: Optional[int], params: dict, **fields) -> dict:
    m = 1 if t is None else (t // run.steps if t % run.steps == 0 else t / run.steps)
    entry = dict(arm=run.arm, seed=run.seed, config=run.config, opts=run.eval_opts(t))
    entry.update(weights=run.weights, params=params, steps_multiple=m, test_steps=t)
    return {**entry, **dict.fromkeys(METRICS), **fields}


def _residuals(plan: Plan, run: Run) -> dict:
    """Residual and drift curves of a trained ``run`` (:func:`.evaluation.residual_curves`)."""
    from .evaluation import first_test_inputs, load_model, residual_curves

    cfg = _cfg(run.config, run.eval_opts(run.steps))
    cfg.freeze()
    steps = 2 * max(a.steps for a in plan.arms if a.steps)
    inputs = first_test_inputs(cfg, plan.residual_images)
    return residual_curves(load_model(cfg, run.weights), inputs, steps, run.steps)


def _true_box_masks(run: Run, t: Optional[int], where: str) -> dict:
    """:func:`_true_box_masks_of` ``run``'s model at ``t`` test steps."""
    return _true_box_masks_of(run.config, run.eval_opts(t), run.weights, where)


def _true_box_masks_of(config: str, opts: Sequence[str], weights: str, where: str) -> dict:
    """:func:`.true_boxes.true_box_masks` of the model of ``config`` and ``opts`` with
    ``weights``, kept in ``<where>/true_box_masks.json`` (a new child run empties ``where``);
    an error is recorded."""
    from .evaluation import load_model
    from .true_boxes import true_box_masks

    path = os.path.join(where, "true_box_masks.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    try:
        cfg = _cfg(config, opts)
        cfg.freeze()
        result = true_box_masks(cfg, load_model(cfg, weights))
    except (ValueError, RuntimeError, OSError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    write_atomic(path, json.dumps(result, indent=1))
    return result


def evaluate_again(python, config, opts, weights, where, what, log, env, true_boxes=None) -> dict:
    """Evaluate trained ``weights`` with ``train_net.py --eval-only`` (config and opts) in
    ``where`` (reused when finished there), and with ``true_boxes`` (the lock of this
    process's evaluations) score the mask head on the true boxes. Returns the entry's
    ``status``, ``log``, ``seconds`` and metrics (or ``error``) fields."""
    spec = {"config": config, "opts": list(opts), "weights": weights}
    cmd = _train_net(python, config, list(opts), where, weights, eval_only=True)
    error, seconds = _child(cmd, where, spec, None, log, what, env)
    fields = {"log": os.path.join(where, "stdout.txt"), "seconds": seconds}
    if error:
        return dict(fields, status="failed", error=error)
    fields.update(status="ok", **_metrics(where))
    if true_boxes:
        with true_boxes:
            fields["true_box_masks"] = _true_box_masks_of(config, opts, weights, where)
    return fields


def run_plan(
    plan: Plan, python: str = sys.executable, command: str = "", log=print, jobs: int = 1
) -> dict:
    """Run ``plan`` (the module docstring) with children on ``python``, reusing finished runs,
    ``jobs`` runs at a time after the warm-up (each with its share of the cores,
    :func:`_child_env`; the entries keep the plan's order). Returns the summary (also
    ``<output_dir>/summary.json``). RuntimeError: the warm-up failed (recorded first);
    ValueError: ``jobs`` is not a positive integer, or the warm-up weights do not fit an
    arm's model."""
    from .runner_report import markdown, plot

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}; expected an integer >= 1 (runs trained at a time)")
    start, out, env = time.time(), plan.output_dir, _child_env(jobs)
    os.makedirs(out, exist_ok=True)
    w = plan.warmup
    warm_keys = ("config", "iterations", "weights", "opts", "fresh", "start")
    summary = {
        "suite": plan.name, "description": plan.description, "placement": plan.placement,
        "command": command, "machine": machine_info(), "seeds": plan.seeds,
        "arms": [a.name for a in plan.arms], "labels": {a.name: a.label for a in plan.arms},
        "multiples": plan.multiples, "iterations": plan.iterations,
        "warmup": w and {k: w[k] for k in warm_keys}, "residual_images": plan.residual_images,
        "true_box_masks": plan.true_box_masks,
        "jobs": jobs, "child_threads": env.get("OMP_NUM_THREADS", "unset"),
        "floors": {}, "seconds": {}, "runs": [],
    }  # fmt: skip

    def write():
        warm = (summary["warmup"] or {}).get("seconds") or 0.0
        runs = sum(r.get("seconds") or 0.0 for r in summary["runs"])
        summary["seconds"] = {"warmup": warm, "runs": runs, "total": warm + runs}
        summary["seconds"]["this_invocation"] = time.time() - start
        write_atomic(os.path.join(out, "summary.json"), json.dumps(summary, indent=1))

    log(f"[{time.strftime('%H:%M:%S')}] {plan.name}: building the arms' models")
    models, params = _models(plan)
    if plan.floors:
        test_set = _cfg(plan.runs[0].config, plan.opts).DATASETS.TEST[0]
        summary["floors"] = suite_floors(test_set, plan.floors)
    write()
    digest = None
    if w:
        try:
            digest = _warm_up(plan, summary, models, python, log, env)
        finally:
            write()
    del models

    guard = threading.Lock()  # summary["runs"] and summary.json, shared by the jobs
    in_process = threading.Lock()  # models evaluated in this process: one at a time

    order = {(r.arm, r.seed, t): (i, j) for i, r in enumerate(plan.runs)
             for j, t in enumerate(r.test_steps or [None])}  # fmt: skip

    def record(entry: dict):  # in the plan's order, whichever job finishes first
        with guard:
            summary["runs"].append(entry)
            summary["runs"].sort(key=lambda e: order[e["arm"], e["seed"], e["test_steps"]])
            write()

    def train_and_evaluate(run: Run):
        p, what = params[run.arm], f"{run.arm} seed {run.seed}"
        spec = dict(_spec(run.config, run.opts, w and w["start"]), warmup_sha256=digest)
        cmd = _train_net(python, run.config, run.opts, run.run_dir, w and w["start"])
        error, seconds = _child(cmd, run.run_dir, spec, run.weights, log, f"train {what}", env)
        log_path = os.path.join(run.run_dir, "stdout.txt")
        first = run.test_steps[0] if run.test_steps else None
        if error:
            log(f"[{time.strftime('%H:%M:%S')}] {what}: FAILED ({error.splitlines()[0]})")
            for t in run.test_steps or [None]:  # the attempt's time is counted once
                fields = dict(status="failed", error=error, log=log_path, weights=None)
                record(_entry(run, t, p, seconds=seconds if t == first else None, **fields))
            return
        fields = dict(status="ok", seconds=seconds, log=log_path, **_metrics(run.run_dir))
        if plan.true_box_masks:
            with in_process:
                fields["true_box_masks"] = _true_box_masks(run, first, run.run_dir)
        entry = _entry(run, first, p, **fields, **_training_log(run.run_dir))
        record(entry)
        for t in run.test_steps[1:]:
            fields = evaluate_again(
                python, run.config, run.eval_opts(t), run.weights, run.eval_dir(t),
                f"evaluate {what} at {t} steps", log, env, plan.true_box_masks and in_process,
            )  # fmt: skip
            record(_entry(run, t, p, **fields))
        if plan.residual_images and run.steps:
            log(f"[{time.strftime('%H:%M:%S')}] {what}: residual curves")
            with in_process:
                residual = _residuals(plan, run)
            with guard:
                entry["residual"] = residual
                write()

    stop = threading.Event()  # after an error or Ctrl-C, the queued runs return at once

    def run_one(run: Run):
        if not stop.is_set():
            try:
                train_and_evaluate(run)
            except BaseException:
                stop.set()
                raise

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            for done in [pool.submit(run_one, run) for run in plan.runs]:
                done.result()  # re-raises what a job raised
        finally:  # the running children end first (the pool's exit waits for them)
            stop.set()

    summary["plot"] = plot(summary, os.path.join(out, "pq_vs_steps.png"))
    write()
    write_atomic(os.path.join(out, "summary.md"), markdown(summary))
    return summary


#: Fields that summaries must share to be merged (:func:`merge_summaries`).
MERGE_KEYS = ("suite", "placement", "multiples", "iterations", "residual_images")
MERGE_KEYS += ("true_box_masks",)


def _rule_keys(arm_name: str) -> set:
    """The keys an arm's training rule sets (none for ff or a --configs arm)."""
    try:
        arm = parse_arm(arm_name)
    except ValueError:  # a --configs arm: its config file is its rule
        return set()
    return set(_rule_opts(arm)[::2]) if arm.recurrent else set()


def _run_settings(run: dict, rule_keys: set) -> Dict[str, str]:
    """A summary entry's overrides as KEY -> VALUE (the last wins, as in the config), without
    what differs between the runs of one comparison: the seed and the ``rule_keys``."""
    pairs = dict(zip(run["opts"][::2], run["opts"][1::2]))
    return {k: v for k, v in pairs.items() if k != "SEED" and k not in rule_keys}


_MODE_ORDER = ("ff", "bptt", "cbptt", "rbp", "crbp")


def _arm_order(name: str) -> tuple:
    """Sort key: feedforward first, then BPTT, C-BPTT, RBP, C-RBP, each by steps; other names
    (e.g. config files) last. Ties keep their order (a stable sort)."""
    try:
        arm = parse_arm(name)
    except ValueError:
        return (len(_MODE_ORDER), 0)
    rank = _MODE_ORDER.index(arm.mode) if arm.mode in _MODE_ORDER else len(_MODE_ORDER)
    return (rank, arm.steps)


def merge_summaries(dirs: Sequence[str], output_dir: str, command: str = "") -> dict:
    """Join the ``summary.json`` of several calls of one comparison (e.g. seeds, or some of the
    arms, run on separate cores from the same warm-up) into ``output_dir``: runs, seeds and
    arms joined, times summed, ``summary.md`` and ``pq_vs_steps.png`` drawn again. The runs
    stay where they are.

    Raises:
        ValueError: a folder without ``summary.json``, summaries of different comparisons
            (a field of :data:`MERGE_KEYS`, the warm-up checkpoint's sha256, the floors'
            dataset or the runs' overrides other than seed and training rule differ), or a
            run (arm, seed, test steps) in two of them.
    """
    from .runner_report import markdown, plot

    if len(dirs) < 2:
        raise ValueError(f"merge: {list(dirs)}; expected two or more output folders")
    summaries = []
    for d in dirs:
        try:
            with open(os.path.join(d, "summary.json")) as f:
                summaries.append(json.load(f))
        except (OSError, ValueError) as e:
            raise ValueError(f"merge: {d}/summary.json cannot be read ({e})") from None
    first = summaries[0]

    def fingerprint(s):
        w = s.get("warmup") or {}
        return dict(
            {k: s.get(k) for k in MERGE_KEYS},
            warmup_sha256=w.get("sha256"),
            floors_dataset=(s.get("floors") or {}).get("dataset"),
        )

    for d, s in zip(dirs[1:], summaries[1:]):
        a, b = fingerprint(first), fingerprint(s)
        diff = [k for k in a if a[k] != b[k]]
        if diff:
            raise ValueError(
                f"merge: {dirs[0]} and {d} are not one comparison ({', '.join(diff)}: "
                f"{[a[k] for k in diff]} against {[b[k] for k in diff]})"
            )
    # one comparison: every run with the same overrides, but for the seed and the rules' keys
    rules = set().union(*(_rule_keys(r["arm"]) for s in summaries for r in s["runs"]))
    ref_dir, ref = None, None
    for d, s in zip(dirs, summaries):
        for r in s["runs"]:
            mine = _run_settings(r, rules)
            if ref is None:
                ref_dir, ref = d, mine
            diff = sorted(k for k in set(mine) | set(ref) if mine.get(k) != ref.get(k))
            if diff:
                what = ", ".join(f"{k} {ref.get(k)} against {mine.get(k)}" for k in diff)
                raise ValueError(
                    f"merge: {ref_dir} and {d} are not one comparison (the runs' overrides "
                    f"differ: {what})"
                )
    runs, seen = [], {}
    for d, s in zip(dirs, summaries):
        for r in s["runs"]:
            key = (r["arm"], r["seed"], r.get("test_steps"))
            if key in seen:
                raise ValueError(f"merge: run {key} (arm, seed, test steps) in {seen[key]} and {d}")
            seen[key] = d
            runs.append(r)
    arms = sorted(dict.fromkeys(a for s in summaries for a in s["arms"]), key=_arm_order)
    order = {a: i for i, a in enumerate(arms)}
    runs.sort(key=lambda r: (r["seed"], order[r["arm"]]))
    # the warm-up as trained (not as given to a later call), counted once
    warm = next((s["warmup"] for s in summaries if (s.get("warmup") or {}).get("status") == "ok"),
                first.get("warmup"))  # fmt: skip
    merged = dict(first, runs=runs, warmup=warm, merged_from=[os.path.abspath(d) for d in dirs])
    merged["arms"] = arms
    for key in ("jobs", "child_threads"):  # each call's own: in its command
        merged.pop(key, None)
    merged["labels"] = {k: v for s in summaries for k, v in (s.get("labels") or {}).items()}
    merged["seeds"] = sorted({seed for s in summaries for seed in s["seeds"]})
    commands = [s.get("command") or "?" for s in summaries] + [command] * bool(command)
    merged["command"] = "; then ".join(commands)
    warm_s = (warm or {}).get("seconds") or 0.0
    run_s = sum(r.get("seconds") or 0.0 for r in runs)
    merged["seconds"] = {"warmup": warm_s, "runs": run_s, "total": warm_s + run_s}
    os.makedirs(output_dir, exist_ok=True)
    merged["plot"] = plot(merged, os.path.join(output_dir, "pq_vs_steps.png"))
    write_atomic(os.path.join(output_dir, "summary.json"), json.dumps(merged, indent=1))
    write_atomic(os.path.join(output_dir, "summary.md"), markdown(merged))
    return merged
