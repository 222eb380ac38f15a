"""The labelling commands' output folder: only files thingmask wrote there are ever replaced.

``<output>/.thingmask-labeling.json`` lists every file ``frames``, ``prelabel`` and ``suggest``
wrote into the folder (and what each command recorded, e.g. the frames picked per video). A file
that exists but is not listed belongs to the user and is never replaced: the command stops
before writing anything and names it. Inputs are only read: the output may not be the folder of
an input video or image unless that image is one thingmask wrote itself (a frame picked by
``frames``, which ``prelabel`` annotates beside it, as labelme expects).
Every file is written under a temporary name and renamed when complete (:mod:`thingmask.io_utils`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from thingmask.errors import InputError
from thingmask.io_utils import atomic_path, atomic_write_json

__all__ = ["MANIFEST", "OutputFolder"]

log = logging.getLogger(__name__)

MANIFEST = ".thingmask-labeling.json"


class OutputFolder:
    """A folder the labelling commands write into, with the record of what they wrote.

    Args:
        root: the folder (created when missing).
        inputs: the files the command reads (videos, images); see the module docstring.
        command: the subcommand, for messages (``frames``, ``prelabel``, ``suggest``).
    Raises:
        InputError: ``root`` is an existing file, or holds (or is inside the folder of) an input
            that thingmask did not write.
    """

    def __init__(self, root: str | Path, inputs: Iterable[Path], command: str) -> None:
        self.root = Path(root)
        self.command = command
        if self.root.exists() and not self.root.is_dir():
            raise InputError(
                f"--output {self.root}: is a file; pass a folder (it is created when missing)"
            )
        self.record: dict[str, Any] = _read(self.root / MANIFEST)
        self.record.setdefault("files", [])
        self._owned = {str(f) for f in self.record["files"]}
        out = self.root.resolve()
        for path in inputs:
            folder = path.resolve().parent
            owned = self._rel(path) in self._owned if folder.is_relative_to(out) else False
            if (folder == out or folder.is_relative_to(out)) and not owned:
                raise InputError(
                    f"--output {self.root} holds the input {path}: thingmask {command} never "
                    f"writes among your files. Choose a separate folder, e.g. --output "
                    f"{Path('labels') / (path.stem or 'out')}"
                )

    def _rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()

    def owns(self, rel: str) -> bool:
        """Whether ``rel`` (a path relative to the folder) was written by thingmask."""
        return rel in self._owned

    def check_free(self, rels: Iterable[str]) -> None:
        """Raise InputError naming the first of ``rels`` that exists and is not thingmask's."""
        for rel in rels:
            path = self.root / rel
            if (path.exists() or path.is_symlink()) and rel not in self._owned:
                raise InputError(
                    f"{path} exists and thingmask did not write it (not listed in "
                    f"{self.root / MANIFEST}); thingmask {self.command} never replaces your "
                    "files. Move it away or choose another --output folder"
                )

    def path_for(self, rel: str) -> Path:
        """The path to write ``rel`` to; refuses a file the user owns."""
        self.check_free([rel])
        return self.root / rel

    def wrote(self, rel: str) -> None:
        """Record ``rel`` as thingmask's (call after the file is complete)."""
        if rel not in self._owned:
            self._owned.add(rel)
            self.record["files"].append(rel)

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write ``data`` to ``rel`` atomically and record it."""
        with atomic_path(self.path_for(rel)) as tmp:
            tmp.write_bytes(data)
        self.wrote(rel)
        return self.root / rel

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str, data: Any) -> Path:
        return self.write_text(rel, json.dumps(data, indent=2) + "\n")

    def save(self) -> Path:
        """Write the record (atomically) when it changed; call after each batch of files."""
        path = self.root / MANIFEST
        if _read(path) != json.loads(json.dumps(self.record)):
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, self.record)
        return path


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: unreadable ({exc}); it records what thingmask wrote in this folder. "
            "Choose a new --output folder"
        ) from None
    return data if isinstance(data, dict) else {}
