"""The recurrent FPN backbone: Detectron2's FPN with hGRU-refined lateral features."""
import math

import torch.nn.functional as F

from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from crbp_panoptic.crbp import RecurrentRefiner

from .config_args import fpn_levels, refiner_args

__all__ = ["CRBPFPN", "build_resnet_crbp_fpn_backbone"]


class CRBPFPN(FPN):
    """FPN whose selected lateral features are refined to an equilibrium by an hGRU.

    For each recurrent level the lateral 1x1 projection of ``res_k`` is the drive ``x``
    of an hGRU run to equilibrium from ``h_0 = 0``; the equilibrium state replaces the
    lateral feature before the top-down sum and the 3x3 output conv. Everything else,
    module names included (``fpn_lateral{k}``, ``fpn_output{k}``), is Detectron2's FPN,
    so stock R-50-FPN / Panoptic FPN checkpoints load into every part that is not new.
    The new parts are ``fpn_recurrent{k}`` (a :class:`RecurrentRefiner` each).

    Outputs, strides and channels are exactly the stock FPN's (``output_shape()``).
    """

    def __init__(self, bottom_up, in_features, out_channels, *, recurrent_levels, refiner_kwargs,
                 norm="", top_block=None, fuse_type="sum"):
        """
        Args:
            bottom_up, in_features, out_channels, norm, top_block, fuse_type: as :class:`FPN`.
            recurrent_levels (list[str]): output levels (``"p2"``...) whose lateral recurs.
            refiner_kwargs (dict): :class:`RecurrentRefiner` keyword arguments (those of its
                :class:`HGRUCell` included; ``channels`` must be ``out_channels``).
        """
        super().__init__(bottom_up, in_features, out_channels, norm=norm, top_block=top_block,
                         fuse_type=fuse_type)
        strides = bottom_up.output_shape()
        # Lateral refiners in the same top-down order as self.lateral_convs; None = feedforward.
        self.lateral_refiners = []
        for name in reversed(self.in_features):
            stage = int(math.log2(strides[name].stride))
            refiner = None
            if f"p{stage}" in recurrent_levels:
                refiner = RecurrentRefiner(**refiner_kwargs)
                self.add_module(f"fpn_recurrent{stage}", refiner)
            self.lateral_refiners.append(refiner)

    def _lateral(self, idx, features):
        lateral = self.lateral_convs[idx](features)
        refiner = self.lateral_refiners[idx]
        return lateral if refiner is None else refiner(lateral)

    def forward(self, x):
        """
        Args:
            x (Tensor): images, shape (N, C, H, W), H and W divisible by ``size_divisibility``.

        Returns:
            dict[str, Tensor]: ``"p<stage>"`` -> (N, out_channels, H / 2^stage, W / 2^stage).
        """
        bottom_up_features = self.bottom_up(x)
        prev_features = self._lateral(0, bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev_features)]
        for idx in range(1, len(self.lateral_convs)):
            features = bottom_up_features[self.in_features[-idx - 1]]
            top_down = F.interpolate(prev_features, scale_factor=2.0, mode="nearest")
            prev_features = self._lateral(idx, features) + top_down
            if self._fuse_type == "avg":
                prev_features = prev_features / 2
            results.insert(0, self.output_convs[idx](prev_features))
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_in = bottom_up_features[self.top_block.in_feature]
            else:
                top_in = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))


@BACKBONE_REGISTRY.register()
def build_resnet_crbp_fpn_backbone(cfg, input_shape):
    """ResNet + recurrent FPN (+ P6 by max-pool), configured by ``MODEL.FPN`` and ``MODEL.CRBP``.

    The drop-in counterpart of Detectron2's ``build_resnet_fpn_backbone``.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    in_features = cfg.MODEL.FPN.IN_FEATURES
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    shapes = bottom_up.output_shape()
    available = [f"p{int(math.log2(shapes[f].stride))}" for f in in_features]
    return CRBPFPN(
        bottom_up,
        in_features,
        out_channels,
        recurrent_levels=fpn_levels(cfg, available),
        refiner_kwargs=refiner_args(cfg, out_channels),
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )

