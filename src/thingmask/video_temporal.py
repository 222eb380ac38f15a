"""The temporal stage inside the video pipeline (seam D, :mod:`thingmask.temporal`): which stage
the settings ask for, and the holding of frames while a stage with a delay works on them.

A stage gets each frame's kept Detections (already filtered to the display things) with
``push(index, frame_bgr, dets)`` and returns the results that are ready, in frame order; with
``delay`` k it releases frame i once frame i + k has arrived, and ``flush()`` at the end of the
video returns the rest. :func:`through_stage` keeps each frame until its index comes back, so at
most k frames wait there, and checks that the stage keeps to this.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from thingmask.detections import Detections
from thingmask.temporal import IdentityStage, TemporalStage, make_temporal_stage
from thingmask.video import Frame
from thingmask.video_stream import named_stage

__all__ = ["TemporalStage", "check_detections", "make_stage", "through_stage"]


def make_stage(config: Any, mask_threshold: float = 0.5) -> TemporalStage | None:
    """The temporal stage the settings ask for (:func:`thingmask.temporal.make_temporal_stage`:
    tracking, smoothing, edge refinement; ``per_instance_clips`` switches tracking on), or None
    when every switch is off: the identity stage changes nothing, and leaving it out lets the
    GPU path keep the masks on the GPU. ``mask_threshold``: the predictor's."""
    stage = make_temporal_stage(config, mask_threshold=mask_threshold)
    return None if isinstance(stage, IdentityStage) else stage


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
