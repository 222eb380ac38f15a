"""Stand-in ``google.colab`` (tests only): records calls, fails on demand."""

from __future__ import annotations

CALLS: list[tuple[str, tuple, dict]] = []
FAIL: dict[str, list[BaseException]] = {}


def fail(name: str, exc: BaseException, times: int = 1) -> None:
    """Make the next ``times`` calls of ``name`` (e.g. ``"drive.mount"``) raise ``exc``."""
    FAIL.setdefault(name, []).extend([exc] * times)


def record(name: str, *args, **kwargs) -> None:
    CALLS.append((name, args, kwargs))
    if FAIL.get(name):
        raise FAIL[name].pop(0)


def names() -> list[str]:
    return [c[0] for c in CALLS]
