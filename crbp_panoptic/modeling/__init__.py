"""Detectron2 wiring of the C-RBP engine. Importing this module registers:

* ``build_resnet_crbp_fpn_backbone`` in ``BACKBONE_REGISTRY``,
* ``CRBPMaskHead`` in ``ROI_MASK_HEAD_REGISTRY``,
* ``CRBPPanopticFPN`` in ``META_ARCH_REGISTRY``.
"""

from .backbone import CRBPFPN, RecurrentLateral, build_resnet_crbp_fpn_backbone
from .mask_head import CRBPMaskHead
from .meta_arch import CRBPPanopticFPN, placement, recurrent_modules

__all__ = [
    "CRBPFPN",
    "CRBPMaskHead",
    "CRBPPanopticFPN",
    "RecurrentLateral",
    "build_resnet_crbp_fpn_backbone",
    "placement",
    "recurrent_modules",
]
