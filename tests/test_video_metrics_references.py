"""thingmask's video figures against the reference implementations they claim to follow.

* CLEAR-MOT: py-motmetrics (``motmetrics.MOTAccumulator``, distance 1 - mask IoU, max distance
  0.5) runs as the oracle: switches (count, objects and frames), fragmentations, matches, misses,
  false positives, MOTA and MOTP must be equal.
* Per-object J and F: a transcription of DAVIS 2017's unsupervised evaluation
  (``davis2017-evaluation``: ``db_eval_iou``, ``f_measure``/``_seg2bmap``, and
  ``_evaluate_unsupervised``'s pairing) must give the same pairing and the same J and F in every
  frame.

Cases: the synthetic demo world's ground truth predicted cleanly, a perturbed copy (dropped
frames and detections, swapped ids, eroded masks, a duplicate track), the same untracked, a
one-frame miss covered by a duplicate track, an object absent for the last frames, and two
tracks swapping while one object leaves early (where DAVIS's pairing differs from pairing by
summed IoU).
"""

from __future__ import annotations

import itertools

import cv2
import motmetrics as mm
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from thingmask.datasets.synthetic.scenes import render_video
from thingmask.evaluation.video import clear_mot, evaluate_instances

THINGS = ("cat", "bird")
MM_METRICS = [
    "num_objects",
    "num_matches",
    "num_switches",
    "num_misses",
    "num_false_positives",
    "num_fragmentations",
    "mota",
    "motp",
]


def _frame(masks, names, ids, shape):
    assert len(masks) == len(names) == len(ids)
    if not len(masks):
        return (np.zeros((0, *shape), bool), [], np.zeros(0, np.int64))
    return (np.stack(masks).astype(bool), list(names), np.array(ids, np.int64))


# ---------------------------------------------------------------- the references


def motmetrics_report(pred, gt, match_iou: float = 0.5) -> tuple[dict, list[tuple[int, int]]]:
    """py-motmetrics' figures and its SWITCH events ``(frame, object)``. Hypothesis ids: track
    ids; untracked detections (id -1, or every detection of an untracked video) get an id of
    their own, as thingmask treats them."""
    tracked = any((ids >= 0).any() for _, _, ids in pred)
    fresh = itertools.count(10**6)
    acc = mm.MOTAccumulator(auto_id=True)
    for (gm, _, gids), (pm, _, pids) in zip(gt, pred, strict=True):
        hids = [int(p) if tracked and p >= 0 else next(fresh) for p in pids]
        dist = np.full((len(gm), len(pm)), np.nan)
        for i, j in itertools.product(range(len(gm)), range(len(pm))):
            union = np.count_nonzero(gm[i] | pm[j])
            iou = np.count_nonzero(gm[i] & pm[j]) / union if union else 1.0
            dist[i, j] = 1.0 - iou
        dist[dist > 1.0 - match_iou] = np.nan  # as motmetrics.distances.iou_matrix does
        acc.update([int(g) for g in gids], hids, dist)
    summary = mm.metrics.create().compute(acc, metrics=MM_METRICS, name="video")
    figures = {k: summary[k].iloc[0] for k in MM_METRICS}
    events = acc.mot_events
    switches = events[events.Type == "SWITCH"]
    frames = switches.index.get_level_values("FrameId")
    return figures, [(int(f), int(o)) for f, o in zip(frames, switches.OId, strict=True)]


def _seg2bmap(seg: np.ndarray) -> np.ndarray:  # davis2017/metrics.py, for width/height None
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _f_measure(foreground: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground.shape))
    fg_boundary, gt_boundary = _seg2bmap(foreground), _seg2bmap(gt)
    r = int(bound_pix)  # skimage.morphology.disk(r): x² + y² <= r²
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    disk = (x * x + y * y <= r * r).astype(np.uint8)
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), disk)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), disk)
    gt_match, fg_match = gt_boundary * fg_dil, fg_boundary * gt_dil
    n_fg, n_gt = np.sum(fg_boundary), np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision, recall = np.sum(fg_match) / float(n_fg), np.sum(gt_match) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray) -> np.ndarray:
    inters = np.sum(segmentation & annotation, axis=(-2, -1))
    union = np.sum(segmentation | annotation, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):  # (DAVIS silences these globally)
        j = inters / union
    j[np.isclose(union, 0)] = 1
    return j


def davis_unsupervised(pred, gt, gt_ids=None):
    """``_evaluate_unsupervised`` of davis2017-evaluation on one video: proposals = the tracks in
    ascending id order (zero-padded to the number of objects). Returns ``{gt id: (track or -1,
    J per frame, F per frame)}`` — paired by ``col_ind`` (the official script lists the rows in
    proposal order, which only its per-object names depend on). ``gt_ids``: the objects (default:
    all ids in ``gt``)."""
    shape = gt[0][0].shape[1:]
    gt_ids = gt_ids or sorted({int(i) for _, _, ids in gt for i in ids})
    tracks = sorted({int(i) for _, _, ids in pred for i in ids if i >= 0})

    def stack(frames, wanted):
        out = np.zeros((len(wanted), len(frames), *shape), bool)
        for t, (masks, _, ids) in enumerate(frames):
            for k, w in enumerate(wanted):
                for m in masks[ids == w]:
                    out[k, t] |= m
        return out

    all_gt_masks, all_res_masks = stack(gt, gt_ids), stack(pred, tracks)
    if all_res_masks.shape[0] < all_gt_masks.shape[0]:
        pad = np.zeros((all_gt_masks.shape[0] - all_res_masks.shape[0], *all_res_masks.shape[1:]))
        all_res_masks = np.concatenate([all_res_masks, pad.astype(bool)], axis=0)
    n_res, n_gt, n_t = all_res_masks.shape[0], all_gt_masks.shape[0], all_gt_masks.shape[1]
    j_res, f_res = np.zeros((n_res, n_gt, n_t)), np.zeros((n_res, n_gt, n_t))
    for ii in range(n_gt):
        for jj in range(n_res):
            j_res[jj, ii, :] = _db_eval_iou(all_gt_masks[ii], all_res_masks[jj])
            for t in range(n_t):
                f_res[jj, ii, t] = _f_measure(all_res_masks[jj, t], all_gt_masks[ii, t])
    all_metrics = (np.mean(j_res, axis=2) + np.mean(f_res, axis=2)) / 2
    row_ind, col_ind = linear_sum_assignment(-all_metrics)
    padded = tracks + [-1] * (n_res - len(tracks))
    return {
        gt_ids[c]: (padded[r], j_res[r, c].tolist(), f_res[r, c].tolist())
        for r, c in zip(row_ind, col_ind, strict=True)
    }


# ---------------------------------------------------------------- the cases


def demo_truth(n_frames: int = 30, size: int = 96):
    _, gt = render_video(n_frames, size, seed=0)
    keep = [[k for k, n in enumerate(names) if n in THINGS] for _, names, _ in gt]
    return [
        (m[k], [names[i] for i in k], ids[k]) for (m, names, ids), k in zip(gt, keep, strict=True)
    ]


def clean_run():
    gt = demo_truth()
    kernel = np.ones((3, 3), np.uint8)  # a slightly generous cut-out: every mask grown 1 px
    pred = [
        _frame(
            [cv2.dilate(x.astype(np.uint8), kernel).astype(bool) for x in m],
            names,
            ids + 100,
            m.shape[1:],
        )
        for m, names, ids in gt
    ]
    return pred, gt


def perturbed_run(tracked: bool = True):
    """Seeded: frames 9 and 10 dropped whole, 12 % of the detections dropped, a third of the
    masks eroded by 2-6 px (some fall below IoU 0.5), tracks 102 and 103 swapped from frame 14,
    a duplicate of track 104 (id 150) in frames 20-23, the class of a few detections flipped,
    6 % of the detections without a track id (-1)."""
    rng = np.random.default_rng(3)
    gt = demo_truth()
    pred = []
    for t, (m, names, ids) in enumerate(gt):
        masks, kept_names, kept_ids = [], [], []
        for x, n, i in zip(m, names, ids, strict=True):
            if t in (9, 10) or rng.random() < 0.12:
                continue
            if rng.random() < 0.33:
                k = int(rng.integers(2, 7))
                x = cv2.erode(x.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
            tid = 100 + int(i)
            if t >= 14 and tid in (102, 103):
                tid = 205 - tid
            masks.append(x)
            kept_names.append(n if rng.random() > 0.05 else {"cat": "bird", "bird": "cat"}[n])
            kept_ids.append(tid if tracked and rng.random() > 0.06 else -1)
            if tid == 104 and 20 <= t <= 23:
                masks.append(np.roll(x, 1, axis=1))
                kept_names.append(n)
                kept_ids.append(150 if tracked else -1)
        pred.append(_frame(masks, kept_names, kept_ids, m.shape[1:]))
    return pred, gt


S = 48


def rect(x0: int, y0: int, w: int = 12, h: int = 12) -> np.ndarray:
    m = np.zeros((S, S), bool)
    m[y0 : y0 + h, x0 : x0 + w] = True
    return m


def one_frame_miss_covered_by_a_duplicate():
    """Object 2 (track 8) is missed in frame 5 (its mask eroded below IoU 0.5); in frame 6 a
    duplicate track 9 covers it better than track 8 does; track 8 alone from frame 7 on. The
    object keeps track 8 (CLEAR-MOT keeps the last match across the miss): no switch, 9 is a
    false positive."""
    gt, pred = [], []
    for t in range(10):
        a, b = rect(2 + t, 4), rect(30 - t, 28)
        gt.append(_frame([a, b], ["cat", "bird"], [1, 2], (S, S)))
        b_pred = rect(30 - t, 28) if t != 5 else rect(30 - t, 28, 5, 5)
        masks, names, ids = [a, b_pred], ["cat", "bird"], [7, 8]
        if t == 6:  # 9 is exact, 8 one pixel off
            masks, names, ids = [a, rect(31 - t, 28), b], ["cat", "bird", "bird"], [7, 8, 9]
        pred.append(_frame(masks, names, ids, (S, S)))
    return pred, gt


def object_absent_for_the_last_frames():
    """Object 2 leaves after frame 6 (absent from the truth in frames 7-9); its track 8 lingers
    one frame (a false positive), then ends."""
    gt, pred = [], []
    for t in range(10):
        a, b = rect(2 + t, 4), rect(30 - t, 28)
        n, k = (2 if t <= 6 else 1), (2 if t <= 7 else 1)
        gt.append(_frame([a, b][:n], ["cat", "bird"][:n], [1, 2][:n], (S, S)))
        pred.append(_frame([a, rect(31 - t, 28)][:k], ["cat", "bird"][:k], [7, 8][:k], (S, S)))
    return pred, gt


def swap_while_one_leaves():
    """30 frames; object 2 leaves after frame 13. Tracks 7 and 8 swap at frame 12: 7 follows
    object 1 until 11, then object 2 until it leaves; 8 follows object 2 until 11, then object
    1 to the end. By summed IoU (frames where both are absent ignored) 1↔7 and 2↔8 win; by
    DAVIS's mean (J+F)/2 over all frames (both absent = 1) 1↔8 and 2↔7."""
    gt, pred = [], []
    for t in range(30):
        a, b = rect(2 + t // 2, 4, 14, 12), rect(30 - t // 2, 28, 10, 12)
        n = 2 if t <= 13 else 1
        gt.append(_frame([a, b][:n], ["cat", "cat"][:n], [1, 2][:n], (S, S)))
        a_p, b_p = np.roll(a, t % 3, axis=0), np.roll(b, t % 2, axis=1)  # imperfect masks
        if t < 12:
            pred.append(_frame([a_p, b_p], ["cat", "cat"], [7, 8], (S, S)))
        elif t <= 13:
            pred.append(_frame([a_p, b_p], ["cat", "cat"], [8, 7], (S, S)))
        else:
            pred.append(_frame([a_p], ["cat"], [8], (S, S)))
    return pred, gt


def boundary_decides():
    """One object, two tracks on it in every frame: 7 = the object plus a small blob far away,
    8 = the object shrunk by one pixel. J alone prefers 7; J and F together (DAVIS) prefer 8."""
    gt, pred = [], []
    for t in range(8):
        a = rect(4 + t, 6, 20, 20)
        blob = rect(38, 38, 8, 8)
        shrunk = cv2.erode(a.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        gt.append(_frame([a], ["cat"], [1], (S, S)))
        pred.append(_frame([a | blob, shrunk], ["cat", "cat"], [7, 8], (S, S)))
    return pred, gt


CASES = {
    "clean": clean_run,
    "perturbed": perturbed_run,
    "perturbed-untracked": lambda: perturbed_run(tracked=False),
    "one-frame-miss-duplicate": one_frame_miss_covered_by_a_duplicate,
    "absent-last-frames": object_absent_for_the_last_frames,
    "swap-while-one-leaves": swap_while_one_leaves,
    "boundary-decides": boundary_decides,
}


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", list(CASES))
def test_clear_mot_equals_py_motmetrics(case: str) -> None:
    pred, gt = CASES[case]()
    got = clear_mot(pred, gt)
    want, switch_events = motmetrics_report(pred, gt)
    ours = {k: got[k] for k in MM_METRICS}
    if not got["tracked"]:  # motmetrics calls every re-match to a new detection a switch
        want["num_matches"] += want["num_switches"]
        want["num_switches"] = ours["num_switches"] = 0
        want["mota"] = ours["mota"]
        switch_events = []
    assert ours == pytest.approx(want, rel=1e-12, abs=0)
    assert [(e["frame"], e["object"]) for e in got["switch_events"]] == switch_events
    per_object = {g: o["num_switches"] for g, o in got["per_object"].items()}
    assert sum(per_object.values()) == len(switch_events)
    assert all(per_object[g] == sum(o == g for _, o in switch_events) for g in per_object)


def test_the_cases_exercise_what_they_claim() -> None:
    """The figures the cases are built for (so the oracle comparisons are not all zeros)."""
    perturbed = clear_mot(*perturbed_run())
    assert perturbed["num_switches"] >= 2 and perturbed["num_fragmentations"] >= 3
    assert perturbed["num_misses"] > 0 and perturbed["num_false_positives"] > 0
    miss = clear_mot(*one_frame_miss_covered_by_a_duplicate())
    assert (miss["num_switches"], miss["num_fragmentations"], miss["num_misses"]) == (0, 1, 1)
    assert miss["num_false_positives"] == 2  # the eroded mask in frame 5, the duplicate in 6
    absent = clear_mot(*object_absent_for_the_last_frames())
    assert (absent["num_fragmentations"], absent["num_false_positives"]) == (0, 1)
    assert clear_mot(*swap_while_one_leaves())["num_switches"] == 2
    pred, gt = boundary_decides()
    (with_blob, shrunk), truth = pred[0][0], gt[0][0][0]
    assert np.count_nonzero(with_blob & truth) / np.count_nonzero(with_blob | truth) > np.mean(
        shrunk[truth]
    )  # J prefers track 7, yet the pairing (J and F) is track 8
    assert evaluate_instances(pred, gt, ["cat"])["objects"]["1"]["track"] == 8


@pytest.mark.parametrize("case", list(CASES))
def test_per_object_j_and_f_equal_davis_unsupervised(case: str) -> None:
    pred, gt = CASES[case]()
    report = evaluate_instances(pred, gt, THINGS)
    if not report["tracked"]:  # paired in each frame alone: DAVIS on that frame, detections
        gt_ids = [int(g) for g in report["objects"]]  # as one-frame tracks
        for t, (pm, names, _) in enumerate(pred):
            one = davis_unsupervised([(pm, names, np.arange(len(pm)))], [gt[t]], gt_ids)
            for gid, obj in report["objects"].items():
                _, j, f = one[int(gid)]
                assert (obj["J_per_frame"][t], obj["F_per_frame"][t]) == (j[0], f[0])
        return
    reference = davis_unsupervised(pred, gt)
    for gid, obj in report["objects"].items():
        track, j, f = reference[int(gid)]
        assert (obj["track"], obj["J_per_frame"], obj["F_per_frame"]) == (track, j, f)
        assert obj["J"] == pytest.approx(np.mean(j), rel=1e-15)
        assert obj["F"] == pytest.approx(np.mean(f), rel=1e-15)


def test_swap_case_pairs_as_davis_not_by_summed_iou() -> None:
    pred, gt = swap_while_one_leaves()
    report = evaluate_instances(pred, gt, ["cat"])
    assert {g: o["track"] for g, o in report["objects"].items()} == {"1": 8, "2": 7}
    # the pairing the module used to make: the largest summed IoU of frames with something
    summed = np.zeros((2, 2))
    for (gm, _, gids), (pm, _, pids) in zip(gt, pred, strict=True):
        for gi, pj in itertools.product(range(len(gm)), range(len(pm))):
            inter = np.count_nonzero(gm[gi] & pm[pj])
            summed[gids[gi] - 1, pids[pj] - 7] += inter / np.count_nonzero(gm[gi] | pm[pj])
    rows, cols = linear_sum_assignment(-summed)
    assert {int(r) + 1: int(c) + 7 for r, c in zip(rows, cols, strict=True)} == {1: 7, 2: 8}
    # object 2 after it left: both it and its track (7) are absent, a perfect frame each
    assert report["objects"]["2"]["J_per_frame"][14:] == [1.0] * 16
