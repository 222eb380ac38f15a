"""Many videos at once: which files are inputs, what each output is called, the summary.

A folder or glob lists its video files, leaving out hidden files (``.name``: also the job's
temporary stage folders) and thingmask's own outputs (tagged videos, files a done
marker lists), so running the same batch again into the same folder takes no output for an input.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
from pathlib import Path

from thingmask.config import Config
from thingmask.errors import InputError
from thingmask.io_utils import atomic_write_text
from thingmask.jobs.commit import remove_leftover_stages
from thingmask.jobs.outputs import (
    VideoResult,
    check_apart,
    is_own_output,
    listed_outputs,
    output_paths,
    planned_outputs,
)
from thingmask.ownership import Manifest, check_writable
from thingmask.video import EXTENSIONS, VideoError

__all__ = [
    "VIDEO_EXTENSIONS",
    "clean_output_folders",
    "find_videos",
    "glob_base",
    "output_for",
    "plan_batch",
    "summary_csv",
    "summary_table",
    "write_summary",
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


def glob_base(source: str | Path) -> Path | None:
    """The folder a glob pattern starts from (its leading components without ``*?[``), or
    None for a file or folder: the batch mirrors the sub-folders below it in the output."""
    text = str(source)
    if Path(text).exists() or not glob.has_magic(text):
        return None
    parts: list[str] = []
    for part in Path(text).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def output_for(
    src: Path, out_dir: Path, config: Config, taken: set[str], base: Path | None = None
) -> Path:
    """``<out_dir>/<stem>_cutout.<ext>``, stable across re-runs of the same batch.

    For a glob, the input's sub-folders below the pattern's fixed start (``base``) are mirrored:
    ``'sessions/*/cam.mp4'`` gives ``out/day1/cam_cutout.mp4``, ``out/day2/cam_cutout.mp4``, so
    two inputs never share an output. Within one folder, two inputs with one stem (clip.mp4,
    clip.mov) get ``<stem>_<ext>_cutout``."""
    sub = Path()
    if base is not None:
        rel = os.path.relpath(src.parent, base)
        if rel != "." and not rel.startswith(".."):
            sub = Path(rel)
    name = f"{src.stem}_cutout"
    if (sub / name).as_posix() in taken:
        name = f"{src.stem}_{src.suffix.lstrip('.').lower()}_cutout"
    taken.add((sub / name).as_posix())
    return out_dir / sub / (name + EXTENSIONS[config.video_format])


_SUMMARY = (
    "source",
    "status",
    "frames_read",
    "frames_written",
    "bad_frames",
    "instances",
    "tracks",
    "empty_share",
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


def plan_batch(
    src: str | Path, out_dir: str | Path, config: Config, *, overwrite: bool = False
) -> list[tuple[Path, Path]]:
    """``(video, output)`` for every video of a batch (``process_many``, and the Ray batch
    ``thingmask.distributed.ray_batch``), after checking that no output would overwrite an
    input or a file thingmask did not write. Writes nothing. Raises InputError as
    ``process_many`` says."""
    videos = find_videos(src)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, videos, src)
    taken: set[str] = set()
    base = glob_base(src)
    jobs = [(video, output_for(video, out_dir, config, taken, base)) for video in videos]
    summary = out_dir / "summary.csv"
    planned = [summary]
    for _, dst in jobs:  # one video's outputs must not overwrite another input of the batch
        paths = output_paths(dst, config)
        check_apart(paths.values(), videos)
        planned += [*planned_outputs(paths, config).values(), paths["metadata"]]
    check_apart([summary], videos)
    check_writable(planned, overwrite=overwrite)
    return jobs


def clean_output_folders(jobs: list[tuple[Path, Path]]) -> None:
    """Remove the unfinished jobs killed runs left in the batch's output folders (call while
    holding the output folder's lock)."""
    for folder in sorted({dst.parent for _, dst in jobs}):
        remove_leftover_stages(folder)


def write_summary(
    out_dir: str | Path, results: list[VideoResult], *, overwrite: bool = False
) -> None:
    """``out_dir/summary.csv`` (when anything was done or failed; recorded in the folder's
    manifest as thingmask's own) and the summary table logged."""
    summary = Path(out_dir) / "summary.csv"
    if any(r.status != "skipped" for r in results):
        manifest = Manifest.load(summary.parent)
        if summary.exists() and not manifest.owns(summary):  # created during the batch
            check_writable([summary], overwrite=overwrite)
        atomic_write_text(summary, summary_csv(results))
        manifest.forget([summary])
        manifest.writers.add("video")
        manifest.record([summary])
        manifest.save()
    log.info("video summary (%s):\n%s", summary, summary_table(results))


def _check_out_dir(out_dir: Path, videos: list[Path], src: str | Path) -> None:
    """The output folder must not be the folder (or glob's folder) the inputs were listed
    from; a single input file may have its outputs beside it."""
    if Path(src).is_file():
        return
    out = out_dir.resolve()
    for folder in {v.parent.resolve() for v in videos}:
        if out == folder:
            raise InputError(
                f"output folder {out_dir} is the input folder of {src}; thingmask never writes "
                "into the folder it reads videos from. Choose another output folder, e.g. "
                f"--output {Path(out_dir) / 'cutouts'}"
            )
