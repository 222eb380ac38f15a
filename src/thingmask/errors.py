"""The errors thingmask raises for bad input, at the bottom of the stages so every module can
raise them without importing the stage that owns the input.

Each is a ``ValueError`` whose message names the file or setting, what is wrong and the fix. The
command line prints the message alone (exit 2); ``--debug`` adds the traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError"]


class InputError(ValueError):
    """A file, folder or value given by the user cannot be used; the message says why and how to
    fix it. Subclasses name the stage (config, dataset, video)."""


class ConfigError(InputError):
    """A setting is wrong. The message names the key, the bad value and what would be valid."""
