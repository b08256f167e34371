"""Detectron2's SGD, with the ROI mask head's learning rate scaled by one config key."""

from typing import Optional

import torch
from torch import nn

from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

from crbp_panoptic.modeling.config_args import mask_head_lr_factor

__all__ = ["build_optimizer"]


def _roi_mask_head(model: nn.Module) -> Optional[nn.Module]:
    return getattr(getattr(model, "roi_heads", None), "mask_head", None)


def build_optimizer(cfg, model: nn.Module, mask_head: Optional[nn.Module] = None):
    """Detectron2's ``build_optimizer`` (SGD, its parameter groups and gradient clipping), the
    mask head's parameters at ``MODEL.CRBP.MASK_HEAD_LR_FACTOR`` times their learning rate.

    Args:
        cfg (CfgNode): the config (``SOLVER.*`` and ``MODEL.CRBP.MASK_HEAD_LR_FACTOR``).
        model (nn.Module): the parameters to optimise.
        mask_head (nn.Module or None): the module whose parameters the factor scales;
            None: ``model.roi_heads.mask_head``, the stock or the recurrent ROI mask head.

    Raises:
        ValueError: the factor is not a number > 0, or is not 1 and ``model`` has no mask head.
    """
    factor = mask_head_lr_factor(cfg)
    groups = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    if factor != 1.0:
        head = mask_head if mask_head is not None else _roi_mask_head(model)
        if head is None:
            raise ValueError(
                f"MODEL.CRBP.MASK_HEAD_LR_FACTOR={factor!r} needs a model with an ROI mask head "
                f"(roi_heads.mask_head); {type(model).__name__} has none: set it to 1"
            )
        groups = _scaled(groups, {id(p) for p in head.parameters()}, factor)
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        groups,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )


def _scaled(groups, scaled_ids, factor):
    """Split each parameter group in two: the parameters in ``scaled_ids`` at ``factor`` x its
    learning rate, the others as they were."""
    out = []
    for group in groups:
        for inside in (False, True):
            params = [p for p in group["params"] if (id(p) in scaled_ids) == inside]
            if params:
                lr = group["lr"] * factor if inside else group["lr"]
                out.append({**group, "params": params, "lr": lr})
    return out
