"""Is detectron2 here, and how the notebook installs it in Colab (no detectron2 import at load)."""

from __future__ import annotations

import logging

from thingmask.config import Config

__all__ = ["DETECTRON2_COMMIT", "available", "colab_install_cell", "resolve_engine"]

log = logging.getLogger(__name__)

# detectron2 commit the Colab install cell pins (the one this engine was tested against).
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
            "failed to import); using engine='torchvision' instead. In Colab run the "
            "detectron2 install cell (section 0) to use detectron2."
        )
        return "torchvision"
    return engine


def colab_install_cell(commit: str = DETECTRON2_COMMIT) -> str:
    """The notebook's detectron2 install cell, pinned to ``commit``.

    It reads the global variable ``engine`` (so it runs after the global-variables cell), builds
    detectron2 in Colab only, when asked for and missing (elsewhere: install it yourself, or the
    notebook falls back to torchvision), never reinstalls Colab's torch
    (``--no-build-isolation`` compiles against it; ``setuptools<81`` keeps ``pkg_resources``,
    which detectron2's model zoo imports), and falls back to torchvision when the import fails.
    """
    return (
        "# detectron2 engine: built from source against Colab's torch (~5 min, once per runtime)\n"
        "import importlib, importlib.util, subprocess, sys\n"
        "if (engine == 'detectron2' and 'google.colab' in sys.modules\n"
        "        and importlib.util.find_spec('detectron2') is None):\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', 'setuptools<81', "
        "'wheel', 'ninja'], check=True)\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', "
        "'--no-build-isolation',\n"
        f"                    'git+https://github.com/facebookresearch/detectron2.git@{commit}'],\n"
        "                   check=False)\n"
        "    importlib.invalidate_caches()\n"
        "from thingmask.engines.detectron2_engine import resolve_engine\n"
        "engine = resolve_engine(engine)  # falls back (with a message) if detectron2 is missing\n"
        "print('engine:', engine)\n"
    )
