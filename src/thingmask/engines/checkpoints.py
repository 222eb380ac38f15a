"""Checkpoint files shared by both engines and the Colab resume logic.

A checkpoint is a ``torch.save`` dict with at least ``"model"`` (a state dict) and ``"iteration"``
(int). Files are written under a temporary name and renamed, so a reader never sees a partial
file under a final name; files truncated by other means (a Drive sync cut short) fail
:func:`is_valid_checkpoint` and are skipped with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from thingmask.io_utils import atomic_path
from thingmask.runs import checkpoint_iteration  # one rule for names (runs.py)

__all__ = [
    "checkpoint_iteration",
    "find_latest_checkpoint",
    "is_valid_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` ``state`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no arbitrary pickles)."""
    state: dict[str, Any] = torch.load(Path(path), map_location=map_location, weights_only=True)
    return state


def is_valid_checkpoint(path: str | Path) -> bool:
    """True when ``path`` loads safely and holds a ``"model"`` state dict."""
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # truncated zip, pickle error, unsafe content: all mean "skip"
        log.warning("checkpoint %s is not usable (%s); skipping it", path, exc)
        return False
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        log.warning("checkpoint %s has no 'model' state dict; skipping it", path)
        return False
    return True


def find_latest_checkpoint(
    folders: Iterable[str | Path], pattern: str = "*.pth", validate: bool = True
) -> Path | None:
    """Newest valid checkpoint among ``folders`` (highest iteration, then newest file).

    Missing folders are ignored; temporary ``.part`` files are never considered.
    """
    candidates: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            candidates += [p for p in folder.glob(pattern) if ".part" not in p.name]
    candidates.sort(key=lambda p: (checkpoint_iteration(p), p.stat().st_mtime), reverse=True)
    for path in candidates:
        if not validate or is_valid_checkpoint(path):
            return path
    return None
