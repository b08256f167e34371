"""The hGRU (horizontal gated recurrent unit) step used as the recurrent refiner."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HGRUCell", "NORMS"]

#: Normalisations the cell accepts.
NORMS = ("GN", "none")


class HGRUCell(nn.Module):
    """One hGRU step ``h' = F(h, x)`` (Linsley et al. 2020, DESIGN.md section 2)::

        a  = sigmoid(A_c(h) * A_s(h) + b_a)               # gala=True
        a  = sigmoid(conv1x1(h))                          # gala=False
        i  = softplus(x - GN(W_inh * (h . a)) . (alpha h + mu))
        g  = sigmoid(U * i + b_g)                         # U: 1x1 conv
        h~ = softplus(GN(W_exc * i))
        h' = (1 - g) . h + g . h~

    ``*`` is convolution, ``.`` the elementwise product. GALA's channel branch
    ``A_c`` is global average pooling followed by a bottleneck MLP (1x1 convs,
    reduction :attr:`GALA_REDUCTION`); its spatial branch ``A_s`` is a
    bottleneck of 1x1 convs to one map. The step is separable over the batch
    (GroupNorm normalises each sample on its own), which the cheap LCP relies on.

    Initialisation (deliberate; the authors' gate init never took effect):

    * ``alpha = 0.1``, ``mu = 1``, GroupNorm weight 0.1 and bias 0 (authors).
    * Update-gate bias ``b_g = GATE_BIAS = log(3)`` and a small gate kernel ``U``,
      so the gate starts at ``g = sigmoid(b_g) = 0.75`` almost everywhere. The
      leak term ``(1 - g) h`` contributes ``1 - g`` to every column sum of the
      Jacobian ``dh'/dh`` -- a closed gate (``g -> 0``) makes the step the identity
      (column sums 1, spectral radius 1), where the LCP is violated everywhere
      and RBP's Neumann series does not converge. A mostly open gate leaves
      ``0.25`` for the leak, well below ``tau = 0.9``, so the GN-damped
      (weight 0.1) excitation/inhibition paths keep the step contractive at
      initialisation; training may close the gate where long memory helps, under
      the penalty. (The authors meant a chronos-style ``b_g = log U(1, T-1)``,
      but applied ``.log()`` out of place, so the bias kept its default init.)
    * ``W_inh``, ``W_exc``: orthogonal rows of the flattened (C, C k^2) kernel,
      scaled by ``0.5 / k``; this bounds the convolution's operator norm by 0.5.
      GroupNorm is scale invariant, so with ``norm="GN"`` the scale only matters
      for ``norm="none"``, where it keeps the step contractive at the start.
    * ``U``: normal, std ``0.1 / sqrt(C)``, so the gate's input-dependent part
      starts small. Attention convs: PyTorch defaults, biases 0.

    Args:
        channels: C, channels of both the drive ``x`` and the state ``h``.
        kernel_size: odd spatial size k of ``W_inh`` and ``W_exc``.
        norm: ``"GN"`` (GroupNorm) or ``"none"``.
        num_groups: GroupNorm groups; must divide ``channels``.
        gala: use GALA attention instead of a 1x1-conv attention.
    """

    #: Update-gate bias at initialisation: sigmoid(log 3) = 0.75 (see above).
    GATE_BIAS = math.log(3.0)
    #: Channel reduction of the GALA bottlenecks.
    GALA_REDUCTION = 4
    #: Kernel gain: operator-norm bound of W_inh / W_exc at initialisation.
    KERNEL_GAIN = 0.5

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        norm: str = "GN",
        num_groups: int = 32,
        gala: bool = False,
    ):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels={channels!r}; must be an int >= 1")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size!r}; must be an odd int >= 1 (same padding)")
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}; choose from {sorted(NORMS)}")
        if norm == "GN":
            if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
                raise ValueError(f"num_groups={num_groups!r}; must be an int >= 1")
            if channels % num_groups != 0:
                raise ValueError(f"num_groups={num_groups} must divide channels={channels}")
        self.channels, self.kernel_size, self.norm, self.gala = channels, kernel_size, norm, bool(gala)
        c, k = channels, kernel_size

        if self.gala:
            r = max(c // self.GALA_REDUCTION, 1)
            self.att_channel = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, r, 1), nn.ReLU(inplace=False), nn.Conv2d(r, c, 1)
            )
            self.att_spatial = nn.Sequential(nn.Conv2d(c, r, 1), nn.ReLU(inplace=False), nn.Conv2d(r, 1, 1))
            self.att_bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        else:
            self.attention = nn.Conv2d(c, c, 1)
        self.w_inh = nn.Conv2d(c, c, k, padding=k // 2, bias=False)
        self.w_exc = nn.Conv2d(c, c, k, padding=k // 2, bias=False)
        self.gate = nn.Conv2d(c, c, 1)  # U and b_g
        if norm == "GN":
            self.norm_inh = nn.GroupNorm(num_groups, c)
            self.norm_exc = nn.GroupNorm(num_groups, c)
        else:
            self.norm_inh = nn.Identity()
            self.norm_exc = nn.Identity()
        self.alpha = nn.Parameter(torch.empty(1, c, 1, 1))
        self.mu = nn.Parameter(torch.empty(1, c, 1, 1))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Apply the documented initialisation (in place; safe to call again)."""
        c, k = self.channels, self.kernel_size
        for conv in (self.w_inh, self.w_exc):
            flat = conv.weight.view(c, c * k * k)
            nn.init.orthogonal_(flat)
            flat.mul_(self.KERNEL_GAIN / k)
        nn.init.normal_(self.gate.weight, std=0.1 / math.sqrt(c))
        self.gate.bias.fill_(self.GATE_BIAS)
        if self.gala:
            for conv in (*self.att_channel, *self.att_spatial):
                if isinstance(conv, nn.Conv2d):
                    conv.reset_parameters()
                    conv.bias.zero_()
            self.att_bias.zero_()
        else:
            self.attention.reset_parameters()
            self.attention.bias.zero_()
        for gn in (self.norm_inh, self.norm_exc):
            if isinstance(gn, nn.GroupNorm):
                gn.weight.fill_(0.1)
                gn.bias.zero_()
        self.alpha.fill_(0.1)
        self.mu.fill_(1.0)

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """Attention ``a`` in (0, 1), shape (B, C, H, W), from ``h`` (B, C, H, W)."""
        if self.gala:
            return torch.sigmoid(self.att_channel(h) * self.att_spatial(h) + self.att_bias)
        return torch.sigmoid(self.attention(h))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step.

        Args:
            x: drive, shape (B, C, H, W).
            h: state, shape (B, C, H, W).

        Returns:
            next state ``h'``, shape (B, C, H, W).
        """
        if x.shape != h.shape or x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"x.shape={tuple(x.shape)}, h.shape={tuple(h.shape)}; both must be (B, {self.channels}, H, W)"
            )
        a = self.attend(h)
        inh = self.norm_inh(self.w_inh(h * a))
        i = F.softplus(x - inh * (self.alpha * h + self.mu))
        g = torch.sigmoid(self.gate(i))
        h_exc = F.softplus(self.norm_exc(self.w_exc(i)))
        return (1 - g) * h + g * h_exc

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, norm={self.norm!r}, gala={self.gala}"
