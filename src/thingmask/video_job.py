"""The video stage: cut the display things out of videos, frame by frame, plus their data.

``process_video`` streams one video (decode → predictor → keep display things → [track] →
composite on the canvas → encode, plus CSV / RLE / mask video / per-animal clips), holding one
frame at a time. ``process_many`` does it for a file, folder or glob, one output per video; a bad
file is reported and the rest continue. ``thingmask video`` (cli.py) calls them.

Outputs of ``<out>/<stem>_cutout.mp4`` (names follow the output's stem)::

    <stem>_cutout.mp4          cut-out video (webm/mov, or a folder of PNGs, per video_format)
    <stem>_cutout.json         metadata: source info, settings, counts, timing/padding/audio policy
    <stem>_cutout.csv          per-instance per-frame positions        (export_csv)
    <stem>_cutout.rle.jsonl    COCO-RLE masks per frame                (export_rle)
    <stem>_cutout_mask.mp4     white-on-black mask video               (export_mask_video)
    <stem>_cutout_clips/       one cut-out clip per tracked animal     (per_instance_clips)

Resume: the metadata JSON is written last and is the "done" marker. Re-running with the same
source and settings skips a finished video; an unfinished one (killed: only a hidden
``.<name>.part.*`` file is left) is done again from the start.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from thingmask.composite import Canvas, get_masked_image
from thingmask.detections import Detections, keep
from thingmask.exports import CsvExporter, InstanceClips, MaskVideo, RleExporter
from thingmask.io_utils import atomic_write_json, atomic_write_text
from thingmask.tracking import Tracker
from thingmask.video import EXTENSIONS, VideoError, VideoWriter, open_video, partial_path

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoResult",
    "find_videos",
    "output_paths",
    "process_many",
    "process_video",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (
    ".mp4",
    ".mov",
    ".m4v",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".mts",
    ".3gp",
)
# Settings that change what the outputs contain; a finished video is redone when one changes.
_JOB_SETTINGS = (
    "display_things",
    "score_threshold",
    "video_format",
    "canvas",
    "canvas_color",
    "canvas_image",
    "keep_audio",
    "tracking",
    "export_csv",
    "export_rle",
    "export_mask_video",
    "per_instance_clips",
    "max_bad_frames",
)

OnFrame = Callable[[int, np.ndarray, Detections], None]


@dataclass
class VideoResult:
    """What happened to one video. ``status``: ``done``, ``skipped`` (already done) or
    ``failed`` (``error`` says why). ``outputs`` maps kind → path."""

    source: str
    output: str
    status: str = "done"
    error: str = ""
    frames_read: int = 0
    frames_written: int = 0
    bad_frames: int = 0
    missing_frames: int = 0
    instances: int = 0
    tracks: int = 0
    padding: list[int] = field(default_factory=lambda: [0, 0])
    timing: str = ""
    audio: str = ""
    wall_s: float = 0.0
    fps: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    metadata: str = ""

    @property
    def frames(self) -> int:
        """Frames in the output (= ``frames_written``)."""
        return self.frames_written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------
def output_paths(dst: str | Path, config: Any) -> dict[str, Path]:
    """Every file the job may write for output ``dst`` (see the module docstring)."""
    dst = Path(dst)
    stem = dst.name if config.video_format == "png" else dst.stem
    base = dst.parent
    return {
        "video": dst,
        "metadata": base / f"{stem}.json",
        "csv": base / f"{stem}.csv",
        "rle": base / f"{stem}.rle.jsonl",
        "mask_video": base / f"{stem}_mask.mp4",
        "clips": base / f"{stem}_clips",
    }


def _fingerprint(src: Path, config: Any, predictor: Any) -> dict[str, Any]:
    stat = src.stat()
    settings = {k: getattr(config, k) for k in _JOB_SETTINGS}
    model = {
        "class_names": [str(c) for c in getattr(predictor, "class_names", ())],
        "run_dir": str(getattr(predictor, "run_dir", "")),
    }
    blob = json.dumps(
        {"settings": settings, "model": model, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        sort_keys=True,
        default=str,
    )
    return {
        "settings": settings,
        "model": model,
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "key": hashlib.sha256(blob.encode()).hexdigest()[:16],
    }


def _already_done(paths: dict[str, Path], key: str) -> dict[str, Any] | None:
    meta_path = paths["metadata"]
    if not meta_path.is_file() or not paths["video"].exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("status") != "done" or meta.get("job", {}).get("key") != key:
        return None
    listed = meta.get("result", {}).get("outputs", {}).values()
    files = [p for item in listed for p in (item if isinstance(item, list) else [item])]
    if not all(Path(p).exists() for p in files):  # an output was deleted since: redo
        return None
    return meta


def process_video(
    src: str | Path,
    dst: str | Path,
    predictor: Callable[[np.ndarray], Detections],
    config: Any,
    on_frame: OnFrame | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> VideoResult:
    """Cut the display things out of one video, streaming frame by frame.

    Args:
        src: input video (any FFmpeg-readable container; rotation metadata is applied).
        dst: output path (``.mp4`` / ``.webm`` / ``.mov``; for ``png`` a folder).
        predictor: callable on an ``(H, W, 3)`` uint8 **BGR** frame → :class:`Detections`
            (class names); its ``class_names`` attribute is checked against display_things.
        config: a :class:`thingmask.config.Config` (video_format, canvas, exports, ...).
        on_frame: optional ``on_frame(index, frame_bgr, kept_detections)`` called after each
            frame is written (``frame_bgr`` is the source frame, not the composite).
        force: redo even when a finished output with the same settings exists.
        progress: show a tqdm progress bar with ETA.

    Returns:
        A :class:`VideoResult`; the metadata JSON beside the output holds the same and more.

    Raises:
        VideoError (a ValueError naming the file) for a missing/unreadable video; ConfigError when
        display_things are not classes of the model.
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    want = EXTENSIONS[config.video_format]
    if want and dst.suffix.lower() != want:
        raise ValueError(
            f"output {dst}: video_format={config.video_format!r} writes {want} "
            f"files; name the output *{want} or change video_format"
        )
    paths = output_paths(dst, config)
    class_names = getattr(predictor, "class_names", None)
    if class_names is not None:
        config.check_classes(class_names)
    if not src.is_file():
        raise VideoError(f"{src}: video file not found. Check the path (video_input).")
    job = _fingerprint(src, config, predictor)
    if not force:
        done = _already_done(paths, job["key"])
        if done is not None:
            log.info(
                "%s: already done with the same settings (%s); skipping", src, paths["metadata"]
            )
            result = VideoResult(
                **{
                    k: v
                    for k, v in done.get("result", {}).items()
                    if k in VideoResult.__dataclass_fields__
                }
            )
            result.status, result.wall_s = "skipped", round(time.perf_counter() - t0, 3)
            return result
    leftovers = [
        partial_path(p)
        for p in (paths["video"], paths["csv"], paths["rle"], paths["mask_video"])
        if partial_path(p).exists()
    ]
    if leftovers:
        log.info(
            "%s: an unfinished earlier run left %s; starting this video again",
            src,
            ", ".join(p.name for p in leftovers),
        )
    paths["metadata"].unlink(missing_ok=True)  # the done marker goes only after success

    canvas = Canvas.from_config(config)
    result = VideoResult(source=str(src), output=str(dst))
    with (
        open_video(src, max_bad_frames=config.max_bad_frames) as reader,
        contextlib.ExitStack() as stack,
    ):
        info = reader.info
        writer = stack.enter_context(
            VideoWriter(
                dst,
                info.width,
                info.height,
                info.rate,
                fmt=config.video_format,
                alpha=canvas.has_alpha,
                audio_source=src if config.keep_audio else None,
            )
        )
        tracker = Tracker() if (config.tracking or config.per_instance_clips) else None
        if config.per_instance_clips and not config.tracking:
            log.info("per_instance_clips needs track ids: tracking is switched on for %s", src)
        csv_out = stack.enter_context(CsvExporter(paths["csv"])) if config.export_csv else None
        rle_out = stack.enter_context(RleExporter(paths["rle"])) if config.export_rle else None
        mask_out = (
            stack.enter_context(MaskVideo(paths["mask_video"], info.width, info.height, info.rate))
            if config.export_mask_video
            else None
        )
        clips = (
            stack.enter_context(
                InstanceClips(
                    paths["clips"], paths["video"].stem, info.rate, config.video_format, canvas
                )
            )
            if config.per_instance_clips
            else None
        )
        track_ids: set[int] = set()
        bar = tqdm(
            total=info.frames or None,
            unit="frame",
            desc=src.name,
            disable=not progress,
            leave=False,
        )
        with bar:
            for frame in reader.frames():
                kept = keep(
                    _check_detections(predictor(frame.image), frame.image, src),
                    config.display_things,
                )
                if tracker is not None:
                    kept = tracker.update(kept)
                    track_ids.update(int(t) for t in kept.track_ids)
                writer.write(get_masked_image(frame.image, kept, canvas), frame.time)
                if csv_out is not None:
                    csv_out.add(frame.index, frame.time, kept)
                if rle_out is not None:
                    rle_out.add(frame.index, frame.time, kept)
                if mask_out is not None:
                    mask_out.add(frame.time, kept)
                if clips is not None:
                    clips.add(frame.image, frame.time, kept)
                    clips.end(tracker.ended)
                result.instances += len(kept)
                if on_frame is not None:
                    on_frame(frame.index, frame.image, kept)
                bar.update(1)
        # ExitStack closes (finalises + renames) every output here, in reverse order
        stack.close()
        result.frames_read = reader.frames_read
        result.bad_frames = reader.bad_frames
        result.missing_frames = reader.missing_frames
        video_meta = writer.describe()

    result.frames_written = video_meta["frames"]
    result.tracks = len(track_ids)
    result.padding = video_meta["padding_right_bottom"]
    result.timing = video_meta["timing"]
    result.audio = video_meta["audio"]
    result.outputs = {"video": str(dst)}
    for kind, enabled in (
        ("csv", config.export_csv),
        ("rle", config.export_rle),
        ("mask_video", config.export_mask_video),
    ):
        if enabled:
            result.outputs[kind] = str(paths[kind])
    if clips is not None:
        result.outputs["clips"] = [str(p) for p in clips.written]
    result.wall_s = round(time.perf_counter() - t0, 3)
    result.fps = round(result.frames_read / result.wall_s, 2) if result.wall_s else 0.0
    result.metadata = str(paths["metadata"])
    atomic_write_json(
        paths["metadata"],
        {
            "status": "done",
            "source": info.to_dict(),
            "output": video_meta,
            "job": job,
            "result": result.to_dict(),
        },
    )
    log.info(
        "%s -> %s: %d frames, %d instances, %.1f s (%.1f fps)",
        src,
        dst,
        result.frames_written,
        result.instances,
        result.wall_s,
        result.fps,
    )
    return result


def _check_detections(dets: Any, image: np.ndarray, src: Path) -> Detections:
    if not isinstance(dets, Detections):
        raise TypeError(
            f"predictor returned {type(dets).__name__}; expected thingmask.detections.Detections"
        )
    if dets.image_size != image.shape[:2]:
        raise ValueError(
            f"{src}: predictor returned masks of size {dets.image_size} for a "
            f"{image.shape[:2]} frame; masks must match the frame (H, W)"
        )
    return dets


# ------------------------------------------------------------------------------------------------
def find_videos(source: str | Path) -> list[Path]:
    """Resolve a file, a folder (its video files, sorted) or a glob pattern to video files."""
    text = str(source)
    p = Path(text)
    if p.is_file():
        return [p]
    if p.is_dir():
        found = sorted(
            f
            for f in p.iterdir()
            if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS and not f.name.startswith(".")
        )
        if not found:
            raise VideoError(f"{p}: folder holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
        return found
    if any(ch in text for ch in "*?["):
        found = sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).is_file())
        if not found:
            raise VideoError(f"{text}: the pattern matches no files")
        return found
    raise VideoError(
        f"{text}: no such file or folder. Pass a video file, a folder of videos or "
        "a glob such as 'videos/*.mp4'"
    )


def _output_for(src: Path, out_dir: Path, config: Any, taken: set[str]) -> Path:
    name = f"{src.stem}_cutout"
    if name in taken:  # clip.mp4 and clip.mov in one folder must not share an output
        name = f"{src.stem}_{src.suffix.lstrip('.').lower()}_cutout"
    taken.add(name)
    return out_dir / (name + EXTENSIONS[config.video_format])


def process_many(
    src: str | Path,
    out_dir: str | Path,
    predictor: Callable[[np.ndarray], Detections],
    config: Any,
    *,
    force: bool = False,
    progress: bool = True,
) -> list[VideoResult]:
    """``process_video`` for every video of a file / folder / glob, one output each in
    ``out_dir``. A failing video is logged and recorded (status ``failed``); the others continue.
    Writes ``out_dir/summary.csv`` and logs a summary table; returns the results in order."""
    videos = find_videos(src)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[VideoResult] = []
    taken: set[str] = set()
    for video in tqdm(videos, unit="video", desc="videos", disable=not progress or len(videos) < 2):
        dst = _output_for(video, out_dir, config, taken)
        try:
            results.append(
                process_video(video, dst, predictor, config, force=force, progress=progress)
            )
        except Exception as exc:  # one bad file must not stop the batch
            log.error("%s: failed: %s", video, exc)
            results.append(
                VideoResult(
                    source=str(video),
                    output=str(dst),
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
    atomic_write_text(out_dir / "summary.csv", summary_csv(results))
    log.info("video summary (%s):\n%s", out_dir / "summary.csv", summary_table(results))
    return results


_SUMMARY = (
    "source",
    "status",
    "frames_read",
    "frames_written",
    "bad_frames",
    "instances",
    "tracks",
    "wall_s",
    "fps",
    "output",
    "error",
)


def summary_csv(results: list[VideoResult]) -> str:
    """CSV text, one row per video (columns: source, status, counts, timing, output, error)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_SUMMARY)
    for r in results:
        w.writerow([getattr(r, k) for k in _SUMMARY])
    return buf.getvalue()


def summary_table(results: list[VideoResult]) -> str:
    """A fixed-width text table of the results (for logs and notebooks)."""
    rows = [("video", "status", "frames", "bad", "instances", "tracks", "s", "note")]
    for r in results:
        rows.append(
            (
                Path(r.source).name,
                r.status,
                str(r.frames_written),
                str(r.bad_frames),
                str(r.instances),
                str(r.tracks),
                f"{r.wall_s:.1f}",
                r.error[:60],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


# ------------------------------------------------------------------------------------------------
