"""Small file helpers shared by every stage: atomic writes, so an interrupted run never leaves a
half-written file under its final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thingmask.errors import InputError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "create_exclusive",
    "read_image_bgr",
]


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    The temporary name keeps the final extension (``.part.mp4``) so writers that pick a format from
    the suffix (PyAV, matplotlib, torch) still work. On error the partial file is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    ext = final.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".part{ext}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; outputs should get the usual permissions (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically; return the path."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def create_exclusive(path: str | Path, binary: bool = True) -> int:
    """Create ``path`` as a new empty file and return its open (write-only) descriptor.

    Whatever is at ``path`` already (a leftover temporary file, or a link someone placed there)
    is unlinked first, never followed; the file is then created with ``O_CREAT | O_EXCL |
    O_NOFOLLOW``, so no pre-placed name or link can redirect the write. For temporary names
    only: never call it on a final output name.
    """
    path = Path(path)
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags | getattr(os, "O_BINARY", 0) * binary, 0o666)


def read_image_bgr(path: str | Path, what: str = "") -> np.ndarray:
    """The picture at ``path`` as ``(H, W, 3)`` uint8 **BGR** (OpenCV's order; grey or RGBA
    files are converted). The one place thingmask reads an image file.

    Raises:
        InputError: ``path`` is missing or not a picture; the message names the file and,
            when given, ``what`` it is (the setting, or the dataset file that lists it).
    """
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if Path(path).is_file() else None
    if image is None:
        where = f"{what}: " if what else ""
        raise InputError(
            f"{where}{str(path) or '(empty path)'} is missing or not a readable picture "
            "(expected .png, .jpg, .bmp, .tif or .webp). Check the path, or convert the file."
        )
    return image
