"""Per-video data outputs written while a video streams through: positions CSV, COCO-RLE masks,
a mask-only video and one cut-out clip per tracked animal.

Every exporter writes under a hidden temporary name (``.<stem>.part<ext>``) and renames on
``close()``; used as a context manager, an exception removes the partial file instead.

CSV columns (one row per kept instance per frame; pixel coordinates, x right, y down):
``frame, time_s, class, score, x1, y1, x2, y2, cx, cy, area_px, track_id`` where x1..y2 is the
box (xyxy), cx, cy the mask's centroid, area_px its pixel count, track_id -1 without tracking.

RLE JSON lines: one object per frame ``{"frame", "time_s", "height", "width", "instances":
[{"class", "score", "track_id", "bbox_xyxy", "area_px", "rle": {"size": [H, W], "counts": str}}]}``
— ``rle`` is COCO's compressed RLE (``pycocotools.mask.decode`` reads it back).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from thingmask.cutout.composite import Canvas, composite_mask, union_mask_u8
from thingmask.detections import Detections
from thingmask.io_utils import create_exclusive
from thingmask.video import VideoWriter, partial_path
from thingmask.video.common import remove_path

__all__ = [
    "CSV_COLUMNS",
    "CsvExporter",
    "InstanceClips",
    "InstanceRows",
    "MaskVideo",
    "RleExporter",
    "instance_rows",
    "instance_stats",
]

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "frame",
    "time_s",
    "class",
    "score",
    "x1",
    "y1",
    "x2",
    "y2",
    "cx",
    "cy",
    "area_px",
    "track_id",
)


def instance_stats(mask: np.ndarray, box: np.ndarray) -> tuple[float, float, int]:
    """Centroid ``(cx, cy)`` in pixels and area (pixel count) of one ``(H, W)`` bool mask.

    Computed inside the (clipped, 1-px grown) box only: cheap at 1080p. Falls back to the whole
    mask when the box misses it, and to the box centre for an empty mask.
    """
    h, w = mask.shape
    x1, y1 = max(0, int(np.floor(box[0])) - 1), max(0, int(np.floor(box[1])) - 1)
    x2, y2 = min(w, int(np.ceil(box[2])) + 1), min(h, int(np.ceil(box[3])) + 1)
    crop = mask[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else mask[:0, :0]
    area = int(np.count_nonzero(crop))
    if area != int(np.count_nonzero(mask)):  # box does not hold the whole mask
        crop, x1, y1 = mask, 0, 0
        area = int(np.count_nonzero(crop))
    if area == 0:
        return float((box[0] + box[2]) / 2), float((box[1] + box[3]) / 2), 0
    m = cv2.moments(crop.view(np.uint8), binaryImage=True)
    return float(x1 + m["m10"] / m["m00"]), float(y1 + m["m01"] / m["m00"]), area


@dataclass(frozen=True)
class InstanceRows:
    """One frame's kept instances as the CSV needs them (no masks: small enough to come back
    from the GPU every frame).

    Attributes:
        class_names: ``(N,)`` object, class names.
        scores: ``(N,)`` float32.
        boxes: ``(N, 4)`` float32 xyxy pixels.
        centres: ``(N, 2)`` float64 mask centroid ``(cx, cy)`` in pixels (pixel centres at
            integer coordinates; the box centre for an empty mask).
        areas: ``(N,)`` int64 mask pixel counts.
        track_ids: ``(N,)`` int64, or None without tracking.
    """

    class_names: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    centres: np.ndarray
    areas: np.ndarray
    track_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.class_names)


def instance_rows(detections: Detections) -> InstanceRows:
    """The :class:`InstanceRows` of host-side ``detections`` (centroids via instance_stats)."""
    stats = [instance_stats(m, b) for m, b in zip(detections.masks, detections.boxes, strict=True)]
    return InstanceRows(
        class_names=detections.class_names,
        scores=detections.scores,
        boxes=detections.boxes,
        centres=np.array([(cx, cy) for cx, cy, _ in stats], np.float64).reshape(-1, 2),
        areas=np.array([a for _, _, a in stats], np.int64),
        track_ids=detections.track_ids,
    )


class _AtomicText:
    """A text file streamed to a temporary name and renamed on close()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = partial_path(self.path)
        # created exclusively: a link pre-placed at the temporary name is never followed
        fd = create_exclusive(self.partial)
        self._fh = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._closed = False

    def close(self) -> Path:
        if not self._closed:
            self._closed = True
            self._fh.close()
            os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._fh.close()
            with contextlib.suppress(FileNotFoundError):
                self.partial.unlink()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class CsvExporter(_AtomicText):
    """Positions CSV: ``add(frame, time_s, detections)`` per frame, then ``close()``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._w = csv.writer(self._fh, lineterminator="\n")
        self._w.writerow(CSV_COLUMNS)
        self.rows = 0

    def add(self, frame: int, time_s: float, detections: Detections) -> None:
        """One row per instance of ``detections`` (host-side, with masks)."""
        self.add_rows(frame, time_s, instance_rows(detections))

    def add_rows(self, frame: int, time_s: float, rows: InstanceRows) -> None:
        """One row per instance of ``rows`` (e.g. computed on the GPU)."""
        ids = rows.track_ids
        for k in range(len(rows)):
            self._w.writerow(
                [
                    frame,
                    f"{time_s:.6f}",
                    rows.class_names[k],
                    f"{float(rows.scores[k]):.4f}",
                    *(f"{float(v):.2f}" for v in rows.boxes[k]),
                    f"{float(rows.centres[k, 0]):.2f}",
                    f"{float(rows.centres[k, 1]):.2f}",
                    int(rows.areas[k]),
                    -1 if ids is None else int(ids[k]),
                ]
            )
            self.rows += 1


class RleExporter(_AtomicText):
    """COCO-RLE masks, one JSON line per frame (frames without instances included)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        from pycocotools import mask as mask_utils  # local: only this export needs it

        self._encode = mask_utils.encode

    def add(self, frame: int, time_s: float, detections: Detections) -> None:
        h, w = detections.image_size
        instances = []
        if len(detections):
            rles = self._encode(
                np.asfortranarray(detections.masks.transpose(1, 2, 0), dtype=np.uint8)
            )
            ids = detections.track_ids
            for k, rle in enumerate(rles):
                instances.append(
                    {
                        "class": str(detections.class_names[k]),
                        "score": round(float(detections.scores[k]), 4),
                        "track_id": -1 if ids is None else int(ids[k]),
                        "bbox_xyxy": [round(float(v), 2) for v in detections.boxes[k]],
                        "area_px": int(np.count_nonzero(detections.masks[k])),
                        "rle": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                    }
                )
        self._fh.write(
            json.dumps(
                {
                    "frame": frame,
                    "time_s": round(time_s, 6),
                    "height": h,
                    "width": w,
                    "instances": instances,
                }
            )
            + "\n"
        )


class MaskVideo:
    """Black-and-white mask video (white = any kept instance), H.264 MP4."""

    def __init__(
        self, path: str | Path, width: int, height: int, rate: Any, tag: str | None = None
    ) -> None:
        self.writer = VideoWriter(path, width, height, rate, fmt="mp4", tag=tag)
        self.path = self.writer.path

    def add(self, time_s: float, detections: Detections) -> None:
        """The union of ``detections``' masks as one white-on-black frame."""
        self.add_union(time_s, union_mask_u8(detections))

    def add_union(self, time_s: float, union: np.ndarray) -> None:
        """One frame from an ``(H, W)`` uint8 0/1 (or bool) union mask."""
        m = np.asarray(union).astype(np.uint8) * np.uint8(255)
        self.writer.write(cv2.cvtColor(m, cv2.COLOR_GRAY2BGR), time_s)

    def close(self) -> Path:
        return self.writer.close()

    def abort(self, keep_partial: bool = False) -> None:
        self.writer.abort(keep_partial)

    def __enter__(self) -> MaskVideo:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.writer.__exit__(exc_type, exc, tb)


class InstanceClips:
    """One cut-out clip per track, the camera following the animal.

    Each clip is square; its side is fixed when the track starts (1.5 x the animal's larger box
    side, at least 32 px, at most the frame's shorter side, even). The window follows the box
    centre (smoothed) and grows when the animal does — the crop is then scaled down to the clip
    size, so the animal is never cut off. Only the track's own mask is shown, on ``canvas``.
    Tracks shorter than ``min_frames`` frames produce no clip. A track missing from more than
    ``max_gap`` consecutive frames is finished (its encoder closed, so long videos with many
    animals keep few files open); should its id come back later, the new clip is named
    ``..._2``. Call :meth:`add` once per frame, also for frames without instances.

    Args:
        folder: where ``<prefix>_track<ID>_<class>.<ext>`` files go.
        rate: nominal frame rate; each frame keeps its source timestamp.
        fmt, canvas: output format and canvas (transparent needs webm/mov/png).
        tag: the clips' container comment (see :class:`~thingmask.video.VideoWriter`).
    """

    def __init__(
        self,
        folder: str | Path,
        prefix: str,
        rate: Any,
        fmt: str,
        canvas: Canvas,
        min_frames: int = 5,
        max_gap: int = 30,
        tag: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.prefix, self.rate, self.fmt, self.canvas = prefix, rate, fmt, canvas
        self.min_frames = int(min_frames)
        self.max_gap = int(max_gap)
        self.tag = tag
        self._open: dict[int, dict[str, Any]] = {}
        self._names: set[str] = set()
        self._frame = -1
        self.written: list[Path] = []

    def add(self, frame_bgr: np.ndarray, time_s: float, detections: Detections) -> None:
        """Add this frame's tracked instances (``detections.track_ids`` required)."""
        if detections.track_ids is None:
            raise ValueError(
                "per-instance clips need track ids: run the Tracker first (tracking=True)"
            )
        self._frame += 1
        h, w = frame_bgr.shape[:2]
        for k, tid in enumerate(detections.track_ids):
            tid = int(tid)
            box = detections.boxes[k]
            bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
            centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)
            state = self._open.get(tid)
            if state is None:
                side = int(min(min(h, w), max(32, 1.5 * max(bw, bh))))
                side -= side % 2
                name = base = _safe(f"{self.prefix}_track{tid:03d}_{detections.class_names[k]}")
                n = 1
                while name in self._names:  # the id came back after its clip was finished
                    n += 1
                    name = f"{base}_{n}"
                self._names.add(name)
                path = self.folder / (name + ("" if self.fmt == "png" else f".{self.fmt}"))
                state = {
                    "side": side,
                    "centre": centre,
                    "frames": 0,
                    "path": path,
                    "writer": VideoWriter(
                        path,
                        side,
                        side,
                        self.rate,
                        fmt=self.fmt,
                        alpha=self.canvas.has_alpha,
                        tag=self.tag,
                    ),
                }
                self._open[tid] = state
            state["centre"] = 0.7 * state["centre"] + 0.3 * centre  # damp camera shake
            window = int(max(state["side"], 1.5 * max(bw, bh)))
            crop_img, crop_mask = _crop(frame_bgr, detections.masks[k], state["centre"], window)
            out = composite_mask(crop_img, crop_mask, self.canvas)
            if window != state["side"]:
                out = cv2.resize(out, (state["side"], state["side"]), interpolation=cv2.INTER_AREA)
            state["writer"].write(out, time_s)
            state["frames"] += 1
            state["last"] = self._frame
        self.end([t for t, st in self._open.items() if self._frame - st["last"] > self.max_gap])

    def end(self, track_ids: list[int]) -> None:
        """Finish the clips of tracks that ended."""
        for tid in track_ids:
            state = self._open.pop(int(tid), None)
            if state is None:
                continue
            if state["frames"] < self.min_frames:
                state["writer"].abort()
            else:
                self.written.append(state["writer"].close())

    def close(self) -> list[Path]:
        """Finish every open clip; returns all clip paths written."""
        self.end(list(self._open))
        return self.written

    def abort(self, keep_partial: bool = False) -> None:
        """Stop: the open clips' partial files go (kept on ``keep_partial``), and so do the
        clips finished earlier in this run, so a failed video leaves no clip under a final
        name (the job is redone from the start anyway)."""
        for state in self._open.values():
            state["writer"].abort(keep_partial)
        self._open.clear()
        if not keep_partial:
            for path in self.written:
                remove_path(path)
            self.written = []
            with contextlib.suppress(OSError):  # the clips folder, when nothing else is in it
                self.folder.rmdir()

    def __enter__(self) -> InstanceClips:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(keep_partial=issubclass(exc_type, KeyboardInterrupt))


def _crop(
    image: np.ndarray, mask: np.ndarray, centre: np.ndarray, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """A ``side x side`` window centred on ``centre``; outside the frame: zeros / mask False."""
    h, w = image.shape[:2]
    x0 = round(float(centre[0]) - side / 2)
    y0 = round(float(centre[1]) - side / 2)
    img = np.zeros((side, side, 3), np.uint8)
    m = np.zeros((side, side), bool)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        img[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        m[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = mask[sy0:sy1, sx0:sx1]
    return img, m


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
