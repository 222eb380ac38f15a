"""A stand-in ``google.colab`` for the tests, plus a fault-injecting file copy ("a flaky Drive").

``install(monkeypatch)`` puts fresh copies of ``google/colab/*.py`` into ``sys.modules`` through
``monkeypatch``, so they vanish (and any real ``google`` package is restored) when the test ends.
The stand-in records every call in ``CALLS`` and raises what ``fail(name, exc)`` queued.

Test modules load this file by path (it is not on ``sys.path``)::

    spec = importlib.util.spec_from_file_location("fake_colab", TESTS / "fake_colab/__init__.py")
"""

from __future__ import annotations

import errno
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent / "google" / "colab"
SUBMODULES = ("drive", "runtime")


def _load(monkeypatch, name: str, path: Path, package: bool = False) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def install(monkeypatch) -> types.ModuleType:
    """Install the stand-in for the current test; returns the ``google.colab`` stand-in."""
    if "google" not in sys.modules:
        google = types.ModuleType("google")
        google.__path__ = []
        monkeypatch.setitem(sys.modules, "google", google)
    colab = _load(monkeypatch, "google.colab", HERE / "__init__.py", package=True)
    monkeypatch.setattr(sys.modules["google"], "colab", colab, raising=False)
    for sub in SUBMODULES:
        setattr(colab, sub, _load(monkeypatch, f"google.colab.{sub}", HERE / f"{sub}.py"))
    return colab


def flaky_copy(
    real: Callable[[Path, Path], None],
    *,
    corrupt: dict[str, int] | None = None,
    errors: dict[str, list[OSError]] | None = None,
    log: list | None = None,
) -> Callable[[Path, Path], None]:
    """A stand-in for ``thingmask.colab.verified_copy._copy_file`` that misbehaves for named files.

    ``corrupt={"model_final.pth": 1}`` flips a byte of the first copy of that file;
    ``errors={"x.mp4": [OSError(errno.ENOSPC, ...)]}`` raises those errors on the first copies.
    ``log`` collects the source names in copy order.
    """
    corrupt = dict(corrupt or {})
    errors = {k: list(v) for k, v in (errors or {}).items()}

    def copy(src: Path, dst: Path) -> None:
        name = Path(src).name
        if log is not None:
            log.append(name)
        if errors.get(name):
            raise errors[name].pop(0)
        real(src, dst)
        if corrupt.get(name, 0) > 0:
            corrupt[name] -= 1
            data = bytearray(Path(dst).read_bytes())
            data[len(data) // 2] ^= 0xFF
            Path(dst).write_bytes(bytes(data))

    return copy


def quota_error() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")
