"""What every subcommand shares: settings from ``--config`` + ``KEY=VALUE``, the run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from thingmask.config import Config, load_config, parse_overrides, run_config

DEFAULT_NOTEBOOK = Path("notebooks/thingmask.ipynb")


def config_from_args(args: argparse.Namespace) -> Config:
    """``--config`` + KEY=VALUE; with ``--run RUN`` on top of the run's own ``config.yaml``
    (a run is enough to use its model: its classes, display things, sizes, thresholds)."""
    overrides = parse_overrides(getattr(args, "overrides", []) or [])
    if getattr(args, "run", None):
        return run_config(args.run, args.config, overrides)
    return load_config(args.config, overrides)


def add_common(parser: argparse.ArgumentParser, overrides: bool = True) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="settings YAML (default: built-in defaults); e.g. configs/demo.yaml",
    )
    if overrides:
        parser.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="override settings, e.g. iterations=100 display_things='[cat, bird]'",
        )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (repeatable)",
    )


def run_dir_from_args(args: argparse.Namespace, config: Config) -> Path | None:
    """``--run``, else None for zero-training, else the newest trained run (one rule, runs.py)."""
    from thingmask.runs import require_latest_run

    if getattr(args, "run", None):
        return Path(args.run)
    if config.zero_training:
        return None
    return require_latest_run(config.output_dir)
