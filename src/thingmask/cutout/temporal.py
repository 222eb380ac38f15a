"""The temporal stage of the video pipeline (seam D): tracking → smoothing → edge refinement,
behind one streaming interface.

    stage = make_temporal_stage(config, mask_threshold=predictor.mask_threshold)
    for index, frame_bgr, dets in ...:            # dets: already filtered to the display things
        for i, out in stage.push(index, frame_bgr, dets):
            write(i, out)                          # frames come back in order
    for i, out in stage.flush():                   # end of video: everything held back
        write(i, out)

``delay`` is how many frames a result is held back: 0 with tracking and/or refinement only,
``smoothing_window`` with temporal smoothing (frame t is released when frame t + window
arrives). The caller keeps each frame until its index is released, so it holds ``delay``
frames; the stage keeps references to the frames it holds (for the refinement) and never
writes to them. ``needs_probs``: ask the predictor for soft masks (``Detections.probs``).

Settings (config): ``tracking``, ``track_max_missed``, ``temporal_smoothing``,
``smoothing_window``, ``edge_refinement`` (and ``per_instance_clips``, which needs track ids).
Smoothing needs track ids, so it switches the tracker on. All off: an identity stage (delay 0,
nothing copied).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from thingmask.config import Config
from thingmask.cutout.refine import EdgeRefiner
from thingmask.cutout.smoothing import TemporalSmoother
from thingmask.cutout.tracking import Tracker
from thingmask.cutout.windows import Window, to_detections, to_windows
from thingmask.detections import Detections
from thingmask.errors import named_stage
from thingmask.video import Frame

__all__ = [
    "IdentityStage",
    "TemporalPipeline",
    "TemporalStage",
    "check_detections",
    "make_stage",
    "make_temporal_stage",
    "through_stage",
]

log = logging.getLogger(__name__)

Released = list[tuple[int, Detections]]


class TemporalStage(Protocol):
    """Seam D: per-frame Detections in, the same frames out in order, ``delay`` frames later."""

    delay: int  # frames a result is held back (0 = released at once)
    needs_probs: bool  # True when it reads Detections.probs (ask the predictor for them)

    def push(self, index: int, frame_bgr: np.ndarray, dets: Detections) -> Released:
        """Take frame ``index`` (``(H, W, 3)`` uint8 BGR) and its display-thing Detections;
        return the frames ready now, in frame order."""
        ...

    def flush(self) -> Released:
        """At the end of the video: every frame still held, in order."""
        ...


class IdentityStage:
    """All switches off: each frame is released at once, unchanged."""

    delay = 0
    needs_probs = False

    def push(self, index: int, frame_bgr: np.ndarray, dets: Detections) -> Released:
        return [(index, dets)]

    def flush(self) -> Released:
        return []


class TemporalPipeline:
    """Tracker, then smoother, then refiner (each optional; see the module docstring).

    ``tracker`` is public: the video job reads ``tracker.ended`` (ids retired by the last
    push) to close per-animal clips.
    """

    def __init__(
        self,
        tracker: Tracker | None = None,
        smoother: TemporalSmoother | None = None,
        refiner: EdgeRefiner | None = None,
    ) -> None:
        if smoother is not None and tracker is None:
            raise ValueError("temporal smoothing needs track ids: pass a Tracker too")
        self.tracker, self.smoother, self.refiner = tracker, smoother, refiner
        self.delay = smoother.delay if smoother is not None else 0
        self.needs_probs = smoother is not None or refiner is not None
        self._frames: dict[int, np.ndarray] = {}  # held frames, for the refinement
        self._last = -1
        self._size = (0, 0)  # frame (height, width)
        self._tracked = False

    def push(self, index: int, frame_bgr: np.ndarray, dets: Detections) -> Released:
        if index <= self._last:
            raise ValueError(
                f"temporal stage: frame {index} after frame {self._last}; push frames in order"
            )
        self._last = index
        if self.tracker is not None:
            dets = self.tracker.update(dets)
        if self.smoother is None and self.refiner is None:
            return [(index, dets)]
        self._size = dets.image_size
        self._tracked = dets.track_ids is not None
        if self.refiner is not None:
            self._frames[index] = frame_bgr
        if self.smoother is None:
            return [self._finish(index, to_windows(dets))]
        return [self._finish(i, ws) for i, ws in self.smoother.push_windows(index, dets)]

    def flush(self) -> Released:
        ready = self.smoother.flush_windows() if self.smoother is not None else []
        out = [self._finish(i, ws) for i, ws in ready]
        self._frames.clear()
        return out

    def _finish(self, index: int, windows: list[Window]) -> tuple[int, Detections]:
        """Refine (when on) and paste the windows back into full-frame Detections, once."""
        if self.refiner is not None:
            windows = self.refiner.refine_windows(self._frames.pop(index), windows)
        return index, to_detections(windows, *self._size, self._tracked)


def make_temporal_stage(config: Config, *, mask_threshold: float = 0.5) -> TemporalStage:
    """The stage the config asks for; :class:`IdentityStage` when every switch is off.

    ``mask_threshold``: the predictor's (``predictor.mask_threshold``); smoothing and
    refinement threshold their soft masks at it, so masks keep the size the predictor gives.
    """
    smoothing, refining = bool(config.temporal_smoothing), bool(config.edge_refinement)
    tracking = bool(config.tracking or config.per_instance_clips) or smoothing
    if not (tracking or refining):
        return IdentityStage()
    if smoothing and not (config.tracking or config.per_instance_clips):
        log.info("temporal_smoothing follows each animal by its track id: tracking is on too")
    return TemporalPipeline(
        Tracker.from_config(config) if tracking else None,
        TemporalSmoother(config.smoothing_window, mask_threshold=mask_threshold)
        if smoothing
        else None,
        EdgeRefiner(mask_threshold=mask_threshold) if refining else None,
    )


# --- the stage inside the video pipeline: holding frames while the stage works on them ---


def make_stage(config: Config, mask_threshold: float = 0.5) -> TemporalStage | None:
    """The temporal stage the settings ask for (:func:`make_temporal_stage`:
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
