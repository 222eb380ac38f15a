"""The errors thingmask raises for bad input, at the bottom of the stages so every module can
raise them without importing the stage that owns the input.

Each is a ``ValueError`` whose message names the file or setting, what is wrong and the fix. The
command line prints the message alone (exit 2); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["ConfigError", "InputError", "StageError", "named_stage", "setting_fix", "speak_to"]

# Who reads the messages: the notebook (cells) unless the command line said otherwise; a fix is
# only useful in the words of the place the user types it.
_AUDIENCE = {"now": "notebook"}


@contextlib.contextmanager
def speak_to(audience: str) -> Iterator[None]:
    """Within the block, :func:`setting_fix` words fixes for ``"cli"`` (``thingmask``'s commands
    run inside one) or ``"notebook"`` (the default outside)."""
    if audience not in ("cli", "notebook"):
        raise ValueError(f"audience: got {audience!r}; expected 'cli' or 'notebook'")
    before, _AUDIENCE["now"] = _AUDIENCE["now"], audience
    try:
        yield
    finally:
        _AUDIENCE["now"] = before


def setting_fix(key: str, example: str = "VALUE") -> str:
    """How to change setting ``key``, in the words of where the user is: on the command line
    ``--set key=example`` or the ``--config`` YAML; in the notebook, the global-variables cell."""
    if _AUDIENCE["now"] == "cli":
        return f"Fix it with --set {key}={example} or in the YAML file given to --config."
    return f"Fix {key} in the global-variables cell or the config YAML."


class InputError(ValueError):
    """A file, folder or value given by the user cannot be used; the message says why and how to
    fix it. Subclasses name the stage: :class:`ConfigError` (here),
    ``thingmask.datasets.DatasetError``, ``thingmask.video.VideoError`` and
    ``thingmask.colab.verified_copy.DriveError`` (each defined by the stage that owns the input)."""


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
