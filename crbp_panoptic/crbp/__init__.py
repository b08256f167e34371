"""The C-RBP engine, torch only (never imports Detectron2).

* :func:`equilibrium` runs a step function to equilibrium under one of
  :data:`MODES` (``bptt``, ``cbptt``, ``rbp``, ``crbp``) and returns an
  :class:`EquilibriumResult` (state, unweighted LCP, diagnostics).
* :mod:`.solvers` -- forward solvers (:data:`SOLVERS`: fixed point, Anderson).
* :mod:`.rbp` -- the RBP adjoint backward (Neumann series with a divergence guard).
* :mod:`.lcp` -- the Lipschitz-coefficient penalty and its cheap variants (a random
  subset of batch rows: exact per row; a random spatial crop: approximate), and the
  spectral penalty on the growth of ``J`` along the forward iteration's last difference.
* :mod:`.arms` -- the one grammar for naming a training arm (``crbp:20``).
* :mod:`.options` -- the engine's choices (modes, norms, cell variants), declared once,
  and the one place argument values are checked.
* :func:`cell_diagnostics` -- state contrast and Jacobian column sums of a cell.
* :class:`HGRUCell` -- the hGRU step; :class:`RecurrentRefiner` runs a cell to
  equilibrium and is shared by every placement (FPN, mask head, Pathfinder).
"""

from .arms import Arm, parse_arm
from .diagnostics import cell_diagnostics
from .equilibrium import OPTIONS, EquilibriumResult, equilibrium
from .hgru import HGRUCell
from .lcp import (
    BatchSubsample,
    SpatialCrop,
    batch_subsample,
    lipschitz_penalty,
    spatial_crop,
    spectral_penalty,
    step_penalty,
)
from .options import (
    GATE_BIAS_INITS,
    LCP_KINDS,
    LCP_REDUCTIONS,
    MODES,
    NORMS,
    PENALISED_MODES,
    UNROLLED_MODES,
    VARIANTS,
)
from .rbp import NEUMANN_STOPS, neumann_adjoint, rbp_adjoint
from .refiner import RecurrentRefiner
from .solvers import SOLVERS, SolverInfo, anderson, fixed_point, get_solver

__all__ = [
    "Arm",
    "GATE_BIAS_INITS",
    "LCP_KINDS",
    "LCP_REDUCTIONS",
    "MODES",
    "NEUMANN_STOPS",
    "NORMS",
    "OPTIONS",
    "PENALISED_MODES",
    "SOLVERS",
    "BatchSubsample",
    "EquilibriumResult",
    "HGRUCell",
    "RecurrentRefiner",
    "SolverInfo",
    "SpatialCrop",
    "UNROLLED_MODES",
    "VARIANTS",
    "anderson",
    "batch_subsample",
    "cell_diagnostics",
    "equilibrium",
    "fixed_point",
    "get_solver",
    "lipschitz_penalty",
    "parse_arm",
    "neumann_adjoint",
    "rbp_adjoint",
    "spatial_crop",
    "spectral_penalty",
    "step_penalty",
]
