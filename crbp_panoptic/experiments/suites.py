"""Comparison suites: the recurrent refiner against its controls, from one shared warm start.

A suite (:data:`SUITES`) is a declared comparison: a feedforward config, a recurrent config
whose recurrence sits in one placement (the FPN or the mask head), the arms, the training
budget and the floors. Every suite compares four arms (the grammar of
:mod:`crbp_panoptic.crbp.arms`):

* ``ff``: the feedforward config;
* ``bptt:1``: the recurrent config run for one step (``MODEL.CRBP.GRAD`` bptt, ``STEPS`` 1):
  the same parameters as the recurrent arms, no recurrence (the paper's ablation);
* ``bptt:3``: back-propagation through three steps;
* ``crbp:T``: C-RBP at the recurrent config's own ``MODEL.CRBP.STEPS`` T.

:func:`run_suite` then

1. trains the feedforward config once (the *warm-up*, ``<output>/warmup/``; a finished
   warm-up is reused by every arm, seed and rerun, or one is given as ``warmup_weights``);
2. loads the warm-up's ``model_final.pth`` into every arm's model through Detectron2's
   ``DetectionCheckpointer`` (in this process, to log and record the keys the checkpoint
   does not fill: exactly the recurrent module's, see :func:`warm_start_keys`);
3. trains every arm, feedforward included, for the same number of further iterations from
   that checkpoint (``MODEL.WEIGHTS``; no ``--resume``: iteration 0 and a fresh learning
   rate schedule) with ``SEED`` = seed, by ``tools/train_net.py`` in a child process, which
   evaluates on ``DATASETS.TEST`` at T test steps at the end (``TEST_TOL`` 0);
4. evaluates every recurrent arm again at each further multiple m of its steps
   (``--eval-only``, ``MODEL.CRBP.TEST_STEPS`` = m x steps);
5. writes ``<output>/summary.json`` after every child: one entry per (arm, seed, test-step
   multiple) with the config, the opts and the weights that reproduce its PQ through
   ``tools/train_net.py --eval-only --config-file <config> <opts> MODEL.WEIGHTS <weights>``.
   A run that fails is kept as ``"status": "failed"`` with its error and log. A rerun
   reuses every finished run; runs made with other settings are an error, never
   overwritten. At the end: ``summary.md`` (:func:`suite_markdown`) and
   ``pq_vs_steps.png`` (:func:`plot_pq_vs_steps`).

Floors (:func:`suite_floors`) describe the test split without any model: the grouping-free
mask ("every pixel of the class inside the true box") and how well it already scores.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from crbp_panoptic.crbp.arms import FEEDFORWARD, Arm, parse_arm

from .report import markdown_table, write_atomic
from .seeds import REPO, _recorded_seconds, _results, machine_info

__all__ = [
    "PLACEMENTS",
    "SUITES",
    "Suite",
    "SuitePlan",
    "get_suite",
    "placement_of",
    "plan_suite",
    "plot_pq_vs_steps",
    "run_suite",
    "suite_floors",
    "suite_markdown",
    "warm_start_keys",
]

SYNTHETIC = "configs/Synthetic-PanopticSegmentation/"

#: Where a config puts its recurrence: (what it is, what a config sets for it).
PLACEMENTS = {
    "fpn": (
        "the recurrent FPN",
        "MODEL.BACKBONE.NAME 'build_resnet_crbp_fpn_backbone' and a stock mask head",
    ),
    "mask_head": (
        "the recurrent mask head",
        "MODEL.ROI_MASK_HEAD.NAME 'CRBPMaskHead' and a stock FPN backbone",
    ),
}

#: ``crbp:T`` in a suite's arms: T is the recurrent config's ``MODEL.CRBP.STEPS``.
STEPS_PLACEHOLDER = "T"

#: Keys the runner sets itself; a suite's or the caller's opts may not set them.
RESERVED_KEYS = {
    "SEED": "the seeds argument (--seeds)",
    "OUTPUT_DIR": "the output directory (--output)",
    "MODEL.WEIGHTS": "the warm-up checkpoint (--warmup-weights)",
    "SOLVER.MAX_ITER": "iterations / warmup_iterations (--iterations, --warmup-iterations)",
    "SOLVER.STEPS": "the runner (the config's decay points, scaled to the iterations)",
    "SOLVER.CHECKPOINT_PERIOD": "the runner (only model_final.pth is kept)",
    "MODEL.CRBP.GRAD": "the arms",
    "MODEL.CRBP.TEST_STEPS": "the test-step multiples (--test-steps-multiples)",
    "MODEL.CRBP.TEST_TOL": "the runner (0: exactly the asked test steps)",
}

#: What the floor ``grouping_free_mask_iou`` is.
GROUPING_FREE = (
    "median IoU of each thing with 'every pixel of its class inside its true box' on the test "
    "split (no model; crbp_panoptic.data.longrange.split_statistics)"
)


# --- floors ---------------------------------------------------------------------------------


def _grouping_free_mask_iou(dataset_name: str) -> dict:
    from crbp_panoptic.data import ensure_generated, split_statistics

    split_dir = ensure_generated(dataset_name, validate=False)
    if split_dir is None:
        return {
            "grouping_free_mask_iou": None,
            "reason": (
                f"{dataset_name!r} is not a synthetic split of this package: its panoptic "
                "PNGs are not read here"
            ),
        }
    stats = split_statistics(split_dir)
    if "box_class_iou_median" not in stats:
        return {
            "grouping_free_mask_iou": None,
            "reason": f"split_statistics gave no 'box_class_iou_median' (keys {sorted(stats)})",
        }
    return {
        "grouping_free_mask_iou": stats["box_class_iou_median"],
        "grouping_free_mask_iou_definition": GROUPING_FREE,
        "split_statistics": stats,
    }


#: Floor name -> function of the test dataset's registered name returning the floor's fields.
FLOORS = {"grouping_free_mask_iou": _grouping_free_mask_iou}


def suite_floors(dataset_name: str, names: Sequence[str] = tuple(FLOORS)) -> dict:
    """Model-free floors of a test split (generated first if it is a missing synthetic split).

    Args:
        dataset_name (str): a registered dataset, e.g. ``"synthetic_longrange_val_separated"``.
        names (list[str]): keys of :data:`FLOORS`.

    Returns:
        dict: ``dataset`` and, per floor, its value under its name (None, with a ``reason``,
        where it does not apply) plus the fields it explains itself with.
    """
    out = {"dataset": dataset_name}
    for name in names:
        out.update(FLOORS[name](dataset_name))
    return out


# --- the suites ---------------------------------------------------------------------------


def _check_count(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r}; expected an integer >= 1")


def _check_multiples(multiples, where):
    ms = list(multiples)
    if (
        not ms
        or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms)
        or len(set(ms)) != len(ms)
        or 1 not in ms
    ):
        raise ValueError(
            f"{where}: test-step multiples {ms}; expected distinct integers >= 1, 1 among them "
            "(1: the evaluation at the end of training)"
        )


@dataclasses.dataclass(frozen=True)
class Suite:
    """A declared comparison (see the module docstring).

    Attributes:
        name: the ``--suite`` value.
        description: one line for reports.
        placement: a key of :data:`PLACEMENTS`: where ``recurrent_config`` recurs.
        feedforward_config: the ``ff`` arm's config, also the warm-up's (repository-relative
            or absolute).
        recurrent_config: the recurrent arms' config.
        warmup_iterations: iterations of the warm-up.
        iterations: further iterations of every arm from the warm-up.
        arms: arm names (:func:`~crbp_panoptic.crbp.arms.parse_arm`); ``crbp:T`` takes T from
            the recurrent config.
        multiples: test-step multiples m (TEST_STEPS = m x steps); 1 is the end of training.
        floors: names of the floors to compute (see :func:`suite_floors`).
        opts: config overrides for every run (``KEY VALUE ...``), e.g. tiny sizes in tests.
        warmup_seed: ``SEED`` of the warm-up.
    """

    name: str
    description: str
    placement: str
    feedforward_config: str
    recurrent_config: str
    warmup_iterations: int
    iterations: int
    arms: Tuple[str, ...] = ("ff", "bptt:1", "bptt:3", "crbp:T")
    multiples: Tuple[int, ...] = (1, 3)
    floors: Tuple[str, ...] = ("grouping_free_mask_iou",)
    opts: Tuple[str, ...] = ()
    warmup_seed: int = 0

    def __post_init__(self):
        where = f"suite {self.name!r}"
        if self.placement not in PLACEMENTS:
            raise ValueError(f"{where}: placement={self.placement!r}; allowed: {list(PLACEMENTS)}")
        for key in ("warmup_iterations", "iterations"):
            _check_count(getattr(self, key), f"{where}: {key}")
        _check_multiples(self.multiples, where)
        unknown = [f for f in self.floors if f not in FLOORS]
        if unknown:
            raise ValueError(f"{where}: floors {unknown}; allowed: {list(FLOORS)}")
        if (
            FEEDFORWARD not in self.arms
            or len(self.arms) < 2
            or len(set(self.arms)) != len(self.arms)
        ):
            raise ValueError(
                f"{where}: arms={list(self.arms)}; expected distinct arms, 'ff' and at least "
                "one recurrent arm"
            )


#: The declared suites (``tools/compare_configs.py --suite NAME``). Budgets: see the time
#: estimate in ``tools/compare_configs.py``.
SUITES: Dict[str, Suite] = {
    "quick": Suite(
        name="quick",
        description="recurrent FPN (P3-P5) against feedforward Panoptic FPN, quick synthetic data",
        placement="fpn",
        feedforward_config=SYNTHETIC + "panoptic_fpn_R_18_quick.yaml",
        recurrent_config=SYNTHETIC + "panoptic_crbp_fpn_R_18_quick.yaml",
        warmup_iterations=300,
        iterations=400,
    ),
    "longrange": Suite(
        name="longrange",
        description="recurrent mask head against the stock mask head, long-range synthetic data",
        placement="mask_head",
        feedforward_config=SYNTHETIC + "longrange_panoptic_fpn_R_18.yaml",
        recurrent_config=SYNTHETIC + "longrange_panoptic_crbp_mask_R_18.yaml",
        # box AP 40.8 on val after 1000 iterations from scratch (docs/results/longrange.md)
        warmup_iterations=1000,
        iterations=300,
    ),
}


def get_suite(name: str) -> Suite:
    """The declared suite called ``name``.

    Raises:
        ValueError: naming ``name`` and the suites there are.
    """
    if name not in SUITES:
        raise ValueError(f"suite {name!r}: no such suite; allowed: {sorted(SUITES)}")
    return SUITES[name]


def placement_of(cfg) -> str:
    """Where a config's recurrence sits: ``"fpn"``, ``"mask_head"``, ``"fpn+mask_head"`` or
    ``"feedforward"`` (read from ``MODEL.BACKBONE.NAME`` and ``MODEL.ROI_MASK_HEAD.NAME``)."""
    fpn = "crbp" in cfg.MODEL.BACKBONE.NAME.lower()
    mask = cfg.MODEL.ROI_MASK_HEAD.NAME == "CRBPMaskHead"
    if fpn and mask:
        return "fpn+mask_head"
    return "fpn" if fpn else "mask_head" if mask else "feedforward"


# --- planning (all checks before anything trains) -------------------------------------------


@dataclasses.dataclass
class ArmRun:
    """One training run of an arm and seed, and its evaluations.

    ``opts`` are the overrides that, with ``config`` and the run's ``model_final.pth`` as
    ``MODEL.WEIGHTS``, reproduce its evaluation at multiple 1 (:meth:`eval_opts`: any other).
    """

    arm: str
    seed: int
    config: str
    opts: List[str]
    run_dir: str
    steps: Optional[int]
    multiples: List[int]

    @property
    def weights(self) -> str:
        return os.path.join(self.run_dir, "model_final.pth")

    def eval_opts(self, multiple: int) -> List[str]:
        if multiple == 1 or self.steps is None:
            return list(self.opts)
        return _set(self.opts, "MODEL.CRBP.TEST_STEPS", str(multiple * self.steps))

    def eval_dir(self, multiple: int) -> str:
        return os.path.join(self.run_dir, f"test_steps{multiple * self.steps}")


@dataclasses.dataclass
class SuitePlan:
    """Everything :func:`run_suite` will run, resolved and checked (see :func:`plan_suite`)."""

    suite: Suite
    seeds: List[int]
    output_dir: str
    iterations: int
    warmup_iterations: int
    multiples: List[int]
    opts: List[str]
    arms: List[Arm]
    warmup_config: str
    warmup_opts: List[str]
    warmup_dir: Optional[str]  # None: warmup_weights were given
    warmup_weights: str
    runs: List[ArmRun]


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
    from crbp_panoptic.engine import setup_cfg

    return setup_cfg(os.path.join(str(REPO), config), list(opts) + ["MODEL.DEVICE", "cpu"])


def _schedule_opts(cfg, iterations: int) -> List[str]:
    """``SOLVER.MAX_ITER`` = iterations, the config's decay points scaled to it, and no
    checkpoints but ``model_final.pth``."""
    scale = iterations / cfg.SOLVER.MAX_ITER
    steps = tuple(s for s in (round(x * scale) for x in cfg.SOLVER.STEPS) if 0 < s < iterations)
    return [
        "SOLVER.MAX_ITER",
        str(iterations),
        "SOLVER.STEPS",
        str(steps),
        "SOLVER.CHECKPOINT_PERIOD",
        str(iterations + 1),
    ]


def _check_opts(opts: Sequence[str], where: str):
    if len(opts) % 2:
        raise ValueError(f"{where}: config overrides come in KEY VALUE pairs, got {list(opts)}")
    for key in opts[::2]:
        if key in RESERVED_KEYS:
            raise ValueError(
                f"{where}: {key} is set by the suite runner, not by overrides; use "
                f"{RESERVED_KEYS[key]}"
            )


def _check_placement(config: str, cfg, expected: str, role: str, suite: Suite):
    got = placement_of(cfg)
    if got == expected:
        return
    if expected == "feedforward":
        allowed = "a stock FPN backbone and a stock mask head"
    else:
        allowed = PLACEMENTS[expected][1]
    raise ValueError(
        f"{role} config {config!r} has placement {got!r} (MODEL.BACKBONE.NAME "
        f"{cfg.MODEL.BACKBONE.NAME!r}, MODEL.ROI_MASK_HEAD.NAME {cfg.MODEL.ROI_MASK_HEAD.NAME!r});"
        f" suite {suite.name!r} compares {PLACEMENTS[suite.placement][0]} with the feedforward "
        f"model: allowed for its {role} config: {expected!r} placement, i.e. {allowed}"
    )


def _arm_dir(arm: Arm) -> str:
    return arm.name.replace(":", "_")


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
    old = _read_spec(run_dir)
    if old is None:
        return
    diff = [k for k in spec if k != "warmup_sha256" and old.get(k) != spec[k]]
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
    opts: Sequence[str] = (),
) -> SuitePlan:
    """Resolve and check a suite run; nothing is trained and nothing is written.

    Args:
        suite (Suite): e.g. ``SUITES["quick"]`` (``dataclasses.replace`` it to change a config).
        seeds (list[int]): ``SEED`` of the arm runs.
        output_dir (str): where the warm-up, the runs and ``summary.json`` go.
        iterations, warmup_iterations (int): override the suite's.
        warmup_weights (str): an existing warm-up ``model_final.pth`` to start from instead of
            training (or reusing) ``<output_dir>/warmup``.
        multiples (list[int]): override the suite's test-step multiples.
        opts (list[str]): ``KEY VALUE`` overrides for every run, after the suite's.

    Returns:
        SuitePlan

    Raises:
        ValueError / FileNotFoundError: naming the value and what is allowed: bad seeds or
            counts, overrides of keys the runner sets, a missing config, a config whose
            placement does not match the suite, a missing ``warmup_weights``, an unknown arm,
            or runs in ``output_dir`` made with other settings.
    """
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(
            f"seeds={seeds}; expected one or more integers >= 0 (a negative SEED draws a "
            "random one: the run could not be repeated)"
        )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds}; each seed once")
    iterations = suite.iterations if iterations is None else iterations
    warmup_iterations = suite.warmup_iterations if warmup_iterations is None else warmup_iterations
    _check_count(iterations, "iterations")
    _check_count(warmup_iterations, "warmup_iterations")
    multiples = sorted(suite.multiples if multiples is None else multiples)
    _check_multiples(multiples, f"suite {suite.name!r}")
    _check_opts(suite.opts, f"suite {suite.name!r} opts")
    _check_opts(opts, "config overrides")
    common = [str(o) for o in suite.opts] + [str(o) for o in opts]

    ff_config = _config_path(suite.feedforward_config)
    rec_config = _config_path(suite.recurrent_config)
    ff_cfg, rec_cfg = _cfg(ff_config, common), _cfg(rec_config, common)
    _check_placement(ff_config, ff_cfg, "feedforward", "feedforward", suite)
    _check_placement(rec_config, rec_cfg, suite.placement, "recurrent", suite)
    steps = int(rec_cfg.MODEL.CRBP.STEPS)
    arms = [parse_arm(a.replace(f":{STEPS_PLACEHOLDER}", f":{steps}")) for a in suite.arms]

    output_dir = os.path.abspath(output_dir)
    warmup_dir = None
    if warmup_weights is not None:
        if not os.path.isfile(warmup_weights):
            raise FileNotFoundError(
                f"warm-up weights {warmup_weights!r}: no such file; allowed: the "
                f"model_final.pth of a finished warm-up run of {ff_config}, or none (the "
                f"warm-up is then trained into {os.path.join(output_dir, 'warmup')}, or reused "
                "from there)"
            )
        warmup_weights = os.path.abspath(warmup_weights)
    else:
        warmup_dir = os.path.join(output_dir, "warmup")
        warmup_weights = os.path.join(warmup_dir, "model_final.pth")
    warmup_opts = common + _schedule_opts(ff_cfg, warmup_iterations)
    warmup_opts += ["SEED", str(suite.warmup_seed)]
    if warmup_dir:
        _check_no_other_runs(warmup_dir, _spec(ff_config, warmup_opts, None))

    runs = []
    for seed in seeds:
        for arm in arms:
            config, cfg = (rec_config, rec_cfg) if arm.recurrent else (ff_config, ff_cfg)
            run_opts = common + _schedule_opts(cfg, iterations)
            if arm.recurrent:
                run_opts += ["MODEL.CRBP.GRAD", arm.mode, "MODEL.CRBP.STEPS", str(arm.steps)]
                if arm.lcp_subsample is not None or arm.lcp_crop:
                    run_opts += [str(o) for o in arm.config_opts()[4:]]
                run_opts += ["MODEL.CRBP.TEST_STEPS", str(arm.steps), "MODEL.CRBP.TEST_TOL", "0.0"]
            run_opts += ["SEED", str(seed)]
            run = ArmRun(
                arm=arm.name,
                seed=seed,
                config=config,
                opts=run_opts,
                run_dir=os.path.join(output_dir, "runs", _arm_dir(arm), f"seed{seed}"),
                steps=arm.steps if arm.recurrent else None,
                multiples=multiples if arm.recurrent else [1],
            )
            _check_no_other_runs(run.run_dir, _spec(config, run_opts, warmup_weights))
            runs.append(run)
    return SuitePlan(
        suite=suite,
        seeds=seeds,
        output_dir=output_dir,
        iterations=iterations,
        warmup_iterations=warmup_iterations,
        multiples=multiples,
        opts=common,
        arms=arms,
        warmup_config=ff_config,
        warmup_opts=warmup_opts,
        warmup_dir=warmup_dir,
        warmup_weights=warmup_weights,
        runs=runs,
    )


# --- models: parameters and the warm start --------------------------------------------------


def _build(config: str, opts: Sequence[str]):
    from detectron2.modeling import build_model

    import crbp_panoptic  # noqa: F401  (registers)

    return build_model(_cfg(config, opts))


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def warm_start_keys(model, weights: str) -> dict:
    """Load ``weights`` into ``model`` through Detectron2's ``DetectionCheckpointer`` (as
    ``MODEL.WEIGHTS`` is loaded for training) and return what did not match.

    Returns:
        dict: ``missing`` (model keys the checkpoint does not hold: left at their
        initialisation), ``unexpected`` (checkpoint keys the model has no place for),
        ``incorrect_shapes`` ([key, checkpoint shape, model shape]: not loaded); sorted.
    """
    from detectron2.checkpoint import DetectionCheckpointer

    class _Recording(DetectionCheckpointer):
        def _load_model(self, checkpoint):
            self.incompatible = super()._load_model(checkpoint)
            return self.incompatible

    checkpointer = _Recording(model)
    checkpointer.load(weights, checkpointables=[])
    inc = checkpointer.incompatible
    return {
        "missing": sorted(inc.missing_keys),
        "unexpected": sorted(inc.unexpected_keys),
        "incorrect_shapes": sorted([k, list(a), list(b)] for k, a, b in inc.incorrect_shapes),
    }


def _model_facts(plan: SuitePlan):
    """Per arm: its model (built once, for the warm-start check) and its parameter counts.
    ``recurrent`` counts the parameters the feedforward model does not have."""
    models, params = {}, {}
    ff_names = None
    for run in plan.runs[: len(plan.arms)]:  # the first seed's runs: one per arm
        model = _build(run.config, run.opts)
        if run.arm == FEEDFORWARD:
            ff_names = {n for n, _ in model.named_parameters()}
        models[run.arm] = model
    for arm, model in models.items():
        params[arm] = {
            "total": _count(model),
            "mask_head": _count(model.roi_heads.mask_head),
            "recurrent": sum(p.numel() for n, p in model.named_parameters() if n not in ff_names),
        }
    return models, params


def _check_warm_start(plan: SuitePlan, models: dict, log) -> dict:
    """:func:`warm_start_keys` for every arm, logged; keys that a feedforward checkpoint should
    have filled (or that have another shape) are an error."""
    out = {}
    ff_keys = set(models[FEEDFORWARD].state_dict())
    for arm, model in models.items():
        keys = warm_start_keys(model, plan.warmup_weights)
        stock_missing = [k for k in keys["missing"] if k in ff_keys]
        if keys["incorrect_shapes"] or stock_missing:
            raise ValueError(
                f"warm-up weights {plan.warmup_weights!r} do not fit arm {arm!r}: "
                f"{len(keys['incorrect_shapes'])} keys of another shape "
                f"{keys['incorrect_shapes'][:5]}, {len(stock_missing)} keys of the feedforward "
                f"model missing {stock_missing[:5]}; allowed: weights of {plan.warmup_config} "
                "trained with the same overrides"
            )
        log(
            f"warm start {arm}: {len(keys['missing'])} keys not in the warm-up checkpoint (new, "
            f"left at their initialisation): {_brief(keys['missing'])}; "
            f"{len(keys['unexpected'])} checkpoint keys unused: {_brief(keys['unexpected'])}"
        )
        out[arm] = keys
    return out


def _brief(keys: Sequence[str]) -> str:
    """Keys grouped by their module (the first three dotted names): ``module.* (count)``."""
    if not keys:
        return "none"
    groups: Dict[str, int] = {}
    for k in keys:
        groups[".".join(k.split(".")[:3])] = groups.get(".".join(k.split(".")[:3]), 0) + 1
    return ", ".join(f"{g}.* ({n})" for g, n in groups.items())


# --- children -------------------------------------------------------------------------------


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _run_child(cmd: List[str], out_dir: str) -> Tuple[Optional[str], float, str]:
    """Run ``cmd`` (stdout and stderr to ``<out_dir>/stdout.txt``).

    Returns:
        tuple: (error or None, wall seconds, log path).
    """
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "stdout.txt")
    start = time.time()
    with open(log_path, "w") as log:
        code = subprocess.call(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=str(REPO)
        )
    seconds = time.time() - start
    with open(os.path.join(out_dir, "wall_seconds.txt"), "w") as f:
        f.write(f"{seconds:.1f}\n")
    if code:
        with open(log_path, errors="replace") as f:
            tail = f.read().splitlines()[-8:]
        return f"exit code {code}; last lines of the log:\n" + "\n".join(tail), seconds, log_path
    if _results(out_dir) is None:
        return f"{out_dir}/log.txt holds no panoptic evaluation", seconds, log_path
    return None, seconds, log_path


def _finished(out_dir: str, spec: dict, weights: Optional[str]) -> bool:
    return (
        _read_spec(out_dir) == spec
        and (weights is None or os.path.isfile(weights))
        and _results(out_dir) is not None
    )


def _fresh(out_dir: str, spec: dict):
    """Empty ``out_dir`` (one of this runner's folders) and record what will run there."""
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    write_atomic(os.path.join(out_dir, "run.json"), json.dumps(spec, indent=1))


def _train_cmd(python, config, opts, weights, out_dir) -> List[str]:
    cmd = [python, str(REPO / "tools" / "train_net.py"), "--config-file", config, *opts]
    if weights:
        cmd += ["MODEL.WEIGHTS", weights]
    return cmd + ["OUTPUT_DIR", out_dir]


def _eval_cmd(python, config, opts, weights, out_dir) -> List[str]:
    return [
        python,
        str(REPO / "tools" / "train_net.py"),
        "--eval-only",
        "--config-file",
        config,
        *opts,
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        out_dir,
    ]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- the run --------------------------------------------------------------------------------


def _metrics(out_dir: str) -> dict:
    r = _results(out_dir) or {}
    return {
        "pq": r.get("PQ"),
        "pq_th": r.get("PQ_th"),
        "pq_st": r.get("PQ_st"),
        "box_ap": r.get("bbox_AP"),
    }


def _entry(run: ArmRun, multiple: int, params: dict, **fields) -> dict:
    entry = {
        "arm": run.arm,
        "seed": run.seed,
        "config": run.config,
        "opts": run.eval_opts(multiple),
        "weights": run.weights,
        "params": params,
        "steps_multiple": multiple,
        "test_steps": multiple * run.steps if run.steps else None,
        "pq": None,
        "pq_th": None,
        "pq_st": None,
        "box_ap": None,
    }
    entry.update(fields)
    return entry


def _now() -> str:
    return time.strftime("%H:%M:%S")


def run_suite(plan: SuitePlan, python: str = sys.executable, command: str = "", log=print) -> dict:
    """Run a planned suite (see the module docstring); finished runs are reused.

    Args:
        plan (SuitePlan): from :func:`plan_suite`.
        python (str): the interpreter of the children.
        command (str): the command line, recorded.
        log (callable): progress messages.

    Returns:
        dict: the summary, also in ``<output_dir>/summary.json``.

    Raises:
        RuntimeError: the warm-up failed (recorded in ``summary.json`` first).
        ValueError: the warm-up weights do not fit an arm's model.
    """
    start = time.time()
    out = plan.output_dir
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "summary.json")
    suite = plan.suite
    summary = {
        "suite": suite.name,
        "description": suite.description,
        "placement": suite.placement,
        "command": command,
        "machine": machine_info(),
        "seeds": plan.seeds,
        "arms": [a.name for a in plan.arms],
        "multiples": plan.multiples,
        "iterations": plan.iterations,
        "warmup": {
            "config": plan.warmup_config,
            "iterations": plan.warmup_iterations,
            "weights": plan.warmup_weights,
            "opts": plan.warmup_opts if plan.warmup_dir else None,
            "trained_here": plan.warmup_dir is not None,
        },
        "floors": {},
        "warm_start": {},
        "seconds": {},
        "runs": [],
    }

    def write():
        runs = [r for r in summary["runs"] if r.get("seconds") is not None]
        warm = summary["warmup"].get("seconds") or 0.0
        summary["seconds"] = {
            "warmup": summary["warmup"].get("seconds"),
            "runs": sum(r["seconds"] for r in runs),
            "total": warm + sum(r["seconds"] for r in runs),
            "this_invocation": time.time() - start,
        }
        write_atomic(path, json.dumps(summary, indent=1))

    log(f"[{_now()}] suite {suite.name}: building the arms' models")
    models, params = _model_facts(plan)
    test_set = _cfg(plan.warmup_config, plan.opts).DATASETS.TEST[0]
    summary["floors"] = suite_floors(test_set, suite.floors)
    write()

    if plan.warmup_dir:
        spec = _spec(plan.warmup_config, plan.warmup_opts, None)
        if _finished(plan.warmup_dir, spec, plan.warmup_weights):
            log(f"[{_now()}] warm-up: reusing {plan.warmup_weights}")
            seconds, error = _recorded_seconds(plan.warmup_dir), None
        else:
            log(f"[{_now()}] warm-up: {plan.warmup_iterations} iterations -> {plan.warmup_dir}")
            _fresh(plan.warmup_dir, spec)
            cmd = _train_cmd(python, plan.warmup_config, plan.warmup_opts, None, plan.warmup_dir)
            error, seconds, _ = _run_child(cmd, plan.warmup_dir)
        log_path = os.path.join(plan.warmup_dir, "stdout.txt")
        summary["warmup"].update(seconds=seconds, log=log_path, **_metrics(plan.warmup_dir))
        if error:
            summary["warmup"].update(status="failed", error=error)
            write()
            raise RuntimeError(f"the warm-up failed ({error}); log {log_path}")
        summary["warmup"]["status"] = "ok"
    else:
        summary["warmup"]["status"] = "given"
    digest = _sha256(plan.warmup_weights)
    summary["warmup"]["sha256"] = digest
    for run in plan.runs:
        old = _read_spec(run.run_dir)
        if old is not None and old.get("warmup_sha256") not in (None, digest):
            raise ValueError(
                f"{run.run_dir} was trained from another warm-up checkpoint (sha256 "
                f"{old.get('warmup_sha256')}, now {digest}); use another output directory, or "
                "delete that run to train it again"
            )
    summary["warm_start"] = _check_warm_start(plan, models, log)
    del models
    write()

    for run in plan.runs:
        p = params[run.arm]
        spec = dict(_spec(run.config, run.opts, plan.warmup_weights), warmup_sha256=digest)
        if _finished(run.run_dir, spec, run.weights):
            log(f"[{_now()}] {run.arm} seed {run.seed}: reusing {run.run_dir}")
            error, seconds = None, _recorded_seconds(run.run_dir)
        else:
            log(
                f"[{_now()}] {run.arm} seed {run.seed}: {plan.iterations} iterations "
                f"-> {run.run_dir}"
            )
            _fresh(run.run_dir, spec)
            cmd = _train_cmd(python, run.config, run.opts, plan.warmup_weights, run.run_dir)
            error, seconds, _ = _run_child(cmd, run.run_dir)
        log_path = os.path.join(run.run_dir, "stdout.txt")
        if error:
            log(f"[{_now()}] {run.arm} seed {run.seed}: FAILED ({error.splitlines()[0]})")
            for m in run.multiples:  # the attempt's time is counted once, at multiple 1
                summary["runs"].append(
                    _entry(run, m, p, status="failed", error=error, log=log_path, weights=None)
                )
                summary["runs"][-1]["seconds"] = seconds if m == 1 else None
            write()
            continue
        summary["runs"].append(
            _entry(run, 1, p, status="ok", seconds=seconds, log=log_path, **_metrics(run.run_dir))
        )
        write()
        for m in run.multiples[1:]:
            eval_dir = run.eval_dir(m)
            eval_spec = {"config": run.config, "opts": run.eval_opts(m), "weights": run.weights}
            if _finished(eval_dir, eval_spec, None):
                error, seconds = None, _recorded_seconds(eval_dir)
            else:
                log(f"[{_now()}] {run.arm} seed {run.seed}: evaluating at {m * run.steps} steps")
                _fresh(eval_dir, eval_spec)
                cmd = _eval_cmd(python, run.config, run.eval_opts(m), run.weights, eval_dir)
                error, seconds, _ = _run_child(cmd, eval_dir)
            fields = {"log": os.path.join(eval_dir, "stdout.txt")}
            if error:
                fields.update(status="failed", error=error, seconds=seconds)
            else:
                fields.update(status="ok", seconds=seconds, **_metrics(eval_dir))
            summary["runs"].append(_entry(run, m, p, **fields))
            write()

    png = plot_pq_vs_steps(summary, os.path.join(out, "pq_vs_steps.png"))
    summary["plot"] = png
    write()
    write_atomic(os.path.join(out, "summary.md"), suite_markdown(summary))
    return summary


# --- reporting ------------------------------------------------------------------------------


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _label(arm: str) -> str:
    return parse_arm(arm).label


def plot_pq_vs_steps(summary: dict, path: str) -> Optional[str]:
    """PQ against the test-time steps multiple, one line per arm (mean over seeds, dots: the
    seeds); the feedforward arm, which has no steps, as a flat dashed line.

    Returns:
        str or None: ``path``, or None when no run finished (nothing is written).
    """
    rows = [r for r in summary["runs"] if r.get("status") == "ok" and r.get("pq") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    multiples = sorted({r["steps_multiple"] for r in rows} | set(summary.get("multiples", [])))
    arms = list(dict.fromkeys(list(summary.get("arms", [])) + [r["arm"] for r in rows]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        by_m = {
            m: [r["pq"] for r in rows if r["arm"] == arm and r["steps_multiple"] == m]
            for m in multiples
        }
        xs = [m for m in multiples if by_m[m]]
        if not xs:
            continue
        means = [statistics.fmean(by_m[m]) for m in xs]
        if arm == FEEDFORWARD:
            (line,) = ax.plot(
                [multiples[0], multiples[-1]], [means[0]] * 2, ls="--", label=_label(arm)
            )
        else:
            (line,) = ax.plot(xs, means, marker="o", label=_label(arm))
        for m in xs:
            ax.scatter([m] * len(by_m[m]), by_m[m], color=line.get_color(), alpha=0.5, s=14)
    ax.set_xticks(multiples)
    ax.set_xticklabels([f"{m}T" if m != 1 else "T" for m in multiples])
    ax.set_xlabel("test-time steps (multiple of the trained steps T)")
    ax.set_ylabel("PQ")
    ax.set_title(f"suite {summary['suite']}: mean over seeds (dots: each seed)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _f(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def suite_markdown(summary: dict) -> str:
    """The summary as markdown: per arm and test-step multiple, PQ per seed and the means."""
    seeds = summary["seeds"]
    head = [
        "arm",
        "params (total / mask head / recurrent)",
        "test steps",
        *(f"{k}, seeds " + " / ".join(str(s) for s in seeds) for k in ("PQ", "PQ_th", "PQ_st")),
        "mean PQ",
        "mean PQ_th",
        "mean PQ_st",
        "mean box AP",
        "failed",
    ]
    rows = []
    for arm in summary["arms"]:
        for m in summary["multiples"]:
            runs = [r for r in summary["runs"] if r["arm"] == arm and r["steps_multiple"] == m]
            if not runs:
                continue
            ok = [r for r in runs if r["status"] == "ok"]
            by_seed = {r["seed"]: r for r in ok}
            p = runs[0]["params"]
            steps = runs[0]["test_steps"]
            rows.append(
                [
                    _label(arm),
                    f"{p['total']:,} / {p['mask_head']:,} / {p['recurrent']:,}",
                    "-" if steps is None else f"{steps} ({m}T)",
                    *(
                        " / ".join(_f(by_seed[s][k]) if s in by_seed else "-" for s in seeds)
                        for k in ("pq", "pq_th", "pq_st")
                    ),
                    *(_f(_mean(r[k] for r in ok)) for k in ("pq", "pq_th", "pq_st", "box_ap")),
                    str(len(runs) - len(ok)),
                ]
            )
    floors = summary.get("floors", {})
    w = summary["warmup"]
    lines = [
        f"Suite `{summary['suite']}`: {summary['description']}.",
        "",
        f"Warm-up: `{w['config']}`, {w['iterations']} iterations (PQ {_f(w.get('pq'))}, box AP "
        f"{_f(w.get('box_ap'))}); every arm then trains {summary['iterations']} iterations "
        "from it.",
        "",
        *markdown_table(head, rows),
        "",
        f"Floor on `{floors.get('dataset')}`: grouping-free mask IoU (median) "
        f"{_f(floors.get('grouping_free_mask_iou'), '.3f')}"
        + (f" ({floors['reason']})" if floors.get("reason") else "")
        + ".",
        "",
        f"Wall time: {_f((summary['seconds'].get('total') or 0) / 60)} minutes of runs "
        f"(warm-up {_f((summary['seconds'].get('warmup') or 0) / 60)}).",
    ]
    return "\n".join(lines) + "\n"
