"""``thingmask frames``: pick the frames of each video worth annotating and write them as JPEGs.

Two passes over each video through the project's reader (rotation applied, real timestamps):
the first fills a bounded :class:`~thingmask.labeling.select.FramePool` of thumbnails, the
second writes the chosen frames. Output layout::

    <output>/<video stem>/<video stem>_<frame index>.jpg   one sub-folder per video, so prepare
                                                            keeps a clip's frames together
    <output>/frames.csv                                     video, frame, time_s, file
    <output>/labels.txt                                     from --classes (labelme's list)
    <output>/.thingmask-manifest.json                       what thingmask wrote, picks per video

Re-running with the same arguments writes nothing; a larger ``n`` keeps the frames picked before
and adds new ones where nothing was picked yet. The folder's rules (its manifest, its lock, never
replacing the user's files): :mod:`thingmask.labeling.outputs`.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from thingmask.errors import InputError
from thingmask.labeling.outputs import OutputFolder, open_output
from thingmask.labeling.select import FramePool, pick_diverse, pick_uniform, thumbnail
from thingmask.video.reader import open_video

__all__ = ["METHODS", "FrameOptions", "PickedFrame", "frame_name", "pick_frames", "write_frames"]

log = logging.getLogger(__name__)

METHODS = ("kmeans", "uniform")
JPEG_QUALITY = 95
FRAMES_CSV = "frames.csv"


@dataclass(frozen=True)
class FrameOptions:
    """How to pick: ``n`` per video, ``method`` (kmeans | uniform), ``start``/``stop`` as
    fractions of the video, ``min_gap`` frames between picks, ``seed`` for k-means."""

    n: int = 20
    method: str = "kmeans"
    seed: int = 0
    start: float = 0.0
    stop: float = 1.0
    min_gap: int = 0
    pool_size: int = 2000

    def check(self) -> None:
        if self.n < 1:
            raise InputError(f"--n {self.n}: expected at least 1 frame per video, e.g. --n 20")
        if self.method not in METHODS:
            raise InputError(f"--method {self.method!r}: expected one of {', '.join(METHODS)}")
        if not 0.0 <= self.start < self.stop <= 1.0:
            raise InputError(
                f"--start {self.start} --stop {self.stop}: expected fractions of the video with "
                "0 <= start < stop <= 1, e.g. --start 0.1 --stop 0.9"
            )
        if self.min_gap < 0:
            raise InputError(f"--min-gap {self.min_gap}: expected 0 or more frames")

    def key(self) -> dict[str, Any]:
        """What decides which frames are picked (a re-run with other values starts over)."""
        return {
            "method": self.method,
            "seed": self.seed,
            "start": self.start,
            "stop": self.stop,
            "min_gap": self.min_gap,
        }


@dataclass(frozen=True)
class PickedFrame:
    """One chosen frame: its index in the video (0-based, decode order) and time in seconds."""

    video: Path
    index: int
    time: float
    file: str  # relative to the output folder


def frame_name(stem: str, index: int) -> str:
    """``<stem>/<stem>_<index>.jpg`` (``stem``: the video's name without its extension),
    relative to the output folder."""
    return f"{stem}/{stem}_{index}.jpg"


def _range(total: int, start: float, stop: float) -> tuple[int, int]:
    return int(np.floor(start * total)), int(np.ceil(stop * total))


def pick_frames(
    video: Path, options: FrameOptions, keep: Sequence[int] = (), max_bad_frames: float = 0.05
) -> list[int]:
    """Frame indices (sorted) of ``video`` to annotate: exactly ``options.n`` (``keep`` kept).

    Raises InputError when the chosen range holds fewer than ``n`` frames (or the gap leaves
    room for fewer), naming the video and the fix.
    """
    pool = FramePool(max(options.pool_size, 2 * options.n))
    with open_video(video, max_bad_frames) as reader:
        total = reader.info.frames
        lo, hi = _range(total, options.start, options.stop) if total else (0, 1 << 62)
        if total == 0 and (options.start, options.stop) != (0.0, 1.0):
            raise InputError(
                f"{video}: the container does not say how many frames it has, so --start/--stop "
                "cannot be placed; leave them out (or re-encode the video)"
            )
        count = 0
        for frame in reader.frames():
            if frame.index < lo:
                continue
            if frame.index >= hi:
                break
            count += 1
            want = options.method == "kmeans" and pool.wants()
            pool.offer(frame.index, thumbnail(frame.image) if want else np.zeros(1, np.float32))
    if count < options.n:
        where = "" if (options.start, options.stop) == (0.0, 1.0) else " in --start/--stop"
        raise InputError(
            f"{video}: --n {options.n} but the video has only {count} frame(s){where}; "
            f"pass --n {count} or less"
        )
    indices, features = pool.arrays()
    if options.method == "uniform":
        # every frame of the range is a candidate for an even spread (the pool is for k-means)
        indices = np.arange(lo, lo + count, dtype=np.int64)
        chosen = pick_uniform(indices, options.n, options.min_gap, keep)
    else:
        chosen = pick_diverse(
            indices, features, options.n, min_gap=options.min_gap, seed=options.seed, keep=keep
        )
    if len(chosen) < options.n:
        raise InputError(
            f"{video}: --min-gap {options.min_gap} leaves room for only {len(chosen)} of "
            f"--n {options.n} frames; lower --min-gap or --n"
        )
    return chosen


def read_frames(
    video: Path, indices: Sequence[int], max_bad_frames: float = 0.05
) -> list[tuple[int, float, np.ndarray]]:
    """``(index, time s, BGR image)`` of the given frames, in order, one decoding pass."""
    wanted = set(int(i) for i in indices)
    out = []
    with open_video(video, max_bad_frames) as reader:
        for frame in reader.frames():
            if frame.index in wanted:
                out.append((frame.index, frame.time, frame.image))
                if len(out) == len(wanted):
                    break
    return out


def encode_jpeg(image_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("could not encode a frame as JPEG")
    return buf.tobytes()


def write_frames(
    videos: Sequence[Path],
    output: str | Path,
    options: FrameOptions,
    classes: Sequence[str] = (),
    max_bad_frames: float = 0.05,
) -> tuple[list[PickedFrame], int]:
    """Pick and write frames of every video. Returns (all picked frames, files written now).

    Raises InputError for bad options, an unusable output folder, or a video with too few frames
    (before anything of that video is written).
    """
    options.check()
    names = [v.stem for v in videos]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(
            f"videos {sorted(dup)} share a name in different folders; their frames would share "
            "a sub-folder. Run frames once per folder with different --output folders"
        )
    with open_output(output, videos, "frames") as out:
        return _write_frames(videos, out, options, classes, max_bad_frames)


def _write_frames(
    videos: Sequence[Path],
    out: OutputFolder,
    options: FrameOptions,
    classes: Sequence[str],
    max_bad_frames: float,
) -> tuple[list[PickedFrame], int]:
    picks: dict[str, Any] = out.notes.setdefault("frames", {})
    written = 0
    result: list[PickedFrame] = []
    for video in videos:
        entry = picks.get(video.stem, {})
        same = entry.get("options") == options.key() and entry.get("video") == str(video)
        before = [int(i) for i in entry.get("indices", [])] if same else []
        if not same and entry:
            log.warning(
                "%s: picked before with other settings (%s); picking anew", video, entry["options"]
            )
        chosen = (
            before
            if len(before) >= options.n
            else pick_frames(video, options, before, max_bad_frames)
        )
        times = {int(k): float(v) for k, v in entry.get("times", {}).items()} if same else {}
        # a frame thingmask wrote stays as it is, even if changed since (then it is the user's);
        # a file of the user's at a frame's name is refused before any frame is written
        missing = [
            i
            for i in chosen
            if not (out.root / frame_name(video.stem, i)).is_file()
            or not out.recorded(frame_name(video.stem, i))
        ]
        out.check_free(frame_name(video.stem, i) for i in missing)
        if missing:
            jpegs = {}
            for index, time_s, image in read_frames(video, missing, max_bad_frames):
                jpegs[frame_name(video.stem, index)] = encode_jpeg(image)
                times[index] = time_s
            written += len(out.write_files(jpegs))
        picks[video.stem] = {
            "video": str(video),
            "options": options.key(),
            "indices": chosen,
            "times": {str(i): round(times.get(i, 0.0), 6) for i in chosen},
        }
        out.save()  # after each video: an interrupted run keeps what it finished
        result += [
            PickedFrame(video, i, times.get(i, 0.0), frame_name(video.stem, i)) for i in chosen
        ]
    table = _frames_csv(picks)
    if not (out.root / FRAMES_CSV).is_file() or (out.root / FRAMES_CSV).read_text() != table:
        out.write_text(FRAMES_CSV, table)
        written += 1
    if classes:
        text = "__ignore__\n_background_\n" + "".join(f"{c}\n" for c in classes)
        path = out.root / "labels.txt"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.write_text("labels.txt", text)
            written += 1
    return result, written  # open_output saves the manifest when the block ends


def _frames_csv(picks: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video", "frame", "time_s", "file"])
    for stem in sorted(picks):
        entry = picks[stem]
        for i in entry["indices"]:
            w.writerow([entry["video"], i, entry["times"].get(str(i), ""), frame_name(stem, i)])
    return buf.getvalue()
