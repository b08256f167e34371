"""What a trained recurrent model costs, and what each speed lever buys.

A *run* is a finished training run: its ``config.yaml`` and ``model_final.pth`` in one
output folder (``tools/train_net.py`` writes both). For each run this module measures,
with the run's own weights and the run's own val split:

* inference seconds per image, mean recurrent steps used and PQ, under each
  :class:`Setting` of the test-time levers (steps, early-stop tolerance, solver), and
  for the settings that run a fixed number of steps the multiply-adds of convolutions
  and linear layers per image (Detectron2's ``FlopCountAnalysis``): the cost floor a
  setting cannot go below however well its kernels run;
* seconds and peak allocated memory per training iteration (forward + backward, on the
  same training batches for every run), under each setting of the training levers
  (forward and Neumann tolerances, the cheap penalty).

Every time is reported next to the feedforward run of the same report, measured in the
same process, so the ratios compare like with like.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Dict, List, Optional, Sequence

import torch

from ..crbp import RecurrentRefiner
from ..engine import Trainer, setup_cfg
from ..modeling import placement
from .evaluation import evaluate_pq, first_test_inputs, load_model
from .measure import count_macs, measure_step, median, refiner_macs

__all__ = [
    "Setting",
    "check_run_dir",
    "inference_settings",
    "markdown",
    "measure_inference",
    "measure_runs",
    "flops_per_image",
    "measure_training",
    "run_cfg",
    "step_macs",
    "training_batches",
    "training_settings",
]


@dataclasses.dataclass(frozen=True)
class Setting:
    """A named set of config overrides (``KEY VALUE`` pairs) applied to a trained run."""

    name: str
    opts: tuple = ()
    #: count the multiply-adds per image (for settings whose step count is fixed)
    flops: bool = False


def inference_settings(steps: int, tols: Sequence[float] = (1e-2, 3e-3, 1e-3)) -> List[Setting]:
    """Test-time levers of a model trained with ``steps`` steps.

    ``T`` and ``2T`` run exactly that many steps; ``tol X`` stops each call once the
    relative residual is below X (at most ``T`` steps); ``anderson tol X`` does the same
    with Anderson acceleration.
    """
    exact = [
        Setting(
            f"{k}T" if k > 1 else "T",
            ("MODEL.CRBP.TEST_STEPS", k * steps, "MODEL.CRBP.TEST_TOL", 0.0),
            flops=True,
        )
        for k in (1, 2)
    ]
    early = [
        Setting(f"tol {tol:g}", ("MODEL.CRBP.TEST_STEPS", steps, "MODEL.CRBP.TEST_TOL", tol))
        for tol in tols
    ]
    anderson = Setting(
        f"anderson tol {min(tols):g}",
        (
            "MODEL.CRBP.TEST_STEPS",
            steps,
            "MODEL.CRBP.TEST_TOL",
            min(tols),
            "MODEL.CRBP.TEST_SOLVER",
            "anderson",
        ),
    )
    return exact + early + [anderson]


def training_settings(where: str) -> List[Setting]:
    """Training levers: the run's own settings, then forward / Neumann tolerances and, for
    the mask head, the penalty on a quarter of the ROIs (the FPN's cheap penalty is a crop,
    set by its config)."""
    settings = [
        Setting("as trained"),
        Setting("FORWARD_TOL 1e-3", ("MODEL.CRBP.FORWARD_TOL", 1e-3)),
        Setting("NEUMANN_TOL 1e-2", ("MODEL.CRBP.NEUMANN_TOL", 1e-2)),
    ]
    if "mask_head" in where:
        settings.append(Setting("LCP_SUBSAMPLE 0.25", ("MODEL.CRBP.LCP_SUBSAMPLE", 0.25)))
    return settings


def run_cfg(run_dir: str, opts: Sequence = ()):
    """The frozen config of a finished run (``run_dir/config.yaml``) with ``opts`` applied."""
    cfg = setup_cfg(os.path.join(run_dir, "config.yaml"), list(opts))
    cfg.freeze()
    return cfg


def check_run_dir(run_dir: str) -> str:
    """The weights of a finished run; raises FileNotFoundError naming what is missing."""
    for needed in ("config.yaml", "model_final.pth"):
        path = os.path.join(run_dir, needed)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not found; train the run first (tools/train_net.py)")
    return path


class _StepCounter:
    """Records the steps of every call of every refiner in a model (forward hooks)."""

    def __init__(self, model):
        self.steps: List[int] = []
        self.handles = [
            m.register_forward_hook(self._hook)
            for m in model.modules()
            if isinstance(m, RecurrentRefiner)
        ]

    def _hook(self, module, inputs, output):
        if module.last_result is not None:
            self.steps.append(module.last_result.steps)

    def close(self):
        for handle in self.handles:
            handle.remove()


def time_per_image(model, inputs: List[dict], repeats: int = 2) -> Dict[str, float]:
    """Median over images of the least of ``repeats`` timed calls.

    Returns:
        dict: ``seconds`` (wall clock) and ``cpu_seconds`` (process CPU time, all threads:
        the figure to compare on a machine shared with other work).
    """
    wall, cpu = [], []
    with torch.no_grad():
        model([inputs[0]])  # warm-up
        for item in inputs:
            m = measure_step(lambda: model([item]), iters=repeats)
            wall.append(m["fastest"])
            cpu.append(m["fastest_cpu"])
    return {"seconds": median(wall), "cpu_seconds": median(cpu)}


def flops_per_image(model, inputs: List[dict]) -> Dict[str, float]:
    """Mean multiply-adds per image of ``model`` (eval mode) over ``inputs``.

    Counted by :func:`~.measure.count_macs` (convolutions, linear layers and matrix products,
    one per multiply-add; normalisations by fvcore's estimate); other elementwise
    operations are not counted, so on a CPU they are part of what a time ratio adds to
    this floor.

    Returns:
        dict: ``total`` (the whole model) and ``recurrent`` (the part inside
        :class:`~crbp_panoptic.crbp.RecurrentRefiner` modules; 0 for a feedforward model).
    """
    total = recurrent = 0.0
    for item in inputs:
        count, by_module = count_macs(model, ([item],))
        total += count
        recurrent += refiner_macs(model, by_module)
    return {"total": total / len(inputs), "recurrent": recurrent / len(inputs)}


def measure_inference(
    run_dir: str, settings: Sequence[Setting], num_images: int = 12, with_pq: bool = True
) -> List[Dict]:
    """Inference cost and PQ of a trained run under each setting.

    Returns:
        list of dicts: ``setting``, ``seconds`` and ``cpu_seconds`` (per image),
        ``mean_steps`` (per refiner call; None for a feedforward run), ``pq`` (dict PQ /
        PQ_th / PQ_st, or None) and ``flops`` (multiply-adds per image for the settings
        with ``flops`` set: ``total`` and ``recurrent``, else None; see
        :func:`flops_per_image`).
    """
    rows = []
    weights = check_run_dir(run_dir)
    for setting in settings:
        cfg = run_cfg(run_dir, setting.opts)
        model = load_model(cfg, weights)
        inputs = first_test_inputs(cfg, num_images)
        counter = _StepCounter(model)
        times = time_per_image(model, inputs)
        steps = list(counter.steps)
        counter.close()
        rows.append(
            {
                "setting": setting.name,
                **times,
                "mean_steps": sum(steps) / len(steps) if steps else None,
                "pq": evaluate_pq(cfg, model) if with_pq else None,
                "flops": flops_per_image(model, inputs) if setting.flops else None,
            }
        )
    return rows


#: Untimed training iterations before the timed ones.
_WARMUP = 2
#: Detectron2's ROI heads log their sampled foreground ROIs per image under this name.
_FG_ROIS = "roi_head/num_fg_samples"


def training_batches(run_dir: str, count: int) -> List:
    """The first ``count`` batches of a finished run's training loader."""
    loader = Trainer.build_train_loader(run_cfg(run_dir))
    return list(itertools.islice(iter(loader), count))


def measure_training(
    run_dir: str,
    settings: Sequence[Setting],
    iters: int = 6,
    warmup: int = _WARMUP,
    batches: Optional[List] = None,
) -> List[Dict]:
    """Seconds per training iteration (forward + backward, no optimiser step) of a trained
    run under each setting, on ``batches`` (``warmup + iters`` of them; default: the first
    of the run's own training loader, whose order is random). Give every run the same
    batches to compare runs.

    Returns:
        list of dicts: ``setting``, ``seconds`` and ``cpu_seconds`` (medians over ``iters``
        iterations), ``fg_rois``, the mean foreground ROIs per image the ROI heads
        sampled (what the mask head trains on: it depends on the trained RPN, so two
        models differ on the same batches), and ``peak_bytes``, the peak of the bytes
        torch allocated during one more iteration (forward, losses and backward, the
        parameter gradients included; :func:`~.measure.peak_allocated_bytes`).
    """
    from detectron2.utils.events import EventStorage

    rows = []
    weights = check_run_dir(run_dir)
    if batches is None:  # the same batches for every setting
        batches = training_batches(run_dir, warmup + iters)
    if len(batches) < warmup + iters:
        raise ValueError(f"{len(batches)} batches; need warmup + iters = {warmup + iters}")
    for setting in settings:
        cfg = run_cfg(run_dir, setting.opts)
        model = load_model(cfg, weights)
        model.train()
        fg = []
        # the timed batches in order, then batches[warmup] again for the memory
        queue = iter(list(batches) + [batches[warmup]])
        with EventStorage() as storage:

            def step():
                sum(model(next(queue)).values()).backward()
                fg.append(storage.history(_FG_ROIS).latest())

            m = measure_step(
                step,
                iters=iters,
                warmup=warmup,
                memory="allocated",
                before_each=lambda: model.zero_grad(set_to_none=True),
            )
        rows.append(
            {
                "setting": setting.name,
                "seconds": m["seconds"],
                "cpu_seconds": m["cpu_seconds"],
                "fg_rois": sum(fg[warmup:-1]) / iters,
                "peak_bytes": m["peak_bytes"],
            }
        )
    return rows


def measure_runs(
    runs: Dict[str, str],
    feedforward: str,
    num_images: int = 12,
    train_iters: int = 6,
    with_pq: bool = True,
) -> Dict:
    """Measure the feedforward run and each recurrent run (name -> output folder).

    Every run is timed in training on the same batches, drawn once from the feedforward
    run's training loader.

    Returns:
        dict: ``feedforward`` ({inference, training} rows of the feedforward run) and
        ``runs`` (name -> {placement, steps, inference, training}).
    """
    batches = training_batches(feedforward, _WARMUP + train_iters)
    report = {
        "feedforward": {
            "dir": feedforward,
            "inference": measure_inference(
                feedforward, [Setting("as trained", flops=True)], num_images, with_pq
            ),
            "training": measure_training(
                feedforward, [Setting("as trained")], train_iters, batches=batches
            ),
        },
        "runs": {},
    }
    for name, run_dir in runs.items():
        cfg = run_cfg(run_dir)
        where, steps = placement(cfg), cfg.MODEL.CRBP.STEPS
        if where == "feedforward":
            raise ValueError(f"{run_dir}: the run {name!r} has no recurrent module")
        report["runs"][name] = {
            "dir": run_dir,
            "placement": where,
            "steps": steps,
            "inference": measure_inference(run_dir, inference_settings(steps), num_images, with_pq),
            "training": measure_training(
                run_dir, training_settings(where), train_iters, batches=batches
            ),
        }
    return report


def _ratios(row, base) -> str:
    return (
        f"{row['seconds'] / base['seconds']:.2f} | {row['cpu_seconds'] / base['cpu_seconds']:.2f}"
    )


def _pq(row) -> str:
    return "-" if row.get("pq") is None else f"{row['pq']['PQ']:.1f}"


def _memory(row, base) -> str:
    if not row.get("peak_bytes") or not base.get("peak_bytes"):
        return "- | -"
    return f"{row['peak_bytes'] / 2**20:.0f} | {row['peak_bytes'] / base['peak_bytes']:.2f}"


def _fg(row) -> str:
    return "-" if row.get("fg_rois") is None else f"{row['fg_rois']:.1f}"


def _flops(row, base) -> str:
    if row.get("flops") is None or not base.get("flops"):
        return "- | -"
    return (
        f"{row['flops']['total'] / 1e9:.3f} | {row['flops']['total'] / base['flops']['total']:.2f}"
    )


def step_macs(run: Dict) -> Optional[float]:
    """Multiply-adds per image of one recurrent step (all refiners): MACs inside the
    refiners at ``T`` steps, over ``T``."""
    at_t = run["inference"][0]
    if at_t["setting"] != "T" or at_t.get("flops") is None:
        return None
    return at_t["flops"]["recurrent"] / run["steps"]


def _bounds(report: Dict) -> List[str]:
    """What the multiply-adds alone would make of each run's inference ratio at T."""
    ff = report["feedforward"]["inference"][0]
    rows = []
    for name, run in report["runs"].items():
        at_t, step = run["inference"][0], step_macs(run)
        if step is None or not ff.get("flops"):
            continue
        macs = at_t["flops"]["total"] / ff["flops"]["total"]
        cpu = at_t["cpu_seconds"] / ff["cpu_seconds"]
        rows.append(
            f"| {name} | {step / 1e9:.4f} | {step / ff['flops']['total']:.3f} | {macs:.2f} | "
            f"{cpu:.2f} | {cpu / macs:.2f} |"
        )
    if not rows:
        return []
    return [
        "",
        "## What bounds inference",
        "",
        "MACs (multiply-adds of convolutions and linear layers) are the floor of a setting's "
        "cost; the CPU-time ratio over the MAC ratio is what the rest (elementwise operations, "
        "normalisations, small-kernel overhead) adds.",
        "",
        "| run | GMAC per step | step / feedforward model (MACs) | x feedforward at T (MACs) "
        "| x feedforward at T (CPU time) | time ratio / MAC ratio |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def markdown(report: Dict, header: Sequence[str] = ()) -> str:
    """The report as markdown: an inference table and a training table, ratios to the
    feedforward run."""
    ff_inf = report["feedforward"]["inference"][0]
    ff_train = report["feedforward"]["training"][0]
    lines = list(header)
    lines += [
        "",
        "## Inference (per image, batch 1)",
        "",
        "| run | setting | s / image | x feedforward | x feedforward (CPU time) | "
        "mean steps | PQ | PQ - PQ(T) | GMAC / image | x feedforward (MACs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| feedforward | - | {ff_inf['seconds']:.3f} | 1.00 | 1.00 | - | {_pq(ff_inf)} | - "
        f"| {_flops(ff_inf, ff_inf)} |",
    ]
    for name, run in report["runs"].items():
        at_t = run["inference"][0].get("pq")
        for row in run["inference"]:
            steps = "-" if row["mean_steps"] is None else f"{row['mean_steps']:.1f}"
            delta = "-"
            if row.get("pq") is not None and at_t is not None:
                delta = f"{row['pq']['PQ'] - at_t['PQ']:+.1f}"
            lines.append(
                f"| {name} | {row['setting']} | {row['seconds']:.3f} | "
                f"{_ratios(row, ff_inf)} | {steps} | {_pq(row)} | {delta} | "
                f"{_flops(row, ff_inf)} |"
            )
    lines += _bounds(report)
    lines += [
        "",
        "## Training (forward + backward per iteration, the same batches for every run)",
        "",
        "Memory: the peak of the bytes torch allocated during one iteration.",
        "",
        "| run | setting | s / iteration | x feedforward | x feedforward (CPU time) "
        "| peak MiB | x feedforward (memory) | foreground ROIs / image |",
        "|---|---|---|---|---|---|---|---|",
        f"| feedforward | - | {ff_train['seconds']:.3f} | 1.00 | 1.00 | "
        f"{_memory(ff_train, ff_train)} | {_fg(ff_train)} |",
    ]
    for name, run in report["runs"].items():
        for row in run["training"]:
            lines.append(
                f"| {name} | {row['setting']} | {row['seconds']:.3f} | {_ratios(row, ff_train)} "
                f"| {_memory(row, ff_train)} | {_fg(row)} |"
            )
    return "\n".join(lines) + "\n"
