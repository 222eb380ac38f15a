"""A video job's outputs appear together, checked, or not at all.

Every job writes into its own *stage*: a fresh hidden folder beside the outputs,
``.thingmask-stage-<stem>-<random>/``, created exclusively (``mkdtemp``: a new name no one else
holds, so no pre-placed file or link can be written through). Video, CSV, RLE, mask video, clips
and the done marker are all written there under their final names. Only when the video is complete
and checked (the frames decoded back from the written file equal the frames written) are they
renamed into place (:func:`commit`): each new file is recorded in the folder's manifest first
(:mod:`thingmask.ownership`), the old done marker goes, the stale outputs the old marker listed go
(only files the manifest says are thingmask's), the outputs are renamed, the new done marker last.

A job that is interrupted or fails leaves nothing but its stage; the next run into the folder (it
holds the folder's lock, so no stage can be a live writer's) removes every leftover stage
(:func:`remove_leftover_stages`) and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import av

from thingmask.config import Config
from thingmask.errors import InputError
from thingmask.ownership import Manifest, check_writable, remove_owned
from thingmask.video import VideoError

__all__ = [
    "BLANK_SHARE",
    "STAGE_PREFIX",
    "check_complete",
    "commit",
    "decoded_frames",
    "final_names",
    "open_stage",
    "remove_leftover_stages",
    "say_when_blank",
]

log = logging.getLogger(__name__)

STAGE_PREFIX = ".thingmask-stage-"
_STAGE_MARK = ".thingmask-stage"  # inside every stage: "thingmask made this folder"


def open_stage(folder: Path, stem: str) -> Path:
    """A new private stage folder in ``folder`` (mode 0700, a name no one held before)."""
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{stem}-", dir=folder))
    (stage / _STAGE_MARK).write_text(f"pid {os.getpid()}\n", encoding="utf-8")
    return stage


def remove_leftover_stages(folder: Path) -> list[Path]:
    """Remove the stages that killed or failed runs left in ``folder``; call only while holding
    the folder's lock. Only folders named like a stage *and* holding the stage mark go (never a
    link, never a user's folder of a similar name)."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if (
            entry.name.startswith(STAGE_PREFIX)
            and entry.is_dir()
            and not entry.is_symlink()
            and (entry / _STAGE_MARK).is_file()
        ):
            shutil.rmtree(entry)  # rmtree removes links inside, never follows them
            removed.append(entry)
    if removed:
        log.info(
            "removed %d unfinished job(s) left by an earlier run: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def decoded_frames(path: Path, fmt: str) -> int:
    """Frames decoded back from a written video (for png: the frame files of the sequence)."""
    if fmt == "png":
        return sum(1 for _ in path.glob("frame_*.png"))
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return sum(1 for _ in container.decode(stream))
    except (av.error.FFmpegError, IndexError) as exc:
        raise VideoError(f"{path}: the written video does not decode ({exc})") from None


def check_complete(path: Path, fmt: str, written: int) -> None:
    """Raise VideoError unless ``path`` decodes to exactly ``written`` frames."""
    found = decoded_frames(path, fmt)
    if found != written:
        raise VideoError(
            f"{path}: {written} frames were written but {found} decode back (disk full or "
            "the file was changed while written); nothing is marked done. Run again."
        )


def commit(
    moves: list[tuple[Path, Path]],
    marker: tuple[Path, Path],
    stale: list[Path],
    *,
    overwrite: bool = False,
) -> None:
    """Rename the staged outputs ``moves`` (``(staged, final)``) into place, then the done
    ``marker`` (``(staged, final)``), removing the old marker first and the ``stale`` outputs of
    the previous run (only those the manifest owns). All finals share one folder.

    The final names are checked again just before (a file the user created there during the run
    is not replaced); every new file is recorded in the manifest before it is renamed, so a run
    killed half-way through leaves only files the next run knows as its own.
    """
    finals = [final for _, final in moves] + [marker[1]]
    check_writable(finals, overwrite=overwrite)
    folder = marker[1].parent
    manifest = Manifest.load(folder)
    manifest.writers.add("video")
    manifest.record([s for s, _ in moves] + [marker[0]], as_names=finals)
    manifest.save()
    _remove(marker[1], manifest, overwrite)  # no marker during the swap: it would describe
    for path in stale:  # the old outputs (or a mix)
        if remove_owned(path, manifest):
            log.info("%s: removed (an output of the earlier run that this run does not make)", path)
            if path.parent != folder:  # a clips folder left empty goes too (never a non-empty one)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
    for staged, final in moves:
        if final.is_dir() and not final.is_symlink():  # png sequence / clips: replaced whole
            _remove(final, manifest, overwrite)
        os.replace(staged, final)
    os.replace(marker[0], marker[1])
    manifest.settle()
    manifest.save()


def _remove(path: Path, manifest: Manifest, overwrite: bool) -> None:
    if not (path.exists() or path.is_symlink()):
        return
    if remove_owned(path, manifest):
        return
    if overwrite and not (path.is_dir() and not path.is_symlink()):
        path.unlink()
        return
    raise InputError(
        f"{path}: exists and was not written by thingmask, so it is not replaced. Choose "
        "another output name or folder."
    )


def final_names(outputs: dict[str, Any], stage: Path, folder: Path) -> dict[str, Any]:
    """The staged paths of ``outputs`` as they will be once renamed into ``folder``."""

    def final(p: str) -> str:
        return str(folder / Path(p).relative_to(stage))

    return {
        k: [final(p) for p in v] if isinstance(v, list) else final(v) for k, v in outputs.items()
    }


# Above this share of frames with nothing kept, the video is called (nearly) blank.
BLANK_SHARE = 0.5


def say_when_blank(src: Path, result: Any, config: Config) -> None:
    """Set ``result.empty_share`` and log a warning, with the likely cause, when nothing was
    kept in most frames (an all-canvas video is almost never what was wanted)."""
    frames = max(result.frames_written, 1)
    result.empty_share = round(result.empty_frames / frames, 4)
    if result.empty_share > BLANK_SHARE:
        log.warning(
            "%s: nothing was kept in %d of %d frames (%.0f%%), so the cut-out is mostly %s. "
            "Likely: the video shows none of display_things=%s, or the model finds them below "
            "score_threshold=%s (try a lower one, or train longer on footage like this).",
            src,
            result.empty_frames,
            result.frames_written,
            100 * result.empty_share,
            "canvas",
            list(config.display_things),
            config.score_threshold,
        )
