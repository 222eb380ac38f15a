"""The temporal stage of the video pipeline (seam D): tracking, smoothing and refinement over
frames, and the holding of frames while a stage with a delay works on them.

A stage gets each frame's kept Detections (already filtered to the display things) with
``push(index, frame_bgr, dets)`` and returns the results that are ready, in frame order; with
``delay`` k it releases frame i once frame i + k has arrived, and ``flush()`` at the end of the
video returns the rest. :func:`through_stage` keeps each frame until its index comes back, so at
most k frames wait there.

Until ``thingmask.tracking.make_temporal_stage`` exists, :func:`make_stage` wraps today's
:class:`~thingmask.tracking.Tracker` (:class:`TrackerStage`) behind the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from thingmask import tracking
from thingmask.detections import Detections
from thingmask.video import Frame
from thingmask.video_stream import named_stage

__all__ = ["TemporalStage", "TrackerStage", "check_detections", "make_stage", "through_stage"]


class TemporalStage(Protocol):
    """Tracking / smoothing / refinement across frames (seam D; see thingmask.tracking)."""

    delay: int  # frames a result is held back (0 = released at once)
    needs_probs: bool  # True when it reads Detections.probs

    def push(
        self, index: int, frame_bgr: np.ndarray, dets: Detections
    ) -> list[tuple[int, Detections]]: ...

    def flush(self) -> list[tuple[int, Detections]]: ...


class TrackerStage:
    """Today's :class:`thingmask.tracking.Tracker` behind the :class:`TemporalStage` protocol
    (delay 0: track ids are given at once). Used until ``tracking.make_temporal_stage`` exists."""

    delay = 0
    needs_probs = False

    def __init__(self) -> None:
        self.tracker = tracking.Tracker()

    def push(
        self, index: int, frame_bgr: np.ndarray, dets: Detections
    ) -> list[tuple[int, Detections]]:
        return [(index, self.tracker.update(dets))]

    def flush(self) -> list[tuple[int, Detections]]:
        return []


def make_stage(config: Any) -> TemporalStage | None:
    """The temporal stage the settings ask for, or None when it would change nothing.

    ``per_instance_clips`` needs track ids, so it switches tracking on. With
    ``tracking.make_temporal_stage`` (seam D) its stage is used; a stage with delay 0 that reads
    no soft masks while tracking is off is the identity and is left out, so the GPU path keeps
    the masks on the GPU.
    """
    wants_ids = bool(config.tracking or config.per_instance_clips)
    factory = getattr(tracking, "make_temporal_stage", None)
    if factory is None:
        return TrackerStage() if wants_ids else None
    stage: TemporalStage = factory(
        config.replace(tracking=True) if wants_ids and not config.tracking else config
    )
    if stage.delay == 0 and not stage.needs_probs and not wants_ids:
        return None
    return stage


def through_stage(
    stage: TemporalStage | None, items: Iterable[tuple[Frame, Any, Any]]
) -> Iterator[tuple[Frame, Any, Any]]:
    """Pass ``(frame, detections, payload)`` items through ``stage`` (None: unchanged), holding
    each frame (and its payload, e.g. the frame on the GPU) until the stage releases its index.

    Checks the protocol as it goes (each frame released once, in order, within ``delay``
    frames, all of them by the end of :meth:`~TemporalStage.flush`); a breach is a ValueError
    and, like any failure of the stage, raises StageError naming the ``temporal`` stage.
    """
    if stage is None:
        yield from items
        return
    held: dict[int, tuple[Frame, Any]] = {}
    last = -1

    def release(pairs: Sequence[tuple[int, Detections]]) -> list[tuple[Frame, Any, Any]]:
        nonlocal last
        out = []
        for index, dets in pairs:
            if index not in held or index <= last:
                raise ValueError(
                    f"released frame {index} {'twice' if index <= last else 'unknown'}; "
                    "a temporal stage must release each pushed frame once, in order"
                )
            frame, payload = held.pop(index)
            out.append((frame, check_detections(dets, frame), payload))
            last = index
        if len(held) > max(0, int(stage.delay)):
            raise ValueError(
                f"holds {len(held)} frames but declares delay={stage.delay}; a stage must "
                "release frames within its delay (memory is sized by it)"
            )
        return out

    for frame, dets, payload in items:
        held[frame.index] = (frame, payload)
        with named_stage("temporal"):
            ready = release(stage.push(frame.index, frame.image, dets))
        yield from ready
    with named_stage("temporal"):
        ready = release(stage.flush())
        if held:
            raise ValueError(f"did not release frames {sorted(held)[:5]} at the end")
    yield from ready


def check_detections(dets: Any, frame: Frame) -> Detections:
    if not isinstance(dets, Detections):
        raise TypeError(
            f"predictor returned {type(dets).__name__}; expected thingmask.detections.Detections"
        )
    if dets.image_size != frame.image.shape[:2]:
        raise ValueError(
            f"predictor returned masks of size {dets.image_size} for frame {frame.index} of "
            f"size {frame.image.shape[:2]}; masks must match the frame (H, W)"
        )
    return dets
