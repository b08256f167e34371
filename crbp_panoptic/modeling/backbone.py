"""The recurrent FPN backbone: Detectron2's FPN with hGRU-refined lateral features."""

import math

import fvcore.nn.weight_init as weight_init

from detectron2.layers import Conv2d
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from crbp_panoptic.crbp import RecurrentRefiner

from .config_args import fpn_channels, fpn_levels, refiner_args

__all__ = ["CRBPFPN", "RecurrentLateral", "build_resnet_crbp_fpn_backbone"]


class RecurrentLateral(Conv2d):
    """A lateral 1x1 conv whose output drives a :class:`RecurrentRefiner` to equilibrium.

    It holds the FPN's own lateral conv parameters under their own names (``weight``,
    ``bias``, ``norm``), so a stock checkpoint's ``fpn_lateral{k}.*`` load into it; the
    refiner's parameters are the new ``fpn_lateral{k}.recurrent.*``.

    With a bottleneck (the refiner's channels differ from the conv's output channels C),
    1x1 convs ``recurrent_in`` (C -> C_h) and ``recurrent_out`` (C_h -> C) project the
    drive into and the state out of the hGRU: a step then costs about (C_h / C)^2 of the
    full-width one.

    Args:
        conv (Conv2d): the FPN's lateral conv (its parameters are taken over, not copied).
        refiner (RecurrentRefiner): runs the hGRU on the (projected) conv output.
        channels (int): the refiner's channel count C_h.
    """

    def __init__(self, conv, refiner, channels):
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            kernel_size=conv.kernel_size,
            bias=conv.bias is not None,
            norm=conv.norm,
            activation=conv.activation,
        )
        self.weight = conv.weight
        self.bias = conv.bias
        self.recurrent = refiner
        self.recurrent_in = self.recurrent_out = None
        if channels != conv.out_channels:
            self.recurrent_in = Conv2d(conv.out_channels, channels, kernel_size=1)
            self.recurrent_out = Conv2d(channels, conv.out_channels, kernel_size=1)
            for proj in (self.recurrent_in, self.recurrent_out):
                weight_init.c2_xavier_fill(proj)

    def forward(self, x):
        """(N, C_in, H, W) features -> (N, C, H, W) equilibrium state (projected back)."""
        x = super().forward(x)
        if self.recurrent_in is None:
            return self.recurrent(x)
        return self.recurrent_out(self.recurrent(self.recurrent_in(x)))


class CRBPFPN(FPN):
    """FPN whose selected lateral features are refined to an equilibrium by an hGRU.

    For each recurrent level the lateral 1x1 projection of ``res_k`` is the drive ``x``
    of an hGRU run to equilibrium from ``h_0 = 0``; the equilibrium state replaces the
    lateral feature before the top-down sum and the 3x3 output conv. The forward pass is
    Detectron2's own ``FPN.forward``: only the recurrent levels' lateral convs are
    replaced, by :class:`RecurrentLateral` modules under the stock names
    (``fpn_lateral{k}``), so stock R-50-FPN / Panoptic FPN checkpoints load into every
    part that is not new (``fpn_lateral{k}.recurrent``).

    Outputs, strides and channels are exactly the stock FPN's (``output_shape()``).
    """

    def __init__(
        self,
        bottom_up,
        in_features,
        out_channels,
        *,
        recurrent_levels,
        refiner_kwargs,
        norm="",
        top_block=None,
        fuse_type="sum",
    ):
        """
        Args:
            bottom_up, in_features, out_channels, norm, top_block, fuse_type: as :class:`FPN`.
            recurrent_levels (list[str]): output levels (``"p2"``...) whose lateral recurs.
            refiner_kwargs (dict): :class:`RecurrentRefiner` keyword arguments (those of its
                :class:`HGRUCell` included); ``channels`` other than ``out_channels`` adds
                1x1 projections around the refiner (see :class:`RecurrentLateral`).
        """
        super().__init__(
            bottom_up,
            in_features,
            out_channels,
            norm=norm,
            top_block=top_block,
            fuse_type=fuse_type,
        )
        strides = bottom_up.output_shape()
        # self.lateral_convs runs top-down (coarsest level first), like reversed(in_features).
        for idx, name in enumerate(reversed(self.in_features)):
            stage = int(math.log2(strides[name].stride))
            if f"p{stage}" in recurrent_levels:
                refiner = RecurrentRefiner(**refiner_kwargs)
                lateral = RecurrentLateral(
                    self.lateral_convs[idx], refiner, refiner_kwargs["channels"]
                )
                self.lateral_convs[idx] = lateral
                setattr(self, f"fpn_lateral{stage}", lateral)


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
        refiner_kwargs=refiner_args(cfg, fpn_channels(cfg, out_channels)),
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
