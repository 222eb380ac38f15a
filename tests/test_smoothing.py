"""thingmask.cutout.smoothing: one-frame dropouts filled, holes closed, nothing added for long
absences, the IoU gate, and the streaming delay."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.cutout.smoothing import TemporalSmoother
from thingmask.cutout.tracking import Tracker
from thingmask.detections import Detections

H, W = 48, 96


def frame(boxes: dict[int, tuple[int, int, int, int]], hole: bool = False) -> Detections:
    """Tracked rectangles ``{track id: (x1, y1, x2, y2)}`` with soft edges in ``probs``."""
    n = len(boxes)
    probs = np.zeros((n, H, W), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.values()):
        probs[k, y1:y2, x1:x2] = 230
        probs[k, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] = 250
        if hole:
            probs[k, y1 + 4 : y1 + 8, x1 + 4 : x1 + 8] = 20  # a hole in this frame only
    return Detections(
        masks=probs > 127,
        boxes=np.array(list(boxes.values()), np.float32).reshape(-1, 4),
        class_names=["cat"] * n,
        scores=np.full(n, 0.9),
        track_ids=np.array(list(boxes), np.int64),
        probs=probs,
    )


def run(smoother: TemporalSmoother, frames: list[Detections]) -> list[Detections]:
    out: list[tuple[int, Detections]] = []
    for i, d in enumerate(frames):
        out += smoother.push(i, d)
    out += smoother.flush()
    assert [i for i, _ in out] == list(range(len(frames)))
    return [d for _, d in out]


def box_at(t: int) -> tuple[int, int, int, int]:
    return (10 + 2 * t, 10, 30 + 2 * t, 30)  # moving 2 px per frame


def test_fills_a_one_frame_dropout_where_the_animal_would_be() -> None:
    frames = [frame({1: box_at(t)}) if t != 3 else frame({}) for t in range(7)]
    out = run(TemporalSmoother(1), frames)
    assert list(out[3].track_ids) == [1]
    truth = np.zeros((H, W), bool)
    x1, y1, x2, y2 = box_at(3)
    truth[y1:y2, x1:x2] = True
    got = out[3].masks[0]
    assert np.count_nonzero(got & truth) / np.count_nonzero(got | truth) > 0.9
    assert out[3].class_names[0] == "cat" and out[3].probs is not None


@pytest.mark.parametrize(
    "present",
    [
        [0, 1, 2],  # gone for the rest of the video
        [0, 1, 2, 9, 10],  # gone for 6 frames, then back
        [0, 1, 2, 5, 6],  # gone for 2 frames: longer than a radius-1 window fills
    ],
)
def test_never_adds_an_animal_absent_for_longer_than_the_window(present: list[int]) -> None:
    frames = [frame({1: box_at(t)}) if t in present else frame({}) for t in range(11)]
    out = run(TemporalSmoother(1), frames)
    for t, d in enumerate(out):
        assert (len(d) == 1) is (t in present), f"frame {t}"


def test_window_two_fills_a_two_frame_gap() -> None:
    frames = [frame({1: box_at(t)}) if t not in (3, 4) else frame({}) for t in range(8)]
    out = run(TemporalSmoother(2), frames)
    assert all(len(out[t]) == 1 for t in range(8))


def test_a_one_frame_hole_is_closed_by_its_neighbours() -> None:
    frames = [frame({1: box_at(t)}, hole=t == 3) for t in range(7)]
    assert not frames[3].masks[0, 14:18, 20:24].all()
    out = run(TemporalSmoother(1), frames)
    assert out[3].masks[0, 14:18, 20:24].all()


def test_iou_gate_keeps_an_unlike_neighbour_out() -> None:
    small = (40, 10, 44, 14)  # the "same" track, but nothing like its neighbours...
    tall = (10, 2, 16, 46)  # ...which are nothing like each other either: no glitch to repair
    frames = [frame({1: box_at(0)}), frame({1: small}), frame({1: tall})]
    out = run(TemporalSmoother(1, iou_gate=0.5, mask_threshold=0.4), frames)
    assert np.array_equal(out[1].masks, frames[1].masks)
    loose = run(TemporalSmoother(1, iou_gate=0.0, mask_threshold=0.4), frames)
    assert np.count_nonzero(loose[1].masks) > np.count_nonzero(frames[1].masks)


def test_a_one_frame_glitch_is_replaced_when_its_neighbours_agree() -> None:
    frames = [frame({1: box_at(t)}) for t in range(5)]
    x1, y1, x2, y2 = box_at(2)
    frames[2] = frame({1: (x1, y1, x1 + 6, y2)})  # only the back third found in frame 2
    out = run(TemporalSmoother(1), frames)
    truth = np.zeros((H, W), bool)
    truth[y1:y2, x1:x2] = True
    got = out[2].masks[0]
    assert np.count_nonzero(got & truth) / np.count_nonzero(got | truth) > 0.9
    assert list(out[2].track_ids) == [1]


def test_untracked_instances_pass_through_and_inputs_are_unchanged() -> None:
    d = frame({-1: box_at(0)})
    before = d.masks.copy()
    out = run(TemporalSmoother(1), [d, frame({-1: box_at(1)}), d])
    assert np.array_equal(out[0].masks, before) and np.array_equal(d.masks, before)


def test_works_without_probs_on_binary_masks() -> None:
    frames = [frame({1: box_at(t)}) for t in range(5)]
    binary = [Detections(f.masks, f.boxes, f.class_names, f.scores, f.track_ids) for f in frames]
    binary[2] = Detections.empty(H, W)
    out = run(TemporalSmoother(1), [Tracker().update(b) for b in binary])
    assert len(out[2]) == 1


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_delay_is_the_radius_and_flush_returns_the_rest(radius: int) -> None:
    smoother = TemporalSmoother(radius)
    assert smoother.delay == radius
    released: list[list[int]] = []
    for i in range(6):
        released.append([j for j, _ in smoother.push(i, frame({1: box_at(i)}))])
    expected = [[] if i < radius else [i - radius] for i in range(6)]
    assert released == expected
    assert [j for j, _ in smoother.flush()] == list(range(6 - radius, 6))
    assert smoother.flush() == []  # nothing held any more


@pytest.mark.parametrize(
    "kwargs", [{"radius": 0}, {"radius": 1.5}, {"iou_gate": 2.0}, {"mask_threshold": 1.0}]
)
def test_rejects_bad_settings(kwargs) -> None:
    with pytest.raises(ValueError):
        TemporalSmoother(**kwargs)
