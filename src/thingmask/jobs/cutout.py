"""The cut-out pipeline every video path uses: decode → batched inference → keep the display
things → [temporal stage] → composite, streamed in threads (:mod:`thingmask.jobs.stream`).

::

    decode ──► inference ──► cut-out ──► the caller (encode + exports)
    (thread)   (thread)      (thread)    (its own thread)

:func:`cutout_stream` yields one :class:`CutFrame` per source frame, in order, with the source's
timestamps. Two ways through the middle, with the same results:

* **host** (CPU, or a predictor without ``predict_tensors``): ``predict_batch`` →
  :class:`~thingmask.detections.Detections` → :func:`thingmask.cutout.composite.composite_mask`.
  Equal,
  frame for frame, to the serial loop ``predictor(frame) → keep → get_masked_image``.
* **tensors** (CUDA): ``predict_tensors`` → filter, mask threshold, union and compositing for
  every canvas mode on the GPU (:func:`thingmask.cutout.composite.composite_tensor`); only the
  finished
  frame and what the enabled outputs need (CSV rows, the union mask, host masks) come back.

A temporal stage (tracking, smoothing, refinement: ``delay`` k, see
:mod:`thingmask.cutout.temporal`) gets each frame's kept Detections on the host; the pipeline
holds each frame until the stage releases its index, so at most k frames wait there.

Not switched on, because not measured on a GPU yet (``scripts/bench_pipeline.py`` is the place to
measure them): mixed precision (autocast), ``channels_last`` and ``cudnn.benchmark``. The
issue's figure: bf16 autocast gave no gain at batch 1 on an H200 (39.9 vs 42.1 fps).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thingmask.config import Config
from thingmask.cutout.composite import (
    Canvas,
    composite_mask,
    composite_tensor,
    union_mask_tensor,
    union_mask_u8,
)
from thingmask.cutout.temporal import TemporalStage, check_detections, through_stage
from thingmask.detections import Detections, keep
from thingmask.engines.base import InstanceTensors, to_detections
from thingmask.jobs.exports import InstanceRows, instance_rows
from thingmask.jobs.stream import Stage, Stream, named_stage
from thingmask.video import Frame

__all__ = ["CutFrame", "Needs", "cutout_stream", "uses_tensors"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Needs:
    """What the consumer of the pipeline reads besides the cut-out frame (the GPU path brings
    back only this). ``detections``: host Detections with masks (RLE, clips, ``on_frame``);
    ``rows``: CSV rows; ``union``: the (H, W) union mask (mask video)."""

    detections: bool = False
    rows: bool = False
    union: bool = False


@dataclass(frozen=True)
class CutFrame:
    """One finished frame.

    Attributes:
        frame: the source :class:`~thingmask.video.Frame` (index, BGR image, time, pts).
        cutout: ``(H, W, 3)`` uint8 BGR, or ``(H, W, 4)`` BGRA for the transparent canvas.
        count: number of kept instances.
        detections: the kept instances on the host (masks ``(N, H, W)`` bool, names, track
            ids when a temporal stage ran); None on the GPU path unless asked for.
        rows: CSV rows of the kept instances when asked for (:class:`Needs`), else None.
        union: ``(H, W)`` uint8 0/1 union of the kept masks when asked for, else None.
    """

    frame: Frame
    cutout: np.ndarray
    count: int
    detections: Detections | None = None
    rows: InstanceRows | None = None
    union: np.ndarray | None = None

    @property
    def track_ids(self) -> list[int]:
        """Track ids of the kept instances (empty without a temporal stage)."""
        for source in (self.detections, self.rows):
            ids = getattr(source, "track_ids", None)
            if ids is not None:
                return [int(t) for t in ids]
        return []


def uses_tensors(predictor: Any) -> bool:
    """True when ``predictor`` runs on CUDA and has ``predict_tensors``: the GPU path."""
    device = getattr(predictor, "device", None)
    return (
        callable(getattr(predictor, "predict_tensors", None))
        and isinstance(device, torch.device)
        and device.type == "cuda"
    )


@contextlib.contextmanager
def cutout_stream(
    frames: Iterable[Frame],
    predictor: Any,
    config: Config,
    canvas: Canvas,
    *,
    needs: Needs = Needs(),
    stage: TemporalStage | None = None,
    batch: int | None = None,
    queue_size: int | None = None,
    tensors: bool | None = None,
) -> Iterator[Stream]:
    """The running pipeline over ``frames``; iterate it for :class:`CutFrame` s, in order.

    Args:
        frames: source frames, e.g. ``reader.frames()`` (decoded in a thread of their own).
        predictor: an engine's predictor: ``predict_batch`` / ``__call__`` on ``(H, W, 3)``
            uint8 BGR arrays (host path), ``predict_tensors`` (GPU path).
        config: reads ``display_things`` and ``inference_batch``.
        canvas: the :class:`~thingmask.cutout.composite.Canvas`.
        needs: what the consumer reads besides the cut-out (see :class:`Needs`).
        stage: a temporal stage or None (:func:`thingmask.cutout.temporal.make_stage`).
        batch: frames per forward pass (default ``config.inference_batch``).
        queue_size: items per link (default: the batch size, at least 2).
        tensors: force the GPU path on (also on a CPU device, for tests) or off; None = on
            exactly when :func:`uses_tensors`.

    Raises (while iterating): :class:`~thingmask.jobs.stream.StageError` naming the stage.
    """
    n = int(batch if batch is not None else config.inference_batch)
    if n < 1:
        raise ValueError(f"inference_batch: got {n}; expected an integer >= 1")
    on_tensors = uses_tensors(predictor) if tensors is None else bool(tensors)
    if on_tensors and not callable(getattr(predictor, "predict_tensors", None)):
        raise TypeError(f"{type(predictor).__name__} has no predict_tensors(); use tensors=False")
    cutter = _Cutter(predictor, config, canvas, needs, stage, n)
    soft_before = getattr(predictor, "soft_masks", None)
    if stage is not None and stage.needs_probs and not on_tensors:
        if soft_before is None:
            raise TypeError(
                f"the temporal stage reads soft masks but {type(predictor).__name__} has no "
                "soft_masks switch; use an engine predictor or switch smoothing/refinement off"
            )
        predictor.soft_masks = True
    middle: list[Stage] = (
        [("inference", cutter.infer_tensors), ("cut-out", cutter.cut_tensors)]
        if on_tensors
        else [("inference", cutter.infer_host), ("cut-out", cutter.cut_host)]
    )
    stream = Stream(frames, middle, queue_size=queue_size or max(2, n))
    try:
        with stream:
            yield stream
    finally:
        if soft_before is not None:
            predictor.soft_masks = soft_before


def _batches(items: Iterator[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class _Kept:
    """The display things of one frame, still on the predictor's device."""

    boxes: torch.Tensor  # (N, 4) float32
    scores: torch.Tensor  # (N,) float32
    class_index: torch.Tensor  # (N,) int64 into predictor.class_names
    masks: torch.Tensor  # (N, H, W) bool
    probs: torch.Tensor  # (N, H, W) float32 in [0, 1]


class _Cutter:
    """The stage functions of one run (each runs in its own thread)."""

    def __init__(
        self,
        predictor: Any,
        config: Config,
        canvas: Canvas,
        needs: Needs,
        stage: TemporalStage | None,
        batch: int,
    ) -> None:
        self.predictor, self.canvas, self.needs = predictor, canvas, needs
        self.stage, self.batch = stage, batch
        self.display = tuple(config.display_things)
        names = tuple(getattr(predictor, "class_names", ()) or ())
        self.class_names = np.asarray(names, dtype=object)
        self.display_index = [i for i, name in enumerate(names) if name in self.display]

    # -- host path ------------------------------------------------------------------------------
    def infer_host(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, Detections]]:
        batched = getattr(self.predictor, "predict_batch", None)
        for batch in _batches(frames, self.batch):
            images = [f.image for f in batch]
            if callable(batched):
                outputs = list(batched(images))
            else:
                outputs = [self.predictor(image) for image in images]
            if len(outputs) != len(batch):
                raise ValueError(
                    f"predictor returned {len(outputs)} results for {len(batch)} frames"
                )
            for frame, dets in zip(batch, outputs, strict=True):
                yield frame, check_detections(dets, frame)

    def cut_host(self, items: Iterator[tuple[Frame, Detections]]) -> Iterator[CutFrame]:
        kept = ((frame, keep(dets, self.display), None) for frame, dets in items)
        for frame, dets, _ in through_stage(self.stage, kept):
            union = union_mask_u8(dets)
            yield CutFrame(
                frame=frame,
                cutout=composite_mask(frame.image, union, self.canvas),
                count=len(dets),
                detections=dets,
                rows=instance_rows(dets) if self.needs.rows else None,
                union=union if self.needs.union else None,
            )

    # -- tensor path (GPU) ----------------------------------------------------------------------
    def infer_tensors(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, torch.Tensor, Any]]:
        device = torch.device(self.predictor.device)
        for batch in _batches(frames, self.batch):
            with torch.inference_mode():
                images = [torch.from_numpy(f.image).to(device, non_blocking=True) for f in batch]
                outputs = list(self.predictor.predict_tensors(images))
            if len(outputs) != len(batch):
                raise ValueError(
                    f"predictor returned {len(outputs)} results for {len(batch)} frames"
                )
            yield from zip(batch, images, outputs, strict=True)

    def cut_tensors(self, items: Iterator[tuple[Frame, torch.Tensor, Any]]) -> Iterator[CutFrame]:
        def kept() -> Iterator[tuple[Frame, Any, torch.Tensor]]:
            for frame, image, instances in items:
                with named_stage("filter"), torch.inference_mode():
                    chosen = self._keep_tensors(instances)
                    host = (  # the temporal stage works on host Detections
                        None
                        if self.stage is None
                        else self._to_host(chosen, probs=self.stage.needs_probs)
                    )
                yield frame, (chosen if host is None else host), image

        for frame, dets, image in through_stage(self.stage, kept()):
            with torch.inference_mode():
                yield self._cut_tensor(frame, image, dets)

    def _keep_tensors(self, instances: Any) -> _Kept:
        index = instances.class_index.to(torch.int64)
        wanted = torch.tensor(self.display_index, dtype=torch.int64, device=index.device)
        chosen = torch.isin(index, wanted)
        probs = instances.mask_probs[chosen]
        return _Kept(
            boxes=instances.boxes[chosen].float(),
            scores=instances.scores[chosen].float(),
            class_index=index[chosen],
            masks=probs > float(self.predictor.mask_threshold),
            probs=probs,
        )

    def _cut_tensor(self, frame: Frame, image: torch.Tensor, kept: _Kept | Detections) -> CutFrame:
        h, w = frame.image.shape[:2]
        rows: InstanceRows | None = None
        if isinstance(kept, Detections):  # released by the temporal stage: masks on the host
            dets: Detections | None = kept
            union = torch.from_numpy(union_mask_u8(kept)).to(image.device).bool()
            rows = instance_rows(kept) if self.needs.rows else None
            count = len(kept)
        else:
            union = union_mask_tensor(kept.masks, h, w)
            rows = self._rows(kept) if self.needs.rows else None
            dets = self._to_host(kept, probs=False) if self.needs.detections else None
            count = int(kept.masks.shape[0])
        cutout = composite_tensor(image, union, self.canvas).cpu().numpy()
        return CutFrame(
            frame=frame,
            cutout=cutout,
            count=count,
            detections=dets,
            rows=rows,
            union=union.to(torch.uint8).cpu().numpy() if self.needs.union else None,
        )

    def _names(self, class_index: torch.Tensor) -> np.ndarray:
        return self.class_names[class_index.cpu().numpy()].astype(object).reshape(-1)

    def _to_host(self, kept: _Kept, probs: bool) -> Detections:
        """The kept instances as host Detections: the engines' own conversion (seam A)."""
        instances = InstanceTensors(kept.boxes, kept.scores, kept.class_index, kept.probs)
        names = tuple(self.class_names)
        return to_detections(instances, names, float(self.predictor.mask_threshold), probs)

    def _rows(self, kept: _Kept) -> InstanceRows:
        """CSV rows computed where the masks are: areas and centroids as integer sums (exact)."""
        masks = kept.masks
        n, h, w = masks.shape
        areas = masks.sum(dim=(1, 2))
        xs = torch.arange(w, device=masks.device)
        ys = torch.arange(h, device=masks.device)
        sum_x = (masks.sum(dim=1) * xs).sum(dim=1)
        sum_y = (masks.sum(dim=2) * ys).sum(dim=1)
        boxes = kept.boxes.cpu().numpy()
        areas_np = areas.cpu().numpy().astype(np.int64)
        sums = torch.stack([sum_x, sum_y], dim=1).cpu().numpy().astype(np.float64)
        centres = np.empty((n, 2), np.float64)
        for k in range(n):  # an empty mask: the box centre, as instance_stats does
            if areas_np[k]:
                centres[k] = sums[k] / areas_np[k]
            else:
                centres[k] = ((boxes[k, 0] + boxes[k, 2]) / 2, (boxes[k, 1] + boxes[k, 3]) / 2)
        return InstanceRows(
            class_names=self._names(kept.class_index),
            scores=kept.scores.cpu().numpy(),
            boxes=boxes,
            centres=centres,
            areas=areas_np,
        )
