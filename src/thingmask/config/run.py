"""The settings of a trained run, usable from any working directory (:func:`run_config`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from thingmask.config import RUN_CONFIG, Config, load_config
from thingmask.errors import ConfigError

__all__ = ["run_config"]

_RUN_PATHS = ("dataset_dir", "dataset_source", "output_dir", "canvas_image")  # relative to training
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Config))


def run_config(
    run_dir: str | Path, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """The settings a run was trained with (``RUN/config.yaml``: engine, classes, display
    things, sizes, thresholds), with ``path`` (a YAML) and ``overrides`` on top.

    A run is enough to use its model from anywhere: relative ``dataset_dir``/``output_dir``
    were relative to the folder training ran in, which is found from where the run folder
    sits (``<that folder>/<output_dir>/<run>``), so they still point at the same place from
    another working directory. A run folder without ``config.yaml`` (older runs) gives the
    defaults. Raises ConfigError when ``run_dir`` is not a folder.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(
            f"--run {run}: no such run folder. Pass the folder training wrote, "
            "e.g. outputs/demo-20250101-120000"
        )
    saved = run / RUN_CONFIG
    values: dict[str, Any] = {}
    if saved.is_file():
        try:
            loaded = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{saved}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{saved}: expected a mapping of settings, got {type(loaded).__name__}"
            )
        values = {k: v for k, v in loaded.items() if k in _FIELD_NAMES}
        out = values.get("output_dir")
        trained_in = _training_dir(run.absolute(), str(out)) if isinstance(out, str) else None
        if trained_in is not None and trained_in.resolve() != Path.cwd().resolve():
            for key in _RUN_PATHS:
                v = values.get(key)
                if isinstance(v, str) and v and not Path(v).is_absolute():
                    values[key] = str(trained_in / v)
    return load_config(path, overrides, base=values)


def _training_dir(run: Path, output_dir: str) -> Path | None:
    """The folder training ran in: ``run``'s parent minus ``output_dir`` (when relative)."""
    out = Path(output_dir)
    if out.is_absolute():
        return None
    parts = [p for p in out.parts if p not in ("", ".")]
    parent = run.parent
    if parts and list(parent.parts[-len(parts) :]) != parts:
        return None
    return parent.parents[len(parts) - 1] if parts else parent
