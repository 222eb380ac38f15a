"""Video metrics against hand-made cases: DAVIS boundary map/F, per-object J, CLEAR-MOT id
switches and fragmentations, temporal instability, vanished frames."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.evaluation.masks import boundary_f, boundary_map, boundary_tolerance_px
from thingmask.evaluation.video import clear_mot, evaluate_instances, instability

S = 40  # frame side of the hand-made cases


def rect(x0: int, y0: int, w: int, h: int, size: int = S) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0 : y0 + h, x0 : x0 + w] = True
    return m


def frame(*objects: tuple[np.ndarray, str, int]):
    """One frame: ``(mask, class, id)`` per object."""
    if not objects:
        return (np.zeros((0, S, S), bool), [], np.zeros(0, np.int64))
    return (
        np.stack([m for m, _, _ in objects]),
        [c for _, c, _ in objects],
        np.array([i for _, _, i in objects], np.int64),
    )


A = rect(2, 2, 10, 10)
B = rect(25, 25, 10, 10)
A_NEAR = rect(3, 2, 10, 10)  # A one pixel to the right


@pytest.mark.parametrize(("w", "h"), [(1, 1), (4, 4), (10, 3), (7, 12)])
def test_boundary_map_of_a_rectangle_has_2w_plus_2h_pixels(w: int, h: int) -> None:
    # seg2bmap marks the last row/column inside and the row/column before it outside
    assert np.count_nonzero(boundary_map(rect(5, 5, w, h))) == 2 * (w + h)


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (A, A, 1.0),
        (np.zeros((S, S), bool), np.zeros((S, S), bool), 1.0),
        (np.zeros((S, S), bool), A, 0.0),
        (A, B, 0.0),  # far apart: no boundary pixel within 1 px
        (A | B, A, 2 / 3),  # precision 40/80, recall 1 → 2PR / (P + R) = 2/3
        (A, A | B, 2 / 3),  # symmetric case: recall 1/2
        (A_NEAR, A, 1.0),  # one pixel off, within the 1 px tolerance
    ],
)
def test_boundary_f_hand_cases(pred, gt, expected) -> None:
    assert boundary_f(pred, gt, tolerance=1) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("shape", "tolerance", "pixels"),
    [((160, 160), 0.008, 2), ((1080, 1920), 0.008, 18), ((480, 640), 0.008, 7), ((9, 9), 3, 3)],
)
def test_boundary_tolerance_in_pixels(shape, tolerance, pixels) -> None:
    assert boundary_tolerance_px(shape, tolerance) == pixels


def seq(*frames):
    return list(frames)


CAT_A, CAT_B = (A, "cat", 1), (B, "cat", 2)


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        pytest.param(
            seq(*[frame((A, "cat", 7), (B, "cat", 8))] * 4),
            {"num_switches": 0, "num_fragmentations": 0, "num_misses": 0, "num_false_positives": 0},
            id="perfect",
        ),
        pytest.param(
            seq(
                frame((A, "cat", 7), (B, "cat", 8)),
                frame((A, "cat", 7), (B, "cat", 8)),
                frame((A, "cat", 8), (B, "cat", 7)),  # the tracker swapped the two
                frame((A, "cat", 8), (B, "cat", 7)),
            ),
            {"num_switches": 2, "num_fragmentations": 0, "num_misses": 0},
            id="swap",
        ),
        pytest.param(
            seq(
                frame((A, "cat", 7), (B, "cat", 8)),
                frame((B, "cat", 8)),  # A missed for one frame
                frame((A, "cat", 7), (B, "cat", 8)),
                frame((A, "cat", 7), (B, "cat", 8)),
            ),
            {"num_switches": 0, "num_fragmentations": 1, "num_misses": 1},
            id="gap-same-id",
        ),
        pytest.param(
            seq(
                frame((A, "cat", 7), (B, "cat", 8)),
                frame((B, "cat", 8)),
                frame((A, "cat", 9), (B, "cat", 8)),  # back with a new id
                frame((A, "cat", 9), (B, "cat", 8)),
            ),
            {"num_switches": 1, "num_fragmentations": 1, "num_misses": 1},
            id="gap-new-id",
        ),
        pytest.param(
            seq(
                frame((A, "cat", 7), (B, "cat", 8), (rect(20, 2, 5, 5), "cat", 9)),
                *[frame((A, "cat", 7), (B, "bird", 8))] * 3,  # B labelled a bird: class errors
            ),
            {"num_false_positives": 1, "class_errors": 3, "track_class_changes": 1},
            id="fp-and-class",
        ),
        pytest.param(
            seq(*[frame((A_NEAR, "cat", 7), (rect(25, 25, 5, 10), "cat", 8))] * 4),
            {
                "num_matches": 4,
                "num_misses": 4,
                "num_false_positives": 4,
            },  # B half covered: IoU 0.5 misses
            id="overlap-threshold",
        ),
    ],
)
def test_clear_mot_counts(pred, expected) -> None:
    gt = seq(*[frame(CAT_A, CAT_B)] * 4)
    got = clear_mot(pred, gt, match_iou=0.51)
    assert {k: got[k] for k in expected} == expected
    assert got["num_objects"] == 8


def test_mota_and_untracked_predictions() -> None:
    gt = seq(*[frame(CAT_A, CAT_B)] * 2)
    pred = seq(frame((A, "cat", -1)), frame((A, "cat", -1), (B, "cat", -1)))
    got = clear_mot(pred, gt)
    assert got["tracked"] is False and got["num_switches"] == 0
    assert got["mota"] == pytest.approx(1 - 1 / 4)  # one miss in four ground-truth instances


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ([A, A, A], [A, A, A], [0.0, 0.0]),  # steady and right
        ([A, B, A], [A, A, A], [1.0, 1.0]),  # jumps while the truth stands still
        ([A, A, A], [A, A_NEAR, A], [2 / 11, 2 / 11]),  # truth moves (IoU 90/110), pred not
        ([A, A], [A, np.zeros((S, S), bool)], []),  # pairs with an empty truth are left out
    ],
)
def test_instability_hand_cases(pred, gt, expected) -> None:
    assert instability(pred, gt) == pytest.approx(expected, abs=1e-9)


def test_per_object_j_f_and_identities_on_a_small_video() -> None:
    part_a = rect(2, 2, 4, 10)  # 40 % of A: J 0.4, below the match threshold
    gt = seq(*[frame(CAT_A, CAT_B, (rect(30, 2, 6, 6), "leaf", 3))] * 4)
    pred = seq(
        frame((part_a, "cat", 7), (B, "cat", 8), (rect(30, 2, 6, 6), "leaf", 9)),
        frame((part_a, "cat", 7), (B, "cat", 8)),
        frame((B, "cat", 8)),  # A vanishes for one frame
        frame((part_a, "cat", 7), (B, "cat", 8)),
    )
    report = evaluate_instances(pred, gt, ["cat"])
    a, b = report["objects"]["1"], report["objects"]["2"]
    assert a["J_per_frame"] == pytest.approx([0.4, 0.4, 0.0, 0.4]) and a["track"] == 7
    assert b["J"] == 1.0 and b["F"] == 1.0 and b["track"] == 8
    assert report["J"] == pytest.approx((0.3 + 1.0) / 2)
    assert "3" not in report["objects"]  # the leaf is not a display thing
    # foreground: 140 of 200 pixels in three frames, 100 of 200 in one
    assert report["fg_J"] == pytest.approx((0.7 * 3 + 0.5) / 4)
    assert report["num_switches"] == 0 and report["num_fragmentations"] == 0  # A never matched
    assert report["num_misses"] == 4 and report["num_matches"] == 4
    assert report["vanished"] == 4 and report["dropouts"] == 0  # A is never half covered
    assert report["num_false_positives"] == 3  # the unmatched part of A, leaves filtered out


def test_a_one_frame_dropout_is_counted() -> None:
    gt = seq(*[frame(CAT_A)] * 3)
    pred = seq(frame((A, "cat", 1)), frame(), frame((A, "cat", 1)))
    report = evaluate_instances(pred, gt, ["cat"])
    assert report["vanished"] == 1 and report["dropouts"] == 1
    assert report["events"]["vanished"] == [{"frame": 1, "object": 1, "dropout": 1}]
    assert report["num_fragmentations"] == 1 and report["T"] == pytest.approx(1.0)


def test_frame_count_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 predicted frames but 3 ground-truth"):
        evaluate_instances(seq(frame(), frame()), seq(frame(), frame(), frame()), ["cat"])
