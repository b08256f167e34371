"""Pictures of recorded recurrent dynamics: per-step grids, animated GIFs, residual curves.

Input: the :class:`~crbp_panoptic.engine.dynamics.Trajectory` objects that
:func:`~crbp_panoptic.engine.dynamics.record_dynamics` collected during one prediction.
"""

import json
import os
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .dynamics import Trajectory, channel_summary, mask_head_readout

__all__ = ["module_frames", "plot_residuals", "render_grid", "save_dynamics", "save_gif"]

_GAP = 2  # pixels between tiles
_HEADER = 14  # pixels of the step-number row above a grid


def module_frames(
    trajectory: Trajectory, model: torch.nn.Module, instances=None, top: int = 4
) -> np.ndarray:
    """The maps to display for each recorded step of one refiner.

    For a recurrent mask head (the refiner's parent is a ``CRBPMaskHead``): the mask
    probabilities (sigmoid of the logits of each detection's predicted class) of the
    ``top`` highest-scored detections. Otherwise (FPN levels): the channel L2 norm of
    the first image's state.

    Args:
        trajectory: one refiner call.
        model: the model it belongs to (for the mask head's readout).
        instances: the prediction's ``Instances`` (``pred_classes``), for the mask head.
        top: detections to show.

    Returns:
        np.ndarray: (steps, rows, H, W) float32; rows = detections or 1.
    """
    from crbp_panoptic.modeling import CRBPMaskHead

    parent_name = trajectory.name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, CRBPMaskHead):
        readout = mask_head_readout(parent)
        rows = min(top, trajectory.states[0].shape[0])
        if rows == 0:
            raise ValueError(f"{trajectory.name}: no detections in this image, so no masks to show")
        classes = torch.zeros(rows, dtype=torch.long)
        if instances is not None and parent.predictor.out_channels > 1:
            classes = instances.pred_classes[:rows].cpu()
        maps = []
        for h in trajectory.states:
            logits = readout(h[:rows])
            maps.append(torch.sigmoid(logits[torch.arange(rows), classes]).numpy())
        return np.stack(maps).astype(np.float32)
    return np.stack([channel_summary(h[:1]).numpy() for h in trajectory.states]).astype(np.float32)


def _colorize(frames: np.ndarray, tile: int) -> np.ndarray:
    """(steps, rows, H, W) floats -> (steps, rows, tile, tile', 3) uint8, one colour scale."""
    from matplotlib import colormaps

    lo, hi = float(frames.min()), float(frames.max())
    scaled = (frames - lo) / (hi - lo) if hi > lo else np.zeros_like(frames)
    rgb = (colormaps["viridis"](scaled)[..., :3] * 255).astype(np.uint8)
    steps, rows, h, w = frames.shape
    width = max(1, round(tile * w / h))
    out = np.empty((steps, rows, tile, width, 3), np.uint8)
    for t in range(steps):
        for r in range(rows):
            out[t, r] = np.asarray(Image.fromarray(rgb[t, r]).resize((width, tile), Image.NEAREST))
    return out


def render_grid(frames: np.ndarray, tile: int = 48) -> Image.Image:
    """One image: a column per step (numbered), a row per displayed map."""
    tiles = _colorize(frames, tile)
    steps, rows, th, tw, _ = tiles.shape
    grid = Image.new(
        "RGB", (steps * (tw + _GAP) + _GAP, _HEADER + rows * (th + _GAP) + _GAP), "white"
    )
    draw = ImageDraw.Draw(grid)
    for t in range(steps):
        x = _GAP + t * (tw + _GAP)
        draw.text((x + 2, 1), str(t + 1), fill="black")
        for r in range(rows):
            grid.paste(Image.fromarray(tiles[t, r]), (x, _HEADER + _GAP + r * (th + _GAP)))
    return grid


def save_gif(frames: np.ndarray, path: str, tile: int = 96, duration_ms: int = 250) -> int:
    """An animated GIF with one frame per step (the rows side by side); returns the frames."""
    tiles = _colorize(frames, tile)
    images = []
    for t in range(tiles.shape[0]):
        row = np.concatenate(
            [
                np.pad(tiles[t, r], ((0, 0), (0, _GAP), (0, 0)), constant_values=255)
                for r in range(tiles.shape[1])
            ],
            axis=1,
        )
        image = Image.fromarray(row)
        ImageDraw.Draw(image).text((2, 1), f"t={t + 1}", fill="white")
        images.append(image)
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, disposal=2
    )
    return len(images)


def plot_residuals(trajectories: Sequence[Trajectory], path: str) -> None:
    """Residual ``||h_t - h_{t-1}|| / ||h_t||`` against t, one curve per module (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for tr in trajectories:
        steps = np.arange(1, len(tr.residuals) + 1)
        ax.semilogy(steps, np.maximum(tr.residuals, 1e-12), marker=".", label=tr.name)
    trained = sorted({tr.trained_steps for tr in trajectories})
    for s in trained:
        ax.axvline(s, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("step t (dashed: test steps of the trained model)")
    ax.set_ylabel("||h_t - h_{t-1}|| / ||h_t||")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_dynamics(
    records: Dict[str, List[Trajectory]],
    model: torch.nn.Module,
    out_dir: str,
    instances=None,
    top: int = 4,
) -> Dict[str, dict]:
    """Write ``<module>_steps.png``, ``<module>.gif``, ``residuals.png``/``.json`` to ``out_dir``.

    Uses each module's first recorded call. Returns: module -> {"grid", "gif", "frames",
    "residuals", "trained_steps"} (paths, frame count, residual list), or {"skipped":
    reason, ...} for a module with nothing to draw (a mask head without detections).
    """
    os.makedirs(out_dir, exist_ok=True)
    summary, first = {}, []
    for name, calls in records.items():
        if not calls:
            continue
        tr = calls[0]
        first.append(tr)
        try:
            frames = module_frames(tr, model, instances, top)
        except ValueError as e:  # e.g. a mask head without detections
            summary[name] = {
                "skipped": str(e),
                "residuals": tr.residuals,
                "trained_steps": tr.trained_steps,
            }
            continue
        grid, gif = os.path.join(out_dir, f"{name}_steps.png"), os.path.join(out_dir, f"{name}.gif")
        render_grid(frames).save(grid)
        summary[name] = {
            "grid": grid,
            "gif": gif,
            "frames": save_gif(frames, gif),
            "residuals": tr.residuals,
            "trained_steps": tr.trained_steps,
        }
    if not first:
        raise ValueError("no recurrent module ran in eval mode; nothing was recorded")
    plot_residuals(first, os.path.join(out_dir, "residuals.png"))
    with open(os.path.join(out_dir, "residuals.json"), "w") as f:
        json.dump(
            {
                k: {"residuals": v["residuals"], "trained_steps": v["trained_steps"]}
                for k, v in summary.items()
            },
            f,
            indent=1,
        )
    return summary
