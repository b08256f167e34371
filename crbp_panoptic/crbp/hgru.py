"""The hGRU (horizontal gated recurrent unit), the recurrent cell of every placement.

The cell follows Linsley et al. (2018, 2020). The authors released two forms of it, one per
experiment, and a third is ours; docs/DESIGN.md compares them. With ``*`` a k x k
convolution (same padding), ``.`` the elementwise product, ``sp`` softplus, ``N1``/``N2`` a
normalisation and ``U1``/``U2`` 1x1 convolutions, one step of each ``variant`` is::

    g1 = sigmoid(U1 h + b1)                 # gain gate; GALA: sigmoid(GALA(h) + b1)
    c1 = N1(W_inh * (h . g1))               # inhibition (every variant)

    "less_softplus" (the authors' COCO cell):
    i  = sp(x - c1 . (alpha h + mu))
    g2 = sigmoid(U2 i + b2)
    h~ = sp(N2(W_exc * i))
    h' = (1 - g2) . h + g2 . h~

    "pathfinder" (the authors' Pathfinder cell):
    i  = sp(x - sp(c1 . (alpha h + mu)))
    g2 = sigmoid(U2 i + b2)
    e  = N2(W_exc * i)
    h~ = sp(kappa i + gamma e + omega i . e)
    h' = sp((1 - g2) . h + g2 . h~)

    "kappa_omega" (ours, for the synthetic panoptic configs):
    i  = sp(sp(x) - sp(c1 . (alpha h + mu)))
    g2 = sigmoid(U2 i + b2)
    e  = sp(N2(W_exc * i))
    h~ = sp(kappa (i + e) + omega i . e)
    h' = sp((1 - g2) . h + g2 . h~)

GALA (the authors' form, used by their COCO model) multiplies a channel gate and a spatial
gate, both computed from ``h`` at every position::

    GALA(h) = [1x1 C->C/4 (+bias), sp, 1x1 C/4->C](h) . [k x k C->C/2 (+bias), sp, k x k C/2->1](h)

In ``kappa_omega`` and ``pathfinder`` the ``kappa`` path carries the inhibited drive ``i``
straight into the state, so the state has the drive's spatial structure from the first
step; in ``less_softplus`` the drive reaches the state only through ``N2(W_exc * i)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .options import GATE_BIAS_INITS, NORMS, VARIANTS, check_cell_args

__all__ = ["GATE_BIAS_INITS", "HGRUCell", "NORMS", "VARIANTS", "chronos_bias"]


def _norm_layer(norm: str, channels: int, num_groups: int) -> nn.Module:
    if norm == "GN":
        return nn.GroupNorm(num_groups, channels)
    if norm == "BN":
        # Batch statistics in training and evaluation alike (no running averages).
        return nn.BatchNorm2d(channels, track_running_stats=False)
    return nn.Identity()


def chronos_bias(channels: int, low: float, high: float, log: bool = True) -> torch.Tensor:
    """Chronos gate biases (Tallec & Ollivier, 2018), shape (C,).

    ``log U(low, high)`` (``log=True``): a gate ``sigmoid(-b)`` with ``b = log U(1, T - 1)``
    lets a unit keep its state over a horizon drawn between 1 and ``T - 1`` steps.
    ``log=False`` returns the raw ``U(low, high)`` draw: the biases the authors' models
    actually started from (their code applied the logarithm out of place).
    """
    b = torch.empty(channels).uniform_(low, high)
    return b.log() if log else b


class GALA(nn.Module):
    """The authors' GALA gate activity: channel gate times spatial gate, shape (B, 1|C, H, W).

    Args:
        channels: C.
        kernel_size: k of the spatial gate's two convolutions.
        reduction: channel reduction of the channel gate (the authors: 4).
    """

    def __init__(self, channels: int, kernel_size: int, reduction: int = 4):
        super().__init__()
        c, k, r = channels, kernel_size, max(channels // reduction, 1)
        half = max(channels // 2, 1)
        self.channel_0 = nn.Conv2d(c, r, 1)
        self.channel_1 = nn.Conv2d(r, c, 1, bias=False)
        self.spatial_0 = nn.Conv2d(c, half, k, padding=k // 2)
        self.spatial_1 = nn.Conv2d(half, 1, k, padding=k // 2, bias=False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-normal kernels (as the authors), PyTorch's default channel bias, zero
        spatial bias."""
        for conv in (self.channel_0, self.channel_1, self.spatial_0, self.spatial_1):
            nn.init.kaiming_normal_(conv.weight)
        bound = 1 / math.sqrt(self.channel_0.in_channels)
        nn.init.uniform_(self.channel_0.bias, -bound, bound)
        self.spatial_0.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        channel = self.channel_1(F.softplus(self.channel_0(h)))
        spatial = self.spatial_1(F.softplus(self.spatial_0(h)))
        return channel * spatial


class HGRUCell(nn.Module):
    """One hGRU step ``h' = F(h, x)`` (equations in the module docstring).

    Initialisation, each value deliberate:

    * ``alpha = 0.1``, ``mu = 1``; ``kappa = 0.5``, ``omega = 0.5`` (``kappa_omega``,
      ``pathfinder``), ``gamma = 1`` (``pathfinder``): per-channel parameters, as the
      authors start them. ``less_softplus`` has no ``kappa``, ``omega`` or ``gamma``.
    * Gate biases ``b1`` and ``b2 = -b1``, with ``(lo, hi) = gate_bias_range``, normally
      ``(1, T - 1)`` for ``T`` training steps. ``gate_bias_init="chronos"``:
      ``b1 = log U(lo, hi)``, the init the authors intended; the update gate
      ``g2 = sigmoid(b2)`` then starts between ``1 / T`` and 0.5, mostly closed.
      ``"raw"``: ``b1 = U(lo, hi)``, what the authors' code did (the logarithm never took
      effect); ``g2`` then starts between ``sigmoid(-hi)`` and ``sigmoid(-lo)``.
    * ``U1``, ``U2``: normal with std ``0.1 / sqrt(C)``, so the gates start near their
      biases everywhere. With GALA, its kernels are Kaiming-normal as the authors'
      (:meth:`GALA.reset_parameters`) and ``b1`` is its per-channel bias.
    * ``W_inh``, ``W_exc``: orthogonal rows of the flattened (C, C k^2) kernel scaled by
      ``0.5 / k`` (operator norm at most 0.5; matters only with ``norm="none"``, since
      the norms are scale invariant; the authors drew them Kaiming-normal).
    * ``N1``, ``N2``: weight ``norm_gain`` (the authors: 0.1), bias 0.

    The step is separable over the batch for ``norm`` "GN" and "none" (the cheap
    row-subsampled LCP relies on that); "BN" couples the rows through its statistics.

    Args:
        channels: C, channels of both the drive ``x`` and the state ``h``.
        kernel_size: odd spatial size k of ``W_inh``, ``W_exc`` (and GALA's spatial gate).
        dilation: d of ``W_inh`` and ``W_exc``: their taps are d pixels apart, so one step
            reaches d (k - 1) / 2 pixels with the k x k parameters (1: the authors' cells).
        norm: one of :data:`NORMS`.
        num_groups: GroupNorm groups (``norm="GN"``); must divide ``channels``.
        gala: the authors' GALA gate for ``g1`` instead of ``U1``.
        variant: one of :data:`VARIANTS`.
        norm_gain: initial weight of ``N1`` and ``N2``.
        gate_bias_range: ``(lo, hi)`` of the gate-bias draw, ``0 < lo <= hi``.
        gate_bias_init: one of :data:`GATE_BIAS_INITS`.
    """

    #: Channel reduction of GALA's channel gate.
    GALA_REDUCTION = 4
    #: Kernel gain: operator-norm bound of W_inh / W_exc at initialisation.
    KERNEL_GAIN = 0.5

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        dilation: int = 1,
        norm: str = "GN",
        num_groups: int = 32,
        gala: bool = False,
        variant: str = "kappa_omega",
        norm_gain: float = 0.1,
        gate_bias_range: Sequence[float] = (1.0, 19.0),
        gate_bias_init: str = "chronos",
    ):
        super().__init__()
        check_cell_args(
            channels=channels,
            kernel_size=kernel_size,
            dilation=dilation,
            norm=norm,
            num_groups=num_groups,
            variant=variant,
            norm_gain=norm_gain,
            gate_bias_range=gate_bias_range,
            gate_bias_init=gate_bias_init,
        )
        self.channels, self.kernel_size, self.norm = channels, kernel_size, norm
        self.dilation = dilation
        self.gala, self.variant, self.norm_gain = bool(gala), variant, float(norm_gain)
        self.gate_bias_range = (float(gate_bias_range[0]), float(gate_bias_range[1]))
        self.gate_bias_init = gate_bias_init
        c, k = channels, kernel_size
        if self.gala:
            self.att_gala = GALA(c, k, self.GALA_REDUCTION)
            self.att_bias = nn.Parameter(torch.zeros(1, c, 1, 1))  # b1
        else:
            self.attention = nn.Conv2d(c, c, 1)  # U1 and b1
        d = dilation
        self.w_inh = nn.Conv2d(c, c, k, padding=d * (k // 2), dilation=d, bias=False)
        self.w_exc = nn.Conv2d(c, c, k, padding=d * (k // 2), dilation=d, bias=False)
        self.gate = nn.Conv2d(c, c, 1)  # U2 and b2
        self.norm_inh = _norm_layer(norm, c, num_groups)
        self.norm_exc = _norm_layer(norm, c, num_groups)
        names = ["alpha", "mu"]
        if variant != "less_softplus":
            names += ["kappa", "omega"]
        if variant == "pathfinder":
            names.append("gamma")
        for name in names:
            self.register_parameter(name, nn.Parameter(torch.empty(1, c, 1, 1)))
        self.reset_parameters()

    #: Initial values of the per-channel parameters (those the variant has).
    INITIAL = {"alpha": 0.1, "mu": 1.0, "kappa": 0.5, "omega": 0.5, "gamma": 1.0}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Apply the documented initialisation (in place; safe to call again)."""
        c, k = self.channels, self.kernel_size
        for conv in (self.w_inh, self.w_exc):
            flat = conv.weight.view(c, c * k * k)
            nn.init.orthogonal_(flat)
            flat.mul_(self.KERNEL_GAIN / k)
        b1 = chronos_bias(c, *self.gate_bias_range, log=self.gate_bias_init == "chronos")
        if self.gala:
            self.att_gala.reset_parameters()
            self.att_bias.copy_(b1.view(1, c, 1, 1))
        else:
            nn.init.normal_(self.attention.weight, std=0.1 / math.sqrt(c))
            self.attention.bias.copy_(b1)
        nn.init.normal_(self.gate.weight, std=0.1 / math.sqrt(c))
        self.gate.bias.copy_(-b1)
        for layer in (self.norm_inh, self.norm_exc):
            if isinstance(layer, (nn.GroupNorm, nn.BatchNorm2d)):
                layer.weight.fill_(self.norm_gain)
                layer.bias.zero_()
        for name, value in self.INITIAL.items():
            if hasattr(self, name):
                getattr(self, name).fill_(value)

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """Gain gate ``g1`` in (0, 1), shape (B, C, H, W), from ``h`` (B, C, H, W)."""
        if self.gala:
            return torch.sigmoid(self.att_gala(h) + self.att_bias)
        return torch.sigmoid(self.attention(h))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step.

        Args:
            x: drive, shape (B, C, H, W).
            h: state, shape (B, C, H, W).

        Returns:
            next state ``h'``, shape (B, C, H, W); elementwise > 0 for ``h >= 0``.
        """
        if x.shape != h.shape or x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"x.shape={tuple(x.shape)}, h.shape={tuple(h.shape)}; "
                f"both must be (B, {self.channels}, H, W)"
            )
        c1 = self.norm_inh(self.w_inh(h * self.attend(h)))
        inhibition = c1 * (self.alpha * h + self.mu)
        if self.variant == "less_softplus":
            i = F.softplus(x - inhibition)
            g2 = torch.sigmoid(self.gate(i))
            h_tilde = F.softplus(self.norm_exc(self.w_exc(i)))
            return h + g2 * (h_tilde - h)
        inhibition = F.softplus(inhibition)
        pathfinder = self.variant == "pathfinder"
        i = F.softplus((x if pathfinder else F.softplus(x)) - inhibition)
        g2 = torch.sigmoid(self.gate(i))
        e = self.norm_exc(self.w_exc(i))
        if pathfinder:
            h_tilde = F.softplus(self.kappa * i + self.gamma * e + self.omega * i * e)
        else:
            e = F.softplus(e)
            h_tilde = F.softplus(self.kappa * (i + e) + self.omega * i * e)
        return F.softplus(h + g2 * (h_tilde - h))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}, norm={self.norm!r}, "
            f"gala={self.gala}, variant={self.variant!r}, norm_gain={self.norm_gain}, "
            f"gate_bias_range={self.gate_bias_range}, gate_bias_init={self.gate_bias_init!r}"
        )
