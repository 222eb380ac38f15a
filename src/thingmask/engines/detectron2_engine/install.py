"""Is detectron2 here, and the commit the notebook's set-up cell builds in Colab (no detectron2
import at load)."""

from __future__ import annotations

import logging

from thingmask.config import Config

__all__ = ["DETECTRON2_COMMIT", "available", "resolve_engine"]

log = logging.getLogger(__name__)

# detectron2 commit the notebook's set-up cell pins (the one this engine was tested against).
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"


def available() -> bool:
    """True when detectron2 (with its compiled extension) imports."""
    try:
        import detectron2  # noqa: F401
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(config: Config | str) -> str:
    """The engine to use: ``config.engine`` (or the engine name given), or ``"torchvision"`` (with
    a warning) when detectron2 was asked for but is not importable (install cell skipped/failed)."""
    engine = config if isinstance(config, str) else config.engine
    if engine == "detectron2" and not available():
        log.warning(
            "engine='detectron2' but detectron2 is not installed (or its compiled part "
            "failed to import); using engine='torchvision' instead. In Colab run the set-up "
            "cell with engine='detectron2' (it builds detectron2) to use detectron2."
        )
        return "torchvision"
    return engine
