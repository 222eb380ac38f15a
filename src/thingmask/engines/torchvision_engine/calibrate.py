"""The mask threshold a trained torchvision model uses, chosen on the validation split."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from thingmask.datasets.coco import PreparedDataset
from thingmask.engines.torchvision_engine.data import CocoInstances
from thingmask.engines.torchvision_engine.predictor import TorchvisionPredictor
from thingmask.evaluation.masks import foreground_iou

__all__ = ["MASK_THRESHOLDS", "calibrate_mask_threshold"]

log = logging.getLogger(__name__)

MASK_THRESHOLDS = (0.35, 0.4, 0.45, 0.5, 0.55)  # candidates for calibrate_mask_threshold


def calibrate_mask_threshold(
    model: nn.Module, dataset: PreparedDataset, device: torch.device, score_threshold: float
) -> tuple[float, dict[str, float]]:
    """The mask-probability threshold that best reproduces the validation split's masks.

    Small objects' thin parts (tails, ears, legs) come out of the 28x28 mask head as soft
    probabilities, often just under 0.5. Per candidate in :data:`MASK_THRESHOLDS`, the mean IoU
    between the union of all predicted masks (score >= ``score_threshold``) and the union of all
    ground-truth masks of each validation image is measured; the best wins, 0.5 on ties (within
    0.002) or without validation images. Uses the validation split only, never test videos.
    The model's train/eval mode is restored afterwards.

    Returns:
        ``(threshold, {str(candidate): mean IoU})``.
    """
    data = CocoInstances(dataset.val_json, dataset.image_root, dataset.class_names)
    if not len(data):
        return 0.5, {}
    was_training = model.training
    predictor = TorchvisionPredictor(model, ["", *dataset.class_names], device, score_threshold)
    totals = dict.fromkeys(MASK_THRESHOLDS, 0.0)
    for i in range(len(data)):
        image, masks, _ = data.load(i)
        gt = np.asarray(masks.any(axis=0)) if len(masks) else np.zeros(image.shape[:2], bool)
        probs = predictor.predict_tensors([torch.from_numpy(image)])[0].mask_probs.cpu().numpy()
        for t in MASK_THRESHOLDS:
            pred = np.asarray((probs > t).any(axis=0)) if len(probs) else np.zeros_like(gt)
            totals[t] += foreground_iou(pred, gt)
    model.train(was_training)
    means = {t: v / len(data) for t, v in totals.items()}
    best = max(MASK_THRESHOLDS, key=lambda t: means[t])
    if means[best] - means[0.5] < 0.002:
        best = 0.5
    log.info(
        "mask threshold %.2f (validation foreground IoU %s)",
        best,
        ", ".join(f"{t}: {v:.3f}" for t, v in means.items()),
    )
    return best, {str(t): round(v, 4) for t, v in means.items()}
