"""Test-time flip for torchvision's Mask R-CNN: each detection's mask is the mean of the mask
head on the image and on its mirror image (the same box, mirrored).

Only the masks change: boxes, scores and classes are the plain forward pass's, so the
instances (and their count) are those of the model alone. detectron2's ``GeneralizedRCNNWithTTA``
does the same for its masks ("mask TTA on the same boxes"); torchvision has no TTA, and its
``MaskRCNN.forward`` cannot run the mask head on given boxes, so the parts are called here in
the order ``GeneralizedRCNN.forward`` calls them (eval mode).
"""

from __future__ import annotations

import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import maskrcnn_inference

__all__ = ["forward_with_flip"]


def forward_with_flip(model: MaskRCNN, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``model(images)`` (eval mode, ``(3, H, W)`` float RGB in [0, 1] each) with flip-averaged
    mask probabilities; the same output format (``masks``: ``(N, 1, H, W)`` float in [0, 1])."""
    original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    batch, _ = model.transform(images)
    features = model.backbone(batch.tensors)
    proposals, _ = model.rpn(batch, features)
    heads = model.roi_heads
    detections, _ = heads(features, proposals, batch.image_sizes)
    if any(len(d["boxes"]) for d in detections):
        # the padded batch mirrored: an image at columns [0, w) lands at [W - w, W)
        width = float(batch.tensors.shape[-1])
        mirrored = model.backbone(batch.tensors.flip(-1))
        boxes = [
            torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
            for b in (d["boxes"] for d in detections)
        ]
        x = heads.mask_roi_pool(mirrored, boxes, batch.image_sizes)
        logits = heads.mask_predictor(heads.mask_head(x))
        probs = maskrcnn_inference(logits, [d["labels"] for d in detections])
        for det, prob in zip(detections, probs, strict=True):
            det["masks"] = (det["masks"] + prob.flip(-1)) / 2
    return model.transform.postprocess(detections, batch.image_sizes, original_sizes)
