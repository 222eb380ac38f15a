"""The one place an engine is chosen by name."""

from __future__ import annotations

from thingmask.config import ENGINES as ENGINE_NAMES
from thingmask.engines.base import Engine
from thingmask.errors import ConfigError

__all__ = ["ENGINE_NAMES", "get_engine"]


def get_engine(name: str) -> Engine:
    """The :class:`~thingmask.engines.base.Engine` called ``name``.

    Engines are imported here, when chosen, so the other one's dependencies are never loaded.

    Raises:
        ConfigError: an unknown name (listing the valid ones).
        ImportError: ``"detectron2"`` when detectron2 is not installed (with how to get it).
    """
    if name == "torchvision":
        from thingmask.engines.torchvision_engine.engine import ENGINE as TORCHVISION

        return TORCHVISION
    if name == "detectron2":
        from thingmask.engines.detectron2_engine.install import available

        if not available():
            raise ImportError(
                "engine='detectron2' but detectron2 is not installed (or its compiled part "
                "fails to import). In Colab run the set-up cell with engine='detectron2' (it "
                "builds detectron2 at a pinned commit); elsewhere install detectron2 from its "
                "git repository (see the README), or set engine='torchvision' (pure pip, "
                "CPU/CUDA/MPS)."
            )
        from thingmask.engines.detectron2_engine.engine import ENGINE as DETECTRON2

        return DETECTRON2
    raise ConfigError(f"engine: got {name!r}; expected one of {', '.join(ENGINE_NAMES)}")
