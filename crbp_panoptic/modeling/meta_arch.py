"""Panoptic FPN that adds the recurrent modules' penalty to its losses and logs their dynamics."""

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, PanopticFPN
from detectron2.utils.events import get_event_storage

from crbp_panoptic.crbp import NEUMANN_STOPS, PENALISED_MODES, RecurrentRefiner

from .config_args import diagnostics_period, lcp_weight

__all__ = ["CRBPPanopticFPN", "placement", "recurrent_modules"]


def recurrent_modules(model):
    """list[(str, RecurrentRefiner)]: every recurrent module inside ``model``, by name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, RecurrentRefiner)]


def placement(cfg) -> str:
    """str: where a config puts its recurrence, read from the registered names it builds:
    ``"fpn"`` (the recurrent FPN backbone), ``"mask_head"`` (:class:`CRBPMaskHead`),
    ``"fpn+mask_head"`` or ``"feedforward"``."""
    fpn = cfg.MODEL.BACKBONE.NAME == "build_resnet_crbp_fpn_backbone"
    mask = cfg.MODEL.ROI_MASK_HEAD.NAME == "CRBPMaskHead"
    return "+".join(p for p, on in (("fpn", fpn), ("mask_head", mask)) if on) or "feedforward"


@META_ARCH_REGISTRY.register()
class CRBPPanopticFPN(PanopticFPN):
    """:class:`PanopticFPN` whose training losses include ``loss_lcp``.

    With a penalised rule (``MODEL.CRBP.GRAD`` "crbp" or "cbptt"), the unweighted
    Lipschitz-coefficient penalty of every :class:`RecurrentRefiner` in the model (the
    recurrent FPN levels, the recurrent mask head) is summed, multiplied by
    ``MODEL.CRBP.LCP_WEIGHT`` and returned as ``loss_lcp``, so the trainer, the logs and
    DDP treat it like any other loss. For "rbp" / "bptt" no ``loss_lcp`` is returned.

    Each recurrent module's forward residual, steps and penalty (and, with the spectral
    penalty, its growth estimate ``lcp_growth``), and the Neumann statistics of the previous
    backward pass (terms, last relative term, and why the series stopped as one 0/1
    indicator per reason, ``neumann_stop_<reason>``, whose mean over a window is the share
    of iterations) go to the event storage as ``crbp/<module>/<stat>``.
    Every ``diagnostics_period`` iterations, so do the state's spatial contrast and the
    distribution of the step Jacobian's column sums at the equilibrium
    (:func:`~crbp_panoptic.crbp.cell_diagnostics`): whether the dynamics sit near the
    penalty's threshold ``tau`` or deep inside it. Inference is exactly
    :class:`PanopticFPN`'s.
    """

    @configurable
    def __init__(self, *, lcp_weight: float, diagnostics_period: int = 0, **kwargs):
        """
        Args:
            lcp_weight (float): multiplier of the summed penalty in ``loss_lcp``.
            diagnostics_period (int): log the dynamics' diagnostics every this many
                iterations (0 = never).
            kwargs: :class:`PanopticFPN` arguments.
        """
        super().__init__(**kwargs)
        self.lcp_weight = lcp_weight
        self.diagnostics_period = diagnostics_period
        self._recurrent = recurrent_modules(self)
        self._penalised = any(m.mode in PENALISED_MODES for _, m in self._recurrent)
        self._last_results = []

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["lcp_weight"] = lcp_weight(cfg)
        ret["diagnostics_period"] = diagnostics_period(cfg)
        return ret

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        storage = get_event_storage()
        # The backward pass of the previous iteration has filled in its Neumann statistics.
        for name, result in self._last_results:
            for key, value in result.backward_info.items():
                if key == "neumann_stop":
                    for reason in NEUMANN_STOPS:
                        storage.put_scalar(
                            f"crbp/{name}/neumann_stop_{reason}",
                            float(value == reason),
                            smoothing_hint=False,
                        )
                else:
                    storage.put_scalar(f"crbp/{name}/{key}", float(value), smoothing_hint=False)
        period = self.diagnostics_period
        diagnose = period > 0 and storage.iter % period == 0
        for _, module in self._recurrent:
            module.last_result = None  # a module that does not run must not report stale values
            module.diagnose = diagnose
        losses = super().forward(batched_inputs)
        self._last_results = [
            (n, m.last_result) for n, m in self._recurrent if m.last_result is not None
        ]
        for name, r in self._last_results:
            for key, value in (("residual", r.residual), ("steps", r.steps), ("lcp", r.lcp.item())):
                storage.put_scalar(f"crbp/{name}/{key}", value, smoothing_hint=False)
            if r.lcp_growth is not None:
                storage.put_scalar(f"crbp/{name}/lcp_growth", r.lcp_growth, smoothing_hint=False)
        for name, module in self._recurrent:
            module.diagnose = False
            for key, value in (module.last_diagnostics or {}).items():
                storage.put_scalar(f"crbp/{name}/{key}", value, smoothing_hint=False)
        if self._penalised and self._last_results:
            losses["loss_lcp"] = self.lcp_weight * sum(r.lcp for _, r in self._last_results)
        return losses
