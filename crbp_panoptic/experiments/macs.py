"""Multiply-adds of a config at a given input size: where a placement's cost goes.

:func:`config_macs` builds a config's model (random weights, eval mode, a fixed number of
recurrent steps) and counts, with Detectron2's ``FlopCountAnalysis`` (one per
multiply-add of convolutions, linear layers and matrix products), the multiply-adds of
one image split into the feedforward backbone + FPN, the recurrent modules inside it,
the other heads (RPN, box head, semantic head) and the mask head for a given number of
detections (counted apart: on random weights the number of detections means nothing).
These counts are what a placement costs at least, on any hardware; what a time
measurement adds to them is the efficiency of the kernels.
"""

from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from ..crbp import RecurrentRefiner

__all__ = ["config_macs", "count_macs", "parse_variant", "refiner_macs"]


class _MaskLayers(nn.Module):
    """The mask head's ``layers`` alone, on (R, C, S, S) ROI features."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, x):
        return self.head.layers(x)


def count_macs(module, inputs) -> Tuple[float, Dict[str, float]]:
    """Multiply-adds of ``module(*inputs)`` (no autograd): the total and per submodule
    (Detectron2's ``FlopCountAnalysis``; a Detectron2 model is traced through a wrapper,
    so its submodule names start with ``model.``)."""
    from detectron2.utils.analysis import FlopCountAnalysis

    with torch.no_grad():
        count = FlopCountAnalysis(module, inputs)
        count.unsupported_ops_warnings(False)
        count.uncalled_modules_warnings(False)
        return float(count.total()), count.by_module()


def refiner_macs(model, by_module: Dict[str, float], prefix: str = "") -> float:
    """The multiply-adds of :func:`count_macs` that fall inside ``model``'s
    :class:`~crbp_panoptic.crbp.RecurrentRefiner` modules (those whose name starts with
    ``prefix``)."""
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, RecurrentRefiner) and n.startswith(prefix)
    ]
    return sum(by_module.get(f"model.{n}", 0) for n in names)


def parse_variant(text: str) -> Tuple[str, list]:
    """``PATH[::KEY=VALUE...]`` -> (path, [KEY, VALUE, ...]) config overrides.

    Raises:
        ValueError: an override without ``=``, named.
    """
    path, *pairs = text.split("::")
    opts = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{text!r}: override {pair!r} must be KEY=VALUE")
        opts += [key, value]
    return path, opts


def config_macs(
    config_file: str,
    opts: Sequence = (),
    size: Tuple[int, int] = (800, 1216),
    rois: Sequence[int] = (10, 100),
) -> Dict:
    """Multiply-adds per image of ``config_file`` (with ``opts``) on a ``size`` input.

    Recurrent modules run exactly ``MODEL.CRBP.TEST_STEPS`` (or ``STEPS``) steps.

    Returns:
        dict: ``backbone`` (backbone + FPN without its recurrent modules), ``recurrent``
        (inside :class:`~crbp_panoptic.crbp.RecurrentRefiner` modules of the backbone),
        ``heads`` (everything else but the mask head, at no detections), ``steps``
        (recurrent steps run; 0 if none) and ``mask`` ({R: mask-head multiply-adds for R
        detections}); all counts per image.
    """
    from detectron2.modeling import build_model

    from ..engine import setup_cfg

    cfg = setup_cfg(
        config_file,
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.CRBP.TEST_TOL", 0.0, *opts],
    )
    model = build_model(cfg).eval()
    height, width = size
    image = torch.zeros(3, height, width)
    total, by_module = count_macs(model, ([{"image": image, "height": height, "width": width}],))
    recurrent = refiner_macs(model, by_module, prefix="backbone.")
    recurrent_model = any(isinstance(m, RecurrentRefiner) for m in model.modules())
    backbone = by_module.get("model.backbone", 0) - recurrent
    mask_in_model = by_module.get("model.roi_heads.mask_head", 0)
    head = model.roi_heads.mask_head
    side = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
    channels = cfg.MODEL.FPN.OUT_CHANNELS
    mask = {
        r: count_macs(_MaskLayers(head), (torch.zeros(r, channels, side, side),))[0] for r in rois
    }
    crbp = cfg.MODEL.CRBP
    return {
        "backbone": backbone,
        "recurrent": recurrent,
        "heads": total - by_module.get("model.backbone", 0) - mask_in_model,
        "steps": (crbp.TEST_STEPS or crbp.STEPS) if recurrent_model else 0,
        "mask": mask,
    }
