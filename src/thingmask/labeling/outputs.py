"""The labelling commands' output folder, on the rules of :mod:`thingmask.ownership`.

``frames``, ``prelabel`` and ``suggest`` keep one record per output folder, the folder's
ownership manifest (``<output>/.thingmask-manifest.json``): every file they wrote there (path
relative to the folder) with its signature, and under ``notes`` what each command needs next
time (the frames picked per video, the frames suggested). While a command writes the folder it
holds the folder's lock (one writer at a time). A file at one of their names that thingmask did
not write, or that was changed since, is the user's and never replaced: the command refuses
(:func:`~thingmask.ownership.check_writable`, one line naming the file), except where the
command can leave the file as it is (a reviewed labelme file: ``prelabel`` keeps it).

Inputs are only read: the output may not be the folder of an input video or image unless that
image is one thingmask wrote there itself (a frame picked by ``frames``, which ``prelabel``
annotates beside it, as labelme expects). That test goes by the recorded name, not the
signature, so a labelling folder copied elsewhere can still be pre-labelled in place.

Files are written under temporary names, recorded in the manifest (saved) and only then renamed
into place, so a run killed half-way leaves only files the next run knows as its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from thingmask.errors import InputError
from thingmask.io_utils import atomic_path
from thingmask.ownership import MANIFEST, Manifest, check_writable, folder_lock

__all__ = ["MANIFEST", "OutputFolder", "open_output"]

log = logging.getLogger(__name__)


class OutputFolder:
    """A labelling output folder while a command holds its lock (make it with
    :func:`open_output`): the manifest, and writes that keep it true.

    Paths are given relative to the folder (``/``-separated, e.g. ``clip/clip_3.jpg``).
    """

    def __init__(self, root: Path, manifest: Manifest, command: str) -> None:
        self.root = root
        self.manifest = manifest
        self.command = command
        # no labelling command has --overwrite: the fix is to move the file or pick a folder
        self.hint = (
            f"move what thingmask did not write out of the way (thingmask {command} never "
            "replaces your files)"
        )

    @property
    def notes(self) -> dict[str, Any]:
        """What the labelling commands recorded beside their files (JSON-able), kept in the
        manifest: ``frames`` (picks per video), ``suggest`` (suggested frames per video)."""
        return self.manifest.notes

    def owns(self, rel: str) -> bool:
        """Whether thingmask wrote ``rel`` and nobody changed it since."""
        return self.manifest.owns(self.root / rel)

    def recorded(self, rel: str) -> bool:
        """Whether thingmask once wrote ``rel`` (it may have been changed since)."""
        return self.manifest.recorded(self.root / rel)

    def check_free(self, rels: Iterable[str]) -> None:
        """Raise InputError (one line naming the files and the fix) when any of ``rels`` exists
        and is not thingmask's unchanged file."""
        check_writable([self.root / rel for rel in rels], root=self.root, hint=self.hint)

    def write_files(self, files: dict[str, bytes]) -> list[Path]:
        """Write ``files`` (relative path → content) together: each to a temporary name beside
        its final one, all recorded in the manifest (saved), then renamed into place. Refuses
        (InputError, nothing written) when one of them is the user's."""
        finals = [self.root / rel for rel in files]
        if not finals:
            return finals
        self.check_free(files)
        with contextlib.ExitStack() as stack:  # on error every temporary file is removed
            temps = []
            for final, data in zip(finals, files.values(), strict=True):
                tmp = stack.enter_context(atomic_path(final))
                tmp.write_bytes(data)
                temps.append(tmp)
            self.manifest.record(temps, as_names=finals)
            self.manifest.save()
        return finals  # leaving the stack renamed them: the recorded signatures still match

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_files({rel: text.encode("utf-8")})[0]

    def write_json(self, rel: str, data: Any) -> Path:
        return self.write_text(rel, json.dumps(data, indent=2) + "\n")

    def save(self) -> None:
        """Keep the manifest's current signatures (and notes) on disk; call after each batch.
        An unchanged manifest is not rewritten (a re-run that adds nothing changes nothing)."""
        self.manifest.settle()
        now = Manifest.load(self.root)
        # JSON round trip: the notes compare as they will read back (tuples as lists, ...)
        notes = json.loads(json.dumps(self.manifest.notes))
        if (now.files, now.writers, now.notes) != (
            self.manifest.files,
            self.manifest.writers,
            notes,
        ):
            self.manifest.save()


@contextlib.contextmanager
def open_output(root: str | Path, inputs: Iterable[Path], command: str) -> Iterator[OutputFolder]:
    """Hold ``root``'s lock (:func:`~thingmask.ownership.folder_lock`; the folder is created)
    and yield it as an :class:`OutputFolder`; the manifest is saved when the block completes.

    Args:
        root: the output folder.
        inputs: the files the command reads (videos, images); see the module docstring.
        command: the subcommand, for messages (``frames``, ``prelabel``, ``suggest``).
    Raises:
        InputError: ``root`` is a file, holds (or is inside the folder of) an input thingmask
            did not write, holds a file at the manifest's name that is not one, or another
            thingmask run is writing into it. The first two are checked before the lock is
            taken, so nothing, not even the lock file, is written among the user's inputs.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"--output {root}: is a file; pass a folder (it is created when missing)")
    _check_inputs(root, Manifest.load(root), list(inputs), command)
    with folder_lock(root):
        out = OutputFolder(root, Manifest.load(root), command)  # read again: now it is ours
        out.manifest.writers.add(command)
        yield out
        out.save()


def _check_inputs(root: Path, manifest: Manifest, inputs: list[Path], command: str) -> None:
    out = root.resolve()
    for path in inputs:
        real = path.resolve()
        if real.parent.is_relative_to(out) and not manifest.recorded(root / real.relative_to(out)):
            raise InputError(
                f"--output {root} holds the input {path}: thingmask {command} never writes "
                f"among your files. Choose a separate folder, e.g. --output "
                f"{Path('labels') / (path.stem or 'out')}"
            )
