"""One file copied to a folder that may be flaky (Google Drive's FUSE mount), and verified.

``copy_verified`` copies to a temporary name beside the destination, ``fsync``-s it, reads it
back and compares it with the *local* source (size and SHA-256), and only then renames it into
place. The read back first asks the kernel to drop its cached pages (``posix_fadvise(DONTNEED)``)
so it really reads what the file system — DriveFS behind the FUSE mount — holds. Writes that
fail with ``OSError`` (or do not verify) are retried with exponential backoff; the final error is
a :class:`DriveError` naming the likely cause (full Drive, dropped mount).

Nothing here imports ``google.colab``. Whole run folders: :mod:`thingmask.colab.drive`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from thingmask.errors import InputError

__all__ = [
    "STORAGE_URL",
    "DriveError",
    "MismatchError",
    "SavedFile",
    "copy_verified",
    "file_record",
    "fsync_dir",
    "fsync_file",
    "matches",
    "retrying",
    "sha256_file",
]

log = logging.getLogger(__name__)

STORAGE_URL = "https://drive.google.com/settings/storage"
_QUOTA_ERRNOS = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
_CHUNK = 1 << 20
T = TypeVar("T")

# Indirections the tests patch (no real waiting; fault injection on the copy).
_sleep = time.sleep


def _copy_file(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


class DriveError(InputError):
    """A save to / fetch from Drive (or any destination folder) failed; the message says why and
    what to do. The local run folder is never touched by a failed save.

    An :class:`~thingmask.errors.InputError`: every cause is on the user's side of the seam and
    fixed there: the Drive folder they chose is full, unwritable or its mount dropped (free
    space, re-mount), a checkpoint on Drive is truncated (delete it, or ``resume=False``), the
    model copied there does not load back (a copy damaged on the way: save again), or the mount
    itself failed (Colab's FAQ).
    """


class MismatchError(OSError):
    """A copy read back differently from its source (size or SHA-256)."""


@dataclass(frozen=True)
class SavedFile:
    """One file of a save: ``path`` relative to the run folder (POSIX), size in bytes, SHA-256."""

    path: str
    size: int
    sha256: str


# --- hashing and syncing ---------------------------------------------------------------------
def _drop_cache(fd: int) -> None:
    # Without this a read-back may be served from the page cache and prove nothing.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def sha256_file(path: str | Path, *, drop_cache: bool = False) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (optionally bypassing cached pages)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if drop_cache:
            _drop_cache(fh.fileno())
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | Path, relpath: str) -> SavedFile:
    """Size and SHA-256 of ``path``, recorded under the name ``relpath``."""
    path = Path(path)
    return SavedFile(relpath, path.stat().st_size, sha256_file(path))


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    # Directory fsync makes the rename durable; some file systems (FUSE mounts among them)
    # refuse it, which is harmless — the file data itself was already synced.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- retries and error messages --------------------------------------------------------------
def _explain(target: Path, exc: BaseException, attempts: int) -> str:
    tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, MismatchError):
        return (
            f"the copy {target} did not verify {tries} ({exc}). The Drive mount is unstable "
            f"or full — check free space at {STORAGE_URL} and re-run this cell; the local "
            "run folder is intact."
        )
    err = getattr(exc, "errno", None)
    if err in _QUOTA_ERRNOS:
        return (
            f"Drive is full: could not write {target} {tries} ({exc}). Free space or buy "
            f"storage at {STORAGE_URL}, then re-run this cell; earlier saves are untouched "
            "and the local run folder is intact."
        )
    if err == errno.EIO:
        return (
            f"Drive I/O error writing {target} {tries} ({exc}) — check free space at "
            f"{STORAGE_URL}; if there is space, the Drive mount dropped: re-mount "
            "(google.colab.drive.mount(..., force_remount=True)) and re-run this cell."
        )
    return (
        f"could not write {target} {tries}: {exc}. Check that the folder is writable and "
        f"has free space (Drive: {STORAGE_URL})."
    )


def retrying(action: Callable[[], T], target: Path, retries: int, backoff: float) -> T:
    """Run ``action``; on ``OSError`` wait ``backoff * 2**k`` seconds and try again, ``retries``
    times at most, then raise :class:`DriveError` explaining the last error."""
    if retries < 0 or backoff < 0:
        raise ValueError(f"retries and backoff must be >= 0, got {retries} and {backoff}")
    attempt = 0
    while True:
        try:
            return action()
        except OSError as exc:
            if attempt >= retries:
                raise DriveError(_explain(target, exc, attempt + 1)) from exc
            delay = backoff * 2**attempt
            attempt += 1
            log.warning(
                "writing %s failed (%s); retrying in %.1f s (%d/%d)",
                target,
                exc,
                delay,
                attempt,
                retries,
            )
            _sleep(delay)


def _copy_once(src: Path, dst: Path, expected: SavedFile) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part-{uuid.uuid4().hex[:8]}")
    try:
        _copy_file(src, tmp)
        fsync_file(tmp)
        size = tmp.stat().st_size
        if size != expected.size:
            raise MismatchError(f"{size} bytes instead of {expected.size}")
        digest = sha256_file(tmp, drop_cache=True)
        if digest != expected.sha256:
            raise MismatchError(f"SHA-256 {digest[:12]}… instead of {expected.sha256[:12]}…")
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(dst.parent)


def matches(path: Path, expected: SavedFile) -> bool:
    try:
        return (
            path.stat().st_size == expected.size
            and sha256_file(path, drop_cache=True) == expected.sha256
        )
    except OSError:
        return False


def copy_verified(
    src: str | Path,
    dst: str | Path,
    *,
    expected: SavedFile | None = None,
    retries: int = 3,
    backoff: float = 2.0,
) -> SavedFile:
    """Copy ``src`` to ``dst`` through a temporary name, verified by size and SHA-256.

    ``expected`` is the source's record (computed when omitted). A ``dst`` that already holds the
    same bytes is left as is (re-running a save or a resume costs a read, not a copy). Raises
    :class:`DriveError` when every attempt failed.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file to copy")
    expected = expected or file_record(src, dst.name)
    if dst.is_file() and matches(dst, expected):
        return expected
    retrying(lambda: _copy_once(src, dst, expected), dst, retries, backoff)
    return expected
