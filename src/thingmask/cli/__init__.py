"""``thingmask`` command line: subcommands mirror the notebook's sections, same config file.

    thingmask demo     [--config configs/demo.yaml] [KEY=VALUE ...]   whole notebook, headless
    thingmask generate [--config ...]                                 bundled synthetic data
    thingmask prepare  SRC --output DIR [...]                         annotations → COCO
    thingmask train    [--config ...] [KEY=VALUE ...]                 sections 2–6
    thingmask evaluate [--run RUN_DIR]                                box/mask AP
    thingmask predict  IMAGE... [--run RUN_DIR] --output DIR          display things on images
    thingmask video    SRC --output OUT [--run RUN_DIR] [...]         cut-out video + data
    thingmask evaluate-video PRED GT [--output DIR]                   J, F, id switches vs GT
    thingmask frames   VIDEO --output DIR [--n 20]                    frames worth annotating
    thingmask prelabel IMAGES|VIDEO --run RUN_DIR --output DIR        predictions → annotations
    thingmask suggest  VIDEO --run RUN_DIR --output DIR [--n 20]      frames the model gets wrong

Bad input ends with one line naming the file/setting and the fix (exit 2); ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from thingmask.cli import data, labeling, sections, video
from thingmask.errors import speak_to

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, in the notebook's order."""
    parser = argparse.ArgumentParser(prog="thingmask", description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sections.add_parsers(sub)  # demo, generate, train, evaluate, predict
    data.add_parsers(sub)  # prepare
    video.add_parsers(sub)  # video, evaluate-video
    labeling.add_parsers(sub)  # frames, prelabel, suggest
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Bad input: ``thingmask <command>: error: <what and the fix>`` on
    stderr and exit 2, no traceback (``--debug`` re-raises to show it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with speak_to("cli"):  # a setting's fix reads --set KEY=VALUE / --config, not "the cell"
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"thingmask {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        expected = (ValueError, TypeError, OSError, ImportError, RuntimeError)
        hint = "" if isinstance(exc, expected) else " (unexpected; --debug shows the traceback)"
        print(f"thingmask {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 2
