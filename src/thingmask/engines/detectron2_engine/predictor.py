"""detectron2 predictor: batched inference with the same preprocessing as ``DefaultPredictor``.

``DefaultPredictor`` runs one image per forward pass and returns thresholded masks. Here a
whole batch goes through ``model.inference`` at once (images of any sizes: detectron2 pads them
into one tensor), resized on the device with the ``ResizeShortestEdge`` rule of
``cfg.INPUT.MIN/MAX_SIZE_TEST``; the raw mask probabilities are pasted at each input size as
floats, so :func:`~thingmask.engines.base.to_detections` thresholds them and soft masks come free.

Imports detectron2 at module level: the engine imports this only once detectron2 is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own alias
from detectron2.config import CfgNode
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.layers.mask_ops import _do_paste_mask
from detectron2.modeling import build_model
from detectron2.structures import Instances

from thingmask.engines.base import InstanceTensors, PredictorBase, check_tensor_image
from thingmask.engines.detectron2_engine.checkpointer import SafeCheckpointer, load_with_advice

__all__ = ["D2Predictor", "paste_mask_probs"]

_GPU_PASTE_BYTES = 1 << 30  # as detectron2's paste_masks_in_image: at most 1 GiB per chunk


def paste_mask_probs(
    masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """``(N, M, M)`` mask probabilities in their boxes → ``(N, height, width)`` float32 in [0, 1].

    detectron2's ``paste_masks_in_image`` with the probabilities kept (it thresholds, or with a
    negative threshold truncates to uint8): the same bilinear sampling (``_do_paste_mask``),
    mask by mask on the CPU (only the boxes' region), in chunks on the GPU.
    """
    n = masks.shape[0]
    out = torch.zeros((n, height, width), dtype=torch.float32, device=masks.device)
    if n == 0:
        return out
    on_cpu = masks.device.type == "cpu"
    chunks = n if on_cpu else min(n, math.ceil(n * height * width * 4 / _GPU_PASTE_BYTES))
    for inds in torch.chunk(torch.arange(n, device=masks.device), chunks):
        pasted, region = _do_paste_mask(
            masks[inds, None].float(), boxes[inds], height, width, skip_empty=on_cpu
        )
        out[(inds, *region)] = pasted
    return out


class D2Predictor(PredictorBase):
    """Batched inference with a detectron2 model; see :class:`thingmask.engines.Predictor`.

    Args:
        cfg: the model's detectron2 config (``MODEL.WEIGHTS`` is loaded with
            :class:`SafeCheckpointer`; ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` is the score
            threshold; ``INPUT.MIN/MAX_SIZE_TEST`` and ``INPUT.FORMAT`` the preprocessing).
        class_names: name of each detectron2 class id (contiguous, 0-based).
        soft_masks: also return the mask probabilities (``Detections.probs``).
        run_dir: the run folder the weights came from (None: COCO model); recorded only.
    """

    def __init__(
        self,
        cfg: CfgNode,
        class_names: Sequence[str],
        soft_masks: bool = False,
        run_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        weights = str(cfg.MODEL.WEIGHTS)
        checkpointer = SafeCheckpointer(self.model)
        load_with_advice(
            lambda: checkpointer.load(weights),
            weights,
            "or train a model on your data (zero_training=False)",
        )
        self.weights = weights
        self.class_names = tuple(class_names)
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.mask_threshold = 0.5
        self.soft_masks = bool(soft_masks)
        self.run_dir = run_dir
        self.min_size = int(cfg.INPUT.MIN_SIZE_TEST)
        self.max_size = int(cfg.INPUT.MAX_SIZE_TEST)
        self.rgb_input = cfg.INPUT.FORMAT == "RGB"  # zoo models take BGR, as OpenCV reads it

    def _model_input(self, image: torch.Tensor) -> dict[str, Any]:
        """``(H, W, 3)`` uint8 BGR on the device → detectron2's input dict (resized CHW float)."""
        h, w = image.shape[:2]
        chw = (image.flip(-1) if self.rgb_input else image).permute(2, 0, 1).float()
        if self.min_size > 0:
            size = ResizeShortestEdge.get_output_shape(h, w, self.min_size, self.max_size)
            if size != (h, w):
                # DefaultPredictor resizes the uint8 image with PIL's bilinear filter, which
                # antialiases when shrinking: torch's antialiased bilinear + rounding matches it.
                chw = F.interpolate(
                    chw[None], size=size, mode="bilinear", align_corners=False, antialias=True
                )[0]
                chw = chw.round_().clamp_(0, 255)
        return {"image": chw, "height": h, "width": w}

    def predict_tensors(self, images_bgr: Sequence[torch.Tensor]) -> list[InstanceTensors]:
        """``(H, W, 3)`` uint8 BGR tensors (any device) → instances on :attr:`device`, one
        forward pass for the batch."""
        inputs = [
            self._model_input(check_tensor_image(img, i).to(self.device, non_blocking=True))
            for i, img in enumerate(images_bgr)
        ]
        if not inputs:
            return []
        with torch.inference_mode():
            raw = self.model.inference(inputs, do_postprocess=False)
            return [
                self._to_input_size(inst, item["height"], item["width"])
                for inst, item in zip(raw, inputs, strict=True)
            ]

    def _to_input_size(self, inst: Instances, height: int, width: int) -> InstanceTensors:
        """Raw instances at the resized scale → boxes and pasted masks at the input size, as
        detectron2's ``detector_postprocess`` (scale, clip, drop empty boxes) but soft."""
        rh, rw = inst.image_size
        sx, sy = width / rw, height / rh
        boxes = inst.pred_boxes.tensor * torch.tensor([sx, sy, sx, sy], device=self.device)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[keep]
        return InstanceTensors(
            boxes=boxes.float(),
            scores=inst.scores[keep].float(),
            class_index=inst.pred_classes[keep].long(),
            mask_probs=paste_mask_probs(inst.pred_masks[keep][:, 0], boxes, height, width),
        )
