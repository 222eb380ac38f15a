"""Video metrics: DAVIS region J and boundary F per object and on the foreground, CLEAR-MOT
identity switches and fragmentations, and a temporal-stability figure. Pure numpy functions.

Inputs, for ground truth and predictions alike, are per frame ``(masks (N, H, W) bool,
class_names (N,) str, ids (N,) int64)`` — the format of
:func:`thingmask.datasets.synthetic.load_video_gt`. Prediction ids are track ids (-1 =
untracked). Class names, never class ids.

Definitions (the docs of every figure in the JSON report):

* **J** (region similarity, DAVIS): mask IoU; a frame where both masks are empty scores 1.
  Per object: each ground-truth object is paired with one predicted track for the whole video,
  the pairing that maximises the summed per-frame IoU (optimal assignment, as the DAVIS 2017
  unsupervised benchmark does), and J is averaged over all frames of the video (DAVIS). Without
  track ids the pairing is redone in every frame (identity errors are then invisible to J).
  The video's ``J`` is the mean over objects; ``fg_J`` the mean over frames of the IoU of the
  union of predicted masks with the union of ground-truth masks (the cut-out as a whole).
* **F** (boundary F-measure, DAVIS): :func:`thingmask.evaluation.masks.boundary_f` with tolerance
  0.008 of the image diagonal, rounded up (2 px at 160 x 160, 18 px at 1920 x 1080).
* **id_switches / fragmentations** (CLEAR-MOT): per frame, ground-truth objects and predicted
  instances are matched one-to-one by mask IoU >= ``match_iou`` (0.5): a correspondence of the
  previous frame that is still valid is kept, the rest are assigned optimally
  (``scipy.optimize.linear_sum_assignment``). An id switch is a match whose track id differs from
  the one the object was last matched to. A fragmentation is a visible object going from
  matched to unmatched and later matched again (py-motmetrics' count). ``mota`` = 1 - (misses +
  false positives + id switches) / ground-truth instances; ``motp`` = mean IoU of the matches.
  ``class_errors``: matches whose class differs from the truth; ``track_class_changes``: how
  often a track's class changes from one appearance to the next.
* **T** (temporal instability, lower is better, 0 = ideal): per object and pair of consecutive
  frames in which it is visible, ``|(1 - IoU(P[t-1], P[t])) - (1 - IoU(G[t-1], G[t]))|``: how
  much more (or less) the predicted mask changes than the true one — flicker, holes that come
  and go, one-frame dropouts. Averaged over pairs; ``fg_T`` the same on the foreground unions.
* **vanished**: frames in which a visible object (at least 0.25 % of the frame) has less than
  half of its pixels in the predicted foreground; **dropouts**: those among them where the
  object is covered in the frames just before and after (a one-frame disappearance).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from thingmask.evaluation.masks import (
    BOUNDARY_TOLERANCE,
    boundary_f,
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


def _match(
    iou: np.ndarray,
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    previous: dict[int, int],
    min_iou: float,
) -> list[tuple[int, int]]:
    """CLEAR-MOT matching of one frame → ``[(gt row, pred row)]``."""
    from scipy.optimize import linear_sum_assignment

    pairs: list[tuple[int, int]] = []
    used_g: set[int] = set()
    used_p: set[int] = set()
    for gi, gid in enumerate(gt_ids):  # keep last frame's correspondences that still hold
        tid = previous.get(int(gid), -1)
        if tid < 0:
            continue
        for pj in np.flatnonzero(pred_ids == tid):
            if pj not in used_p and iou[gi, pj] >= min_iou:
                pairs.append((gi, int(pj)))
                used_g.add(gi)
                used_p.add(int(pj))
                break
    rows = [g for g in range(iou.shape[0]) if g not in used_g]
    cols = [p for p in range(iou.shape[1]) if p not in used_p]
    if rows and cols:
        sub = iou[np.ix_(rows, cols)]
        cost = np.where(sub >= min_iou, 1.0 - sub, 1e6)  # invalid pairs: never chosen if avoidable
        for r, c in zip(*linear_sum_assignment(cost), strict=True):
            if sub[r, c] >= min_iou:
                pairs.append((rows[r], cols[c]))
    return pairs


def clear_mot(
    pred: Sequence[FrameObjects], gt: Sequence[FrameObjects], match_iou: float = MATCH_IOU
) -> dict[str, Any]:
    """CLEAR-MOT counts (see the module docstring) for display-thing-filtered frames."""
    tracked = any(bool((ids >= 0).any()) for _, _, ids in pred)
    previous: dict[int, int] = {}  # gt id → track id of the last frame's match
    last_track: dict[int, int] = {}  # gt id → track id of its most recent match (any frame)
    was_tracked: dict[int, bool] = {}
    interrupted: dict[int, bool] = {}
    per_object: dict[int, dict[str, int]] = {}
    track_class: dict[int, str] = {}
    counts = dict.fromkeys(
        ("gt_instances", "matches", "misses", "false_positives", "id_switches", "fragmentations"), 0
    )
    counts |= {"class_errors": 0, "track_class_changes": 0}
    ious: list[float] = []
    switches: list[dict[str, int]] = []
    for t, ((gm, gnames, gids), (pm, pnames, pids)) in enumerate(zip(gt, pred, strict=True)):
        iou = _iou(gm, pm)
        pairs = _match(iou, gids, pids, previous if tracked else {}, match_iou)
        counts["gt_instances"] += len(gm)
        counts["matches"] += len(pairs)
        counts["misses"] += len(gm) - len(pairs)
        counts["false_positives"] += len(pm) - len(pairs)
        matched = {gi: pj for gi, pj in pairs}
        previous = {}
        for gi, gid in enumerate(int(g) for g in gids):
            obj = per_object.setdefault(gid, {"id_switches": 0, "fragmentations": 0})
            if gi not in matched:
                interrupted[gid] = was_tracked.get(gid, False)
                continue
            pj = matched[gi]
            ious.append(float(iou[gi, pj]))
            counts["class_errors"] += int(pnames[pj] != gnames[gi])
            if interrupted.get(gid, False):
                counts["fragmentations"] += 1
                obj["fragmentations"] += 1
            interrupted[gid], was_tracked[gid] = False, True
            tid = int(pids[pj])
            if tracked and tid >= 0:
                if gid in last_track and last_track[gid] != tid:
                    counts["id_switches"] += 1
                    obj["id_switches"] += 1
                    switches.append({"frame": t, "object": gid, "from": last_track[gid], "to": tid})
                last_track[gid] = previous[gid] = tid
        for name, tid in zip(pnames, (int(p) for p in pids), strict=True):
            if tid >= 0:
                counts["track_class_changes"] += int(track_class.get(tid, name) != name)
                track_class[tid] = name
    n_gt = counts["gt_instances"]
    return {
        **counts,
        "tracked": tracked,
        "mota": 1.0 - (counts["misses"] + counts["false_positives"] + counts["id_switches"]) / n_gt
        if n_gt
        else 1.0,
        "motp": float(np.mean(ious)) if ious else 0.0,
        "per_object": per_object,
        "switch_events": switches,
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


def _assign_tracks(
    pred: Sequence[FrameObjects], gt_ids: list[int], gt: Sequence[FrameObjects]
) -> dict[int, int]:
    """Whole-video pairing gt id → track id maximising the summed per-frame IoU."""
    from scipy.optimize import linear_sum_assignment

    track_ids = sorted({int(i) for _, _, ids in pred for i in ids if i >= 0})
    if not gt_ids or not track_ids:
        return {}
    gi_of = {g: i for i, g in enumerate(gt_ids)}
    ti_of = {t: i for i, t in enumerate(track_ids)}
    score = np.zeros((len(gt_ids), len(track_ids)))
    for (gm, _, gids), (pm, _, pids) in zip(gt, pred, strict=True):
        iou = _iou(gm, pm)
        for gi, g in enumerate(gids):
            for pj, p in enumerate(pids):
                if p >= 0:
                    score[gi_of[int(g)], ti_of[int(p)]] += iou[gi, pj]
    rows, cols = linear_sum_assignment(-score)
    return {gt_ids[r]: track_ids[c] for r, c in zip(rows, cols, strict=True) if score[r, c] > 0}


def _object_masks(
    pred: Sequence[FrameObjects], gt: Sequence[FrameObjects], gt_ids: list[int], tracked: bool
) -> tuple[dict[int, list[np.ndarray]], dict[int, list[np.ndarray]], dict[int, int]]:
    """Per gt id, its true and its paired predicted mask in every frame."""
    from scipy.optimize import linear_sum_assignment

    shape = gt[0][0].shape[1:]
    empty = np.zeros(shape, bool)
    assignment = _assign_tracks(pred, gt_ids, gt) if tracked else {}
    true: dict[int, list[np.ndarray]] = {g: [] for g in gt_ids}
    paired: dict[int, list[np.ndarray]] = {g: [] for g in gt_ids}
    for (gm, _, gids), (pm, _, pids) in zip(gt, pred, strict=True):
        row = {int(g): gi for gi, g in enumerate(gids)}
        if tracked:
            picks = {
                g: [k for k, p in enumerate(pids) if p == assignment.get(g, -2)] for g in gt_ids
            }
            chosen = {g: _union(pm[ks], shape) if ks else empty for g, ks in picks.items()}
        else:  # untracked: the best pairing in each frame
            iou = _iou(gm, pm)
            chosen = {g: empty for g in gt_ids}
            if iou.size:
                for r, c in zip(*linear_sum_assignment(-iou), strict=True):
                    chosen[int(gids[r])] = pm[c]
        for g in gt_ids:
            true[g].append(gm[row[g]] if g in row else empty)
            paired[g].append(chosen[g])
    return true, paired, assignment


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
    true, paired, assignment = _object_masks(pred, gt, gt_ids, mot["tracked"])
    objects: dict[str, Any] = {}
    vanished: list[dict[str, int]] = []
    min_area = VISIBLE_FRACTION * shape[0] * shape[1]
    for g in gt_ids:
        js = [_pair_iou(p, q) for p, q in zip(paired[g], true[g], strict=True)]
        fs = [boundary_f(p, q, tolerance) for p, q in zip(paired[g], true[g], strict=True)]
        ts = instability(paired[g], true[g])
        covered = [_covered(m, fg) for m, fg in zip(true[g], fg_pred, strict=True)]
        for t, m in enumerate(true[g]):
            if np.count_nonzero(m) >= min_area and not covered[t]:
                one_frame = 0 < t < len(covered) - 1 and covered[t - 1] and covered[t + 1]
                vanished.append({"frame": t, "object": g, "dropout": int(one_frame)})
        objects[str(g)] = {
            "class": classes[g],
            "track": assignment.get(g, -1) if mot["tracked"] else None,
            "frames_visible": sum(bool(m.any()) for m in true[g]),
            "J": float(np.mean(js)),
            "F": float(np.mean(fs)),
            "T": float(np.mean(ts)) if ts else 0.0,
            **mot["per_object"].get(g, {"id_switches": 0, "fragmentations": 0}),
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
        events={"id_switches": mot["switch_events"], "vanished": vanished},
    )
    report["JF"] = (report["J"] + report["F"]) / 2
    return report
