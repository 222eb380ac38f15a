"""The errors thingmask raises for bad input, at the bottom of the stages so every module can
raise them without importing the stage that owns the input.

Each is a ``ValueError`` whose message names the file or setting, what is wrong and the fix. The
command line prints the message alone (exit 2); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["ConfigError", "InputError", "StageError", "named_stage"]


class InputError(ValueError):
    """A file, folder or value given by the user cannot be used; the message says why and how to
    fix it. Subclasses name the stage (config, dataset, video)."""


class ConfigError(InputError):
    """A setting is wrong. The message names the key, the bad value and what would be valid."""


class StageError(RuntimeError):
    """A stage of the pipeline failed; ``stage`` names it, ``error`` is what it raised."""

    def __init__(self, stage: str, error: BaseException) -> None:
        self.stage = stage
        self.error = error
        super().__init__(f"{stage} stage failed: {type(error).__name__}: {error}")


@contextlib.contextmanager
def named_stage(name: str) -> Iterator[None]:
    """Re-raise an exception of the block as :class:`StageError` naming stage ``name``.

    A StageError passes unchanged (the innermost name wins); KeyboardInterrupt and SystemExit are
    not wrapped.
    """
    try:
        yield
    except StageError:
        raise
    except Exception as exc:
        raise StageError(name, exc) from exc
