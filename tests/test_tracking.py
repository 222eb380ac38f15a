"""thingmask.tracking: ids stay with moving animals; greedy IoU matching; smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.detections import Detections
from thingmask.tracking import Tracker, box_iou

H, W = 60, 120


def dets(boxes: list[tuple[float, float, float, float]], names: list[str]) -> Detections:
    masks = np.zeros((len(boxes), H, W), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, int(y1) : int(y2), int(x1) : int(x2)] = True
    return Detections(
        masks=masks,
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        class_names=names,
        scores=np.ones(len(boxes)),
    )


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
        for name, tid in zip(out.class_names, out.track_ids, strict=True):
            seen[name].add(int(tid))
    assert len(seen["cat"]) == 1 and len(seen["bird"]) == 1
    assert seen["cat"] != seen["bird"]


def test_fast_motion_kept_by_velocity_prediction() -> None:
    tracker = Tracker(iou_threshold=0.3)
    ids = set()
    for t in range(8):  # 12 px per frame for a 16 px box: IoU with the last box is only 0.14
        out = tracker.update(dets([(2 + 12 * t, 10, 18 + 12 * t, 26)], ["cat"]))
        ids.add(int(out.track_ids[0]))
    assert ids == {1}  # no overlap at all: the centre-distance pass keeps the id


def test_short_gap_keeps_id_long_gap_gives_new_id() -> None:
    tracker = Tracker(max_age=3)
    first = tracker.update(dets([(10, 10, 30, 30)], ["cat"])).track_ids[0]
    for _ in range(2):
        tracker.update(dets([], []))
    again = tracker.update(dets([(11, 10, 31, 30)], ["cat"])).track_ids[0]
    assert again == first
    for _ in range(5):
        tracker.update(dets([], []))
    assert first in tracker.ended or first not in tracker.live_ids
    later = tracker.update(dets([(11, 10, 31, 30)], ["cat"])).track_ids[0]
    assert later != first


def test_classes_never_share_a_track() -> None:
    tracker = Tracker()
    a = tracker.update(dets([(10, 10, 30, 30)], ["cat"])).track_ids[0]
    b = tracker.update(dets([(10, 10, 30, 30)], ["bird"])).track_ids[0]
    assert a != b


def test_update_is_pure_and_keeps_fields() -> None:
    d = dets([(10, 10, 30, 30), (50, 10, 70, 30)], ["cat", "bird"])
    out = Tracker().update(d)
    assert d.track_ids is None
    assert list(out.track_ids) == [1, 2]
    assert np.array_equal(out.masks, d.masks) and list(out.class_names) == ["cat", "bird"]


def test_smoothing_fills_a_one_frame_hole() -> None:
    tracker = Tracker(smooth=0.5)
    full = dets([(10, 10, 30, 30)], ["cat"])
    holed_masks = full.masks.copy()
    holed_masks[0, 15:20, 15:20] = False
    holed = Detections(holed_masks, full.boxes, full.class_names, full.scores)
    tracker.update(full)
    tracker.update(full)
    out = tracker.update(holed)
    assert out.masks[0, 15:20, 15:20].all()


@pytest.mark.parametrize("kwargs", [{"iou_threshold": 0}, {"max_age": -1}, {"smooth": 1.0}])
def test_rejects_bad_settings(kwargs) -> None:
    with pytest.raises(ValueError):
        Tracker(**kwargs)
