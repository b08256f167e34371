"""Train / evaluate Pathfinder arms (library code behind ``tools/train_pathfinder.py``).

An *arm* is a gradient mode and a training step count, written in the shared
grammar of :func:`crbp_panoptic.crbp.parse_arm` (``bptt:6``, ``crbp:20``,
``crbp:20:spectral`` for the spectral penalty, ``crbp:20:k0`` for the one-step gradient).
:func:`run_experiment` computes the two floors on the held-out set, trains every
arm (:func:`run_arm`), and writes ``metrics.json`` and ``table.md``;
:func:`run_length_sweep` does that at several path lengths and draws the length curve.
Every setting is checked by :func:`check_settings` before any data is generated.

Metrics, at every test-time step from 1 to ``test_multiple * T``:

* IoU: per-image IoU of ``logit > 0``, averaged over images;
* F1: the authors' pooled F1, ``2 TP / (2 TP + FP + FN)`` with the counts summed
  over every pixel of the test set.

Floors, scored the same way:

* ``all_paths``: mark every pixel with ink (``image >= INK``, the threshold of the
  target mask) -- what a model scores without telling the target from the distractors;
* ``connectivity_oracle``: the ink 8-connected to the dot -- since paths never touch,
  this is the task's exact answer (IoU 1 up to rounding of the stored images).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..crbp import Arm, cell_diagnostics, parse_arm
from ..crbp.memory import SavedTensorBytes
from ..crbp.options import check_refiner_args
from ..experiments.machine import machine_info
from .generator import INK, CachedPathfinder, PathfinderConfig, cached_arrays, connected_to_dot
from .model import LOSSES, PathfinderNet, confusion, iou_f1, segmentation_loss
from .report import NEUMANN_FROM_ITER, at_multiples, collect, length_report, load_arms

__all__ = [
    "DEFAULT_ARMS",
    "LENGTH_ARMS",
    "SCALES",
    "Settings",
    "build_model",
    "check_settings",
    "floors",
    "geodesic_distance",
    "parse_arms",
    "run_arm",
    "run_experiment",
    "run_length_sweep",
    "saved_tensor_bytes",
    "write_length_report",
    "write_report",
]

#: Arms of a single-length run: the paper's two, C-RBP with the spectral penalty, and the
#: one-step-gradient control of C-RBP-20 (same cell, forward and penalty, no Neumann terms).
DEFAULT_ARMS = ("crbp:20", "bptt:6", "crbp:20:spectral", "crbp:20:k0")
#: Arms of a length sweep.
LENGTH_ARMS = ("bptt:6", "crbp:20", "crbp:20:spectral")


#: The generator's parameters that :class:`Settings` holds, with their defaults there; the
#: generator's ``margin`` follows the dot (:meth:`Settings.generator_config`) and
#: ``max_tries`` keeps its default.
GENERATOR_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(PathfinderConfig)
    if f.name not in ("margin", "max_tries")
}
GENERATOR_DEFAULTS.update(size=48, path_length=7, dot_radius=2.5)

# The generator part of Settings, built from PathfinderConfig's own fields (same names,
# types and order), so that each generator parameter is declared once, in the generator.
_GeneratorSettings = dataclasses.make_dataclass(
    "_GeneratorSettings",
    [
        (f.name, f.type, dataclasses.field(default=GENERATOR_DEFAULTS[f.name]))
        for f in dataclasses.fields(PathfinderConfig)
        if f.name in GENERATOR_DEFAULTS
    ],
    namespace={"__module__": __name__},
)


@dataclasses.dataclass
class Settings(_GeneratorSettings):
    """Everything an arm needs besides its mode and steps (one preset per scale).

    The first fields are the generator's (:data:`GENERATOR_DEFAULTS`: ``size``,
    ``path_length``, ``dash_length``, ``gap``, ``curvature``, ``distractors``,
    ``thickness``, ``dot_radius``, ``min_separation``, ``dot_clearance``; see
    :class:`~crbp_panoptic.pathfinder.generator.PathfinderConfig`), checked by
    :func:`check_settings` rather than on construction; the rest are the model's, the
    engine's and the training's.
    """

    # model
    channels: int = 10
    kernel_size: int = 5
    #: taps of W_inh / W_exc this many pixels apart (1: the authors' cell)
    dilation: int = 1
    gabor_size: int = 7
    drive_gain: float = 10.0
    variant: str = "pathfinder"
    norm: str = "BN"
    norm_gain: float = 1.0
    num_groups: int = 1
    gate_bias_hi: float = 5.0
    # engine
    neumann_steps: int = 15
    lcp_tau: float = 0.9
    lcp_weight: float = 10.0
    lcp_subsample: Optional[float] = None
    # training
    loss: str = "bce_dice"
    iters: int = 1000
    batch: int = 16
    lr: float = 1e-2
    grad_clip: float = 1.0
    n_train: int = 8000
    n_test: int = 256
    test_multiple: int = 3
    seed: int = 0
    log_every: int = 25
    # the Neumann statistics (guard_cut_share) count logged iterations from this one on
    telemetry_from_iter: int = NEUMANN_FROM_ITER
    data_root: str = "datasets/pathfinder"
    data_workers: int = 0
    #: Seconds of training per arm after which it stops early (0: no limit); an arm cut
    #: short keeps its learning-rate schedule's position and is evaluated as it stands.
    time_limit: float = 0.0

    @classmethod
    def from_dict(cls, values: Mapping) -> "Settings":
        """Settings from a ``metrics.json``'s ``settings`` (keys it does not know are left out)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def generator_config(self) -> PathfinderConfig:
        """The generator's parameters: the fields both share, and a margin that fits the dot."""
        shared = {n: getattr(self, n) for n in GENERATOR_DEFAULTS}
        return PathfinderConfig(**shared, margin=max(3.0, self.dot_radius + 1))

    def cell_kwargs(self) -> dict:
        """Keyword arguments for the hGRU cell (through the refiner)."""
        kw = {
            "variant": self.variant,
            "dilation": self.dilation,
            "norm": self.norm,
            "norm_gain": self.norm_gain,
        }
        if self.norm == "GN":
            kw["num_groups"] = self.num_groups
        if self.gate_bias_hi > 0:  # else the refiner's default, (1, T - 1)
            kw["gate_bias_range"] = (1.0, max(1.0, self.gate_bias_hi))
        return kw


#: Presets. ``cpu``: C-RBP-20 trains in ~11 min and BPTT-6 in ~5 min on one shared
#: core; paths (7 dashes, 34 px along the contour) reach beyond what 6 steps of a
#: 5x5 kernel carry from the dot; 48 px hold at most 8 dashes
#: (:meth:`~crbp_panoptic.pathfinder.generator.PathfinderConfig.max_path_length`), so a
#: length sweep to 14 dashes needs ``--size 72``. ``gpu``: the paper's setting (150x150, 25
#: channels, 15x15 kernels; path length set per run: 9, 14, 20 or 25 dashes). ``smoke``:
#: a few seconds end to end (tests, and a check that a command line works); 32 px hold 1-5
#: dashes with its one distractor.
SCALES: Dict[str, Settings] = {
    "cpu": Settings(),
    "gpu": Settings(
        size=150,
        path_length=14,
        distractors=3,
        dot_radius=2.5,
        channels=25,
        kernel_size=15,
        gabor_size=7,
        iters=3000,
        batch=32,
        lr=3e-3,
        n_train=50000,
        n_test=1000,
        log_every=100,
        data_workers=8,
    ),
    "smoke": Settings(
        size=32,
        path_length=4,
        distractors=1,
        channels=5,
        kernel_size=3,
        gabor_size=5,
        iters=3,
        batch=2,
        n_train=4,
        n_test=4,
        log_every=1,
        telemetry_from_iter=2,
    ),
}


def _label(labels: Optional[Mapping[str, str]], name: str) -> str:
    return (labels or {}).get(name, name)


def check_settings(s: Settings, labels: Optional[Mapping[str, str]] = None) -> None:
    """Validate ``s`` before anything is generated or trained.

    Args:
        s: the settings.
        labels: display names of the fields in messages (e.g. the command line's flags);
            default: the field names.

    Raises:
        ValueError: naming the field (or its label), the value and what is allowed: a path
            the image size cannot hold names the range it holds, and the size it would
            take; a negative Neumann term count, an unknown loss or norm, a count below
            its minimum.
    """

    def fail(name, value, allowed):
        raise ValueError(f"{_label(labels, name)}={value!r}; {allowed}")

    for name, low in (
        ("iters", 1),
        ("batch", 1),
        ("n_train", 1),
        ("n_test", 1),
        ("test_multiple", 1),
        ("log_every", 1),
        ("telemetry_from_iter", 0),
        ("data_workers", 0),
    ):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            fail(name, value, f"expected an integer >= {low}")
    if s.loss not in LOSSES:
        fail("loss", s.loss, f"choose from {sorted(LOSSES)}")
    if not (isinstance(s.lcp_weight, (int, float)) and s.lcp_weight >= 0):
        fail("lcp_weight", s.lcp_weight, "expected a finite number >= 0")
    if not (isinstance(s.time_limit, (int, float)) and 0 <= s.time_limit < math.inf):
        fail("time_limit", s.time_limit, "expected seconds >= 0 (0: no limit)")
    if isinstance(s.path_length, bool) or not isinstance(s.path_length, int) or s.path_length < 1:
        fail("path_length", s.path_length, "expected an integer >= 1 (dashes)")
    try:
        cfg = s.generator_config()
    except ValueError as err:  # the generator's own message names the parameter
        raise ValueError(f"{err} (see {_label(labels, 'size')} and the path geometry)") from None
    longest = cfg.max_path_length()
    if s.path_length > longest:
        need = cfg.smallest_size_for(s.path_length)
        fits = f"1 to {longest} dashes" if longest else "no path"
        size = _label(labels, "size")
        fail(
            "path_length",
            s.path_length,
            f"{size}={s.size} holds paths of {fits} with {s.distractors} distractor(s)"
            + (f"; {s.path_length} dashes need {size} >= {need}" if need else ""),
        )
    names = {f.name for f in dataclasses.fields(Settings)}
    check_refiner_args(
        {n: _label(labels, n) for n in names},
        neumann_steps=s.neumann_steps,
        lcp_tau=s.lcp_tau,
        lcp_subsample=s.lcp_subsample,
        channels=s.channels,
        kernel_size=s.kernel_size,
        **s.cell_kwargs(),
    )


def parse_arms(arms: Sequence[str]) -> List[Arm]:
    """Parse Pathfinder arms: recurrent and distinct.

    Raises:
        ValueError: naming the arm and the grammar.
    """
    parsed = [parse_arm(a) for a in arms]
    for arm in parsed:
        if not arm.recurrent:
            raise ValueError(f"arm={arm.name!r}; Pathfinder arms are MODE:STEPS, e.g. crbp:20")
    names = [a.name for a in parsed]
    if not parsed or len(set(names)) != len(names):
        raise ValueError(f"arms={names}; expected one or more distinct arms")
    return parsed


def held_out_data(s: Settings) -> CachedPathfinder:
    """The held-out images of ``s`` (a seed stream disjoint from the training one)."""
    return cached_arrays(
        s.generator_config(), s.n_test, 999_000 + s.seed, s.data_root, s.data_workers
    )


def training_data(s: Settings) -> CachedPathfinder:
    return cached_arrays(
        s.generator_config(), s.n_train, 1000 + s.seed, s.data_root, s.data_workers
    )


def _scores(masks: np.ndarray, preds: np.ndarray) -> Dict[str, float]:
    """Mean per-image IoU and pooled F1 of bool predictions (n, H, W) against masks."""
    inter = (masks & preds).sum((1, 2)).astype(np.float64)
    union = (masks | preds).sum((1, 2)).astype(np.float64)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    tp, fp, fn = inter.sum(), (preds & ~masks).sum(), (~preds & masks).sum()
    return {"iou": float(iou.mean()), "f1": float(2 * tp / max(2 * tp + fp + fn, 1))}


def floors(data: CachedPathfinder) -> Dict[str, Dict[str, float]]:
    """The two reference answers on ``data`` (see the module docstring), IoU and pooled F1."""
    images = data.images.astype(np.float32) / 255.0
    ink = images >= INK
    oracle = np.stack([connected_to_dot(im, tuple(d)) for im, d in zip(images, data.dots)])
    return {
        "all_paths": _scores(data.masks, ink),
        "connectivity_oracle": _scores(data.masks, oracle),
    }


def geodesic_distance(mask: np.ndarray, dot: Sequence[float], limit: int = 512) -> np.ndarray:
    """Steps (8-connected, inside ``mask``) from the dot's pixel to every pixel of ``mask``.

    Args:
        mask: bool (H, W); dot: (x, y).

    Returns:
        int array (H, W): the distance, -1 outside ``mask`` or unreachable.
    """
    from scipy import ndimage

    dist = np.full(mask.shape, -1, dtype=np.int64)
    x, y = int(round(dot[0])), int(round(dot[1]))
    if not mask[y, x]:
        return dist
    front = np.zeros_like(mask)
    front[y, x] = True
    reached = front.copy()
    dist[y, x] = 0
    for d in range(1, limit):
        grown = ndimage.binary_dilation(front, np.ones((3, 3), bool)) & mask & ~reached
        if not grown.any():
            break
        dist[grown] = d
        reached |= grown
        front = grown
    return dist


def build_model(s: Settings, arm: Union[Arm, str]) -> PathfinderNet:
    """The Pathfinder network of ``s`` trained as ``arm`` (an :class:`Arm` or its text):
    the arm's mode, steps, penalty kind, cheap penalty and Neumann terms over the settings'
    ``neumann_steps`` and ``lcp_subsample`` (an arm's crop replaces the latter)."""
    arm = parse_arm(arm) if isinstance(arm, str) else arm
    defaults = {"neumann_steps": s.neumann_steps}
    if not arm.lcp_crop:
        defaults["lcp_subsample"] = s.lcp_subsample
    kwargs = arm.refiner_kwargs(**defaults)
    return PathfinderNet(
        s.channels,
        s.kernel_size,
        s.gabor_size,
        lcp_tau=s.lcp_tau,
        **kwargs,
        line_width=s.thickness,
        dot_radius=s.dot_radius,
        drive_gain=s.drive_gain,
        **s.cell_kwargs(),
    )


def _batch(data: CachedPathfinder, idx: np.ndarray, device) -> Tuple[torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(data.images[idx]).float().div_(255.0)[:, None]
    mask = torch.from_numpy(data.masks[idx]).float()[:, None]
    return image.to(device), mask.to(device)


def _loss(model: PathfinderNet, s: Settings, image, mask):
    logits = model(image)
    seg = segmentation_loss(logits, mask, s.loss)
    lcp = model.lcp
    return seg + s.lcp_weight * lcp, seg, lcp


def saved_tensor_bytes(model: PathfinderNet, s: Settings, image, mask) -> int:
    """Bytes of tensors autograd saves for backward in one training forward (+ loss, + LCP graph).

    Counted with :class:`~crbp_panoptic.crbp.memory.SavedTensorBytes`, each storage
    once: the activation memory that grows with the unrolled steps in BPTT. The
    backward pass's transients (Neumann VJPs) are not included; no backward is run.
    """
    model.train()
    with SavedTensorBytes() as saved:
        total, _, _ = _loss(model, s, image, mask)
    del total
    return saved.bytes


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


#: Bins (in 8-connected steps from the dot) of the recall-vs-distance profile.
DISTANCE_BINS = (0, 5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 80, 120, 1000)


@torch.no_grad()
def evaluate_trajectory(
    model: PathfinderNet, data: CachedPathfinder, max_steps: int, batch: int, device, profile_at=()
) -> dict:
    """IoU, pooled F1 and forward residual at every test-time step 1..max_steps.

    ``profile_at``: steps at which to also record the target's recall per distance
    bin (:data:`DISTANCE_BINS`, steps along the target from the dot).
    """
    model.eval()
    n = len(data)
    iou, counts, res = np.zeros(max_steps), np.zeros((max_steps, 3)), np.zeros(max_steps)
    dist = np.stack([geodesic_distance(m, d) for m, d in zip(data.masks, data.dots)])
    bins = np.digitize(dist, DISTANCE_BINS) - 1
    hits = {t: np.zeros(len(DISTANCE_BINS)) for t in profile_at}
    total = np.bincount(bins[dist >= 0], minlength=len(DISTANCE_BINS)).astype(np.float64)
    n_batches = 0
    for start in range(0, n, batch):
        idx = np.arange(start, min(start + batch, n))
        image, mask = _batch(data, idx, device)
        for t, logits, r in model.trajectory(image, max_steps):
            iou[t - 1] += float(iou_f1(logits, mask)[0].sum())
            counts[t - 1] += confusion(logits, mask).sum(0).cpu().numpy()
            res[t - 1] += r
            if t in hits:
                pred = (logits[:, 0] > 0).cpu().numpy() & (dist[idx] >= 0)
                hits[t] += np.bincount(bins[idx][pred], minlength=len(DISTANCE_BINS))
        n_batches += 1
    tp, fp, fn = counts.T
    return {
        "steps": list(range(1, max_steps + 1)),
        "iou": (iou / n).tolist(),
        "f1": (2 * tp / np.maximum(2 * tp + fp + fn, 1)).tolist(),
        "residual": (res / max(n_batches, 1)).tolist(),
        "recall_by_distance": {
            "bins": list(DISTANCE_BINS),
            "pixels": total.tolist(),
            **{str(t): (h / np.maximum(total, 1)).tolist() for t, h in hits.items()},
        },
    }


def _train(model, s: Settings, arm: Arm, data: CachedPathfinder, device, log) -> List[dict]:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=s.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=s.lr, total_steps=s.iters, pct_start=0.05
    )
    rng = np.random.default_rng(s.seed)
    history, perm, cursor, t0 = [], rng.permutation(len(data)), 0, time.time()
    model.train()
    for it in range(1, s.iters + 1):
        if cursor + s.batch > len(perm):
            perm, cursor = rng.permutation(len(data)), 0
        image, mask = _batch(data, np.sort(perm[cursor : cursor + s.batch]), device)
        cursor += s.batch
        total, seg, lcp = _loss(model, s, image, mask)
        opt.zero_grad(set_to_none=True)
        total.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        sched.step()
        out_of_time = 0 < s.time_limit <= time.time() - t0 and it < s.iters
        if it % s.log_every == 0 or it == s.iters or out_of_time:
            r = model.refiner.last_result
            with torch.no_grad():
                train_iou = float(iou_f1(model.read(r.state), mask)[0].mean())
            info = r.backward_info
            rec = {
                "iter": it,
                "loss": seg.item(),
                "lcp": lcp.item(),
                "lcp_growth": r.lcp_growth,
                "train_iou": train_iou,
                "residual": r.residual,
                "neumann": info.get("neumann_terms"),
                "neumann_cut": info.get("neumann_cut"),
                "neumann_residual": info.get("neumann_residual"),
                "neumann_stop": info.get("neumann_stop"),
                "time": time.time() - t0,
            }
            history.append(rec)
            growth = "" if r.lcp_growth is None else f" growth {r.lcp_growth:.3f}"
            series = (
                ""
                if rec["neumann"] is None
                else f" neumann {rec['neumann']} ({rec['neumann_stop']}, last term "
                f"{rec['neumann_residual']:.1e})"
            )
            log(
                f"[{arm.name}] it {it:5d} loss {rec['loss']:.4f} lcp {rec['lcp']:.4f}{growth} "
                f"train IoU {train_iou:.3f} res {rec['residual']:.2e}{series} {rec['time']:.0f}s"
            )
            if not math.isfinite(rec["loss"]):
                log(f"[{arm.name}] loss is not finite; stopping")
                break
        if out_of_time:
            log(f"[{arm.name}] time limit of {s.time_limit:g} s: stopping after {it} of {s.iters}")
            break
    return history


#: Power iterations behind the ``adjoint_growth`` diagnostic (growth per Neumann term).
DIAGNOSTIC_POWER_ITERS = 40


def _diagnostics(model: PathfinderNet, image: torch.Tensor, s: Settings, steps: int) -> dict:
    """Jacobian column sums and Neumann term growth of the cell at its state after ``steps``."""
    model.eval()
    with torch.no_grad():
        x = model.frontend(image)
        h = torch.zeros_like(x)
        for _ in range(steps):
            h = model.cell(x, h)
    out = cell_diagnostics(model.cell, x, h, s.lcp_tau, power_iters=DIAGNOSTIC_POWER_ITERS)
    return {k: float(v) for k, v in out.items()}


def run_arm(
    s: Settings, arm: Arm, out_dir: str, device: str = "cpu", log: Callable = print
) -> dict:
    """Train one arm, evaluate it, write ``metrics.json`` and ``model.pt`` to ``out_dir``.

    Returns:
        the metrics dict (also written to ``out_dir/metrics.json``).
    """
    if not arm.recurrent:
        raise ValueError(f"arm={arm.name!r}; Pathfinder arms are recurrent (MODE:STEPS)")
    check_settings(s)
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(s.seed)
    device = torch.device(device)
    train, test = training_data(s), held_out_data(s)
    model = build_model(s, arm).to(device)
    probe, _ = _batch(test, np.arange(min(8, len(test))), device)
    diag_init = _diagnostics(model, probe, s, arm.steps)
    saved = saved_tensor_bytes(model, s, *_batch(train, np.arange(s.batch) % len(train), device))
    log(f"[{arm.name}] saved tensors per training step: {saved / 2**20:.1f} MiB")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    history = _train(model, s, arm, train, device, log)
    train_time = time.time() - t0
    cuda_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    torch.save(
        {"state_dict": model.state_dict(), "settings": dataclasses.asdict(s), "arm": arm.name},
        os.path.join(out_dir, "model.pt"),
    )
    diag_trained = _diagnostics(model, probe, s, arm.steps)
    # The closest the evaluation gets to the fixed point: the state after test_multiple * T.
    diag_fixed = _diagnostics(model, probe, s, s.test_multiple * arm.steps)
    t1 = time.time()
    steps = arm.steps
    traj = evaluate_trajectory(
        model,
        test,
        s.test_multiple * steps,
        s.batch,
        device,
        profile_at=(steps, s.test_multiple * steps),
    )
    at = {k: at_multiples(traj, steps, k) for k in ("iou", "f1")}
    log(f"[{arm.name}] eval {time.time() - t1:.0f}s: IoU {at['iou']}, F1 {at['f1']}")
    metrics = {
        "arm": arm.name,
        "label": arm.label,
        "mode": arm.mode,
        "steps": steps,
        **at,
        "settings": dataclasses.asdict(s),
        "device": _device_name(device),
        "machine": machine_info(str(device)),
        "saved_tensor_bytes": saved,
        "cuda_peak_bytes": cuda_peak,
        "peak_rss_mb": _peak_rss_mb(),
        "train_time_s": train_time,
        "iters_run": history[-1]["iter"] if history else 0,
        "threads": torch.get_num_threads(),
        "colsum": {"init": diag_init, "trained": diag_trained},
        "adjoint_growth": diag_fixed["adjoint_growth"],
        "adjoint_growth_steps": s.test_multiple * steps,
        "history": history,
        "trajectory": traj,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=1)
    return metrics


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def arm_dir(out: str, arm: Arm) -> str:
    return os.path.join(out, arm.name.replace(":", "_"))


def run_experiment(
    s: Settings, arms: Sequence[str], out: str, device: str = "cpu", log: Callable = print
) -> dict:
    """Floors, then every arm; writes ``out/metrics.json`` and ``out/table.md``.

    Settings and arms are checked (and every arm's model built once) before anything is
    generated or written.
    """
    check_settings(s)
    parsed = parse_arms(arms)
    for arm in parsed:
        build_model(s, arm)
    os.makedirs(out, exist_ok=True)
    for arm in parsed:
        run_arm(s, arm, arm_dir(out, arm), device=device, log=log)
    return write_report(out, s)


def write_report(out: str, s: Optional[Settings] = None) -> dict:
    """Collect ``out/*/metrics.json`` with the floors into ``out/metrics.json`` and ``table.md``
    (:func:`~crbp_panoptic.pathfinder.report.collect`).

    Args:
        out: the run's folder.
        s: the settings whose held-out images score the floors (default: the first arm's).
    """
    runs = load_arms(out)
    s = Settings.from_dict(runs[0]["settings"]) if s is None else s
    return collect(out, runs, dataclasses.asdict(s), floors(held_out_data(s)))


def length_dir(out: str, length: int) -> str:
    """Where a length sweep keeps the run at ``length`` dashes."""
    return os.path.join(out, f"L{int(length)}")


def run_length_sweep(
    s: Settings,
    arms: Sequence[str],
    lengths: Sequence[int],
    out: str,
    device: str = "cpu",
    log: Callable = print,
    labels: Optional[Mapping[str, str]] = None,
) -> dict:
    """:func:`run_experiment` at every path length, into ``out/L<length>/``; then
    ``out/metrics.json`` (``{"lengths": {"5": <that length's metrics.json>, ...}, ...}``),
    ``out/table.md`` and ``out/length_curve.png`` (:func:`write_length_report`).

    Every length and arm is checked before anything is generated (``labels`` name the
    fields in messages; ``path_length`` defaults to ``lengths``).

    Raises:
        ValueError: a length the image cannot hold (naming the range it holds), a repeated
            or empty list of lengths, a bad setting or arm.
    """
    labels = {"path_length": "lengths", **(labels or {})}
    lengths = list(lengths)
    if not lengths or len(set(lengths)) != len(lengths):
        raise ValueError(f"{labels['path_length']}={lengths}; expected distinct path lengths")
    per_length = [dataclasses.replace(s, path_length=n) for n in lengths]
    for sl in per_length:
        check_settings(sl, labels)
    parsed = parse_arms(arms)
    for arm in parsed:
        build_model(s, arm)
    t0 = time.time()
    for sl in per_length:
        log(f"== path length {sl.path_length} dashes ==")
        run_experiment(sl, arms, length_dir(out, sl.path_length), device=device, log=log)
    return write_length_report(out, lengths, wall_time_s=time.time() - t0)


def write_length_report(
    out: str, lengths: Optional[Sequence[int]] = None, wall_time_s: Optional[float] = None
) -> dict:
    """Gather ``out/L<length>/metrics.json`` into ``out/metrics.json``, ``out/table.md`` and
    ``out/length_curve.png`` (see :func:`~crbp_panoptic.pathfinder.report.length_report`)."""
    return length_report(out, lengths, wall_time_s)
