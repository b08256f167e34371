"""The paper's recurrent ROI mask head: an hGRU at equilibrium instead of four 3x3 convs."""

from typing import List

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, get_norm
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, BaseMaskRCNNHead
from detectron2.structures import Instances

from crbp_panoptic.crbp import RecurrentRefiner

from .config_args import mask_output_norm, mask_train_rois, refiner_args

__all__ = ["CRBPMaskHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class CRBPMaskHead(BaseMaskRCNNHead):
    """Mask head whose ROI features are refined to an equilibrium by one hGRU.

    The ROIAlign features (R, C, 14, 14) are the drive ``x`` of an hGRU run from
    ``h_0 = 0``; its equilibrium replaces the stock head's four 3x3 conv + ReLU layers
    (``mask_fcn1..4``). A normalisation (``mask_recurrent_norm``, ``MODEL.CRBP.MASK_OUTPUT_NORM``:
    SyncBN in the authors' COCO model, GroupNorm in ours, or none) rescales the state for
    the readout: the softplus and the mostly closed update gate give the equilibrium a
    positive offset, against which the ROI's spatial structure is a small relative
    contrast (``test_mask_head_readout_sees_a_unit_scale_state``).
    Then, as in ``MaskRCNNConvUpsampleHead``, a 2x2 stride-2
    ``deconv`` + ReLU and a 1x1 ``predictor`` give (R, num_classes, 28, 28) logits; the
    loss and inference contract is :class:`BaseMaskRCNNHead`'s. ``deconv`` and
    ``predictor`` keep their stock names, so a stock checkpoint fills them.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes,
        conv_dim,
        refiner_kwargs,
        output_norm: str = "GN",
        train_rois: int = 0,
        **kwargs,
    ):
        """
        Args:
            input_shape (ShapeSpec): shape of the ROI features (its channels are the hGRU's).
            num_classes (int): mask classes (1 if class-agnostic).
            conv_dim (int): output channels of the deconv.
            refiner_kwargs (dict): :class:`RecurrentRefiner` keyword arguments (those of its
                :class:`HGRUCell` included; ``channels`` must be ``input_shape.channels``).
            output_norm (str): normalisation of the equilibrium before the deconv: "GN"
                (``refiner_kwargs["num_groups"]`` groups, default 32), "BN", "SyncBN" or ""
                (none).
            train_rois (int): in training, at most this many ROIs per image (a random
                subset) go through the head and its loss; 0 = all.
            kwargs: :class:`BaseMaskRCNNHead` arguments (``loss_weight``, ``vis_period``).
        """
        super().__init__(**kwargs)
        if isinstance(train_rois, bool) or not isinstance(train_rois, int) or train_rois < 0:
            raise ValueError(f"train_rois={train_rois!r}; expected an integer >= 0 (0 = all)")
        self.train_rois = train_rois
        channels = input_shape.channels
        self.mask_recurrent = RecurrentRefiner(**refiner_kwargs)
        if output_norm == "GN":
            self.mask_recurrent_norm = nn.GroupNorm(refiner_kwargs.get("num_groups", 32), channels)
        else:
            self.mask_recurrent_norm = get_norm(output_norm, channels) or nn.Identity()
        self.deconv = ConvTranspose2d(channels, conv_dim, kernel_size=2, stride=2, padding=0)
        self.deconv_relu = nn.ReLU()
        self.predictor = Conv2d(conv_dim, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.deconv)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(
            input_shape=input_shape,
            num_classes=1
            if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK
            else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            conv_dim=cfg.MODEL.ROI_MASK_HEAD.CONV_DIM,
            refiner_kwargs=refiner_args(cfg, input_shape.channels),
            output_norm=mask_output_norm(cfg, input_shape.channels),
            train_rois=mask_train_rois(cfg),
        )
        return ret

    def forward(self, x, instances: List[Instances]):
        """:class:`BaseMaskRCNNHead` ``forward``, on at most ``train_rois`` ROIs per image in
        training (``x``: (R, C, S, S) features of the ROIs of ``instances``, image by image)."""
        if self.training and self.train_rois > 0:
            x, instances = self._subsample_rois(x, instances)
        return super().forward(x, instances)

    def _subsample_rois(self, x, instances: List[Instances]):
        keep, kept, start = [], [], 0
        for inst in instances:
            n = len(inst)
            local = torch.arange(n, device=x.device)
            if n > self.train_rois:
                local = torch.randperm(n, device=x.device)[: self.train_rois].sort().values
            keep.append(local + start)
            kept.append(inst[local])
            start += n
        return x[torch.cat(keep)] if keep else x, kept

    def layers(self, x):
        """
        Args:
            x (Tensor): ROI features, shape (R, C, S, S); R may be 0.

        Returns:
            Tensor: mask logits, shape (R, num_classes, 2S, 2S).
        """
        h = self.mask_recurrent_norm(self.mask_recurrent(x))
        return self.predictor(self.deconv_relu(self.deconv(h)))
