"""``tiny_fpn`` for detectron2: the shared :class:`~thingmask.engines.tiny.TinyBody` as a
``Backbone`` under detectron2's FPN, registered as ``build_tiny_fpn_backbone``.

Importing this module registers the builder (``MODEL.BACKBONE.NAME =
"build_tiny_fpn_backbone"``, set by :func:`~.bridge.cfg_overrides`); :mod:`.cfg`, where every
config naming it is built, imports it.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from thingmask.engines.tiny import TinyBody

__all__ = ["TinyBackbone", "build_tiny_fpn_backbone"]


class TinyBackbone(Backbone):
    """:class:`TinyBody` with detectron2's ``Backbone`` interface: features ``res2..res5``."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.body = TinyBody(in_channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.body(x))

    def output_shape(self) -> dict[str, ShapeSpec]:
        b = self.body
        return {
            name: ShapeSpec(channels=width, stride=stride)
            for name, width, stride in zip(b.names, b.widths, b.strides, strict=True)
        }


@BACKBONE_REGISTRY.register()
def build_tiny_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """:class:`TinyBackbone` + detectron2's FPN (``cfg.MODEL.FPN``) + a max-pooled level."""
    return FPN(
        bottom_up=TinyBackbone(input_shape.channels),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
