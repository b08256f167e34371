"""Train / evaluate one Pathfinder arm (library code behind ``tools/train_pathfinder.py``).

An *arm* is a gradient mode and a training step count, e.g. ``bptt:6`` or
``crbp:20``. :func:`run_arm` trains one arm on on-the-fly samples, measures its
training memory, evaluates IoU/F1 on held-out images at every test-time step
from 1 to ``3 T`` (and the forward residual at each step), and writes
``metrics.json`` and ``model.pt`` into its own folder.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..crbp.memory import SavedTensorBytes
from .generator import PathfinderConfig, PathfinderDataset
from .model import PathfinderNet, iou_f1, segmentation_loss

__all__ = ["SCALES", "Settings", "parse_arm", "run_arm", "saved_tensor_bytes"]


@dataclasses.dataclass
class Settings:
    """Everything an arm needs besides its mode and steps (one preset per scale)."""

    size: int = 48
    path_length: int = 6
    dash_length: float = 4.0
    gap: float = 2.0
    curvature: float = math.pi / 7
    distractors: int = 2
    near_distractors: int = 1
    thickness: float = 1.5
    dot_radius: float = 2.0
    channels: int = 10
    kernel_size: int = 5
    gabor_size: int = 5
    num_groups: int = 1
    neumann_steps: int = 15
    lcp_tau: float = 0.9
    lcp_weight: float = 1.0
    lcp_subsample: Optional[float] = None
    loss: str = "bce_dice"
    iters: int = 600
    batch: int = 16
    lr: float = 1e-2
    grad_clip: float = 1.0
    n_train: int = 8000
    n_test: int = 256
    test_multiple: int = 3
    seed: int = 0
    log_every: int = 25
    workers: int = 0

    def generator_config(self) -> PathfinderConfig:
        """The generator's parameters: the fields both share, and a margin that fits the dot."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(PathfinderConfig) if hasattr(self, f.name)}
        return PathfinderConfig(**shared, margin=max(3.0, self.dot_radius + 1))


#: Presets. ``cpu``: trains an arm in ~5-15 min on one core of a small machine;
#: ``gpu``: the paper's setting (150x150, 25 channels, 15x15 kernels; path length
#: set per run: 14, 20 or 25).
SCALES: Dict[str, Settings] = {
    "cpu": Settings(),
    "gpu": Settings(
        size=150,
        path_length=14,
        dash_length=4.0,
        gap=3.0,
        distractors=3,
        near_distractors=2,
        thickness=1.5,
        dot_radius=2.5,
        channels=25,
        kernel_size=15,
        gabor_size=7,
        num_groups=1,
        iters=3000,
        batch=32,
        lr=3e-3,
        n_train=100000,
        n_test=1000,
        log_every=100,
        workers=8,
    ),
}


def parse_arm(text: str) -> Tuple[str, int]:
    """``"crbp:20"`` -> ``("crbp", 20)``."""
    try:
        mode, steps = text.split(":")
        return mode.strip(), int(steps)
    except ValueError:
        raise ValueError(f"arm={text!r}; write MODE:STEPS, e.g. bptt:6 or crbp:20") from None


#: A pixel brighter than this belongs to some path (or the dot) in a generated image.
INK = 0.25


def held_out_set(s: Settings) -> PathfinderDataset:
    """The held-out images of ``s`` (a seed stream disjoint from the training one)."""
    return PathfinderDataset(s.generator_config(), s.n_test, seed=999_000 + s.seed)


def all_paths_iou(s: Settings) -> float:
    """Mean test IoU of the trivial answer "every path": every pixel brighter than :data:`INK`.

    A reference for the report: a model that traces the contour touching the dot, rather
    than marking every dash, scores well above it.
    """
    ious = [iou_f1(image[None] - INK, target[None])[0] for image, target in held_out_set(s)]
    return float(torch.cat(ious).mean())


def build_model(s: Settings, mode: str, steps: int) -> PathfinderNet:
    return PathfinderNet(
        s.channels,
        s.kernel_size,
        s.gabor_size,
        mode=mode,
        steps=steps,
        neumann_steps=s.neumann_steps,
        lcp_tau=s.lcp_tau,
        lcp_subsample=s.lcp_subsample,
        num_groups=s.num_groups,
        line_width=s.thickness,
        dot_radius=s.dot_radius,
    )


def _batch(ds: PathfinderDataset, idx: np.ndarray, device) -> Tuple[torch.Tensor, torch.Tensor]:
    items = [ds[int(i)] for i in idx]
    return torch.stack([a for a, _ in items]).to(device), torch.stack([b for _, b in items]).to(device)


def _loss(model: PathfinderNet, s: Settings, image, mask) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = model(image)
    seg = segmentation_loss(logits, mask, s.loss)
    lcp = model.lcp
    return seg + s.lcp_weight * lcp, seg, lcp


def saved_tensor_bytes(model: PathfinderNet, s: Settings, image, mask) -> int:
    """Bytes of tensors autograd saves for backward during one training forward (+ loss, + LCP graph).

    Counted with :class:`~crbp_panoptic.crbp.memory.SavedTensorBytes`, each storage once;
    this is the activation memory that grows with the unrolled steps in BPTT. The
    backward pass's transients (Neumann VJPs) are not included. Parameter
    gradients are not touched (no backward is run).
    """
    model.train()
    with SavedTensorBytes() as saved:
        total, _, _ = _loss(model, s, image, mask)
    del total
    return saved.bytes


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


@torch.no_grad()
def evaluate_trajectory(model: PathfinderNet, ds: PathfinderDataset, max_steps: int, batch: int, device) -> Dict[str, List[float]]:
    """IoU, F1 and forward residual at every test-time step 1..max_steps on ``ds``."""
    model.eval()
    iou = np.zeros(max_steps)
    f1 = np.zeros(max_steps)
    res = np.zeros(max_steps)
    n_batches = 0
    for start in range(0, len(ds), batch):
        image, mask = _batch(ds, np.arange(start, min(start + batch, len(ds))), device)
        for t, logits, r in model.trajectory(image, max_steps):
            i, f = iou_f1(logits, mask)
            iou[t - 1] += float(i.sum())
            f1[t - 1] += float(f.sum())
            res[t - 1] += r
        n_batches += 1
    n = len(ds)
    return {
        "steps": list(range(1, max_steps + 1)),
        "iou": (iou / n).tolist(),
        "f1": (f1 / n).tolist(),
        "residual": (res / max(n_batches, 1)).tolist(),
    }


def run_arm(s: Settings, mode: str, steps: int, out_dir: str, device: str = "cpu", log=print) -> dict:
    """Train one arm, evaluate it, write ``metrics.json`` and ``model.pt`` to ``out_dir``.

    Returns:
        the metrics dict (also written to ``out_dir/metrics.json``).
    """
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(s.seed)
    device = torch.device(device)
    gcfg = s.generator_config()
    train_ds = PathfinderDataset(gcfg, s.n_train, seed=1000 + s.seed)
    test_ds = held_out_set(s)
    model = build_model(s, mode, steps).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=s.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.iters, pct_start=0.05)
    rng = np.random.default_rng(s.seed)

    # Memory of one training step, before training (the same for every step).
    image, mask = _batch(train_ds, rng.integers(0, s.n_train, s.batch), device)
    saved = saved_tensor_bytes(model, s, image, mask)
    cuda_peak = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        total, _, _ = _loss(model, s, image, mask)
        total.backward()
        torch.cuda.synchronize()
        cuda_peak = torch.cuda.max_memory_allocated(device)
        opt.zero_grad(set_to_none=True)
    log(f"[{mode}:{steps}] saved tensors per training step: {saved / 2**20:.1f} MiB" + (f", CUDA peak {cuda_peak / 2**20:.0f} MiB" if cuda_peak else ""))

    # The batches' sample indices: shuffled passes over the training set.
    order, perm, cursor = [], rng.permutation(s.n_train), 0
    for _ in range(s.iters):
        if cursor + s.batch > len(perm):
            perm, cursor = rng.permutation(s.n_train), 0
        order.extend(perm[cursor : cursor + s.batch].tolist())
        cursor += s.batch
    # Samples are generated on the fly; worker processes keep a GPU fed at 150 px.
    loader = torch.utils.data.DataLoader(
        train_ds, batch_size=s.batch, sampler=order, num_workers=s.workers, pin_memory=device.type == "cuda"
    )
    history = []
    t0 = time.time()
    model.train()
    for it, (image, mask) in enumerate(loader, start=1):
        image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        total, seg, lcp = _loss(model, s, image, mask)
        opt.zero_grad(set_to_none=True)
        total.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        sched.step()
        if it % s.log_every == 0 or it == s.iters:
            with torch.no_grad():
                i, _ = iou_f1(model.read(model.refiner.last_result.state), mask)
            r = model.refiner.last_result
            rec = {
                "iter": it,
                "loss": seg.item(),
                "lcp": lcp.item(),
                "train_iou": float(i.mean()),
                "residual": r.residual,
                "neumann": r.backward_info.get("neumann_terms"),
                "neumann_cut": r.backward_info.get("neumann_cut"),
                "time": time.time() - t0,
            }
            history.append(rec)
            log(
                f"[{mode}:{steps}] it {it:5d} loss {rec['loss']:.4f} lcp {rec['lcp']:.4f} "
                f"train IoU {rec['train_iou']:.3f} res {rec['residual']:.2e} neumann {rec['neumann']} "
                f"cut {rec['neumann_cut']} {rec['time']:.0f}s"
            )
            if not math.isfinite(rec["loss"]):
                log(f"[{mode}:{steps}] loss is not finite; stopping")
                break
    train_time = time.time() - t0
    torch.save({"state_dict": model.state_dict(), "settings": dataclasses.asdict(s), "mode": mode, "steps": steps}, os.path.join(out_dir, "model.pt"))

    t1 = time.time()
    traj = evaluate_trajectory(model, test_ds, s.test_multiple * steps, s.batch, device)
    log(f"[{mode}:{steps}] eval {time.time() - t1:.0f}s: IoU@T {traj['iou'][steps - 1]:.3f}, @{2 * steps} {traj['iou'][min(2 * steps, len(traj['iou'])) - 1]:.3f}, @{3 * steps} {traj['iou'][-1]:.3f}")
    metrics = {
        "arm": f"{mode}:{steps}",
        "mode": mode,
        "steps": steps,
        "settings": dataclasses.asdict(s),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "saved_tensor_bytes": saved,
        "cuda_peak_bytes": cuda_peak,
        "peak_rss_mb": _peak_rss_mb(),
        "train_time_s": train_time,
        "history": history,
        "trajectory": traj,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=1)
    return metrics
