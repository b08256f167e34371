"""The hGRU (horizontal gated recurrent unit), the recurrent cell of every placement.

The cell follows Linsley et al. (2018, 2020); docs/DESIGN.md explains the choices. With
``*`` a k x k convolution (same padding), ``.`` the elementwise product, ``sp`` softplus,
``N1``/``N2`` a normalisation and ``U1``/``U2`` 1x1 convolutions, one step is::

    g1 = sigmoid(U1 h + b1)                       # gain gate (GALA: channel x spatial)
    c1 = N1(W_inh * (h . g1))                     # inhibition
    i  = sp(sp(x) - sp(c1 . (alpha h + mu)))      # "pathfinder": sp(x - sp(...))
    g2 = sigmoid(U2 i + b2)                       # update (mix) gate
    e  = sp(N2(W_exc * i))                        # "pathfinder": N2(W_exc * i)
    h~ = sp(kappa (i + e) + omega (i . e))        # "pathfinder": sp(kappa i + gamma e
                                                  #               + omega i . e)
    h' = sp((1 - g2) . h + g2 . h~)

The excitation ``h~`` carries the inhibited drive ``i`` into the state (the ``kappa`` and
``omega`` paths), so the state has the drive's spatial structure from the first step, and
the update gate starts mostly closed, so the state integrates over many steps.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .options import NORMS, VARIANTS, check_cell_args

__all__ = ["HGRUCell", "NORMS", "VARIANTS", "chronos_bias"]


def _norm_layer(norm: str, channels: int, num_groups: int) -> nn.Module:
    if norm == "GN":
        return nn.GroupNorm(num_groups, channels)
    if norm == "BN":
        # Batch statistics in training and evaluation alike (no running averages).
        return nn.BatchNorm2d(channels, track_running_stats=False)
    return nn.Identity()


def chronos_bias(channels: int, low: float, high: float) -> torch.Tensor:
    """Chronos gate biases (Tallec & Ollivier, 2018): ``log U(low, high)``, shape (C,).

    A gate ``sigmoid(-b)`` with ``b = log U(1, T - 1)`` lets a unit keep its state over a
    horizon drawn between 1 and ``T - 1`` steps.
    """
    return torch.empty(channels).uniform_(low, high).log()


class HGRUCell(nn.Module):
    """One hGRU step ``h' = F(h, x)`` (equations in the module docstring).

    Initialisation, each value deliberate:

    * ``alpha = 0.1``, ``mu = 1``, ``kappa = 0.5``, ``omega = 0.5``, ``gamma = 1``
      (per-channel parameters, as the authors start them).
    * Chronos gate biases: ``b1 = log U(lo, hi)`` and ``b2 = -b1`` with
      ``(lo, hi) = gate_bias_range``, normally ``(1, T - 1)`` for ``T`` training steps.
      The update gate ``g2 = sigmoid(b2)`` then starts between ``1 / T`` and 0.5: mostly
      closed, so the leak ``(1 - g2) h`` keeps most of the state at each step and the
      Jacobian's column sums start close to, not far below, the LCP's threshold. (The
      authors meant this init; in their code the logarithm never took effect.)
    * ``U1``, ``U2``: normal with std ``0.1 / sqrt(C)``, so the gates start near their
      biases everywhere.
    * ``W_inh``, ``W_exc``: orthogonal rows of the flattened (C, C k^2) kernel scaled by
      ``0.5 / k`` (operator norm at most 0.5; matters only with ``norm="none"``, since
      the norms are scale invariant).
    * ``N1``, ``N2``: weight ``norm_gain`` (the authors: 0.1), bias 0.

    The step is separable over the batch for ``norm`` "GN" and "none" (the cheap
    row-subsampled LCP relies on that); "BN" couples the rows through its statistics.

    Args:
        channels: C, channels of both the drive ``x`` and the state ``h``.
        kernel_size: odd spatial size k of ``W_inh`` and ``W_exc``.
        norm: one of :data:`NORMS`.
        num_groups: GroupNorm groups (``norm="GN"``); must divide ``channels``.
        gala: GALA attention (channel x spatial) for the gain gate instead of ``U1``.
        variant: one of :data:`VARIANTS`.
        norm_gain: initial weight of ``N1`` and ``N2``.
        gate_bias_range: ``(lo, hi)`` of the chronos init, ``1 <= lo <= hi``.
    """

    #: Channel reduction of the GALA bottlenecks.
    GALA_REDUCTION = 4
    #: Kernel gain: operator-norm bound of W_inh / W_exc at initialisation.
    KERNEL_GAIN = 0.5

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        norm: str = "GN",
        num_groups: int = 32,
        gala: bool = False,
        variant: str = "coco",
        norm_gain: float = 0.1,
        gate_bias_range: Sequence[float] = (1.0, 19.0),
    ):
        super().__init__()
        check_cell_args(
            channels=channels,
            kernel_size=kernel_size,
            norm=norm,
            num_groups=num_groups,
            variant=variant,
            norm_gain=norm_gain,
            gate_bias_range=gate_bias_range,
        )
        self.channels, self.kernel_size, self.norm = channels, kernel_size, norm
        self.gala, self.variant, self.norm_gain = bool(gala), variant, float(norm_gain)
        self.gate_bias_range = (float(gate_bias_range[0]), float(gate_bias_range[1]))
        c, k = channels, kernel_size
        if self.gala:
            r = max(c // self.GALA_REDUCTION, 1)
            self.att_channel = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, r, 1), nn.ReLU(), nn.Conv2d(r, c, 1)
            )
            self.att_spatial = nn.Sequential(nn.Conv2d(c, r, 1), nn.ReLU(), nn.Conv2d(r, 1, 1))
            self.att_bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        else:
            self.attention = nn.Conv2d(c, c, 1)  # U1 and b1
        self.w_inh = nn.Conv2d(c, c, k, padding=k // 2, bias=False)
        self.w_exc = nn.Conv2d(c, c, k, padding=k // 2, bias=False)
        self.gate = nn.Conv2d(c, c, 1)  # U2 and b2
        self.norm_inh = _norm_layer(norm, c, num_groups)
        self.norm_exc = _norm_layer(norm, c, num_groups)
        for name in ("alpha", "mu", "kappa", "omega"):
            self.register_parameter(name, nn.Parameter(torch.empty(1, c, 1, 1)))
        if variant == "pathfinder":
            self.gamma = nn.Parameter(torch.empty(1, c, 1, 1))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Apply the documented initialisation (in place; safe to call again)."""
        c, k = self.channels, self.kernel_size
        for conv in (self.w_inh, self.w_exc):
            flat = conv.weight.view(c, c * k * k)
            nn.init.orthogonal_(flat)
            flat.mul_(self.KERNEL_GAIN / k)
        b1 = chronos_bias(c, *self.gate_bias_range)
        if self.gala:
            for conv in (*self.att_channel, *self.att_spatial):
                if isinstance(conv, nn.Conv2d):
                    conv.reset_parameters()
                    conv.bias.zero_()
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
        self.alpha.fill_(0.1)
        self.mu.fill_(1.0)
        self.kappa.fill_(0.5)
        self.omega.fill_(0.5)
        if self.variant == "pathfinder":
            self.gamma.fill_(1.0)

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """Gain gate ``g1`` in (0, 1), shape (B, C, H, W), from ``h`` (B, C, H, W)."""
        if self.gala:
            return torch.sigmoid(self.att_channel(h) * self.att_spatial(h) + self.att_bias)
        return torch.sigmoid(self.attention(h))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step.

        Args:
            x: drive, shape (B, C, H, W).
            h: state, shape (B, C, H, W).

        Returns:
            next state ``h'``, shape (B, C, H, W), elementwise > 0.
        """
        if x.shape != h.shape or x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"x.shape={tuple(x.shape)}, h.shape={tuple(h.shape)}; "
                f"both must be (B, {self.channels}, H, W)"
            )
        c1 = self.norm_inh(self.w_inh(h * self.attend(h)))
        inhibition = F.softplus(c1 * (self.alpha * h + self.mu))
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
            f"channels={self.channels}, kernel_size={self.kernel_size}, norm={self.norm!r}, "
            f"gala={self.gala}, variant={self.variant!r}, norm_gain={self.norm_gain}, "
            f"gate_bias_range={self.gate_bias_range}"
        )
