"""Verified copies of a run folder to another folder (Google Drive is just a mounted path).

Nothing here imports ``google.colab``: the same code saves to a mounted Drive in Colab, to a
network share, or to a temporary folder in the tests.

What "saved" means here (and why):

* Every file is copied to a temporary name beside its destination, ``fsync``-ed, read back and
  compared with the *local* source (size and SHA-256), and only then renamed into place. The read
  back first asks the kernel to drop its cached pages (``posix_fadvise(DONTNEED)``) so it really
  reads what the file system — DriveFS behind the FUSE mount — holds.
* The model files of the copy must load (``torch.load(..., weights_only=True)`` by default).
* ``saved.json`` (file list, sizes, hashes, time) is written **last**: a destination folder
  without it is incomplete, whatever else it holds. Drive syncs lazily and in no fixed order, so
  a machine reading the folder later trusts ``saved.json`` + the hashes, never the mere presence
  of a file.
* ``fsync``/``os.sync`` only guarantee that DriveFS *has* the bytes (its local cache); DriveFS
  uploads them in the background while the runtime lives. The one call that waits for the
  upload, ``google.colab.drive.flush_and_unmount()``, also unmounts Drive, so it is not called
  here but by :func:`thingmask.colab.finish_run` right before the runtime is released — the
  only moment queued uploads could be lost.

Writes that fail with ``OSError`` (or do not verify) are retried with exponential backoff; the
final error is a :class:`DriveError` naming the likely cause (full Drive, dropped mount).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from thingmask.engines import TrainHook
from thingmask.engines.checkpoints import (
    checkpoint_iteration,
    find_latest_checkpoint,
    is_valid_checkpoint,
)
from thingmask.io_utils import atomic_write_json

__all__ = [
    "MANIFEST",
    "STORAGE_URL",
    "DriveCheckpointHook",
    "DriveError",
    "SaveResult",
    "SavedFile",
    "claim_destination",
    "copy_verified",
    "fetch_checkpoint",
    "file_record",
    "find_resume_checkpoint",
    "save_run",
    "select_files",
    "sha256_file",
    "verify_saved",
    "verify_torch_files",
]

log = logging.getLogger(__name__)

MANIFEST = "saved.json"
OWNER = ".thingmask-owner.json"  # marks a destination folder as belonging to one local run
STORAGE_URL = "https://drive.google.com/settings/storage"
_QUOTA_ERRNOS = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
_CHUNK = 1 << 20
T = TypeVar("T")

# Indirections the tests patch (no real waiting; fault injection on the copy).
_sleep = time.sleep


def _copy_file(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


class DriveError(RuntimeError):
    """A save to / fetch from Drive (or any destination folder) failed; the message says why and
    what to do. The local run folder is never touched by a failed save."""


class _MismatchError(OSError):
    """A copy read back differently from its source (size or SHA-256)."""


@dataclass(frozen=True)
class SavedFile:
    """One file of a save: ``path`` relative to the run folder (POSIX), size in bytes, SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SaveResult:
    """A completed, verified save of ``source`` into ``destination`` (``saved.json`` written)."""

    source: Path
    destination: Path
    files: tuple[SavedFile, ...]
    manifest: Path
    seconds: float
    verified: bool = True

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def __str__(self) -> str:
        state = "verified" if self.verified else "NOT verified"
        return (
            f"{self.destination} ({len(self.files)} files, {self.total_bytes / 1e6:.1f} MB, "
            f"{state})"
        )


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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
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
    if isinstance(exc, _MismatchError):
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


def _retrying(action: Callable[[], T], target: Path, retries: int, backoff: float) -> T:
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
        _fsync_file(tmp)
        size = tmp.stat().st_size
        if size != expected.size:
            raise _MismatchError(f"{size} bytes instead of {expected.size}")
        digest = sha256_file(tmp, drop_cache=True)
        if digest != expected.sha256:
            raise _MismatchError(f"SHA-256 {digest[:12]}… instead of {expected.sha256[:12]}…")
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(dst.parent)


def _matches(path: Path, expected: SavedFile) -> bool:
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
    if dst.is_file() and _matches(dst, expected):
        return expected
    _retrying(lambda: _copy_once(src, dst, expected), dst, retries, backoff)
    return expected


# --- saving a run folder ---------------------------------------------------------------------
def select_files(
    run_dir: str | Path,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    include_checkpoints: bool = False,
) -> list[str]:
    """Relative POSIX paths of the run folder's files to save, sorted.

    ``include``/``exclude`` are ``fnmatch`` patterns on the relative path (``*`` also matches
    ``/``). Hidden names (temporary ``.x.part.ext`` files among them) are never saved;
    ``checkpoints/`` only with ``include_checkpoints``.
    """
    root = Path(run_dir)
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        if not path.is_file() or any(p.startswith(".") for p in parts):  # incl. temp files
            continue
        if parts[0] == "checkpoints" and not include_checkpoints:
            continue
        if rel == MANIFEST:
            continue
        if any(fnmatch.fnmatch(rel, pat) for pat in include) and not any(
            fnmatch.fnmatch(rel, pat) for pat in exclude
        ):
            out.append(rel)
    return sorted(out)


def _run_token(run_dir: Path) -> str:
    # Identifies *this* local run folder (same machine, same folder inode), so a checkpoint copy
    # and the final save of one run share a Drive folder while another run never does.
    st = run_dir.stat()
    key = f"{socket.gethostname()}|{run_dir.resolve()}|{st.st_dev}|{st.st_ino}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _owned_incomplete(folder: Path, token: str) -> bool:
    if (folder / MANIFEST).exists():
        return False  # a complete save is never written into again
    try:
        return json.loads((folder / OWNER).read_text(encoding="utf-8")).get("token") == token
    except (OSError, ValueError, AttributeError):
        return False


def claim_destination(
    dest_root: str | Path, run_dir: str | Path, *, retries: int = 3, backoff: float = 2.0
) -> Path:
    """The folder ``<dest_root>/<run folder name>`` for ``run_dir``, never an earlier run's.

    An existing folder is reused only when it belongs to this same local run and holds no
    ``saved.json`` (checkpoint copies made during training, an interrupted save); otherwise the
    name gets ``-1``, ``-2``… like :meth:`Config.new_run_dir`.
    """
    run_dir, dest_root = Path(run_dir), Path(dest_root)
    token = _run_token(run_dir)

    def claim() -> Path:
        dest_root.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            folder = dest_root / (run_dir.name if n == 0 else f"{run_dir.name}-{n}")
            try:
                folder.mkdir()
            except FileExistsError:
                if _owned_incomplete(folder, token):
                    return folder
                n += 1
                continue
            atomic_write_json(
                folder / OWNER,
                {"token": token, "source": str(run_dir.resolve()), "host": socket.gethostname()},
            )
            return folder

    return _retrying(claim, dest_root / run_dir.name, retries, backoff)


def verify_torch_files(folder: str | Path, patterns: Iterable[str] = ("*.pth", "*.pt")) -> None:
    """Load every model file under ``folder`` (``weights_only=True``, on CPU); raise if one fails.

    The default ``verify_model`` of :func:`save_run`: a copy whose bytes match can still be a
    source that never loaded, and this is the last chance to find out before the runtime goes.
    """
    import torch

    folder = Path(folder)
    for pattern in patterns:
        for path in sorted(folder.rglob(pattern)):
            if any(p.startswith(".") for p in path.relative_to(folder).parts):
                continue
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ValueError(
                    f"{path} does not load with torch.load(weights_only=True): {exc}"
                ) from exc


def _write_manifest(path: Path, data: dict[str, Any]) -> None:
    atomic_write_json(path, data)
    _fsync_file(path)
    _fsync_dir(path.parent)
    if json.loads(path.read_text(encoding="utf-8")) != data:
        raise _MismatchError(f"{path} read back differently")


def save_run(
    run_dir: str | Path,
    dest_root: str | Path,
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    include_checkpoints: bool = False,
    verify_model: Callable[[Path], None] | None = verify_torch_files,
    retries: int = 3,
    backoff: float = 2.0,
) -> SaveResult:
    """Copy the local run folder to ``<dest_root>/<run folder name>`` and verify it.

    ``run_dir`` is a local folder named ``<run_name>-<YYYYmmdd-HHMMSS>`` (``Config.new_run_dir``)
    holding the model, resolved config, metrics, plots and videos. Each selected file (see
    :func:`select_files`) is copied through a temporary name, read back and compared by size and
    SHA-256; ``verify_model(destination)`` must then pass (``None`` skips it); ``saved.json`` is
    written last. An earlier save is never overwritten (``-1``, ``-2``… suffixes). ``OSError``\\ s
    are retried with backoff ``backoff * 2**k`` seconds; then :class:`DriveError`.
    """
    started = time.monotonic()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(
            f"save_run: run folder {run_dir} does not exist. Pass the folder made by "
            "pipeline.start_run / Config.new_run_dir (outputs/<run_name>-<time>)."
        )
    names = select_files(run_dir, include, exclude, include_checkpoints)
    if not names:
        raise ValueError(
            f"save_run: nothing to save in {run_dir} (include={list(include)}, "
            f"exclude={list(exclude)}). Train first, or widen include."
        )
    # The local files are the reference: hashes are taken before anything leaves the machine.
    records = [file_record(run_dir / name, name) for name in names]
    dest = claim_destination(dest_root, run_dir, retries=retries, backoff=backoff)
    log.info(
        "saving %d files (%.1f MB) from %s to %s",
        len(records),
        sum(r.size for r in records) / 1e6,
        run_dir,
        dest,
    )
    for rec in records:
        copy_verified(
            run_dir / rec.path, dest / rec.path, expected=rec, retries=retries, backoff=backoff
        )
    if verify_model is not None:
        try:
            verify_model(dest)
        except Exception as exc:
            raise DriveError(
                f"the model copied to {dest} failed verification: {exc}. Nothing "
                f"was marked saved; the local run folder {run_dir} is intact."
            ) from exc
    manifest = {
        "format": "thingmask-saved/1",
        "source": str(run_dir.resolve()),
        "saved_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "total_bytes": sum(r.size for r in records),
        "files": [{"path": r.path, "size": r.size, "sha256": r.sha256} for r in records],
    }
    path = dest / MANIFEST
    _retrying(lambda: _write_manifest(path, manifest), path, retries, backoff)
    os.sync()  # hand everything to the file system (DriveFS) before calling it saved
    result = SaveResult(run_dir, dest, tuple(records), path, time.monotonic() - started)
    log.info("saved and verified: %s", result)
    return result


def verify_saved(folder: str | Path) -> list[str]:
    """Re-check a saved folder against its ``saved.json``; the problems found (empty = good)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{folder}: no readable {MANIFEST} ({exc}); the save is incomplete"]
    problems = []
    for entry in files:
        rec = SavedFile(entry["path"], entry["size"], entry["sha256"])
        if not _matches(folder / rec.path, rec):
            problems.append(f"{folder / rec.path}: missing or different from the saved hash")
    return problems


# --- checkpoints: copy during training, resume after a disconnect ----------------------------
class DriveCheckpointHook(TrainHook):
    """Copy training checkpoints to ``<drive_root>/<run folder name>/checkpoints/`` (verified).

    A copy is made at the first checkpoint at or after each multiple of ``period`` steps (so with
    ``checkpoint_period=200`` and ``period=500``: at 600, 1000, 1600, …) and once more after
    training for the newest checkpoint. Only the newest ``keep_last`` copies stay on Drive.

    A failed copy does not stop training (the local run goes on and can still be saved later):
    it is logged, kept in :attr:`failures` and passed to ``on_failure`` — the notebook's
    :class:`~thingmask.colab.RunLog`, which then refuses to release the runtime.
    """

    def __init__(
        self,
        drive_root: str | Path,
        run_dir: str | Path,
        period: int,
        *,
        keep_last: int = 2,
        start_iteration: int = 0,
        retries: int = 3,
        backoff: float = 2.0,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        if period < 0 or keep_last < 0:
            raise ValueError(
                f"DriveCheckpointHook: period and keep_last must be >= 0, got "
                f"{period} and {keep_last} (drive_checkpoint_period in the config)"
            )
        self.drive_root, self.run_dir = Path(drive_root), Path(run_dir)
        self.period, self.keep_last = period, keep_last
        self.retries, self.backoff = retries, backoff
        self.on_failure = on_failure
        self.last_copied = start_iteration
        self.copied: list[Path] = []
        self.failures: list[str] = []
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        """``<drive run folder>/checkpoints`` (the run folder is claimed on first use)."""
        if self._folder is None:
            run_folder = claim_destination(
                self.drive_root, self.run_dir, retries=self.retries, backoff=self.backoff
            )
            self._folder = run_folder / "checkpoints"
        return self._folder

    def after_checkpoint(self, checkpoint_path: Path, iteration: int) -> None:
        if self.period <= 0 or iteration // self.period <= self.last_copied // self.period:
            return
        self._copy(Path(checkpoint_path), iteration)

    def after_train(self, run_dir: Path) -> None:
        if self.period <= 0:
            return
        latest = find_latest_checkpoint([Path(run_dir) / "checkpoints"], validate=False)
        if latest is not None and checkpoint_iteration(latest) > self.last_copied:
            self._copy(latest, checkpoint_iteration(latest))

    def _copy(self, path: Path, iteration: int) -> None:
        try:
            dst = self.folder / path.name
            copy_verified(path, dst, retries=self.retries, backoff=self.backoff)
        except (DriveError, OSError) as exc:
            message = f"checkpoint copy to Drive at step {iteration}: {exc}"
            log.error("%s (training continues; the runtime will not be released)", message)
            self.failures.append(message)
            if self.on_failure is not None:
                self.on_failure(message)
            return
        self.last_copied = iteration
        self.copied.append(dst)
        log.info("checkpoint of step %d copied to %s", iteration, dst)
        self._prune(keep=dst)

    def _prune(self, keep: Path) -> None:
        if self.keep_last <= 0:
            return
        old = sorted(
            (p for p in self.folder.glob("*.pth") if ".part" not in p.name and p != keep),
            key=checkpoint_iteration,
            reverse=True,
        )
        for path in old[self.keep_last - 1 :]:
            try:
                path.unlink()
            except OSError as exc:  # a leftover costs Drive space, not correctness
                log.warning("could not remove old checkpoint %s: %s", path, exc)


def find_resume_checkpoint(drive_root: str | Path, run_name: str) -> Path | None:
    """The newest valid checkpoint in ``<drive_root>/<run_name>-<YYYYmmdd-HHMMSS>*/checkpoints/``.

    Only folders of exactly this run name match (``demo`` does not pick up ``demo-long-…``);
    truncated or unreadable checkpoints (a sync cut short) are skipped with a warning. Works on
    any folder, e.g. the local ``output_dir``.
    """
    root = Path(drive_root)
    if not root.is_dir():
        return None
    pattern = re.compile(rf"{re.escape(run_name)}-\d{{8}}-\d{{6}}(?:-\d+)*")
    folders = [
        p / "checkpoints"
        for p in sorted(root.iterdir())
        if p.is_dir() and pattern.fullmatch(p.name)
    ]
    return find_latest_checkpoint(folders)


def fetch_checkpoint(
    path: str | Path, local_dir: str | Path, *, retries: int = 3, backoff: float = 2.0
) -> Path:
    """Copy a (Drive) checkpoint into ``local_dir`` (verified), so training resumes from local
    disk; raises :class:`DriveError` when the copy does not load."""
    path = Path(path)
    local = Path(local_dir) / path.name
    copy_verified(path, local, retries=retries, backoff=backoff)
    if not is_valid_checkpoint(local):
        raise DriveError(
            f"checkpoint {path} copied to {local} does not load (truncated on "
            "Drive?). Delete it from Drive or set resume=False to start over."
        )
    log.info("fetched checkpoint %s → %s", path, local)
    return local
