"""Seam D: make_temporal_stage builds the stage the settings ask for; push/flush release every
frame once, in order, ``delay`` frames late; needs_probs says when soft masks are read."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.config import Config
from thingmask.cutout.temporal import IdentityStage, TemporalPipeline, make_temporal_stage
from thingmask.detections import Detections

H, W = 40, 80


def dets_at(t: int, present: bool = True) -> Detections:
    if not present:
        return Detections.empty(H, W)
    probs = np.zeros((1, H, W), np.uint8)
    probs[0, 10:30, 5 + 2 * t : 25 + 2 * t] = 240
    return Detections(probs > 127, [[5 + 2 * t, 10, 25 + 2 * t, 30]], ["cat"], [0.9], probs=probs)


def image(t: int) -> np.ndarray:
    img = np.full((H, W, 3), 30, np.uint8)
    img[10:30, 5 + 2 * t : 25 + 2 * t] = 220
    return img


@pytest.mark.parametrize(
    ("settings", "delay", "needs_probs", "tracked"),
    [
        ({}, 0, False, False),
        ({"tracking": True}, 0, False, True),
        ({"per_instance_clips": True}, 0, False, True),
        ({"edge_refinement": True}, 0, True, False),
        ({"temporal_smoothing": True}, 1, True, True),  # smoothing switches tracking on
        ({"temporal_smoothing": True, "smoothing_window": 2}, 2, True, True),
        ({"tracking": True, "temporal_smoothing": True, "edge_refinement": True}, 1, True, True),
    ],
)
def test_stage_matches_the_settings(settings, delay, needs_probs, tracked) -> None:
    stage = make_temporal_stage(Config(**settings))
    assert stage.delay == delay and stage.needs_probs is needs_probs
    assert isinstance(stage, IdentityStage if not settings else TemporalPipeline)
    out = [d for i in range(6) for _, d in stage.push(i, image(i), dets_at(i))]
    out += [d for _, d in stage.flush()]
    assert len(out) == 6
    assert all((d.track_ids is not None) is tracked for d in out)


def test_identity_stage_returns_the_same_objects_at_once() -> None:
    stage = make_temporal_stage(Config())
    d = dets_at(0)
    assert stage.push(0, image(0), d) == [(0, d)]
    assert stage.flush() == []


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("refine", [False, True])
def test_push_releases_in_order_delay_frames_late(window: int, refine: bool) -> None:
    stage = make_temporal_stage(
        Config(temporal_smoothing=True, smoothing_window=window, edge_refinement=refine)
    )
    n = 7
    released_per_push = [
        [i for i, _ in stage.push(t, image(t), dets_at(t, present=t != 3))] for t in range(n)
    ]
    assert released_per_push == [[] if t < window else [t - window] for t in range(n)]
    rest = stage.flush()
    assert [i for i, _ in rest] == list(range(n - window, n))
    assert all(d.image_size == (H, W) for _, d in rest)


def test_smoothing_stage_fills_the_dropout_and_keeps_the_id() -> None:
    stage = make_temporal_stage(Config(temporal_smoothing=True))
    out = []
    for t in range(6):
        out += stage.push(t, image(t), dets_at(t, present=t != 3))
    out += stage.flush()
    ids = [set(d.track_ids.tolist()) for _, d in out]
    assert ids == [{1}] * 6


def test_frames_pushed_out_of_order_are_an_error() -> None:
    stage = make_temporal_stage(Config(tracking=True))
    stage.push(3, image(0), dets_at(0))
    with pytest.raises(ValueError, match="push frames in order"):
        stage.push(2, image(0), dets_at(0))


def test_refinement_gets_the_frame_of_the_released_index() -> None:
    """With a delay, the refiner must read frame t's pixels for frame t's masks."""
    stage = make_temporal_stage(Config(temporal_smoothing=True, edge_refinement=True))
    assert isinstance(stage, TemporalPipeline) and stage.refiner is not None
    frames = [image(t) for t in range(5)]
    seen: list[int] = []
    refine = stage.refiner.refine_windows

    def spy(frame, windows):
        seen.append(next(i for i, f in enumerate(frames) if f is frame))
        return refine(frame, windows)

    stage.refiner.refine_windows = spy  # type: ignore[method-assign]
    released = [i for t in range(5) for i, _ in stage.push(t, frames[t], dets_at(t))]
    released += [i for i, _ in stage.flush()]
    assert seen == released == list(range(5))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"track_max_missed": -1}, r"track_max_missed: got -1; expected a number >= 0"),
        ({"smoothing_window": 0}, r"smoothing_window: got 0; expected 1..5 frames"),
        ({"smoothing_window": 9}, r"smoothing_window: got 9; expected 1..5 frames"),
        ({"temporal_smoothing": "yes"}, r"temporal_smoothing: got 'yes'; expected true or false"),
        ({"edge_refinement": 1}, r"edge_refinement: got 1; expected true or false"),
    ],
)
def test_bad_temporal_settings_are_named(changes, expected) -> None:
    from thingmask.config import ConfigError

    with pytest.raises(ConfigError, match=expected):
        Config.from_dict(changes)
