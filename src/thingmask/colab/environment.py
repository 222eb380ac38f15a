"""Where the notebook runs: Colab or not, GPU or not, which torch — and what to change.

No ``google.colab`` import here (:mod:`thingmask.colab` holds them all): a Colab kernel imports
``google.colab`` before any user code, so its presence in ``sys.modules`` is the test.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from thingmask.config import Config

__all__ = ["GPU_HINT", "Env", "describe_environment", "environment", "in_colab"]

GPU_HINT = (
    "To use a free GPU: Runtime → Change runtime type → T4 GPU → Save, then "
    "Runtime → Run all (the runtime restarts; files in /content are lost)."
)


def in_colab() -> bool:
    """True inside a Colab kernel (it imports ``google.colab`` before any user code)."""
    return "google.colab" in sys.modules


# --- environment -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Env:
    """Where the notebook runs. ``device`` is what torch should use (``"cuda"``, ``"mps"``,
    ``"cpu"``); ``torch``/``cuda`` are version strings (``None`` when absent)."""

    in_colab: bool
    gpu: bool
    gpu_name: str | None
    device: str
    python: str
    torch: str | None
    cuda: str | None = None
    mps: bool = False


def environment(requested: str = "auto") -> Env:
    """Probe the machine; ``requested`` is the config's ``device`` (auto | cpu | cuda | mps).

    ``device`` is the requested one when available, else the best available (the mismatch is
    reported by :func:`describe_environment`).
    """
    try:
        import torch
    except ImportError:
        return Env(in_colab(), False, None, "cpu", platform.python_version(), None)
    gpu = bool(torch.cuda.is_available())
    gpu_name = torch.cuda.get_device_name(0) if gpu else None
    mps_backend = getattr(torch.backends, "mps", None)
    mps = bool(mps_backend is not None and mps_backend.is_available())
    available = {"cuda": gpu, "mps": mps, "cpu": True}
    if requested != "auto" and available.get(requested, False):
        device = requested
    else:
        device = "cuda" if gpu else "mps" if mps else "cpu"
    return Env(
        in_colab(),
        gpu,
        gpu_name,
        device,
        platform.python_version(),
        torch.__version__,
        torch.version.cuda,
        mps,
    )


def describe_environment(config: Config | None = None, env: Env | None = None) -> str:
    """A few lines for the notebook's first cells: where we run, GPU or not, what to change."""
    env = env or environment(config.device if config else "auto")
    lines = [
        f"Python {env.python} · torch {env.torch or 'not installed'}"
        + (f" (CUDA {env.cuda})" if env.cuda else "")
    ]
    if env.in_colab:
        lines.append("Running in Google Colab.")
    else:
        lines.append(
            "Running outside Colab (local / CI): Drive mount and runtime release are "
            "skipped; everything else runs the same."
        )
    if env.gpu:
        lines.append(f"GPU: {env.gpu_name} → device '{env.device}'.")
    else:
        lines.append(
            f"No CUDA GPU → device '{env.device}' (training is slower; the tiny demo "
            "settings still finish in minutes)."
        )
        if env.in_colab:
            lines.append(GPU_HINT)
    if config is not None:
        if config.device not in ("auto", env.device):
            lines.append(
                f"device={config.device!r} is not available here; using "
                f"'{env.device}'. Set device = \"auto\" to silence this."
            )
        if config.engine == "detectron2" and not env.gpu:
            lines.append(
                "engine='detectron2' without a GPU is very slow; "
                + (GPU_HINT if env.in_colab else "use engine='torchvision' on CPU.")
            )
        if env.in_colab and config.terminate_runtime and not config.save_to_drive:
            lines.append(
                "terminate_runtime=True but save_to_drive=False: the runtime will be "
                "kept, since releasing it would delete the only copy of the results."
            )
    return "\n".join(lines)
