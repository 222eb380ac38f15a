"""A run folder saved to another folder, verified (Google Drive is just a mounted path).

Nothing here imports ``google.colab``: the same code saves to a mounted Drive in Colab, to a
network share, or to a temporary folder in the tests.

What "saved" means here (and why):

* Every file is copied through a temporary name and verified against the *local* source (size and
  SHA-256, read back past the page cache) before it is renamed into place:
  :func:`thingmask.colab.verified_copy.copy_verified`, which also retries with backoff.
* The model files of the copy must load (``torch.load(..., weights_only=True)`` by default).
* ``saved.json`` (file list, sizes, hashes, time) is written **last**: a destination folder
  without it is incomplete, whatever else it holds. Drive syncs lazily and in no fixed order, so
  a machine reading the folder later trusts ``saved.json`` + the hashes, never the mere presence
  of a file.
* ``fsync``/``os.sync`` only guarantee that DriveFS *has* the bytes (its local cache); DriveFS
  uploads them in the background while the runtime lives. The one call that waits for the
  upload, ``google.colab.drive.flush_and_unmount()``, also unmounts Drive, so it is not called
  here but by :func:`thingmask.colab.runtime.finish_run` right before the runtime is released — the
  only moment queued uploads could be lost.

Checkpoint copies during training and resuming from them: :mod:`thingmask.colab.drive_checkpoints`.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thingmask.colab.verified_copy import (
    DriveError,
    MismatchError,
    SavedFile,
    copy_verified,
    file_record,
    fsync_dir,
    fsync_file,
    matches,
    retrying,
)
from thingmask.io_utils import atomic_write_json

__all__ = [
    "MANIFEST",
    "SaveResult",
    "claim_destination",
    "save_run",
    "select_files",
    "verify_saved",
    "verify_torch_files",
]

log = logging.getLogger(__name__)

MANIFEST = "saved.json"
OWNER = ".thingmask-owner.json"  # marks a destination folder as belonging to one local run


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

    return retrying(claim, dest_root / run_dir.name, retries, backoff)


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
    fsync_file(path)
    fsync_dir(path.parent)
    if json.loads(path.read_text(encoding="utf-8")) != data:
        raise MismatchError(f"{path} read back differently")


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
    retrying(lambda: _write_manifest(path, manifest), path, retries, backoff)
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
        if not matches(folder / rec.path, rec):
            problems.append(f"{folder / rec.path}: missing or different from the saved hash")
    return problems
