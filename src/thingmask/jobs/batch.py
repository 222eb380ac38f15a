"""Many videos at once: which files are inputs, what each output is called, the summary.

A folder or glob lists its video files, leaving out hidden files (``.name``: also the job's
temporary ``.<name>.part.<ext>`` files) and thingmask's own outputs (tagged videos, files a done
marker lists), so running the same batch again into the same folder takes no output for an input.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
from pathlib import Path

from thingmask.config import Config
from thingmask.jobs.outputs import VideoResult, is_own_output, listed_outputs
from thingmask.video import EXTENSIONS, VideoError

__all__ = ["VIDEO_EXTENSIONS", "find_videos", "output_for", "summary_csv", "summary_table"]

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


def find_videos(source: str | Path) -> list[Path]:
    """Resolve a file, a folder (its video files, sorted) or a glob pattern to video files.

    Folders and globs leave out hidden files and thingmask's own outputs (logged); a single
    file is taken as given. Raises VideoError naming the source when nothing is left.
    """
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
        what = f"{p}: folder holds no video files ({', '.join(VIDEO_EXTENSIONS)})"
    elif any(ch in text for ch in "*?["):
        found = sorted(
            Path(f)
            for f in glob.glob(text, recursive=True)
            if Path(f).is_file() and not Path(f).name.startswith(".")
        )
        what = f"{text}: the pattern matches no files"
    else:
        raise VideoError(
            f"{text}: no such file or folder. Pass a video file, a folder of videos or "
            "a glob such as 'videos/*.mp4'"
        )
    inputs = _without_own_outputs(found)
    if not inputs:
        if found:
            what = f"{text}: holds only thingmask's own outputs ({len(found)}), no input videos"
        raise VideoError(what)
    return inputs


def _without_own_outputs(files: list[Path]) -> list[Path]:
    listed: set[Path] = set()
    for folder in {f.parent for f in files}:
        listed |= listed_outputs(folder)
    kept = [f for f in files if not is_own_output(f, listed)]
    if len(kept) < len(files):
        log.info(
            "left out %d of thingmask's own outputs (not inputs): %s",
            len(files) - len(kept),
            ", ".join(f.name for f in files if f not in kept),
        )
    return kept


def output_for(src: Path, out_dir: Path, config: Config, taken: set[str]) -> Path:
    """``<out_dir>/<stem>_cutout.<ext>``; two inputs with one stem (clip.mp4, clip.mov) get
    ``<stem>_<ext>_cutout`` so they never share an output."""
    name = f"{src.stem}_cutout"
    if name in taken:
        name = f"{src.stem}_{src.suffix.lstrip('.').lower()}_cutout"
    taken.add(name)
    return out_dir / (name + EXTENSIONS[config.video_format])


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
