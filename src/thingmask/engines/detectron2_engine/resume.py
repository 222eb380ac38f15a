"""Which checkpoint a detectron2 run continues from (no detectron2 import: tested everywhere).

detectron2's ``resume_or_load(resume=True)`` reads ``run_dir/last_checkpoint``;
:func:`prepare_resume` points it at the right file first, copying one in from an earlier run
folder or from ``resume_from`` (e.g. a Drive copy). Checkpoints are ``model_XXXXXXX.pth`` files
(``XXXXXXX`` = 0-based iteration of the last finished step) and ``model_final.pth``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from thingmask.config import Config
from thingmask.engines.checkpoints import checkpoint_iteration, is_valid_checkpoint, load_checkpoint
from thingmask.engines.detectron2_engine.bridge import D2_CONFIG_FILE
from thingmask.io_utils import atomic_path, atomic_write_text
from thingmask.runs import run_folders

__all__ = ["model_section", "prepare_resume", "run_checkpoints"]

log = logging.getLogger(__name__)


def _ckpt_sort_key(path: Path) -> tuple[int, float]:
    it = checkpoint_iteration(path)
    if it < 0:  # model_final.pth: its iteration is inside
        try:
            it = int(load_checkpoint(path).get("iteration", -1))
        except Exception:  # unreadable: sorted last, rejected by validation later
            it = -1
    return it, path.stat().st_mtime


def run_checkpoints(folders: Iterable[Path]) -> list[Path]:
    """``*.pth`` files of ``folders``, newest iteration first (temporary ``.part`` files out)."""
    found = [
        p for f in folders if f.is_dir() for p in f.glob("model_*.pth") if ".part" not in p.name
    ]
    return sorted(found, key=_ckpt_sort_key, reverse=True)


def _previous_runs(config: Config, run_dir: Path) -> list[Path]:
    own = run_dir.resolve()  # this run's folders only (exact name, thingmask.runs)
    return [p for p in run_folders(config.output_dir, config.run_name) if p.resolve() != own]


def model_section(cfg_yaml: str) -> dict[str, Any]:
    """The ``MODEL`` settings that make checkpoints interchangeable (weights/device aside)."""
    model = dict((yaml.safe_load(cfg_yaml) or {}).get("MODEL") or {})
    for key in ("WEIGHTS", "DEVICE"):
        model.pop(key, None)
    return model


def _compatible(checkpoint: Path, model: dict[str, Any] | None) -> bool:
    """False when the checkpoint's run folder records different model settings."""
    recorded = checkpoint.parent / D2_CONFIG_FILE
    if model is None or not recorded.is_file():
        return True
    if model_section(recorded.read_text(encoding="utf-8")) == model:
        return True
    log.warning(
        "not resuming from %s: its run (%s) used different model settings "
        "(classes, backbone or heads); set resume=False or a new run_name to start "
        "afresh",
        checkpoint,
        recorded,
    )
    return False


def prepare_resume(
    config: Config,
    run_dir: str | Path,
    resume_from: str | Path | None = None,
    model: dict[str, Any] | None = None,
) -> Path | None:
    """Point ``run_dir/last_checkpoint`` at the checkpoint to resume from, copying it in.

    Sources: ``resume_from`` (a ``.pth`` file, e.g. on Drive, or a run folder) when given; else,
    when ``config.resume``, ``run_dir``'s own checkpoints, then those of earlier folders of this
    run, ``<output_dir>/<run_name>-YYYYmmdd-HHMMSS`` (:mod:`thingmask.runs`; highest iteration
    first). Files that do not load (truncated
    by an interrupted copy or write) are skipped with a warning, so the previous one is used;
    with ``model`` (the ``MODEL`` section of the new detectron2 config), so are checkpoints whose
    run recorded different model settings. Returns the checkpoint in ``run_dir``, or ``None``
    (start afresh).
    """
    run_dir = Path(run_dir)
    marker = run_dir / "last_checkpoint"
    if resume_from is not None:
        src = Path(resume_from)
        if src.is_dir():
            candidates = run_checkpoints([src])
        elif src.is_file():
            if src.suffix != ".pth":
                raise ValueError(
                    f"resume_from {src}: expected a .pth checkpoint written by "
                    "thingmask (other formats, e.g. .pkl pickles, are not loaded: "
                    "they can run code)."
                )
            candidates = [src]
        else:
            raise FileNotFoundError(
                f"resume_from {src} does not exist. Pass a checkpoint file "
                "(model_XXXXXXX.pth) or a run folder."
            )
    elif config.resume:
        candidates = run_checkpoints([run_dir]) + run_checkpoints(_previous_runs(config, run_dir))
    else:
        marker.unlink(missing_ok=True)
        return None

    for cand in candidates:
        # is_valid_checkpoint logs a warning naming the file and the reason.
        if not (is_valid_checkpoint(cand) and _compatible(cand, model)):
            continue
        target = run_dir / cand.name
        if cand.resolve() != target.resolve():
            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(cand, tmp)
            log.info("resuming from %s (copied into %s)", cand, run_dir)
        else:
            log.info("resuming from %s", cand)
        atomic_write_text(marker, target.name)
        return target
    if resume_from is not None:
        raise ValueError(
            f"resume_from {resume_from}: no usable checkpoint there (see the "
            "warnings above). Pass another file or set resume_from=None."
        )
    marker.unlink(missing_ok=True)
    return None
