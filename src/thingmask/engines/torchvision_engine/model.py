"""torchvision Mask R-CNN models for ``config.backbone`` (from scratch or pretrained).

Backbones:

* ``resnet50_fpn``: torchvision's ``maskrcnn_resnet50_fpn``; with ``pretrained`` it starts from
  the COCO weights (downloaded once into the torch hub cache).
* ``resnet18_fpn``, ``mobilenet_v3_fpn``: torchvision backbones + FPN; ``pretrained`` loads
  ImageNet weights, otherwise GroupNorm from scratch.
* ``tiny_fpn``: :class:`thingmask.engines.tiny.TinyBody` + torchvision's FPN with slim heads,
  from scratch: trains the synthetic demo on a laptop CPU in minutes.

Class ids: label 0 is the background and label ``i + 1`` is ``class_names[i]``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from thingmask.engines.tiny import TinyBody, group_norm

__all__ = ["MASK_SIZES", "MaskRCNNModel", "TinyFPN", "build_model"]

log = logging.getLogger(__name__)

MASK_SIZES = (28, 56)  # sides of the predicted mask logits build_model can make
_TINY_ROI_BATCH = 32  # RoIs sampled per image for tiny_fpn (its mask head dominates a CPU step)
_TINY_MASK_SIZE = 28  # tiny_fpn mask logits; 56 (see _fine_mask_predictor) was slower, not better


class MaskRCNNModel(tvd.MaskRCNN):
    """torchvision's ``MaskRCNN`` that remembers how it was built.

    ``thingmask_norm`` (``"frozen_bn"`` | ``"group_norm"``) and ``thingmask_mask_size`` (28 |
    56) go into ``model_meta.json``, so a run folder is rebuilt without downloading anything.
    """

    thingmask_norm: str = "group_norm"
    thingmask_mask_size: int = 28


class TinyFPN(nn.Module):
    """:class:`TinyBody` + torchvision's FPN (GroupNorm) + a max-pooled extra level.

    ``(B, 3, H, W)`` float → ``{"res2", "res3", "res4", "res5", "pool"}`` with
    ``out_channels`` channels each.
    """

    def __init__(self, out_channels: int = 64) -> None:
        super().__init__()
        self.body = TinyBody()
        self.fpn = FeaturePyramidNetwork(
            list(self.body.widths),
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=group_norm,
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def _fine_mask_predictor(channels: int, num_labels: int) -> nn.Sequential:
    """14x14 RoI features → 56x56 mask logits (two 2x up-convolutions instead of one).

    torchvision sizes the mask targets from the logits, so the finer output needs nothing else;
    on small images a 28x28 mask spans ~2 px per cell and rounds off ears, tails and beaks.
    """
    half = max(16, channels // 2)
    return nn.Sequential(
        nn.ConvTranspose2d(channels, channels, 2, 2),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(channels, half, 2, 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, num_labels, 1),
    )


def _load_weights(weights: Any, what: str, zero_training: bool) -> dict[str, Any] | None:
    """Fetch torchvision weights (torch hub cache, else download) → state dict, or None offline."""
    try:
        state: dict[str, Any] = weights.get_state_dict(progress=False, check_hash=True)
        return state
    except Exception as exc:  # URLError, SSL, hash mismatch, ...: all mean "no weights here"
        hint = (
            "connect to the internet once (the file is then cached in the torch hub folder, "
            "~/.cache/torch/hub/checkpoints), or copy "
            f"{Path(str(weights.url)).name} there yourself"
        )
        if zero_training:
            raise RuntimeError(
                f"zero_training needs the {what} ({weights.url}) but they could not be loaded "
                f"({exc}). To fix: {hint}; or set zero_training=False and train on your dataset."
            ) from None
        log.warning(
            "pretrained=True but the %s could not be loaded (%s). Training from scratch "
            "instead: expect lower accuracy. To use them, %s.",
            what,
            exc,
            hint,
        )
        return None


def _anchor_sizes(image_size: int, n_maps: int) -> tuple[tuple[int, ...], ...]:
    # torchvision's anchors (32..512 px) suit 800 px images; small images get them halved.
    base = (32, 64, 128, 256, 512) if image_size >= 480 else (16, 32, 64, 128, 256)
    if n_maps == len(base):
        return tuple((s,) for s in base)  # one size per pyramid level
    return (base,) * n_maps  # few levels (mobilenet): every size on every level


def _fpn_body(backbone: str, norm: str) -> nn.Module:
    """Backbone + FPN without weights; ``norm``: frozen_bn (for pretrained) or group_norm."""
    layer: Any = FrozenBatchNorm2d if norm == "frozen_bn" else group_norm
    if backbone == "tiny_fpn":
        return TinyFPN(64)
    if backbone in ("resnet50_fpn", "resnet18_fpn"):
        return resnet_fpn_backbone(
            backbone_name=backbone.split("_")[0],
            weights=None,
            norm_layer=layer,
            trainable_layers=3 if norm == "frozen_bn" else 5,
        )
    return mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=layer,
        trainable_layers=3 if norm == "frozen_bn" else 6,
    )


def _pretrained_state(backbone: str, zero_training: bool) -> dict[str, Any] | None:
    """COCO Mask R-CNN weights (resnet50_fpn) or ImageNet backbone weights, keyed for our model."""
    if backbone == "resnet50_fpn" or zero_training:
        return _load_weights(
            tvd.MaskRCNN_ResNet50_FPN_Weights.DEFAULT,
            "COCO-pretrained Mask R-CNN weights",
            zero_training,
        )
    if backbone == "tiny_fpn":
        log.warning(
            "pretrained=True: there are no pretrained weights for tiny_fpn; it trains "
            "from scratch (choose resnet50_fpn for COCO weights)"
        )
        return None
    enum: Any = (
        tvm.ResNet18_Weights.IMAGENET1K_V1
        if backbone == "resnet18_fpn"
        else tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1
    )
    state = _load_weights(enum, "ImageNet backbone weights", False)
    if state is None:
        return None
    return {
        "backbone.body." + k.removeprefix("features."): v
        for k, v in state.items()
        if not k.startswith(("fc.", "classifier."))
    }


def _tiny_settings() -> dict[str, Any]:
    # small images, few objects: fewer proposals and sampled RoIs keep CPU steps short
    return {
        "rpn_pre_nms_top_n_train": 600,
        "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_test": 100,
        "box_batch_size_per_image": _TINY_ROI_BATCH,
        "box_detections_per_img": 50,
    }


def build_model(
    backbone: str,
    num_classes: int,
    image_size: int,
    max_image_size: int,
    pretrained: bool = False,
    zero_training: bool = False,
    norm: str | None = None,
    mask_size: int | None = None,
) -> MaskRCNNModel:
    """A torchvision ``MaskRCNN`` for ``num_classes`` foreground classes (labels 1..N, 0 = bg).

    ``pretrained`` loads COCO (resnet50_fpn) or ImageNet (resnet18/mobilenet) weights when they
    can be had, else warns and starts from scratch. ``zero_training`` returns the 91-label COCO
    model with its weights (raises offline). ``norm`` (``"frozen_bn"``/``"group_norm"``) rebuilds
    a trained model's structure without downloading anything; ``mask_size`` (28 or 56; default
    28) is the side of the predicted mask logits. Both are stored on the model
    (``thingmask_norm``, ``thingmask_mask_size``) and written to ``model_meta.json``.
    ``image_size`` / ``max_image_size``: shortest / longest side the model resizes inputs to.
    """
    if zero_training:
        backbone = "resnet50_fpn"
    state = (
        _pretrained_state(backbone, zero_training)
        if (norm is None and (pretrained or zero_training))
        else None
    )
    if norm is None:
        norm = "frozen_bn" if state is not None else "group_norm"
    body = _fpn_body(backbone, norm)
    sizes = {"min_size": image_size, "max_size": max_image_size}
    if backbone == "resnet50_fpn" and norm == "frozen_bn":
        # torchvision's own layout, so the COCO weights load unchanged
        model = MaskRCNNModel(body, num_classes=91, **sizes)
        if state is not None:
            model.load_state_dict(state)
        if not zero_training:
            rep = model.roi_heads.box_head.fc7.out_features
            model.roi_heads.box_predictor = FastRCNNPredictor(rep, num_classes + 1)
            model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, num_classes + 1)
        model.thingmask_norm, model.thingmask_mask_size = norm, 28
        return model

    if mask_size is None:
        mask_size = _TINY_MASK_SIZE if backbone == "tiny_fpn" else 28
    if mask_size not in MASK_SIZES:
        raise ValueError(f"mask_size: got {mask_size}; expected one of {MASK_SIZES}")
    ch = cast(int, body.out_channels)
    sampling = 2
    kw: dict[str, Any] = {}
    if backbone == "tiny_fpn":
        # Small images make RoI bins about one feature pixel: one sample per bin is enough, and
        # RoIAlign's backward dominates CPU training time otherwise.
        sampling = 1
        rep, mask_layers = 256, (64, 64, 64, 64)
        kw = _tiny_settings()
    else:
        rep, mask_layers = 1024, (256, 256, 256, 256)
    with torch.no_grad():  # learn the pyramid's level names rather than hard-code them
        levels = [k for k in body.eval()(torch.zeros(1, 3, 64, 64)) if k != "pool"]
    body.train()
    n_maps = len(levels) + 1  # + the max-pooled extra level
    anchors = AnchorGenerator(_anchor_sizes(image_size, n_maps), ((0.5, 1.0, 2.0),) * n_maps)
    model = MaskRCNNModel(
        body,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(ch, anchors.num_anchors_per_location()[0]),
        box_roi_pool=MultiScaleRoIAlign(levels, 7, sampling),
        box_head=TwoMLPHead(ch * 49, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes + 1),
        mask_roi_pool=MultiScaleRoIAlign(levels, 14, sampling),
        mask_head=MaskRCNNHeads(ch, list(mask_layers), 1, norm_layer=group_norm),
        mask_predictor=(
            _fine_mask_predictor(mask_layers[-1], num_classes + 1)
            if mask_size == 56
            else MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes + 1)
        ),
        **sizes,
        **kw,
    )
    if state is not None:
        missing = model.load_state_dict(state, strict=False).missing_keys
        loaded = [k for k in state if k not in missing]
        log.info("loaded %d pretrained backbone tensors", len(loaded))
    model.thingmask_norm, model.thingmask_mask_size = norm, mask_size
    return model
