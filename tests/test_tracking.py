"""thingmask.cutout.tracking: mask-IoU tracks keep their ids through crossings, occlusions and
missed frames; per-track class voting; updates are pure."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.config import Config
from thingmask.cutout.tracking import Tracker, box_iou
from thingmask.detections import Detections

H, W = 60, 120


def dets(
    boxes: list[tuple[float, float, float, float]],
    names: list[str],
    scores: list[float] | None = None,
    hidden_by: dict[int, int] | None = None,
) -> Detections:
    """Rectangle masks; ``hidden_by={k: j}``: instance j is in front of instance k."""
    masks = np.zeros((len(boxes), H, W), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, int(y1) : int(y2), int(x1) : int(x2)] = True
    for k, j in (hidden_by or {}).items():
        masks[k] &= ~masks[j]
    return Detections(
        masks=masks,
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        class_names=names,
        scores=np.ones(len(boxes)) if scores is None else scores,
    )


def ids_by_name(out: Detections) -> dict[str, int]:
    return {str(n): int(i) for n, i in zip(out.class_names, out.track_ids, strict=True)}


def test_box_iou() -> None:
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou.shape == (1, 3)
    assert iou[0] == pytest.approx([1.0, 1 / 3, 0.0])
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_ids_follow_moving_animals_in_any_order() -> None:
    tracker = Tracker()
    seen: dict[str, set[int]] = {"cat": set(), "bird": set()}
    for t in range(20):
        cat = (5 + 3 * t, 10, 25 + 3 * t, 30)  # moving right, 3 px per frame
        bird = (100 - 2 * t, 30, 115 - 2 * t, 45)  # moving left
        order = [0, 1] if t % 2 else [1, 0]  # detectors do not keep an order
        boxes, names = [cat, bird], ["cat", "bird"]
        out = tracker.update(dets([boxes[i] for i in order], [names[i] for i in order]))
        for name, tid in ids_by_name(out).items():
            seen[name].add(tid)
    assert len(seen["cat"]) == 1 and len(seen["bird"]) == 1
    assert seen["cat"] != seen["bird"]


def test_fast_motion_kept_by_velocity_prediction() -> None:
    tracker = Tracker()
    ids = set()
    for t in range(8):  # 12 px per frame for a 16 px box: IoU with the last mask only 0.14
        out = tracker.update(dets([(2 + 12 * t, 10, 18 + 12 * t, 26)], ["cat"]))
        ids.add(int(out.track_ids[0]))
    assert ids == {1}


@pytest.mark.parametrize("classes", [("cat", "cat"), ("cat", "bird")], ids=["same", "other"])
@pytest.mark.parametrize("occluded_frames", [0, 2], ids=["visible", "hidden-2"])
def test_ids_survive_a_crossing(classes: tuple[str, str], occluded_frames: int) -> None:
    """Two animals cross at the same height; the one behind is partly hidden, and with
    ``occluded_frames`` completely gone for two frames around the crossing point."""
    tracker = Tracker()
    a_ids, b_ids = set(), set()
    for t in range(24):
        a = (4 + 4 * t, 20, 24 + 4 * t, 40)  # → right
        b = (96 - 4 * t, 20, 116 - 4 * t, 40)  # ← left; they meet near t = 11.5
        hidden = occluded_frames and 11 <= t < 11 + occluded_frames
        if hidden:
            out = tracker.update(dets([a], [classes[0]]))
            a_ids.add(int(out.track_ids[0]))
            continue
        out = tracker.update(dets([a, b], list(classes), hidden_by={1: 0}))
        a_ids.add(int(out.track_ids[0]))
        b_ids.add(int(out.track_ids[1]))
    assert len(a_ids) == 1 and len(b_ids) == 1 and a_ids != b_ids


@pytest.mark.parametrize(("max_missed", "same_id"), [(1, False), (2, True), (5, True)])
def test_a_two_frame_gap_keeps_the_id_within_max_missed(max_missed: int, same_id: bool) -> None:
    tracker = Tracker(max_missed=max_missed)
    first = tracker.update(dets([(10, 10, 30, 30)], ["cat"])).track_ids[0]
    tracker.update(dets([(12, 10, 32, 30)], ["cat"]))
    for _ in range(2):
        tracker.update(dets([], []))
    again = tracker.update(dets([(18, 10, 38, 30)], ["cat"])).track_ids[0]
    assert bool(again == first) is same_id


def test_long_gap_ends_the_track_and_reports_it() -> None:
    tracker = Tracker(max_missed=3)
    first = int(tracker.update(dets([(10, 10, 30, 30)], ["cat"])).track_ids[0])
    ended: list[int] = []
    for _ in range(5):
        tracker.update(dets([], []))
        ended += tracker.ended
    assert ended == [first] and first not in tracker.live_ids
    assert tracker.update(dets([(11, 10, 31, 30)], ["cat"])).track_ids[0] != first


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        (["cat", "cat", "bird", "cat", "cat", "cat"], None, "cat"),  # one wrong frame
        (["bird", "cat", "cat", "cat", "cat", "cat"], None, "cat"),  # wrong first frame
        (["cat", "bird", "bird", "cat", "bird", "bird"], None, "bird"),  # majority
        (["cat", "bird", "bird"], [0.9, 0.4, 0.4], "cat"),  # votes weigh by score
    ],
)
def test_class_voting_gives_one_class_per_track(labels, scores, expected) -> None:
    tracker = Tracker()
    out_names, out_ids = [], set()
    for t, label in enumerate(labels):
        score = None if scores is None else [scores[t]]
        out = tracker.update(dets([(10 + t, 10, 30 + t, 30)], [label], score))
        out_names.append(str(out.class_names[0]))
        out_ids.add(int(out.track_ids[0]))
    assert len(out_ids) == 1  # a class flip does not start a new track
    assert out_names[-1] == expected
    # the vote so far decides each frame: no frame after the majority is settled disagrees
    assert out_names.count(expected) >= len(labels) // 2


def test_update_is_pure_and_passes_fields_through() -> None:
    d = dets([(10, 10, 30, 30), (50, 10, 70, 30)], ["cat", "bird"])
    probs = d.masks.astype(np.uint8) * 200
    d = Detections(d.masks, d.boxes, d.class_names, d.scores, probs=probs)
    out = Tracker().update(d)
    assert d.track_ids is None
    assert list(out.track_ids) == [1, 2]
    assert out.masks is d.masks and out.probs is d.probs
    assert list(out.class_names) == ["cat", "bird"]


def test_from_config_uses_track_max_missed() -> None:
    assert Tracker.from_config(Config(track_max_missed=7)).max_missed == 7


@pytest.mark.parametrize(
    "kwargs", [{"iou_threshold": 0}, {"max_missed": -1}, {"max_distance": -1.0}]
)
def test_rejects_bad_settings(kwargs) -> None:
    with pytest.raises(ValueError):
        Tracker(**kwargs)
