"""Loading and saving detectron2 weights safely: atomic ``.pth`` files, no foreign pickles.

Imports detectron2 at module level: the engine imports this only once detectron2 is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer

from thingmask.engines.checkpoints import save_checkpoint
from thingmask.engines.detectron2_engine.bridge import ZOO_URL_PREFIX
from thingmask.io_utils import atomic_write_text

__all__ = ["SafeCheckpointer", "load_with_advice", "zoo_cache_path"]


def zoo_cache_path(url: str) -> Path:
    """Where detectron2 (iopath) caches the download of ``url``; a copy placed there is used
    offline."""
    from iopath.common.file_io import get_cache_dir

    parsed = urlparse(url)
    return Path(get_cache_dir()) / parsed.path.lstrip("/")


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that writes atomically and loads only what is safe.

    - ``save`` writes ``<name>.pth`` under a temporary name and renames it, then rewrites
      ``last_checkpoint`` the same way, so an interruption never leaves a partial file under a
      final name; ``last_saved`` records ``(path, iteration)`` for the trainer's hook adapter.
    - ``.pth`` files load with ``torch.load(weights_only=True)`` (fvcore leaves the argument to
      torch's default, which changed in torch 2.6; detectron2 issue #5456): tensors and plain
      containers only, which is all our checkpoints hold (model, optimizer, scheduler, iteration).
    - ``.pkl`` files are pickles and can run code when loaded: only the official detectron2
      model-zoo weights (downloaded from ``dl.fbaipublicfiles.com``) are opened, through
      detectron2's own loader; any other ``.pkl`` is refused.
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", **checkpointables: Any) -> None:
        super().__init__(model, save_dir, **checkpointables)
        self.last_saved: tuple[Path, int] | None = None
        self._loading_zoo_url = False

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._loading_zoo_url = bool(path) and str(path).startswith(ZOO_URL_PREFIX)
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading_zoo_url = False

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl") and not self._loading_zoo_url:
            raise ValueError(
                f"{filename}: .pkl weights are Python pickles, which can run code "
                "when loaded; thingmask opens only the official detectron2 model-zoo "
                ".pkl files (by their URL) and its own .pth checkpoints."
            )
        if filename.endswith(".pyth"):
            raise ValueError(
                f"{filename}: pycls .pyth checkpoints are not supported; use a .pth "
                "checkpoint written by thingmask."
            )
        return super()._load_file(filename)

    def _torch_load(self, f: str) -> dict[str, Any]:
        return torch.load(f, map_location="cpu", weights_only=True)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = Path(self.save_dir) / f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", path)
        save_checkpoint(data, path)
        self.tag_last_checkpoint(path.name)
        self.last_saved = (path, int(data.get("iteration", -1)))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(Path(self.save_dir) / "last_checkpoint", last_filename_basename)


def load_with_advice(load: Callable[[], Any], weights: str, alternative: str) -> None:
    """Run ``load()`` (which reads ``weights``), turning a failed model-zoo download into advice
    on what to do (``alternative``: the other way out, e.g. "or set pretrained=False")."""
    try:
        load()
    except OSError as exc:
        if not str(weights).startswith(ZOO_URL_PREFIX):
            raise
        raise RuntimeError(
            f"could not download the COCO-pretrained weights {weights} ({exc}). Either go "
            "online once (they are cached for later offline use), or download that file on "
            f"another machine and copy it to {zoo_cache_path(weights)} (the cache detectron2 "
            f"reads; set FVCORE_CACHE to move it), {alternative}."
        ) from None
