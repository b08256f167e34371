"""The Pathfinder segmentation network: fixed Gabor front end, one hGRU layer, 1x1 readout.

::

    image (B, 1, H, W)
      -> GaborEnergy: fixed oriented filters (even/odd pairs) + centre-surround blobs, squared
      -> x (B, C, H, W), the drive
      -> RecurrentRefiner(HGRUCell(C, k)): h <- cell(x, h) from h0 = 0, `steps` times,
         trained with any of the engine's modes (bptt, cbptt, rbp, crbp)
      -> GroupNorm + 1x1 conv readout -> logits (B, 1, H, W)

The whole model has only the hGRU and the readout to learn, so whatever groups
the contour has to happen in the recurrence.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Iterator, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..crbp import RecurrentRefiner
from ..crbp.trajectory import iterate

__all__ = [
    "LOSSES",
    "GaborEnergy",
    "PathfinderNet",
    "gabor_bank",
    "confusion",
    "iou_f1",
    "segmentation_loss",
]


def _line_image(size: int, theta: float, width: float, offset: float = 0.0) -> torch.Tensor:
    """An anti-aliased infinite line at angle ``theta``, ``offset`` px off centre, (size, size)."""
    c = (size - 1) / 2
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64),
        torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )
    dist = (-(xs - c) * math.sin(theta) + (ys - c) * math.cos(theta) - offset).abs()
    return (width / 2 + 0.5 - dist).clamp(0, 1)


def _disk_image(size: int, radius: float) -> torch.Tensor:
    c = (size - 1) / 2
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64),
        torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )
    return (radius + 0.5 - torch.hypot(xs - c, ys - c)).clamp(0, 1)


def gabor_bank(
    channels: int,
    kernel_size: int,
    wavelength: float = 4.0,
    line_width: float = 1.5,
    dot_radius: float = 2.0,
) -> torch.Tensor:
    """Analytic filter bank of ``channels`` filters, shape (channels, 1, k, k), float32.

    ``n = (channels - 1) // 2`` orientations ``theta_j = j pi / n``, each with an
    even (cosine) and an odd (sine) Gabor of the given wavelength, Gaussian
    envelope ``sigma = 0.5 * wavelength`` across and ``1.0 * wavelength`` along
    the orientation (elongated, so orientation tuning is sharp); the remaining
    one or two filters are difference-of-Gaussians blob detectors for the
    marker dot (centre sigma ``dot_radius / sqrt 2`` and 1.5 times that,
    surround twice the centre). Every filter has zero mean (flat regions give 0)
    and is scaled so that its *squared* response to its stimulus (a line of
    ``line_width`` through the centre at ``theta_j``; for every blob filter, the
    dot itself) is 1. Use a kernel that holds the dot's surround (``k >= 7`` for
    a dot of radius 2.5 on lines 2 px wide): a truncated surround makes the blob
    filters answer lines nearly as strongly as the dot.

    Args:
        channels: C >= 3.
        kernel_size: odd k >= 3.
        wavelength: Gabor wavelength in pixels.
        line_width: width of the lines the bank is normalised on.
        dot_radius: radius of the dot the blob filters are tuned to.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 3:
        raise ValueError(
            f"channels={channels!r}; need an int >= 3 (one orientation pair + one blob filter)"
        )
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, int)
        or kernel_size < 3
        or kernel_size % 2 == 0
    ):
        raise ValueError(f"kernel_size={kernel_size!r}; must be an odd int >= 3")
    k = kernel_size
    n_orient = (channels - 1) // 2
    n_blob = channels - 2 * n_orient
    c = (k - 1) / 2
    ys, xs = torch.meshgrid(
        torch.arange(k, dtype=torch.float64) - c,
        torch.arange(k, dtype=torch.float64) - c,
        indexing="ij",
    )
    filters, probes = [], []
    sig_across, sig_along = 0.5 * wavelength, 1.0 * wavelength
    for j in range(n_orient):
        th = j * math.pi / n_orient
        along = xs * math.cos(th) + ys * math.sin(th)
        across = -xs * math.sin(th) + ys * math.cos(th)
        env = torch.exp(-0.5 * ((across / sig_across) ** 2 + (along / sig_along) ** 2))
        for phase in (0.0, math.pi / 2):
            g = env * torch.cos(2 * math.pi * across / wavelength + phase)
            g = g - g.sum() / env.sum() * env  # zero mean, keeping the envelope's shape
            filters.append(g)
            # The odd filter peaks on the line's edge: probe it with the line shifted
            # by a quarter wavelength.
            shift = wavelength / 4 if phase else 0.0
            probes.append(_line_image(k, th, line_width, shift))
    for b in range(n_blob):
        s1 = max(dot_radius, 1.0) / math.sqrt(2) * (1.5**b)
        r2 = xs**2 + ys**2
        g1 = torch.exp(-0.5 * r2 / s1**2)
        g2 = torch.exp(-0.5 * r2 / (2 * s1) ** 2)
        dog = g1 / g1.sum() - g2 / g2.sum()
        filters.append(dog - dog.mean())
        probes.append(_disk_image(k, dot_radius))  # every blob filter is scaled on the dot itself
    out = []
    for g, p in zip(filters, probes):
        resp = (g * p).sum().abs()
        out.append(g / resp.clamp_min(1e-8))
    return torch.stack(out)[:, None].float()


class GaborEnergy(nn.Module):
    """Fixed first layer: ``x = gain * (bank * image)^2``, shape (B, 1, H, W) -> (B, C, H, W).

    The bank is a buffer (saved with the model, never trained). See :func:`gabor_bank`.
    ``gain`` sets the drive's scale: the bank's squared response to a line or the dot
    peaks at 1, and a gain of ~10 puts the drive in the tens, where the hGRU's
    softplus stages pass it on almost linearly (at gain 1 the cell saturates less but
    the state carries little contrast).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        wavelength: float = 4.0,
        line_width: float = 2.0,
        dot_radius: float = 2.0,
        gain: float = 1.0,
    ):
        super().__init__()
        if not gain > 0:
            raise ValueError(f"drive gain={gain!r}; must be > 0")
        self.gain = float(gain)
        bank = gabor_bank(channels, kernel_size, wavelength, line_width, dot_radius)
        self.register_buffer("weight", bank)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1] != 1:
            raise ValueError(f"image.shape={tuple(image.shape)}; expected (B, 1, H, W)")
        k = self.weight.shape[-1]
        return self.gain * F.conv2d(image, self.weight, padding=k // 2).pow(2)

    def extra_repr(self) -> str:
        c, k = self.weight.shape[0], self.weight.shape[-1]
        return f"channels={c}, kernel_size={k}, gain={self.gain}"


class PathfinderNet(nn.Module):
    """Gabor energy -> one hGRU layer run to equilibrium -> norm + 1x1 readout.

    Args:
        channels: C, Gabor filters = hGRU channels (the paper: 25).
        kernel_size: hGRU kernel size (the paper: 15).
        gabor_size: Gabor kernel size.
        mode: engine gradient mode: ``"bptt"``, ``"cbptt"``, ``"rbp"`` or ``"crbp"``.
        steps: training steps T.
        test_steps: eval steps (0 = ``steps``).
        neumann_steps: Neumann terms K (RBP modes).
        lcp_tau: LCP threshold.
        lcp_subsample: rows for a subsampled LCP (None = exact).
        lcp_crop: side of a cropped LCP (0 = off).
        lcp_kind: ``"colsum"`` (the paper's LCP) or ``"spectral"`` (growth of ``J`` per step).
        wavelength, line_width, dot_radius: Gabor bank tuning (match the generator).
        drive_gain: scale of the Gabor energy (see :class:`GaborEnergy`).
        prior: initial foreground probability of the readout (bias init), for the sparse target.
        **cell_kwargs: passed to :class:`~crbp_panoptic.crbp.HGRUCell` through the
            refiner (``norm``, ``num_groups``, ``norm_gain``, ``variant``, ...).

    Shapes: ``forward(image)`` maps (B, 1, H, W) to logits (B, 1, H, W). The
    unweighted LCP of the last training call is ``model.refiner.last_result.lcp``.
    """

    def __init__(
        self,
        channels: int = 25,
        kernel_size: int = 15,
        gabor_size: int = 7,
        *,
        mode: str = "crbp",
        steps: int = 20,
        test_steps: int = 0,
        neumann_steps: int = 15,
        lcp_tau: float = 0.9,
        lcp_subsample: Union[None, int, float] = None,
        lcp_crop: int = 0,
        lcp_kind: str = "colsum",
        wavelength: float = 4.0,
        line_width: float = 2.0,
        dot_radius: float = 2.0,
        drive_gain: float = 10.0,
        prior: float = 0.02,
        **cell_kwargs,
    ):
        super().__init__()
        if not 0 < prior < 1:
            raise ValueError(f"prior={prior!r}; must lie in (0, 1)")
        self.frontend = GaborEnergy(
            channels, gabor_size, wavelength, line_width, dot_radius, gain=drive_gain
        )
        cell_kwargs.setdefault("norm", "GN")
        if cell_kwargs["norm"] == "GN":
            cell_kwargs.setdefault("num_groups", 1)
        self.refiner = RecurrentRefiner(
            channels,
            mode=mode,
            steps=steps,
            test_steps=test_steps,
            neumann_steps=neumann_steps,
            lcp_tau=lcp_tau,
            lcp_subsample=lcp_subsample,
            lcp_crop=lcp_crop,
            lcp_kind=lcp_kind,
            kernel_size=kernel_size,
            **cell_kwargs,
        )
        # A norm before the 1x1 readout lets the readout see the state's spatial
        # structure at unit scale whatever the state's overall level.
        self.readout_norm = nn.GroupNorm(1, channels)
        self.readout = nn.Conv2d(channels, 1, 1)
        with torch.no_grad():
            self.readout.bias.fill_(math.log(prior / (1 - prior)))

    @property
    def cell(self) -> nn.Module:
        return self.refiner.cell

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits of the target mask, (B, 1, H, W), for images (B, 1, H, W)."""
        return self.read(self.refiner(self.frontend(image)))

    def read(self, h: torch.Tensor) -> torch.Tensor:
        """Readout: state (B, C, H, W) -> logits (B, 1, H, W)."""
        return self.readout(self.readout_norm(h))

    @property
    def lcp(self) -> torch.Tensor:
        """Unweighted LCP of the last forward call (0-dim)."""
        res = self.refiner.last_result
        if res is None:
            raise RuntimeError("lcp is only defined after a forward call")
        return res.lcp

    @torch.no_grad()
    def trajectory(
        self, image: torch.Tensor, steps: int
    ) -> Iterator[Tuple[int, torch.Tensor, float]]:
        """Evaluation only: step the cell from ``h0 = 0`` and read out after every step.

        Plain iteration under ``no_grad`` is exactly what the refiner does in eval
        mode (fixed-point solver, no tolerance), so the logits at step ``t`` are
        the model's output with ``test_steps = t``; one pass gives every ``t``.

        Yields:
            ``(t, logits (B, 1, H, W), relative residual ||h_t - h_{t-1}|| / ||h_t||)``
            for ``t = 1 .. steps``.
        """
        x = self.frontend(image)
        for t, h, res in iterate(partial(self.cell, x), torch.zeros_like(x), steps):
            yield t, self.read(h), res


# ----------------------------------------------------------------------------- loss and metrics


def _dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, prob.dim()))
    inter = (prob * target).sum(dims)
    return (1 - (2 * inter + 1) / (prob.sum(dims) + target.sum(dims) + 1)).mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    kind: str = "bce_dice",
    gamma: float = 2.0,
    alpha: float = 0.75,
) -> torch.Tensor:
    """Loss for a sparse binary mask (the target covers ~2% of the pixels).

    Args:
        logits: (B, 1, H, W).
        target: (B, 1, H, W) in {0, 1}.
        kind: ``"bce_dice"`` (mean BCE + soft Dice per image: Dice ignores the
            class imbalance, BCE keeps per-pixel gradients), ``"focal"`` (focal
            loss, ``gamma``, positive weight ``alpha``, normalised by the number
            of positives) or ``"wbce"`` (BCE with the positives weighted by the
            batch's negative/positive ratio, capped at 50).

    Returns:
        0-dim loss.
    """
    if logits.shape != target.shape:
        raise ValueError(
            f"logits.shape={tuple(logits.shape)} != target.shape={tuple(target.shape)}"
        )
    target = target.to(logits.dtype)
    if kind == "bce_dice":
        return F.binary_cross_entropy_with_logits(logits, target) + _dice(
            torch.sigmoid(logits), target
        )
    if kind == "focal":
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        a_t = alpha * target + (1 - alpha) * (1 - target)
        return (a_t * (1 - p_t) ** gamma * ce).sum() / target.sum().clamp_min(1.0)
    if kind == "wbce":
        pos = target.sum()
        w = ((target.numel() - pos) / pos.clamp_min(1.0)).clamp(1.0, 50.0)
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=w.detach())
    raise ValueError(f"kind={kind!r}; choose from {sorted(LOSSES)}")


#: Loss names accepted by :func:`segmentation_loss`.
LOSSES = ("bce_dice", "focal", "wbce")


@torch.no_grad()
def iou_f1(
    logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-image IoU and F1 of the thresholded prediction (logit > ``threshold``).

    Args:
        logits, target: (B, 1, H, W).

    Returns:
        ``(iou, f1)``, each (B,); an image with empty prediction and target scores 1.
    """
    pred = logits > threshold
    tgt = target > 0.5
    dims = tuple(range(1, pred.dim()))
    inter = (pred & tgt).sum(dims).double()
    union = (pred | tgt).sum(dims).double()
    total = pred.sum(dims).double() + tgt.sum(dims).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    f1 = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    return iou, f1


@torch.no_grad()
def confusion(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Per-image true positives, false positives and false negatives, (B, 3) int64.

    Summing the rows over a test set gives the pooled counts behind the authors'
    F1 (``2 TP / (2 TP + FP + FN)`` over every pixel of the set).

    Args:
        logits, target: (B, 1, H, W); a pixel is predicted where ``logits > threshold``.
    """
    pred = logits > threshold
    tgt = target > 0.5
    dims = tuple(range(1, pred.dim()))
    return torch.stack(
        [(pred & tgt).sum(dims), (pred & ~tgt).sum(dims), (~pred & tgt).sum(dims)], dim=1
    )
