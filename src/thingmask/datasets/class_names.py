"""Class lists given next to an export: ``thingmask prepare --names`` / the ``dataset_class_names``
setting, an Ultralytics dataset yaml (``names:`` as a list or ``{id: name}``), labelme's
``labels.txt``.

A class list is the class *names* in id order: for YOLO, line ``3 ...`` is ``names[3]``; for
labelme and VIA it fixes the order of the class ids (as labelme's own ``labelme2coco --labels``
does).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thingmask.errors import InputError

__all__ = ["LABELME_RESERVED", "parse_class_names", "read_labels_txt", "yaml_names"]

# labelme's reserved labels (labelme2coco / labelme2voc): "__ignore__" marks regions to ignore,
# "_background_" is the background class; neither is an object class
LABELME_RESERVED = ("__ignore__", "_background_")
_FILE_SUFFIXES = (".yaml", ".yml", ".txt", ".names")
_HOW = (
    'Give the names in class-id order, comma-separated ("cat,dog"), or the path of an '
    "Ultralytics dataset yaml with `names:` (thingmask prepare --names / dataset_class_names)."
)


def yaml_names(data: Any) -> list[str]:
    """``names`` of a parsed Ultralytics dataset yaml: ``[a, b]`` or ``{0: a, 1: b}``.

    Raises ValueError saying what is wrong (no ``names``, ids not 0..K-1, a name not a text).
    """
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            ids = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise ValueError(
                f"names: the keys {list(names)} must be class ids 0, 1, 2, ..."
            ) from None
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(f"names: the ids {sorted(ids)} must be 0..{len(ids) - 1} (one each)")
        names = [ids[k] for k in range(len(ids))]
    if not isinstance(names, list) or not names:
        raise ValueError("needs `names:` as a list of class names (or {0: name, 1: name, ...})")
    return _clean(names, "names")


def read_labels_txt(path: Path) -> list[str]:
    """labelme's ``labels.txt``: one label a line; ``__ignore__``/``_background_`` and blank
    lines are left out. Raises OSError/UnicodeDecodeError when unreadable."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return _unique([n.strip() for n in lines if n.strip() and n.strip() not in LABELME_RESERVED])


def parse_class_names(value: str | Sequence[str]) -> list[str]:
    """``--names`` / ``dataset_class_names`` → the class names in id order.

    ``value``: names (``"cat,dog"`` or a list), or the path of a ``.yaml``/``.yml`` Ultralytics
    dataset file (``names:``), or of a ``.txt``/``.names`` file with one name a line. Raises
    :class:`~thingmask.errors.InputError` naming the value and the fix.
    """
    if not isinstance(value, str):
        if not all(isinstance(n, str) for n in value):
            raise InputError(f"class names {list(value)!r}: every name must be a text. " + _HOW)
        return _checked(list(value), repr(list(value)))
    text = value.strip()
    if text.lower().endswith(_FILE_SUFFIXES):  # the same rule as the setting's check in config
        return _from_file(Path(text).expanduser(), value)
    return _checked(text.split(","), repr(value))


def _from_file(path: Path, value: str) -> list[str]:
    if not path.is_file():
        raise InputError(f"class names {value!r}: no such file. " + _HOW)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"class names {value!r}: cannot be read ({exc}). " + _HOW) from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        return _checked(text.splitlines(), repr(value), skip_blank=True)
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"class names {value!r}: not valid YAML ({exc}). " + _HOW) from None
    try:
        return yaml_names(data)
    except ValueError as exc:
        raise InputError(f"class names {value!r}: {exc}. " + _HOW) from None


def _checked(items: list[str], where: str, skip_blank: bool = False) -> list[str]:
    names = [n.strip() for n in items if not (skip_blank and not n.strip())]
    if not names or any(not n for n in names):
        raise InputError(f"class names {where}: an empty name. " + _HOW)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"class names {where}: {dupes} given twice; each class once. " + _HOW)
    return names


def _clean(names: list[Any], where: str) -> list[str]:
    bad = [n for n in names if not isinstance(n, (str, int)) or isinstance(n, bool)]
    if bad or any(not str(n).strip() for n in names):
        raise ValueError(f"{where}: every class name must be a non-empty text (got {bad or names})")
    return [str(n).strip() for n in names]


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))
