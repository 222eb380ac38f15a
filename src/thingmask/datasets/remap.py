"""Renaming, merging and dropping classes (``class_map`` in the config, ``--map``/``--drop`` in the
CLI) on checked samples, by class *name*.

``{"doggo": "dog"}`` renames; ``{"puppy": "dog", "doggo": "dog"}`` merges both into one class
(placed where the first of them was in the id order); ``{"junk": ""}`` drops the class and its
annotations. The map is applied once, not transitively: ``{"a": "b", "b": "c"}`` turns ``a``
into ``b`` and ``b`` into ``c``. Ignore regions (labelme's ``__ignore__``) are no class: only
``{"__ignore__": ""}`` (``--drop __ignore__``) applies to them, and drops them.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

from thingmask.datasets.records import IGNORE, Category, Sample
from thingmask.datasets.report import Report

__all__ = ["apply_class_map", "parse_class_map"]


def parse_class_map(
    maps: Sequence[str] = (), drops: Sequence[str] = (), base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """CLI ``--map old=new`` and ``--drop name`` items (on top of ``base``) → a class map.

    Raises ValueError naming the bad item when it has no ``=`` or an empty old name.
    """
    out = dict(base or {})
    for item in maps:
        if "=" not in item:
            raise ValueError(
                f"--map {item!r}: expected OLD=NEW, e.g. --map doggo=dog "
                "(or --drop NAME to remove a class)"
            )
        old, new = (part.strip() for part in item.split("=", 1))
        if not old:
            raise ValueError(f"--map {item!r}: the class name before '=' is empty")
        out[old] = new
    for name in drops:
        if not name.strip():
            raise ValueError("--drop: expected a class name, got an empty text")
        out[name.strip()] = ""
    return out


def apply_class_map(
    samples: Sequence[Sample],
    categories: Sequence[Category],
    class_map: Mapping[str, str] | None,
    report: Report,
) -> tuple[list[Sample], list[Category]]:
    """Apply ``class_map`` to the samples' instances and the category list (pure: new lists).

    Names absent from the data are reported (``class-map-unknown``) with the closest class.
    """
    samples, categories = list(samples), list(categories)
    if not class_map:
        return samples, categories
    names = [c.name for c in categories]
    for old in class_map:
        if old not in names and old != IGNORE:
            close = difflib.get_close_matches(old, names, n=1)
            report.warning(
                "class-map-unknown",
                f"class_map {old!r}",
                "is not a class of the data" + (f" (did you mean {close[0]!r}?)" if close else ""),
                f"Use names from the data: {names}.",
            )
    mapping = {n: class_map.get(n, n) for n in names}
    mapping[IGNORE] = "" if class_map.get(IGNORE) == "" else IGNORE
    counts = Counter(i.category for s in samples for i in s.instances)
    new_cats: dict[str, Category] = {}
    for c in categories:
        target = mapping[c.name]
        if target:
            new_cats.setdefault(target, replace(c, name=target))
    changes = []
    n_ignore = sum(1 for s in samples for i in s.instances if i.ignore)
    for old, new in mapping.items():
        if old == new:
            continue
        if old == IGNORE:
            changes.append(f"dropped the ignore regions ({n_ignore})")
            continue
        if not new:
            changes.append(f"dropped {old!r} ({counts[old]} annotations)")
        elif sum(1 for v in mapping.values() if v == new) > 1:
            changes.append(f"merged {old!r} into {new!r} ({counts[old]} annotations)")
        else:
            changes.append(f"renamed {old!r} to {new!r} ({counts[old]} annotations)")
    if changes:
        report.info("class-map-applied", "class_map", "; ".join(changes))
    out = []
    for s in samples:
        kept = tuple(
            replace(i, category=mapping.get(i.category, i.category))
            for i in s.instances
            if mapping.get(i.category, i.category)
        )
        out.append(replace(s, instances=kept))
    return out, list(new_cats.values())
