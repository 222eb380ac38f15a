"""Install what this Python lacks of thingmask's requirements, and leave Colab's torch alone.

The notebook's set-up cell installs thingmask itself with ``pip install --no-deps`` (so pip never
resolves torch), then calls :func:`install_missing` for the rest. A Colab runtime already has
almost everything; what it lacks (typically ``av``) is installed, nothing else:

* ``torch``, ``torchvision``, ``torchaudio`` and ``numpy`` (:data:`PROTECTED`) are never installed
  or upgraded here: Colab's torch is built for its CUDA driver, and numpy is already imported by
  the running kernel. They are also pinned (pip ``-c`` constraints) to the installed versions, so
  no other package can pull a different one in. An older one is reported, not replaced.
* A requirement counts as met by an equivalent distribution (``opencv-python`` provides the
  ``cv2`` that ``opencv-python-headless`` would: installing both breaks ``cv2``).

Only the standard library, ``packaging`` and the package's own light ``__init__`` (numpy, PyYAML:
in every Colab runtime) are imported, so this runs before the requirements are there.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["ALTERNATIVES", "PROTECTED", "InstallPlan", "install_missing", "plan_install"]

log = logging.getLogger(__name__)

# Never installed or upgraded by thingmask (see the module docstring); pinned while installing.
PROTECTED = ("torch", "torchvision", "torchaudio", "numpy")
# Distributions that satisfy a requirement as well as the one named (same import, same role).
ALTERNATIVES = {
    "opencv-python-headless": (
        "opencv-python",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    )
}

Installed = Callable[[str], str | None]
Runner = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class InstallPlan:
    """What :func:`install_missing` will do.

    Attributes:
        install: requirement strings for pip (missing or too old, not protected).
        pins: ``name==version`` constraints for the protected distributions that are installed.
        kept: one line per protected requirement that is missing or too old (not touched).
    """

    install: tuple[str, ...] = ()
    pins: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def plan_install(
    requirements: Iterable[str],
    installed: Installed = installed_version,
    extras: Sequence[str] = (),
) -> InstallPlan:
    """Decide what to install for ``requirements`` (PEP 508 strings, e.g. a distribution's
    ``Requires-Dist``), given ``installed(name) -> version | None``. Pure: nothing is installed.

    Requirements whose marker does not apply (another ``extra``, another platform) are skipped.
    """
    install, kept = [], []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": extra}) for extra in (*extras, "")
        ):
            continue
        name = canonicalize_name(req.name)
        candidates = (name, *ALTERNATIVES.get(name, ()))
        versions = [v for v in (installed(n) for n in candidates) if v is not None]
        if any(req.specifier.contains(v, prereleases=True) for v in versions):
            continue
        if name in PROTECTED:
            have = f"{versions[0]} is installed" if versions else "it is not installed"
            kept.append(
                f"{req}: {have}; left as it is (thingmask never installs {req.name} — "
                "Colab's build matches its GPU driver; elsewhere install it yourself)"
            )
            continue
        req.marker = None  # evaluated above; pip would evaluate ``extra`` as ""
        install.append(str(req))
    pins = tuple(f"{n}=={v}" for n in PROTECTED if (v := installed(n)) is not None)
    return InstallPlan(tuple(install), pins, tuple(kept))


def _imported(names: Iterable[str]) -> list[str]:
    # Distributions whose modules the running kernel has already imported: upgrading them takes
    # effect only after a restart.
    modules = metadata.packages_distributions()
    wanted = {canonicalize_name(Requirement(n).name) for n in names}
    return sorted(
        {
            dist
            for module, dists in modules.items()
            if module in sys.modules
            for dist in dists
            if canonicalize_name(dist) in wanted
        }
    )


def install_missing(
    distribution: str = "thingmask",
    *,
    extras: Sequence[str] = (),
    installed: Installed = installed_version,
    run: Runner = subprocess.run,
    python: str = sys.executable,
) -> str:
    """pip-install what ``distribution``'s requirements lack here; returns what was done.

    Raises ``RuntimeError`` (pip's last lines and the fix) when pip fails, e.g. offline.
    """
    plan = plan_install(metadata.requires(distribution) or (), installed, extras)
    for line in plan.kept:
        log.warning(line)
    if not plan.install:
        return f"{distribution}: every requirement is already installed" + "".join(
            f"\n  note: {line}" for line in plan.kept
        )
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{pin}\n" for pin in plan.pins), encoding="utf-8")
        command = [python, "-m", "pip", "install", "-q", "-c", str(constraints), *plan.install]
        log.info("installing %s", " ".join(plan.install))
        done = run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-15:])
        raise RuntimeError(
            f"pip could not install {', '.join(plan.install)} (kept: {', '.join(plan.pins)}):\n"
            f"{tail}\nCheck the internet connection (Colab: Runtime → Disconnect and delete "
            "runtime, then Run all again), or install those packages yourself and re-run."
        )
    lines = [f"installed {' '.join(plan.install)}", *(f"note: {k}" for k in plan.kept)]
    if upgraded := _imported(plan.install):
        lines.append(
            f"note: {', '.join(upgraded)} were already imported; Runtime → Restart session, "
            "then Run all, to use the new versions"
        )
    return "\n".join(lines)
