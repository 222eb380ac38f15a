"""May thingmask write here? Which files in a folder are thingmask's own, and one writer per folder.

The rule every writing stage follows (video job, batch summary, ``prepare``, the labelling loop):
a path thingmask is about to create must either not exist, or be a file thingmask itself wrote
there earlier and that nobody has changed since. Anything else is the user's and is never
replaced without ``overwrite`` (``--overwrite``), which replaces exactly the files the refusal
named.

"Written by thingmask" is recorded, not guessed: each folder thingmask writes into holds a small
manifest, :data:`MANIFEST` (``.thingmask-manifest.json``), mapping every file it put there (path
relative to the folder) to its signatures ``[size, mtime_ns, inode]``. A rename keeps all three,
so a file is recorded before it is renamed into place and still matches afterwards; a file the
user replaced or edited since no longer matches and counts as the user's. Folders written as a
whole (PNG sequences, clip folders) are the manifest's when every file in them is. A stage may
also keep small JSON notes about what it wrote there (``notes``, keyed by stage: e.g. the frames
``thingmask frames`` picked per video), so a folder holds one record, not one per stage.

API::

    check_writable(paths, overwrite=False)     # raise InputError naming the file and the fix
    manifest = Manifest.load(folder); manifest.owns(path); manifest.record(paths)
    manifest.settle(); manifest.save()                # after writing: these files are ours
    with folder_lock(folder): ...              # one writer per output folder (InputError if busy)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from thingmask.errors import InputError
from thingmask.io_utils import atomic_write_text

__all__ = [
    "LOCK_NAME",
    "MANIFEST",
    "Manifest",
    "check_writable",
    "folder_lock",
    "owned_or_absent",
    "remove_owned",
]

log = logging.getLogger(__name__)

MANIFEST = ".thingmask-manifest.json"
LOCK_NAME = ".thingmask.lock"
_FORMAT = "thingmask manifest"
OVERWRITE_HINT = "pass --overwrite (overwrite=True in Python) to replace exactly these files"

Signature = tuple[int, int, int]


def signature(path: Path) -> Signature | None:
    """``(size, mtime_ns, inode)`` of a regular file (a link itself is never followed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _signature(value: Any) -> Signature:
    size, mtime_ns, inode = (int(x) for x in value)
    return (size, mtime_ns, inode)


class Manifest:
    """The record of the files thingmask wrote into ``folder`` (see the module docstring).

    ``files`` maps a path relative to ``folder`` (``/``-separated) to its accepted signatures:
    usually one; two while a commit replaces a file (the old and the new), so a run killed
    between recording and renaming still finds every final name its own.
    """

    def __init__(
        self,
        folder: Path,
        files: dict[str, list[Signature]] | None = None,
        writers: Iterable[str] = (),
        notes: dict[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.files: dict[str, list[Signature]] = dict(files or {})
        self.writers: set[str] = set(writers)  # which stages wrote here ("video", "prepare")
        self.notes: dict[str, Any] = dict(notes or {})  # JSON-able, per stage ("frames": ...)

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """The manifest of ``folder`` (empty when there is none). Raises InputError when a file
        of that name exists and is not a thingmask manifest (it is then never replaced)."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not (path.exists() or path.is_symlink()):
            return cls(folder)
        try:
            if path.is_symlink() or not path.is_file():
                raise ValueError("not a plain file")
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT or not isinstance(data.get("files"), dict):
                raise ValueError("not a thingmask manifest")
            files: dict[str, list[Signature]] = {
                str(k): [_signature(sig) for sig in v] for k, v in data["files"].items()
            }
            writers = [str(w) for w in data.get("writers", [])]
            notes = data.get("notes", {})
            if not isinstance(notes, dict):
                raise ValueError("its notes are not a mapping")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise InputError(
                f"{path}: exists but is not thingmask's manifest ({exc}), so nothing in "
                f"{folder} is taken as thingmask's own. Move it, or choose another output folder."
            ) from None
        return cls(folder, files, writers, notes)

    def _key(self, path: Path) -> str | None:
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.folder))
        except ValueError:
            return None
        return rel.as_posix()

    def recorded(self, path: str | Path) -> bool:
        """True when thingmask once wrote a file at ``path`` (recorded here), whether or not it
        was changed since: the name is thingmask's, the content may be the user's now."""
        key = self._key(Path(path))
        return key is not None and key in self.files

    def owns(self, path: str | Path) -> bool:
        """True when ``path`` (a file, or a folder of files) is recorded here and unchanged."""
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            children = list(path.rglob("*"))
            files = [c for c in children if not (c.is_dir() and not c.is_symlink())]
            return bool(files) and all(self._owns_file(c) for c in files)
        return self._owns_file(path)

    def _owns_file(self, path: Path) -> bool:
        key, sig = self._key(path), signature(path)
        return key is not None and sig is not None and sig in self.files.get(key, [])

    def record(self, paths: Iterable[Path], as_names: Iterable[Path] | None = None) -> None:
        """Add the current signatures of ``paths`` (files, or folders: every file inside),
        recorded under ``as_names`` when given (the final names of files still at a
        temporary place: a rename keeps the signature). Old signatures are kept until
        :meth:`settle`."""
        paths = [Path(p) for p in paths]
        names = [Path(p) for p in as_names] if as_names is not None else paths
        for path, name in zip(paths, names, strict=True):
            pairs = (
                [(c, name / c.relative_to(path)) for c in path.rglob("*") if c.is_file()]
                if path.is_dir()
                else [(path, name)]
            )
            for actual, final in pairs:
                key, sig = self._key(final), signature(actual)
                if key is None or sig is None:
                    raise ValueError(f"{final}: not a file inside {self.folder}")
                if sig not in self.files.setdefault(key, []):
                    self.files[key].append(sig)

    def forget(self, paths: Iterable[Path]) -> None:
        """Drop ``paths`` (and for a folder, everything recorded under it)."""
        for path in paths:
            key = self._key(Path(path))
            if key is None:
                continue
            for k in [k for k in self.files if k == key or k.startswith(key + "/")]:
                del self.files[k]

    def settle(self) -> None:
        """Keep only each file's current signature; drop entries whose file is gone."""
        for key in list(self.files):
            sig = signature(self.folder / key)
            if sig is not None and sig in self.files[key]:
                self.files[key] = [sig]
            elif sig is None:
                del self.files[key]

    def save(self) -> None:
        """Write the manifest atomically (an exclusive temporary file renamed into place)."""
        body = {
            "format": _FORMAT,
            "writers": sorted(self.writers),
            "files": {k: [list(s) for s in v] for k, v in self.files.items()},
        }
        if self.notes:
            body["notes"] = self.notes
        atomic_write_text(self.path, json.dumps(body, indent=1) + "\n")


def owned_or_absent(
    path: Path, manifests: dict[Path, Manifest] | None = None, root: Path | None = None
) -> bool:
    """True when ``path`` does not exist or the manifest of its folder (or of ``root``, a folder
    above it that keeps one manifest for its whole tree) owns it."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return True
    cache = manifests if manifests is not None else {}
    folder = Path(root) if root is not None else path.parent
    if folder not in cache:
        cache[folder] = Manifest.load(folder)
    return cache[folder].owns(path)


def check_writable(
    paths: Iterable[str | Path],
    *,
    overwrite: bool = False,
    hint: str = OVERWRITE_HINT,
    root: Path | None = None,
) -> None:
    """Refuse, before anything is written, to create any of ``paths`` over a file that is not
    thingmask's own (see the module docstring). ``root``: the folder whose manifest covers all
    of ``paths`` (default: each path's own folder).

    Raises InputError, one line naming every such file and the fix (``hint``). With
    ``overwrite``, files (never folders, never a folder holding a user's file) may be replaced.
    """
    manifests: dict[Path, Manifest] = {}
    planned = [Path(p) for p in paths]
    for folder in {Path(root) if root is not None else p.parent for p in planned}:
        manifests[folder] = Manifest.load(folder)  # a foreign file at the manifest's name: refuse
    foreign = [p for p in planned if not owned_or_absent(p, manifests, root)]
    if overwrite:
        blocked = [p for p in foreign if p.is_dir() and not p.is_symlink()]
        if blocked:
            raise InputError(
                f"{blocked[0]}: is a folder thingmask did not write; --overwrite replaces files, "
                "never a folder of yours. Move it, or choose another output name or folder."
            )
        if foreign:
            log.warning("--overwrite: replacing %s", ", ".join(str(p) for p in foreign))
        return
    if foreign:
        more = f" (and {', '.join(str(p) for p in foreign[1:])})" if len(foreign) > 1 else ""
        raise InputError(
            f"{foreign[0]}{more}: exists and was not written by thingmask, so it is not "
            f"replaced. Choose another output name or folder, or {hint}."
        )


def remove_owned(path: Path, manifest: Manifest) -> bool:
    """Delete ``path`` (a file, or a folder of files) only when ``manifest`` owns it; returns
    whether it was removed. A link is removed itself, never its target. Call
    :meth:`Manifest.settle` and :meth:`Manifest.save` afterwards."""
    if not (path.exists() or path.is_symlink()) or not manifest.owns(path):
        return False
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.rglob("*"), key=lambda c: len(c.parts), reverse=True):
            if child.is_dir() and not child.is_symlink():
                child.rmdir()
            else:
                child.unlink()
        path.rmdir()
    else:
        path.unlink()
    return True  # the manifest entry goes at the next settle()


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder``'s writer lock (``.thingmask.lock``, an OS file lock via ``filelock``)
    for the block: one thingmask writer per output folder, whatever the process or machine
    sharing the file system. Does not wait: a second writer gets InputError at once (waiting
    silently behind an hours-long batch would look like a hang). Makes ``folder``.

    The lock file stays (deleting lock files races with the next locker); it is empty and
    hidden. filelock opens it with ``O_NOFOLLOW`` and never truncates, so a link placed at that
    name is refused, never followed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_NAME
    if lock_path.is_symlink() or (lock_path.exists() and not lock_path.is_file()):
        raise InputError(
            f"{lock_path}: is not thingmask's lock file (a link or a folder); move it, or choose "
            "another output folder."
        )
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(
            f"{folder}: another thingmask run is writing into this folder (it holds "
            f"{LOCK_NAME}); wait for it to finish, or choose another output folder."
        ) from None
    except OSError as exc:
        raise InputError(f"{lock_path}: cannot lock the output folder ({exc}).") from None
    try:
        yield folder
    finally:
        lock.release()
