"""Lipschitz-coefficient penalty (LCP), and a spectral penalty that bounds the adjoint.

For one step ``h_next = f(h_prev)`` with Jacobian ``J = d h_next / d h_prev``,
the penalty is::

    u       = 1^T J                      # column sums: one VJP with an all-ones vector
    penalty = mean(relu(u - tau) ** 2)   # mean over every element of u

``u`` is built with ``create_graph=True`` so the penalty is differentiable: its
gradient reaches the parameters and captured inputs of ``f`` (and ``h_prev``'s
own history, if it has one). Pushing the column sums below ``tau < 1`` keeps the
step locally contractive, which is what makes RBP's Neumann series converge.

Cheap variant (``batch_subsample``): evaluate the penalty on a random subset of
batch rows. When ``f`` is separable over the batch (convolutions, per-sample
GroupNorm, elementwise ops -- true of the hGRU), ``J`` is block diagonal, so the
column sums of row ``b`` depend only on row ``b``: the subset's ``u`` values are
*exactly* those rows' values in the full ``u``. Sampling rows uniformly without
replacement, the subset penalty is an unbiased estimate of the full mean, and
the double-backward memory and time shrink with the subset.

Cheap variant (``spatial_crop``): evaluate the penalty on a random window of
positions, the same window for every batch row. This is for maps with few rows
(an FPN level: 1-2 images of large feature maps), where a row subset saves
little. Unlike the row subset it is **not exact**; how it relates to the exact
penalty:

* Locality. Let ``R`` be the step's receptive radius: the sum of ``(k - 1) / 2``
  over the spatial convolutions on the longest path from ``h`` to ``h'`` (1x1
  convolutions and pointwise ops add 0). In the hGRU that path is
  ``h -> W_inh -> i -> W_exc -> h'``, so ``R = 2 (k - 1) / 2 = k - 1`` (2 for
  ``k = 3``). The exact column sum ``u_p = sum_q dh'_q/dh_p`` runs over the
  outputs ``q`` within ``R`` of ``p`` (Chebyshev distance).
* The crop re-runs the step on the window with the convolutions' zero padding
  at the window's edge, so an output ``q`` and its local derivatives are
  guaranteed right only where ``q``'s own ``R``-neighbourhood lies in the window. Hence the
  crop's ``u_p`` equals the exact ``u_p`` wherever ``p`` is at least ``2R``
  positions (hGRU: ``2 (k - 1)``, 4 for ``k = 3``) from every window side that
  is not also a side of the map (where the window's padding is the map's). In
  a band of width ``2R`` inside the other sides it counts only the outputs in
  the window, some of them computed from the zero padding. See
  :meth:`SpatialCrop.margin` and ``tests/crbp/test_lcp.py``, which checks the
  equality to float64 round-off and that the margin is tight.
* The authors' GALA gate adds two k x k convolutions on the path to the gain
  gate, so with GALA the radius is ``2 (k - 1)`` and the margin twice as wide.
* Global couplings break the equality everywhere: GroupNorm statistics
  (``norm="GN"``) are taken over the window, not the map. Measured on the hGRU
  at initialisation (8 channels, 24x24 map, 16x16 window, state after 5 steps,
  float64): with GN (4 groups) the crop's column sums beyond the margin were
  within 3.4e-3 (relative) of the exact ones (the test asserts 2e-2); over the
  whole window, the border band included, within 2.5e-2 for both norms, mean
  1e-3. Trained weights (larger GN gains, non-uniform statistics) may widen the
  gap.
* Sampling. The window's top-left corner is uniform over the positions that
  keep it inside the map, so the map's centre is covered more often than its
  border. The crop penalty ``mean_{p in window} relu(u_p - tau)^2`` is thus a
  stochastic estimate of a *coverage-weighted* mean of the penalty, further
  biased by the border band and normalisation effects above -- an
  approximation that bounds memory, not an unbiased estimate of the exact
  mean. The exact penalty stays :func:`~crbp_panoptic.crbp.equilibrium`'s
  default; prefer ``batch_subsample`` wherever there are many rows (ROIs).

Both variants cost one extra step evaluation on the sample; the double-backward
memory then scales with the sample's size instead of the whole state's. With
the hGRU, the exact penalty roughly doubles the bytes RBP saves for backward
(x2.06 in ``tools/benchmark.py --task engine``) and a sample of a fraction ``a`` of the
state costs about ``1 + 2.1 a`` times RBP's saved bytes: a crop stays within
1.15x of RBP for ``a <= 7%`` of the positions (measured, FPN scale, 2 images: 16x16 on
48x64 gave 1.16x, 12x12 1.09x; 16, 32, 64 on 200x304 gave 1.01x, 1.03x,
1.13x). A sample that is the whole state (a crop at least the map's size, a row
count at least the batch) costs *more* than the exact penalty (about 2.9x RBP),
because the step is evaluated again: use the crop on large maps, not on 14x14
ROIs.

Spectral penalty (``lcp_kind="spectral"``, :func:`spectral_penalty`). The RBP backward's
Neumann series ``sum_k (J^T)^k g`` converges when its terms shrink, i.e. when the growth
of ``J^T`` per term -- the spectral radius of ``J``, which ``J^T`` shares -- is below 1.
The column sums do not bound it: they add signed entries, and a cell with inhibition can
keep them under ``tau`` while the radius exceeds 1. This penalty acts on the growth itself,
along the direction the forward iteration has already found::

    d_b     = h_T - h_{T-1}, row b            # the forward's last difference, per image
    v_b     = d_b / ||d_b||                    # (a row with d_b = 0 gets v_b = 0)
    g_b     = ||(J v)_b||                      # one Jacobian-vector product (forward-mode AD)
    growth  = max_b g_b                        # the batch's series needs every row below 1
    penalty = relu(growth - tau) ** 2          # differentiable in theta through J v

Why this direction: near a fixed point the differences obey ``d_{t+1} ~ J d_t``, so the
forward iteration *is* a power iteration on ``J``, run for ``T - 1`` steps on this very
batch. Its last difference leans towards the slowest-decaying (or fastest-growing) mode,
and ``||J v||`` along it tends to the spectral radius, the same number the Neumann terms'
growth tends to. On trained Pathfinder cells that mode sits in one or two images of a
batch, so a vector carried over from other images (one power step per training iteration)
reads far below the radius. Per-row directions find each image's own mode, and the penalty
acts on the largest row growth because the batch's Neumann series grows if any row's does
(a mean over rows would dilute one expanding image by the batch size). When the forward has
not converged (a cycle, an expanding mode) the difference is the direction that keeps it
from converging, and the penalty pushes exactly that. ``tests/crbp/test_lcp.py`` checks
``g`` against a dense Jacobian (value, gradient, and the spectral radius after enough steps).

Cost: the step evaluated once more with dual numbers, and the backward of that, in place of
the column-sum penalty's VJP with a graph (the Pathfinder report gives the per-iteration
training time of both arms). Forward-mode AD is used because a second backward through
batch norm's double backward is not available (BN supports two orders of derivatives,
not three). ``lcp_reduction`` is ``"mean"`` only with this kind. With ``lcp_subsample``
the penalty is taken on the sample, whose direction comes from one more step of the
sample without a graph.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from .options import check_refiner_args

__all__ = [
    "BatchSubsample",
    "SpatialCrop",
    "batch_subsample",
    "column_sums",
    "crop",
    "lipschitz_penalty",
    "penalty_from_sums",
    "row_directions",
    "spatial_crop",
    "spectral_penalty",
    "step_penalty",
]

#: A crop window ``(top, left, height, width)`` on the last two dimensions.
Box = Tuple[int, int, int, int]


def column_sums(h_next: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
    """``u = 1^T J`` for a recorded step, differentiable (``create_graph=True``).

    Args:
        h_next: output of the step, shape S_out, with history back to ``h_prev``.
        h_prev: the step's input state, shape S (must require grad).

    Returns:
        ``u`` with the shape of ``h_prev``; zeros if ``h_next`` does not depend on it.
    """
    (u,) = torch.autograd.grad(
        h_next,
        h_prev,
        torch.ones_like(h_next),
        create_graph=True,
        retain_graph=True,
        allow_unused=True,
    )
    return torch.zeros_like(h_prev) if u is None else u


def penalty_from_sums(u: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean(relu(u - tau)^2)`` in at least float32; 0 (not NaN) for an empty ``u``."""
    if u.dtype not in (torch.float32, torch.float64):
        u = u.float()
    return F.relu(u - tau).pow(2).sum() / max(u.numel(), 1)


def step_penalty(h_next: torch.Tensor, h_prev: torch.Tensor, tau: float) -> torch.Tensor:
    """LCP of an already recorded step (reuses its graph; ``f`` is not re-evaluated).

    Args:
        h_next: output of the step, shape S.
        h_prev: input state of the step, shape S, requiring grad.
        tau: threshold on the column sums.

    Returns:
        0-dim penalty tensor (float32 or float64) with a graph to ``f``'s parameters.
    """
    return penalty_from_sums(column_sums(h_next, h_prev), tau)


def row_directions(difference: torch.Tensor) -> torch.Tensor:
    """Each row of ``difference`` (shape (B, ...)) scaled to unit norm; zero rows stay zero."""
    wide = difference if difference.dtype in (torch.float32, torch.float64) else difference.float()
    norms = torch.linalg.vector_norm(wide.flatten(1), dim=1)
    scale = torch.where(norms > 0, 1.0 / norms.clamp_min(1e-300), torch.zeros_like(norms))
    scale = scale.view(-1, *([1] * (difference.dim() - 1)))
    return (wide * scale).to(difference.dtype)


def spectral_penalty(
    f: Callable[[torch.Tensor], torch.Tensor],
    h_prev: torch.Tensor,
    difference: torch.Tensor,
    tau: float,
) -> Tuple[torch.Tensor, float]:
    """The growth of ``J = df/dh`` at ``h_prev`` along the forward's last difference, penalised.

    Args:
        f: the step, shape (B, ...) -> (B, ...), separable over rows or nearly so (batch norm
            couples the rows through its statistics; the product below is still the exact
            ``J v`` of the coupled step).
        h_prev: the state to linearise at, ``h_{T-1}``, shape (B, ...). Its history (if
            any) is kept, so the penalty's gradient also reaches it.
        difference: ``h_T - h_{T-1}`` (any history is ignored), shape of ``h_prev``.
        tau: bound on the growth.

    Returns:
        ``(penalty, growth)``: the 0-dim penalty ``relu(max_b ||(J v)_b|| - tau)^2`` with
        ``v_b`` the unit-norm rows of ``difference`` (float32 or float64; a graph to whatever
        ``f`` depends on), and the largest row growth ``max_b ||(J v)_b||`` as a float. An
        empty state, a zero difference or a step that does not depend on ``h`` give a zero
        penalty (growth 0).
    """
    if h_prev.numel() == 0:
        return h_prev.new_zeros((), dtype=torch.float32), 0.0
    v = row_directions(difference.detach())
    with fwAD.dual_level():
        out = f(fwAD.make_dual(h_prev, v))
        jv = fwAD.unpack_dual(out).tangent
    if jv is None:  # f does not depend on h: J = 0
        return h_prev.new_zeros((), dtype=torch.float32), 0.0
    if jv.dtype not in (torch.float32, torch.float64):
        jv = jv.float()
    growth = torch.linalg.vector_norm(jv.flatten(1), dim=1).max()
    return F.relu(growth - tau).pow(2), float(growth.detach())


def lipschitz_penalty(
    f: Callable[[torch.Tensor], torch.Tensor], h_prev: torch.Tensor, tau: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Evaluate one step and its LCP.

    Args:
        f: step function, shape S -> shape S.
        h_prev: state to linearise at, shape S. If it does not require grad it
            is treated as a constant (a detached leaf is made for the VJP).
        tau: threshold on the column sums.

    Returns:
        ``(penalty, h_next)``: the 0-dim penalty and ``f(h_prev)`` (shape S).
    """
    if not h_prev.requires_grad:
        h_prev = h_prev.detach().requires_grad_()
    h_next = f(h_prev)
    return step_penalty(h_next, h_prev, tau), h_next


def _rows_for(size: Union[int, float], bsz: int) -> int:
    if isinstance(size, float):
        return min(bsz, math.ceil(size * bsz))
    return min(bsz, size)


class BatchSubsample:
    """Pick random batch rows for a cheap LCP (see the module docstring).

    Use as the ``lcp_subsample`` option of :func:`~crbp_panoptic.crbp.equilibrium`.

    Args:
        step_on_rows: ``(index, h_rows) -> next h_rows``: the step function
            applied to the batch rows ``index`` (a LongTensor, shape (n,)) of the
            state, e.g. ``lambda idx, h: cell(x[idx], h)``.
        size: fraction of rows (float in (0, 1], rounded up) or a row count (int >= 1).
        generator: optional ``torch.Generator`` for the row choice (defaults to
            torch's global RNG, so every DDP rank draws its own rows).

    Attributes:
        last_index: rows chosen by the last call (LongTensor, sorted), or None.
    """

    def __init__(
        self,
        step_on_rows: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        size: Union[int, float],
        generator: Optional[torch.Generator] = None,
    ):
        if size is None:
            raise ValueError("lcp_subsample=None; BatchSubsample needs a fraction or a count")
        check_refiner_args(lcp_subsample=size)
        self.step_on_rows = step_on_rows
        self.size = size
        self.generator = generator
        self.last_index: Optional[torch.Tensor] = None

    def __call__(
        self, h_prev: torch.Tensor
    ) -> Tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        """Choose rows of ``h_prev`` (shape (B, ...)).

        Returns:
            ``(f_sub, h_sub)``: ``h_sub = h_prev[index]`` (shape (n, ...)), keeping
            ``h_prev``'s history, and ``f_sub(h) = step_on_rows(index, h)``.
        """
        bsz = h_prev.shape[0]
        n = _rows_for(self.size, bsz)
        gen_device = self.generator.device if self.generator is not None else "cpu"
        index = torch.randperm(bsz, generator=self.generator, device=gen_device)[:n]
        index = index.sort().values.to(h_prev.device)
        self.last_index = index
        step = self.step_on_rows
        return (lambda h_sub: step(index, h_sub)), h_prev.index_select(0, index)


def batch_subsample(
    step_on_rows: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    size: Union[int, float],
    generator: Optional[torch.Generator] = None,
) -> BatchSubsample:
    """Functional alias of :class:`BatchSubsample` (same arguments)."""
    return BatchSubsample(step_on_rows, size, generator)


def crop(t: torch.Tensor, box: Box) -> torch.Tensor:
    """The window ``box = (top, left, height, width)`` of ``t``'s last two dims (a view)."""
    top, left, height, width = box
    return t[..., top : top + height, left : left + width]


def check_crop_size(size: int, name: str = "lcp_crop") -> int:
    """Validate a crop side: an int >= 1 (positions)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}={size!r}; must be an int >= 1 (the crop side in positions)")
    return size


class SpatialCrop:
    """Pick a random spatial window for a cheap, approximate LCP (see the module docstring).

    Use as the ``lcp_subsample`` option of :func:`~crbp_panoptic.crbp.equilibrium`.
    One window, ``min(size, H) x min(size, W)`` with a uniform random top-left
    corner, is taken from the last two dimensions of the state, the same for
    every batch row and channel.

    Args:
        step_on_crop: ``(box, h_crop) -> next h_crop``: the step function run on
            the window ``box = (top, left, height, width)`` of the state, with
            its inputs cropped the same way, e.g.
            ``lambda box, h: cell(crop(x, box), h)``.
        size: crop side in positions (int >= 1).
        generator: optional ``torch.Generator`` for the corner (defaults to
            torch's global RNG, so every DDP rank draws its own window).

    Attributes:
        last_box: ``(top, left, height, width)`` chosen by the last call, or None.
    """

    def __init__(
        self,
        step_on_crop: Callable[[Box, torch.Tensor], torch.Tensor],
        size: int,
        generator: Optional[torch.Generator] = None,
    ):
        self.size = check_crop_size(size)
        self.step_on_crop = step_on_crop
        self.generator = generator
        self.last_box: Optional[Box] = None

    @staticmethod
    def margin(kernel_size: int = 3, convs: int = 2) -> int:
        """Distance from a window side beyond which the crop's column sums are exact.

        ``2 R`` with ``R = convs * (kernel_size - 1) // 2`` the step's receptive
        radius (hGRU: ``convs = 2``, ``W_inh`` then ``W_exc``; 4 with GALA), for
        steps without global couplings (``norm="none"``). Sides shared with the map
        need no margin. For a dilated cell pass the taps' span ``d (k - 1) + 1``.
        """
        return 2 * convs * ((kernel_size - 1) // 2)

    def _corner(self, extent: int, side: int) -> int:
        if extent <= side:
            return 0
        gen_device = self.generator.device if self.generator is not None else "cpu"
        return int(
            torch.randint(
                extent - side + 1, (1,), generator=self.generator, device=gen_device
            ).item()
        )

    def __call__(
        self, h_prev: torch.Tensor
    ) -> Tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
        """Choose a window of ``h_prev`` (shape (..., H, W), e.g. (B, C, H, W)).

        Returns:
            ``(f_sub, h_sub)``: ``h_sub = crop(h_prev, box)`` (shape
            (..., min(size, H), min(size, W))), keeping ``h_prev``'s history, and
            ``f_sub(h) = step_on_crop(box, h)``.
        """
        if h_prev.dim() < 2:
            raise ValueError(f"h_prev.shape={tuple(h_prev.shape)}; SpatialCrop needs (..., H, W)")
        height, width = h_prev.shape[-2:]
        hc, wc = min(self.size, height), min(self.size, width)
        box = (self._corner(height, hc), self._corner(width, wc), hc, wc)
        self.last_box = box
        step = self.step_on_crop
        return (lambda h_sub: step(box, h_sub)), crop(h_prev, box)


def spatial_crop(
    step_on_crop: Callable[[Box, torch.Tensor], torch.Tensor],
    size: int,
    generator: Optional[torch.Generator] = None,
) -> SpatialCrop:
    """Functional alias of :class:`SpatialCrop` (same arguments)."""
    return SpatialCrop(step_on_crop, size, generator)
