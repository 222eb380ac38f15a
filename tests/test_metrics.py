"""Mask IoU, foreground IoU, boundary F, and the video foreground IoU (the headline figure)."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.evaluation.masks import (
    boundary_f,
    boundary_f_matrix,
    foreground_iou,
    gt_foreground,
    j_and_f,
    mask_iou,
    mean_foreground_iou,
    video_foreground_iou,
)


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


EMPTY = np.zeros((10, 10), bool)
FULL = np.ones((10, 10), bool)
LEFT = _box(10, 10, 0, 10, 0, 5)
RIGHT = _box(10, 10, 0, 10, 5, 10)
CENTRE = _box(10, 10, 0, 10, 2, 7)  # overlaps LEFT in 3 columns: 30 / 70


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (EMPTY, EMPTY, 1.0),  # nothing to cut out, nothing cut out: perfect
        (EMPTY, FULL, 0.0),
        (FULL, EMPTY, 0.0),
        (FULL, FULL, 1.0),
        (LEFT, RIGHT, 0.0),
        (LEFT, FULL, 0.5),
        (LEFT, CENTRE, 30 / 70),
    ],
)
def test_foreground_iou_table(a, b, expected):
    assert foreground_iou(a, b) == pytest.approx(expected)
    assert foreground_iou(b, a) == pytest.approx(expected)  # symmetric
    assert mask_iou(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("a", "b", "error", "match"),
    [
        (LEFT.astype(np.uint8), LEFT, TypeError, "expected bool masks"),
        (LEFT, np.zeros((5, 5), bool), ValueError, "sizes differ"),
        (np.stack([LEFT]), LEFT, ValueError, "expected"),
    ],
)
def test_bad_inputs_are_clear_errors(a, b, error, match):
    with pytest.raises(error, match=match):
        mask_iou(a, b) if a.ndim == b.ndim else foreground_iou(a, b)


def test_pairwise_mask_iou_matrix():
    got = mask_iou(np.stack([LEFT, RIGHT, EMPTY]), np.stack([LEFT, FULL, EMPTY]))
    expected = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, expected)


def test_mean_foreground_iou():
    assert mean_foreground_iou([(LEFT, LEFT), (LEFT, FULL)]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no"):
        mean_foreground_iou([])


@pytest.mark.parametrize(
    ("pred", "gt", "expected"), [(EMPTY, EMPTY, 1.0), (EMPTY, LEFT, 0.0), (LEFT, LEFT, 1.0)]
)
def test_boundary_f_edges(pred, gt, expected):
    assert boundary_f(pred, gt) == pytest.approx(expected)


def test_boundary_f_tolerates_one_pixel_shift_but_not_ten():
    a = _box(200, 200, 50, 150, 50, 150)
    near = _box(200, 200, 51, 151, 50, 150)
    far = _box(200, 200, 60, 160, 50, 150)
    assert boundary_f(a, near) > 0.95
    assert boundary_f(a, far) < boundary_f(a, near)
    j, f, jf = j_and_f(a, near)
    assert jf == pytest.approx((j + f) / 2) and j < 1.0


def test_gt_foreground_keeps_display_things_only():
    masks = np.stack([LEFT, RIGHT])
    assert np.array_equal(gt_foreground(masks, ["cat", "leaf"], ["cat", "bird"]), LEFT)
    assert not gt_foreground(masks, ["leaf", "leaf"], ["cat"]).any()


def test_video_foreground_iou_ignores_distractors_in_gt():
    gt = [
        (np.stack([LEFT, RIGHT]), ["cat", "leaf"], np.array([1, 2])),
        (np.zeros((0, 10, 10), bool), [], np.zeros(0, np.int64)),
    ]
    mean, per_frame = video_foreground_iou([LEFT, EMPTY], gt, ["cat"], per_frame=True)
    assert per_frame == [1.0, 1.0] and mean == 1.0
    # cutting out the leaf too is penalised
    assert video_foreground_iou([FULL, EMPTY], gt, ["cat"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="1 predicted frames but 2"):
        video_foreground_iou([LEFT], gt, ["cat"])


@pytest.mark.parametrize("tolerance", [0.008, 1, 3])
def test_boundary_f_matrix_is_boundary_f_of_every_pair(tolerance) -> None:
    rng = np.random.default_rng(5)
    shape = (23, 31)  # odd sizes
    blobs = [np.zeros(shape, bool), np.ones(shape, bool)]  # empty, full frame (no boundary)
    one = np.zeros(shape, bool)
    one[7, 9] = True
    blobs.append(one)
    for _ in range(9):  # random rectangles and noise blobs, some touching the border
        m = np.zeros(shape, bool)
        y, x = rng.integers(0, 20), rng.integers(0, 28)
        m[y : y + rng.integers(1, 12), x : x + rng.integers(1, 12)] = True
        blobs.append(m | (rng.random(shape) < 0.03))
    stack = np.stack(blobs)
    got = boundary_f_matrix(stack[:7], stack, tolerance)
    want = [[boundary_f(p, g, tolerance) for g in stack] for p in stack[:7]]
    assert got.shape == (7, len(stack)) and got.tolist() == want  # bit for bit
