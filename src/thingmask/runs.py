"""Run folders: ``<output_dir>/<run_name>-<YYYYmmdd-HHMMSS>/``, one per training run.

The one place that decides which folders belong to a run and which run or checkpoint is "the
newest": the CLI (``--run`` left out), the notebook, the video job, local resume of both engines
and Drive resume all ask here, so they always agree. A folder belongs to run ``demo`` only when its
name is exactly ``demo-YYYYmmdd-HHMMSS`` (``-N`` added when two runs started in the same second),
so ``demo`` never picks up ``demo-long-20250101-120000``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "MODEL_META",
    "checkpoint_iteration",
    "find_latest_run",
    "find_run_checkpoint",
    "is_run_folder",
    "require_latest_run",
    "run_checkpoints",
    "run_folders",
]

MODEL_META = "model_meta.json"  # written last by every engine's train(): "this run has a model"
_STAMP = r"\d{8}-\d{6}(?:-\d+)?"  # Config.new_run_dir: YYYYmmdd-HHMMSS, -N for a same-second twin
_ITER = re.compile(r"(\d+)(?=\.pth$)")


def is_run_folder(name: str, run_name: str | None = None) -> bool:
    """True when ``name`` is a run folder's name, of ``run_name`` exactly when given."""
    prefix = re.escape(run_name) if run_name else r".+"
    return re.fullmatch(rf"{prefix}-{_STAMP}", name) is not None


def run_folders(root: str | Path, run_name: str | None = None) -> list[Path]:
    """The run folders directly under ``root`` (of ``run_name`` exactly, when given), sorted by
    name (= by start time for one run name). Missing ``root``: empty."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_run_folder(p.name, run_name))


def checkpoint_iteration(path: str | Path) -> int:
    """The iteration number in a file name like ``model_0000199.pth`` (-1 for ``model_final``)."""
    match = _ITER.search(Path(path).name)
    return int(match.group(1)) if match else -1


def run_checkpoints(folders: list[Path], pattern: str = "*.pth") -> list[Path]:
    """Checkpoint files in ``folders``, newest first (highest iteration, then newest file);
    temporary ``.part`` files are never included."""
    found = [p for f in folders if f.is_dir() for p in f.glob(pattern) if ".part" not in p.name]
    return sorted(found, key=lambda p: (checkpoint_iteration(p), p.stat().st_mtime), reverse=True)


def find_run_checkpoint(
    root: str | Path,
    run_name: str,
    is_valid: Callable[[Path], bool],
    subfolder: str = "checkpoints",
    pattern: str = "*.pth",
) -> Path | None:
    """The newest checkpoint of run ``run_name`` under ``root`` (local ``output_dir`` or the
    Drive folder) that ``is_valid`` accepts (the engines pass
    :func:`thingmask.engines.checkpoints.is_valid_checkpoint`: a truncated copy is skipped), in
    ``<run folder>/<subfolder>/`` (``""``: the run folder itself); None when there is none."""
    folders = [f / subfolder if subfolder else f for f in run_folders(root, run_name)]
    return next((p for p in run_checkpoints(folders, pattern) if is_valid(p)), None)


def find_latest_run(output_dir: str | Path, run_name: str | None = None) -> Path | None:
    """The run folder under ``output_dir`` whose model was written last, or None.

    Only run folders holding :data:`MODEL_META` count (an interrupted training run has none).
    ``run_name`` limits the search to that run's folders (exact name, see the module docstring).
    """
    metas = [f / MODEL_META for f in run_folders(output_dir, run_name)]
    metas = [p for p in metas if p.is_file()]
    if not metas:
        return None
    return max(metas, key=lambda p: (p.stat().st_mtime_ns, p.parent.name)).parent


def require_latest_run(output_dir: str | Path, run_name: str | None = None) -> Path:
    """:func:`find_latest_run`, or a FileNotFoundError that says how to get a trained run."""
    found = find_latest_run(output_dir, run_name)
    if found is None:
        where = f"{output_dir}/{run_name}-YYYYmmdd-HHMMSS/" if run_name else f"{output_dir}/"
        raise FileNotFoundError(
            f"no trained model under {where} (no run folder with {MODEL_META}). Train one first "
            "(`thingmask train --config configs/demo.yaml` or the notebook's training section), "
            "pass --run RUN_DIR, or set zero_training=true to use a COCO-pretrained model."
        )
    return found
