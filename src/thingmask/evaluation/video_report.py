"""``evaluate_video(pred, gt)``: a video's predictions against ground truth, as a JSON report and
a plot of J over time. The thin I/O shell around :mod:`thingmask.evaluation.video`.

PRED is either

* thingmask's per-frame instance export, ``<stem>.rle.jsonl`` (``export_rle``; COCO-RLE masks,
  one JSON line per frame, with ``track_id`` when tracking was on; format in
  :mod:`thingmask.jobs.exports`) — every figure of :mod:`thingmask.evaluation.video`; or
* a cut-out video (or a folder of RGBA PNGs, or the black/white ``_mask.mp4``) — foreground
  ``fg_J``, ``fg_F``, ``fg_T`` only. The foreground is read back approximately: alpha > 127 for
  PNG frames, else pixels more than 40/255 away from the canvas colour recorded in the metadata
  JSON beside the video (black when there is none). Only the plain canvases (black, white,
  color) can be read; other canvases need the RLE export.

GT is the synthetic generator's ``demo_gt.npz``
(:func:`thingmask.datasets.synthetic.load_video_gt`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.datasets.synthetic import load_video_gt
from thingmask.evaluation.video import (
    MATCH_IOU,
    FrameObjects,
    evaluate_foreground,
    evaluate_instances,
    filter_frames,
)
from thingmask.io_utils import atomic_path, atomic_write_json

__all__ = [
    "evaluate_video",
    "plot_j_over_time",
    "read_cutout_foreground",
    "read_rle_jsonl",
    "report_stem",
    "report_text",
    "save_report",
]

log = logging.getLogger(__name__)

CANVAS_DISTANCE = 40  # 0..255: a cut-out pixel this far from the canvas colour is foreground
_PLAIN_CANVAS = {"black": (0, 0, 0), "white": (255, 255, 255)}


def read_rle_jsonl(path: str | Path, n_frames: int | None = None) -> list[FrameObjects]:
    """Read an ``export_rle`` file → per frame ``(masks (N, H, W) bool, class_names, track_ids)``.

    Frames are placed by their ``frame`` index; frames the file lacks (undecodable source
    frames) have no instances. ``n_frames`` (default: last index + 1) sets the length.
    """
    from pycocotools import mask as mask_utils

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prediction file not found (an export_rle .rle.jsonl)")
    rows: dict[int, FrameObjects] = {}
    size: tuple[int, int] | None = None
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                h, w, index = int(row["height"]), int(row["width"]), int(row["frame"])
                instances = row["instances"]
                masks = np.zeros((len(instances), h, w), bool)
                for k, inst in enumerate(instances):
                    rle = {"size": [h, w], "counts": inst["rle"]["counts"].encode("ascii")}
                    masks[k] = mask_utils.decode(rle).astype(bool)
                names = [str(inst["class"]) for inst in instances]
                ids = np.array([int(inst.get("track_id", -1)) for inst in instances], np.int64)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{line_no}: not a thingmask RLE export line ({exc}); pass the "
                    "<stem>.rle.jsonl written with export_rle=true"
                ) from None
            if size is not None and (h, w) != size:
                raise ValueError(f"{path}:{line_no}: frame size {(h, w)} differs from {size}")
            size = (h, w)
            rows[index] = (masks, names, ids)
    if size is None:
        raise ValueError(f"{path}: no frames in the file; was the video job finished?")
    n = max(rows) + 1 if n_frames is None else n_frames
    if max(rows) >= n:
        raise ValueError(f"{path}: frame {max(rows)} but the ground truth has only {n} frames")
    missing = n - len(rows)
    if missing:
        log.warning("%s: %d of %d frames are missing; they count as empty", path, missing, n)
    empty: FrameObjects = (np.zeros((0, *size), bool), [], np.zeros(0, np.int64))
    return [rows.get(t, empty) for t in range(n)]


def _job_settings(pred: Path) -> dict[str, Any] | None:
    """The settings the video job recorded in its metadata JSON beside ``pred`` (or None)."""
    name = pred.name
    for suffix in (".rle.jsonl", "_mask.mp4"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = name if pred.is_dir() else pred.stem
    try:
        settings = json.loads((pred.parent / f"{name}.json").read_text(encoding="utf-8"))
        return dict(settings["job"]["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _canvas_of(video: Path) -> tuple[int, int, int]:
    """The BGR canvas colour recorded in the video job's metadata JSON (black if none)."""
    settings = _job_settings(video)
    if video.name.endswith("_mask.mp4") or settings is None:
        if settings is None:
            log.info("%s: no video job metadata beside it; assuming a black canvas", video)
        return (0, 0, 0)  # (the mask video is white animals on black)
    canvas = settings.get("canvas", "black")
    if canvas == "color":
        r, g, b = settings.get("canvas_color", (0, 0, 0))
        return (int(b), int(g), int(r))
    if canvas == "transparent" and video.is_dir():
        return (0, 0, 0)  # RGBA frames: the alpha channel decides
    if canvas not in _PLAIN_CANVAS:
        raise ValueError(
            f"{video}: canvas {canvas!r} cannot be told apart from the animals; evaluate the "
            "RLE export instead (export_rle=true) or cut out onto canvas black/white/color"
        )
    return _PLAIN_CANVAS[canvas]


def _foreground(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., 3] > 127
    return np.abs(image[..., :3].astype(np.int16) - colour).max(axis=2) > CANVAS_DISTANCE


def read_cutout_foreground(path: str | Path) -> list[np.ndarray]:
    """Per frame the ``(H, W)`` bool foreground of a cut-out video or PNG folder (approximate;
    see the module docstring)."""
    import cv2

    path = Path(path)
    colour = np.array(_canvas_of(path), np.int16)
    if path.is_dir():
        files = sorted(path.glob("*.png"))
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no PNG frames")
        out = []
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if img is None or img.ndim != 3:
                raise ValueError(f"{f}: not a readable colour PNG (a cut-out frame)")
            out.append(_foreground(img, colour))
        return out
    from thingmask.video import open_video

    with open_video(path) as reader:
        return [_foreground(frame.image, colour) for frame in reader.frames()]


def _crop_to(shape: tuple[int, ...], size: tuple[int, ...], path: Path) -> tuple[int, int]:
    """The ground truth's ``(H, W)``, after checking PRED's ``size`` is it, or it plus the one
    padding row/column video writers add to odd sizes."""
    h, w = int(shape[0]), int(shape[1])
    mh, mw = int(size[0]), int(size[1])
    if not (h <= mh <= h + 1 and w <= mw <= w + 1):
        raise ValueError(
            f"{path}: frames are {mw}x{mh} but the ground truth is {w}x{h}; evaluate the "
            "predictions of the video this ground truth belongs to, at its own size"
        )
    return h, w


def evaluate_video(
    pred: str | Path,
    gt: str | Path,
    display_things: Sequence[str] | None = None,
    *,
    match_iou: float = MATCH_IOU,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Evaluate PRED (an ``.rle.jsonl`` export or a cut-out video) against GT (``demo_gt.npz``).

    Args:
        display_things: the classes that belong in the cut-out (ground truth of other classes,
            e.g. the leaves, is left out; so are predictions of them). Default: the
            display_things recorded in the video job's metadata JSON beside PRED.
        match_iou: CLEAR-MOT match threshold (mask IoU).
        tolerance: boundary F tolerance (fraction of the diagonal, or pixels when >= 1);
            default DAVIS's 0.008.
    Returns:
        The report of :func:`thingmask.evaluation.video.evaluate_instances` (``mode``
        "instances") or of ``evaluate_foreground`` (``mode`` "foreground"), plus ``pred``,
        ``gt`` and ``display_things``.
    """
    from thingmask.evaluation.masks import BOUNDARY_TOLERANCE

    tol = BOUNDARY_TOLERANCE if tolerance is None else float(tolerance)
    pred, gt = Path(pred), Path(gt)
    truth = load_video_gt(gt)
    shape = truth[0][0].shape[1:] if truth else (0, 0)
    if pred.name.endswith(".jsonl"):
        frames = read_rle_jsonl(pred, len(truth))
        h, w = _crop_to(shape, frames[0][0].shape[1:], pred)
        frames = [(m[:, :h, :w], n, i) for m, n, i in frames]
        things = _things(display_things, pred)
        report = evaluate_instances(frames, truth, things, match_iou, tol)
    else:
        fg = read_cutout_foreground(pred)
        if len(fg) != len(truth):
            raise ValueError(f"{pred}: {len(fg)} frames but the ground truth {gt} has {len(truth)}")
        h, w = _crop_to(shape, fg[0].shape, pred)
        things = _things(display_things, pred)
        gt_fg = [
            np.asarray(m.any(axis=0)) if len(m) else np.zeros(shape, bool)
            for m, _, _ in filter_frames(truth, things)
        ]
        report = {
            "mode": "foreground",
            "display_things": things,
            **evaluate_foreground([m[:h, :w] for m in fg], gt_fg, tol),
        }
    return {"pred": str(pred), "gt": str(gt), **report}


def _things(given: Sequence[str] | None, pred: Path) -> list[str]:
    if isinstance(given, str):
        raise TypeError(f"display_things: expected a list of names, got {given!r}")
    if given:
        return list(dict.fromkeys(given))
    recorded = (_job_settings(pred) or {}).get("display_things")
    if not recorded:
        raise ValueError(
            f"{pred}: no video job metadata beside it records the display things; pass them "
            "(--display-things cat bird)"
        )
    return [str(t) for t in recorded]


def plot_j_over_time(report: dict[str, Any]) -> Any:
    """A matplotlib Figure: per-frame J of each object (instances) and of the foreground."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for gid, obj in report.get("objects", {}).items():
        ax.plot(obj["J_per_frame"], linewidth=1.0, label=f"{obj['class']} {gid}")
    ax.plot(report["per_frame"]["fg_J"], color="black", linewidth=2.0, label="foreground")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("frame")
    ax.set_ylabel("J (mask IoU)")
    title = f"J over time: foreground {report['fg_J']:.3f}"
    if report.get("mode") == "instances":
        title += f", objects {report['J']:.3f}, id switches {report['num_switches']}"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncols=3)
    fig.tight_layout()
    return fig


def save_report(report: dict[str, Any], out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Write ``<out_dir>/<stem>_eval.json`` and ``<stem>_eval_J.png`` (both atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}_eval.json", "plot": out_dir / f"{stem}_eval_J.png"}
    atomic_write_json(paths["json"], report)
    fig = plot_j_over_time(report)
    with atomic_path(paths["plot"]) as tmp:
        fig.savefig(tmp, format="png")
    return paths


def report_stem(pred: str | Path) -> str:
    """The name the report files take after PRED: ``clip_cutout.rle.jsonl`` → ``clip_cutout``,
    a cut-out video ``clip_cutout.mp4`` → ``clip_cutout_fg`` (foreground figures only)."""
    name = Path(pred).name
    if name.endswith(".rle.jsonl"):
        return name.removesuffix(".rle.jsonl")
    return f"{name if Path(pred).is_dir() else Path(name).stem}_fg"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def report_text(report: dict[str, Any]) -> str:
    """A few lines for people: the headline figures, then one line per object."""
    lines = [
        f"{report['frames']} frames, display things {', '.join(report['display_things'])}; "
        f"boundary tolerance {report['boundary_tolerance_px']} px",
        f"foreground   J {report['fg_J']:.3f}   F {report['fg_F']:.3f}   T {report['fg_T']:.4f}",
    ]
    if report.get("mode") != "instances":
        return "\n".join([*lines, "(a cut-out video: foreground figures only)"])
    lines += [
        f"per object   J {report['J']:.3f}   F {report['F']:.3f}   T {report['T']:.4f}",
        f"identities   id switches {report['num_switches']}   fragmentations "
        f"{report['num_fragmentations']}   MOTA {_fmt(report['mota'])}   MOTP (1 - IoU) "
        f"{_fmt(report['motp'])}   misses {report['num_misses']}   false positives "
        f"{report['num_false_positives']}   class errors {report['class_errors']}",
        f"vanished     {report['vanished']} object-frames "
        f"({report['dropouts']} one-frame dropouts)",
    ]
    for gid, obj in report["objects"].items():
        track = "untracked" if obj["track"] is None else f"track {obj['track']}"
        lines.append(
            f"  object {gid} ({obj['class']}, {track}, visible {obj['frames_visible']} frames): "
            f"J {obj['J']:.3f}  F {obj['F']:.3f}  switches {obj['num_switches']}"
        )
    return "\n".join(lines)
