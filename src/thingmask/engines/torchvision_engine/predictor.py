"""torchvision predictor: batched Mask R-CNN inference → :class:`InstanceTensors` / Detections.

Class ids stop here: torchvision labels (0 = background; COCO's 91 labels have gaps) become
indices into ``class_names``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

from thingmask.engines.base import InstanceTensors, PredictorBase, check_tensor_image
from thingmask.engines.coco_classes import COCO_CLASSES

__all__ = ["TorchvisionPredictor", "coco_label_names"]

log = logging.getLogger(__name__)


class TorchvisionPredictor(PredictorBase):
    """Batched inference with a torchvision Mask R-CNN; see :class:`thingmask.engines.Predictor`.

    Args:
        model: a torchvision ``MaskRCNN`` (moved to ``device``, put in eval mode).
        label_names: name of each torchvision label (index = label; ``""`` = not a class, e.g.
            the background and COCO's unused ids).
        device: where the model runs.
        score_threshold: instances scoring below are dropped.
        mask_threshold: mask probability above which a pixel is in the instance (0.5, or the
            value calibrated on the validation split by training).
        soft_masks: also return the mask probabilities (``Detections.probs``).
        run_dir: the run folder the weights came from (None: COCO model); recorded only.
    """

    def __init__(
        self,
        model: nn.Module,
        label_names: Sequence[str],
        device: torch.device,
        score_threshold: float,
        mask_threshold: float = 0.5,
        soft_masks: bool = False,
        run_dir: Path | None = None,
    ) -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.soft_masks = bool(soft_masks)
        self.run_dir = run_dir
        self.class_names = tuple(n for n in label_names if n)
        index = {name: i for i, name in enumerate(self.class_names)}
        # label -> class index, -1 for labels that are no class (background, COCO's gaps)
        self._label_to_index = torch.tensor(
            [index[n] if n else -1 for n in label_names], dtype=torch.int64, device=self.device
        )

    def predict_tensors(self, images_bgr: Sequence[torch.Tensor]) -> list[InstanceTensors]:
        """``(H, W, 3)`` uint8 BGR tensors (any device) → instances on :attr:`device`.

        One forward pass for the whole batch; torchvision resizes each image to the model's
        ``min_size``/``max_size`` and pastes the masks back at the input size.
        """
        inputs = []
        for i, img in enumerate(images_bgr):
            img = check_tensor_image(img, i).to(self.device, non_blocking=True)
            # BGR (H, W, 3) uint8 -> RGB (3, H, W) float in [0, 1], as torchvision models expect
            inputs.append(img.flip(-1).permute(2, 0, 1).float().div_(255.0))
        if not inputs:
            return []
        with torch.inference_mode():
            outputs = self.model(inputs)
        results = []
        for out, img in zip(outputs, inputs, strict=True):
            labels = out["labels"]
            n_labels = len(self._label_to_index)
            index = self._label_to_index[labels.clamp(0, n_labels - 1)]
            keep = (out["scores"] >= self.score_threshold) & (labels < n_labels) & (index >= 0)
            h, w = img.shape[1:]
            results.append(
                InstanceTensors(
                    boxes=out["boxes"][keep].float(),
                    scores=out["scores"][keep].float(),
                    class_index=index[keep],
                    mask_probs=out["masks"][keep, 0].float().reshape(-1, h, w),
                )
            )
        return results


def coco_label_names() -> list[str]:
    """torchvision's 91 COCO labels → names; background and the unused "N/A" ids map to ""."""
    cats = MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    names = ["" if c in ("__background__", "N/A") else str(c) for c in cats]
    if [n for n in names if n] != list(COCO_CLASSES):
        log.warning("torchvision's COCO category list differs from thingmask's COCO_CLASSES")
    return names
