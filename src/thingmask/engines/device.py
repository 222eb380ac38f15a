"""``config.device`` → the ``torch.device`` an engine runs on (one rule for both engines)."""

from __future__ import annotations

import torch

from thingmask.errors import ConfigError

__all__ = ["resolve_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str, engine: str = "torchvision") -> torch.device:
    """The device for ``config.device`` (``auto`` | ``cpu`` | ``cuda`` | ``mps``).

    ``"auto"``: CUDA, then Apple MPS (torchvision only), else CPU. detectron2 runs on CPU or
    CUDA only, so ``engine="detectron2"`` refuses ``"mps"`` and never picks it; its
    ``MODEL.DEVICE`` string is ``str(resolve_device(name, "detectron2"))``.

    Raises:
        ConfigError: the device is not available here (with what to set instead).
    """
    mps_ok = engine != "detectron2"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok and _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device: got 'cuda' but no CUDA GPU is visible to torch. Set device='auto' or "
            "'cpu' (in Colab: Runtime > Change runtime type > GPU)."
        )
    if name == "mps" and not mps_ok:
        raise ConfigError(
            "device: got 'mps'; detectron2 runs on cpu or cuda. Set device='cpu' (or 'auto'), "
            "or use engine='torchvision' on Apple silicon."
        )
    if name == "mps" and not _mps_available():
        raise ConfigError("device: got 'mps' but Apple MPS is not available. Set device='auto'.")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: got {name!r}; expected auto, cpu, cuda or mps")
    return torch.device(name)
