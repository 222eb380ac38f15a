"""Shared names of the video package: formats, the error type, temporary output names."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

__all__ = ["EXTENSIONS", "FORMATS", "VideoError", "partial_path", "remove_path"]

FORMATS = ("mp4", "webm", "mov", "png")
EXTENSIONS = {"mp4": ".mp4", "webm": ".webm", "mov": ".mov", "png": ""}


class VideoError(ValueError):
    """A video file is missing, empty, unreadable, undecodable or cannot be written.

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
