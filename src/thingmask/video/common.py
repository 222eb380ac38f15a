"""Shared names of the video package: formats, the error type, temporary output names."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

from thingmask.errors import InputError

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "OUTPUT_TAG",
    "VideoError",
    "check_replaceable",
    "output_tag",
    "partial_path",
    "remove_path",
]

FORMATS = ("mp4", "webm", "mov", "png")
EXTENSIONS = {"mp4": ".mp4", "webm": ".webm", "mov": ".mov", "png": ""}
# The container ``comment`` of every video thingmask's video job writes starts with this: a re-run
# recognises its own outputs by it, wherever they were moved, and never takes them as inputs.
OUTPUT_TAG = "thingmask output"


def output_tag(kind: str, source: str | Path) -> str:
    """The ``comment`` text marking a thingmask output, e.g. ``thingmask output: cut-out of
    clip.mp4`` (``kind`` says what the file is, ``source`` the input it was made from)."""
    return f"{OUTPUT_TAG}: {kind} of {Path(source).name}"


class VideoError(InputError):
    """A video the user named cannot be used: an input that is missing, empty, unreadable or
    undecodable, or an output path that cannot be written (taken, a folder, disk full, no
    access). Also raised when a :class:`~thingmask.video.writer.VideoWriter` is closed or
    :func:`~thingmask.video.writer.write_video` called with no frames: a caller's bad argument,
    a ``ValueError`` like every :class:`~thingmask.errors.InputError`.

    The message names the file and says what to do.
    """


def partial_path(final: str | Path) -> Path:
    """The hidden temporary name a :class:`VideoWriter` uses while writing ``final``.

    Deterministic (``.<stem>.part<ext>``) so a re-run finds and replaces a killed run's leftover.
    """
    final = Path(final)
    return final.with_name(f".{final.stem}.part{final.suffix}")


def remove_path(path: Path) -> None:
    """Delete a file or folder (a symlink itself, never its target); missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


_PNG_SEQUENCE_FILES = re.compile(r"frame_\d{6}\.png|timestamps\.csv|thingmask\.txt")


def check_replaceable(path: Path, fmt: str) -> None:
    """Refuse an output path whose replacement would delete something that is not an output:
    a folder in place of a video file, or for png a folder holding anything but a PNG sequence.
    """
    if not (path.exists() or path.is_symlink()):
        return
    if fmt == "png":
        if (
            path.is_dir()
            and not path.is_symlink()
            and all(_PNG_SEQUENCE_FILES.fullmatch(f.name) for f in path.iterdir())
        ):
            return
        raise VideoError(
            f"{path}: exists and is not a PNG sequence written by thingmask, so it is not "
            "replaced. Choose a new output folder name."
        )
    if path.is_dir():
        raise VideoError(
            f"{path}: is a folder, but {fmt} output is one file. Name the output file, e.g. "
            f"{path / ('cutout.' + fmt)}"
        )
