"""Run folders: ``<output_dir>/<run_name>-<YYYYmmdd-HHMMSS>/``, one per training run.

The one place that decides which run is "the newest": the CLI (``--run`` left out), the notebook
and the video job all ask here, so they always agree.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODEL_META", "find_latest_run", "require_latest_run"]

MODEL_META = "model_meta.json"  # written last by every engine's train(): "this run has a model"


def find_latest_run(output_dir: str | Path, run_name: str | None = None) -> Path | None:
    """The run folder under ``output_dir`` whose model was written last, or None.

    Only folders holding :data:`MODEL_META` count (an interrupted training run has none).
    ``run_name`` limits the search to ``<run_name>-*`` folders.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    pattern = f"{run_name}-*/{MODEL_META}" if run_name else f"*/{MODEL_META}"
    metas = [p for p in root.glob(pattern) if p.is_file()]
    if not metas:
        return None
    return max(metas, key=lambda p: (p.stat().st_mtime_ns, p.parent.name)).parent


def require_latest_run(output_dir: str | Path, run_name: str | None = None) -> Path:
    """:func:`find_latest_run`, or a FileNotFoundError that says how to get a trained run."""
    found = find_latest_run(output_dir, run_name)
    if found is None:
        where = f"{output_dir}/{run_name}-*/" if run_name else f"{output_dir}/"
        raise FileNotFoundError(
            f"no trained model under {where} (no folder with {MODEL_META}). Train one first "
            "(`thingmask train --config configs/demo.yaml` or the notebook's training section), "
            "pass --run RUN_DIR, or set zero_training=true to use a COCO-pretrained model."
        )
    return found
