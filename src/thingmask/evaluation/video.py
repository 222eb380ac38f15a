"""Video metrics: DAVIS region J and boundary F per object and on the foreground, CLEAR-MOT
identity switches and fragmentations, and a temporal-stability figure. Pure numpy functions.

Inputs, for ground truth and predictions alike, are per frame ``(masks (N, H, W) bool,
class_names (N,) str, ids (N,) int64)`` — the format of
:func:`thingmask.datasets.synthetic.load_video_gt`. Prediction ids are track ids (-1 =
untracked). Class names, never class ids.

Definitions (the docs of every figure in the JSON report):

* **J** (region similarity, DAVIS): mask IoU; a frame where both masks are empty scores 1.
  Per object as DAVIS 2017's unsupervised evaluation (``davis2017-evaluation``,
  ``_evaluate_unsupervised``): each ground-truth object is paired with one predicted track for
  the whole video — the optimal assignment (``scipy.optimize.linear_sum_assignment``) of
  objects to tracks (padded with empty tracks when there are fewer tracks than objects) by the
  pair's mean over ALL frames of J, plus its mean of F, halved (frames where both are absent
  score 1) — and J is averaged over all frames. (DAVIS's semi-supervised task drops the first
  and last frame; the unsupervised one, followed here, keeps every frame.) Without track ids
  the pairing is redone in every frame (identity errors are then invisible to J). The video's
  ``J`` is the mean over objects; ``fg_J`` the mean over frames of the IoU of the union of
  predicted masks with the union of ground-truth masks (the cut-out as a whole).
* **F** (boundary F-measure, DAVIS): :func:`thingmask.evaluation.masks.boundary_f` with
  tolerance 0.008 of the image diagonal, rounded up (2 px at 160 x 160, 18 px at 1920 x
  1080); per object on the same pairing as J.
* **CLEAR-MOT** (Bernardin & Stiefelhagen 2008), computed as py-motmetrics'
  ``MOTAccumulator`` does with distance 1 - mask IoU and max distance ``1 - match_iou`` (0.5),
  under py-motmetrics' names. Per frame: an object keeps the track it was last matched to —
  in any earlier frame, across frames where it was missed — while that pair has IoU >=
  ``match_iou``; the others are matched by minimum total distance. ``num_switches``: matches to
  another track than the object's last one; ``num_matches`` the other matches;
  ``num_fragmentations``: an object's matched→missed transitions between its first and last
  match; ``mota`` = 1 - (num_misses + num_false_positives + num_switches) / num_objects
  (ground-truth instances); ``motp`` = mean distance 1 - IoU of all matches and switches (lower
  is better). Untracked detections (id -1) are one-frame hypotheses; a video with no track ids
  at all has no switches. ``class_errors``: matches whose class differs from the truth;
  ``track_class_changes``: how often a track's class changes from one appearance to the next.
* **T** (temporal instability, lower is better, 0 = ideal): per object and pair of consecutive
  frames in which it is visible, ``|(1 - IoU(P[t-1], P[t])) - (1 - IoU(G[t-1], G[t]))|``: how
  much more (or less) the predicted mask changes than the true one — flicker, holes that come
  and go, one-frame dropouts. Averaged over pairs; ``fg_T`` the same on the foreground unions.
* **vanished**: frames in which a visible object (at least 0.25 % of the frame) has less than
  half of its pixels in the predicted foreground; **dropouts**: those among them where the
  object is covered in the frames just before and after (a one-frame disappearance).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from thingmask.evaluation.masks import (
    BOUNDARY_TOLERANCE,
    boundary_f,
    boundary_f_matrix,
    boundary_tolerance_px,
    mask_iou,
)

__all__ = [
    "FrameObjects",
    "clear_mot",
    "evaluate_foreground",
    "evaluate_instances",
    "filter_frames",
    "instability",
]

FrameObjects = tuple[np.ndarray, Sequence[str], np.ndarray]
MATCH_IOU = 0.5  # CLEAR-MOT's usual overlap for a match
VISIBLE_FRACTION = 0.0025  # smallest object (share of the frame) the vanished count looks at


def filter_frames(frames: Sequence[FrameObjects], things: Iterable[str]) -> list[FrameObjects]:
    """Keep the instances whose class is one of ``things`` in every frame."""
    wanted = set(things)
    out: list[FrameObjects] = []
    for masks, names, ids in frames:
        sel = np.array([n in wanted for n in names], bool).reshape(-1)
        kept = [str(n) for n in names if n in wanted]
        out.append((np.asarray(masks, bool)[sel], kept, np.asarray(ids, np.int64)[sel]))
    return out


def _union(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(masks.any(axis=0)) if len(masks) else np.zeros(shape, bool)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of two mask stacks; empty stacks give an empty matrix."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.asarray(mask_iou(a, b), np.float64)


def _assign_like_motmetrics(dist: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-distance assignment where NaN marks a forbidden pair, exactly as py-motmetrics'
    scipy solver does it (``motmetrics.lap.lsa_solve_scipy``): forbidden pairs get a cost large
    enough that the most allowed pairs are made first, then they are dropped from the result."""
    from scipy.optimize import linear_sum_assignment

    valid = np.isfinite(dist)
    if not valid.any():
        return []
    c = np.abs(dist[valid]).max() + 1
    costs = np.where(valid, dist, 2 * min(dist.shape) * c + 1)
    rows, cols = linear_sum_assignment(costs)
    return [(int(r), int(k)) for r, k in zip(rows, cols, strict=True) if valid[r, k]]


class _ClearMot:
    """CLEAR-MOT event counting, one :meth:`update` per frame; the algorithm of py-motmetrics'
    ``MOTAccumulator.update`` (Bernardin & Stiefelhagen 2008), with distance 1 - mask IoU.

    Why not py-motmetrics itself: its last release (1.4.0, 2022) is unmaintained, parts of it
    fail on NumPy 2 (``np.asfarray`` in ``motmetrics.distances``) and it would add pandas to the
    runtime for ~60 lines of bookkeeping. The tests run py-motmetrics as the oracle instead
    (tests/test_video_metrics_references.py): switches, fragmentations, matches, misses, false
    positives, MOTA and MOTP are equal on every case there.
    """

    def __init__(self, max_distance: float, count_switches: bool) -> None:
        self.max_distance = max_distance
        self.count_switches = count_switches
        self.last_match: dict[int, int] = {}  # gt id → hypothesis of its latest match, kept
        # across frames where it is missed or absent (MOTAccumulator.m)
        self.interrupted: dict[int, bool] = {}  # matched before, missed since (fragmentations)
        self.per_object: dict[int, dict[str, int]] = {}
        self.counts = dict.fromkeys(
            ("num_objects", "num_matches", "num_switches", "num_misses"), 0
        ) | dict.fromkeys(("num_false_positives", "num_fragmentations"), 0)
        self.distances: list[float] = []
        self.switch_events: list[dict[str, int]] = []

    def update(self, t: int, gids: np.ndarray, hids: np.ndarray, iou: np.ndarray) -> dict[int, int]:
        """One frame: ``gids (N,)``, hypothesis ids ``hids (M,)`` (unique per untracked
        detection), ``iou (N, M)`` → the matches ``{gt row: hypothesis column}``."""
        dist = 1.0 - iou
        dist[dist > self.max_distance] = np.nan  # as motmetrics' distance helpers: no pair
        for gid in (int(g) for g in gids):
            self.per_object.setdefault(gid, {"num_switches": 0, "num_fragmentations": 0})
        matched: dict[int, int] = {}
        switches = 0
        if dist.size:
            used = np.zeros(len(hids), bool)
            for gi, gid in enumerate(int(g) for g in gids):  # 1. keep established pairs
                if gid not in self.last_match:
                    continue
                js = np.flatnonzero(~used & (hids == self.last_match[gid]))
                if len(js) and np.isfinite(dist[gi, js[0]]):  # (only the first, as motmetrics)
                    matched[gi], used[js[0]] = int(js[0]), True
            rest = dist.copy()  # 2. the others: minimum total distance
            rest[list(matched), :] = np.nan
            rest[:, used] = np.nan
            for gi, pj in _assign_like_motmetrics(rest):
                gid, hid = int(gids[gi]), int(hids[pj])
                prev = self.last_match.get(gid)
                if self.count_switches and prev is not None and prev != hid:
                    switches += 1
                    self.per_object[gid]["num_switches"] += 1
                    self.switch_events.append(
                        {"frame": t, "object": gid, "from": max(prev, -1), "to": max(hid, -1)}
                    )
                matched[gi] = pj
        for gi, gid in enumerate(int(g) for g in gids):
            if gi not in matched:  # a miss after a match opens a gap (motmetrics' count)
                self.interrupted[gid] = gid in self.last_match
                continue
            if self.interrupted.get(gid, False):  # back after a miss: one fragmentation
                self.per_object[gid]["num_fragmentations"] += 1
                self.counts["num_fragmentations"] += 1
            self.interrupted[gid] = False
            self.last_match[gid] = int(hids[matched[gi]])
            self.distances.append(float(dist[gi, matched[gi]]))
        self.counts["num_objects"] += len(gids)
        self.counts["num_matches"] += len(matched) - switches
        self.counts["num_switches"] += switches
        self.counts["num_misses"] += len(gids) - len(matched)
        self.counts["num_false_positives"] += len(hids) - len(matched)
        return matched


def clear_mot(
    pred: Sequence[FrameObjects], gt: Sequence[FrameObjects], match_iou: float = MATCH_IOU
) -> dict[str, Any]:
    """CLEAR-MOT figures (see the module docstring) of display-thing-filtered frames.

    Returns py-motmetrics' names: ``num_objects``, ``num_matches`` (switches not included),
    ``num_switches``, ``num_misses``, ``num_false_positives``, ``num_fragmentations``, ``mota``,
    ``motp`` (mean distance 1 - IoU of matches and switches); ``mota``/``motp`` are None where
    py-motmetrics divides by zero (no ground truth / no match). Also ``tracked``,
    ``class_errors``, ``track_class_changes``, ``per_object`` and ``switch_events``.
    """
    tracked = any(bool((ids >= 0).any()) for _, _, ids in pred)
    mot = _ClearMot(1.0 - match_iou, count_switches=tracked)
    fresh = itertools.count(-2, -1)  # a hypothesis id for each untracked detection
    track_class: dict[int, str] = {}
    class_errors = track_class_changes = 0
    for t, ((gm, gnames, gids), (pm, pnames, pids)) in enumerate(zip(gt, pred, strict=True)):
        # untracked detections (id -1, or all of them without tracking): one-frame hypotheses
        hids = np.array([p if tracked and p >= 0 else next(fresh) for p in pids], np.int64)
        matched = mot.update(t, np.asarray(gids, np.int64), hids, _iou(gm, pm))
        class_errors += sum(pnames[pj] != gnames[gi] for gi, pj in matched.items())
        for name, tid in zip(pnames, (int(p) for p in pids), strict=True):
            if tid >= 0:
                track_class_changes += int(track_class.get(tid, name) != name)
                track_class[tid] = name
    c = mot.counts
    errors = c["num_misses"] + c["num_false_positives"] + c["num_switches"]
    return {
        **c,
        "mota": 1.0 - errors / c["num_objects"] if c["num_objects"] else None,
        "motp": float(np.mean(mot.distances)) if mot.distances else None,
        "tracked": tracked,
        "class_errors": class_errors,
        "track_class_changes": track_class_changes,
        "per_object": mot.per_object,
        "switch_events": mot.switch_events,
    }


def instability(pred: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> list[float]:
    """Per pair of consecutive frames in which ``gt`` is not empty: the excess mask change
    ``|(1 - IoU(P[t-1], P[t])) - (1 - IoU(G[t-1], G[t]))|`` (``T`` in the module docstring)."""
    out = []
    for t in range(1, len(gt)):
        if gt[t - 1].any() and gt[t].any():
            dp = 1.0 - _pair_iou(pred[t - 1], pred[t])
            dg = 1.0 - _pair_iou(gt[t - 1], gt[t])
            out.append(abs(dp - dg))
    return out


def _pair_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _by_id(frame: FrameObjects, wanted: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """``(len(wanted), H, W)`` bool: per id the union of the frame's instances with that id
    (empty when it is absent; a negative id in ``wanted`` is always empty)."""
    masks, _, ids = frame
    out = np.zeros((len(wanted), *shape), bool)
    for k, w in enumerate(wanted):
        if w >= 0:
            sel = np.flatnonzero(ids == w)
            if len(sel):
                out[k] = masks[sel].any(axis=0)
    return out


Pairing = tuple[
    dict[int, int], dict[int, list[float]], dict[int, list[float]], dict[int, list[np.ndarray]]
]


def _pair_objects(
    pred: Sequence[FrameObjects],
    gt: Sequence[FrameObjects],
    gt_ids: list[int],
    tracked: bool,
    tolerance: float,
) -> Pairing:
    """Pair each ground-truth object with a predicted track as DAVIS 2017's unsupervised
    evaluation does (``davis2017/evaluation.py``, ``_evaluate_unsupervised``).

    The proposals are the tracks in ascending id order, padded with empty ones up to the number
    of objects; J and F of every (proposal, object, frame), the score of a pair is the mean over
    ALL frames of J plus the mean of F, halved (a frame where both are empty scores 1), and
    ``linear_sum_assignment(-score)`` picks the pairing. Untracked predictions: the same in every
    frame on its own, the detections being the proposals. Returns ``(object → track, -1 for an
    empty proposal; object → J per frame; → F per frame; → paired mask per frame)``.
    """
    from scipy.optimize import linear_sum_assignment

    shape = gt[0][0].shape[1:]
    js: dict[int, list[float]] = {}
    fs: dict[int, list[float]] = {}
    paired: dict[int, list[np.ndarray]] = {g: [] for g in gt_ids}
    if not gt_ids:
        return {}, js, fs, paired
    if not tracked:
        for g in gt_ids:
            js[g], fs[g] = [], []
        for g_frame, (pm, _, _) in zip(gt, pred, strict=True):
            truth = _by_id(g_frame, gt_ids, shape)
            pad = max(0, len(gt_ids) - len(pm))
            props = np.concatenate([pm, np.zeros((pad, *shape), bool)]) if pad else pm
            j, f = _iou(props, truth), boundary_f_matrix(props, truth, tolerance)
            for r, c in zip(*linear_sum_assignment(-(j + f) / 2), strict=True):
                js[gt_ids[c]].append(float(j[r, c]))
                fs[gt_ids[c]].append(float(f[r, c]))
                paired[gt_ids[c]].append(props[r])
        return {}, js, fs, paired
    tracks = sorted({int(i) for _, _, ids in pred for i in ids if i >= 0})
    props_ids = tracks + [-1] * max(0, len(gt_ids) - len(tracks))  # DAVIS's zero padding
    j = np.zeros((len(props_ids), len(gt_ids), len(gt)))
    f = np.zeros_like(j)
    for t, (g_frame, p_frame) in enumerate(zip(gt, pred, strict=True)):
        truth, props = _by_id(g_frame, gt_ids, shape), _by_id(p_frame, props_ids, shape)
        j[:, :, t] = _iou(props, truth)
        f[:, :, t] = boundary_f_matrix(props, truth, tolerance)
    rows, cols = linear_sum_assignment(-(np.mean(j, axis=2) + np.mean(f, axis=2)) / 2)
    assignment = {gt_ids[c]: props_ids[r] for r, c in zip(rows, cols, strict=True)}
    for r, c in zip(rows, cols, strict=True):
        js[gt_ids[c]], fs[gt_ids[c]] = j[r, c].tolist(), f[r, c].tolist()
    chosen = [assignment[g] for g in gt_ids]
    for p_frame in pred:
        for g, mask in zip(gt_ids, _by_id(p_frame, chosen, shape), strict=True):
            paired[g].append(mask)
    return assignment, js, fs, paired


def _covered(gt_mask: np.ndarray, fg: np.ndarray) -> bool:
    area = np.count_nonzero(gt_mask)
    return bool(area > 0 and np.count_nonzero(gt_mask & fg) >= 0.5 * area)


def evaluate_foreground(
    pred_fg: Sequence[np.ndarray],
    gt_fg: Sequence[np.ndarray],
    tolerance: float = BOUNDARY_TOLERANCE,
) -> dict[str, Any]:
    """Foreground ``fg_J``, ``fg_F``, ``fg_T`` and per-frame lists for ``(H, W)`` bool unions."""
    if len(pred_fg) != len(gt_fg):
        raise ValueError(f"{len(pred_fg)} predicted frames but {len(gt_fg)} ground-truth frames")
    if not gt_fg:
        raise ValueError("no frames to evaluate")
    js = [_pair_iou(p, g) for p, g in zip(pred_fg, gt_fg, strict=True)]
    fs = [boundary_f(p, g, tolerance) for p, g in zip(pred_fg, gt_fg, strict=True)]
    ts = instability(pred_fg, gt_fg)
    return {
        "frames": len(gt_fg),
        "boundary_tolerance": tolerance,
        "boundary_tolerance_px": boundary_tolerance_px(gt_fg[0].shape, tolerance),
        "fg_J": float(np.mean(js)),
        "fg_F": float(np.mean(fs)),
        "fg_T": float(np.mean(ts)) if ts else 0.0,
        "per_frame": {"fg_J": js, "fg_F": fs},
    }


def evaluate_instances(
    pred: Sequence[FrameObjects],
    gt: Sequence[FrameObjects],
    display_things: Iterable[str],
    match_iou: float = MATCH_IOU,
    tolerance: float = BOUNDARY_TOLERANCE,
) -> dict[str, Any]:
    """Every figure of the module docstring for per-instance predictions (the JSON report).

    Both sequences are filtered to ``display_things`` first; they must have the same number of
    frames and the same frame size.
    """
    things = list(display_things)
    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predicted frames but {len(gt)} ground-truth frames")
    if not gt:
        raise ValueError("no frames to evaluate")
    gt, pred = filter_frames(gt, things), filter_frames(pred, things)
    shape = gt[0][0].shape[1:]
    for t, (pm, _, _) in enumerate(pred):
        if pm.shape[1:] != shape:
            raise ValueError(f"frame {t}: predicted masks are {pm.shape[1:]}, ground truth {shape}")
    fg_pred = [_union(m, shape) for m, _, _ in pred]
    report = {
        "display_things": things,
        **evaluate_foreground(fg_pred, [_union(m, shape) for m, _, _ in gt], tolerance),
    }
    mot = clear_mot(pred, gt, match_iou)
    gt_ids = sorted({int(i) for _, _, ids in gt for i in ids})
    classes = {int(i): str(n) for _, names, ids in gt for n, i in zip(names, ids, strict=True)}
    assignment, j_frames, f_frames, paired = _pair_objects(
        pred, gt, gt_ids, mot["tracked"], tolerance
    )
    true: dict[int, list[np.ndarray]] = {g: [] for g in gt_ids}
    for frame in gt:
        for g, mask in zip(gt_ids, _by_id(frame, gt_ids, shape), strict=True):
            true[g].append(mask)
    objects: dict[str, Any] = {}
    vanished: list[dict[str, int]] = []
    min_area = VISIBLE_FRACTION * shape[0] * shape[1]
    for g in gt_ids:
        js, fs = j_frames[g], f_frames[g]
        ts = instability(paired[g], true[g])
        covered = [_covered(m, fg) for m, fg in zip(true[g], fg_pred, strict=True)]
        for t, m in enumerate(true[g]):
            if np.count_nonzero(m) >= min_area and not covered[t]:
                one_frame = 0 < t < len(covered) - 1 and covered[t - 1] and covered[t + 1]
                vanished.append({"frame": t, "object": g, "dropout": int(one_frame)})
        objects[str(g)] = {
            "class": classes[g],
            "track": assignment[g] if mot["tracked"] else None,
            "frames_visible": sum(bool(m.any()) for m in true[g]),
            "J": float(np.mean(js)),
            "F": float(np.mean(fs)),
            "T": float(np.mean(ts)) if ts else 0.0,
            **mot["per_object"][g],
            "J_per_frame": js,
            "F_per_frame": fs,
        }

    def mean(key: str) -> float:
        return float(np.mean([o[key] for o in objects.values()])) if objects else 1.0

    all_t = [v for g in gt_ids for v in instability(paired[g], true[g])]
    report.update(
        mode="instances",
        match_iou=match_iou,
        J=mean("J"),
        F=mean("F"),
        T=float(np.mean(all_t)) if all_t else 0.0,
        **{k: v for k, v in mot.items() if k not in ("per_object", "switch_events")},
        vanished=len(vanished),
        dropouts=sum(v["dropout"] for v in vanished),
        objects=objects,
        events={"switches": mot["switch_events"], "vanished": vanished},
    )
    report["JF"] = (report["J"] + report["F"]) / 2
    return report
