"""Train/val split: deterministic by seed, stratified over multi-label images, and respectful of a
split the source already has (Roboflow ``train/valid`` folders, ``train.json``/``val.json``...).

Stratification is iterative (Sechidis et al., 2011): the rarest class is placed first, each of its
images going to the split that still "wants" that class most. Every class with at least two
images is wanted at least once in each split, and a last repair pass moves an image when a class
still misses a split, so small datasets evaluate every class.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection, Sequence

from thingmask.datasets.records import Sample
from thingmask.datasets.report import Report

__all__ = ["SPLIT_ALIASES", "assign_splits", "split_of_path", "stratified_split"]

# folder/file names that mean a split, as annotation tools write them
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def split_of_path(parts: Sequence[str]) -> str | None:
    """``train``/``val``/``test`` from path components (``images/valid/x.jpg`` → ``val``;
    COCO-style years too: ``images/val2017/x.jpg`` → ``val``)."""
    for part in parts:
        name = SPLIT_ALIASES.get(part.lower().rstrip("0123456789"))
        if name:
            return name
    return None


def stratified_split(
    label_sets: Sequence[Collection[str]], val_fraction: float, seed: int
) -> list[str]:
    """``"train"``/``"val"`` for each item, given the set of class names on each image.

    Deterministic for a given input order and seed. At least one image goes to each split when
    there are two or more images.
    """
    n = len(label_sets)
    if n < 2:
        return ["train"] * n
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"val_fraction {val_fraction!r}: expected a fraction between 0 and 1, e.g. 0.2"
        )
    rng = random.Random(seed)
    labels = [frozenset(s) for s in label_sets]
    order = list(range(n))
    rng.shuffle(order)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    total = {"val": float(n_val), "train": float(n - n_val)}
    counts = Counter(lab for s in labels for lab in s)
    want: dict[str, dict[str, float]] = {"val": {}, "train": {}}
    for lab, c in counts.items():
        # >= 2 images: at least one in each split, so the class is learned and evaluated;
        # a single image goes to train (one val image could not measure anything)
        v = min(max(c * val_fraction, 1.0), c - 1.0) if c >= 2 else 0.0
        want["val"][lab], want["train"][lab] = v, c - v
    result: list[str | None] = [None] * n

    def assign(i: int, split: str) -> None:
        result[i] = split
        total[split] -= 1
        for lab in labels[i]:
            want[split][lab] -= 1

    pending = {lab: [i for i in order if lab in labels[i]] for lab in counts}
    while True:
        open_labels = {lab: [i for i in ids if result[i] is None] for lab, ids in pending.items()}
        open_labels = {lab: ids for lab, ids in open_labels.items() if ids}
        if not open_labels:
            break
        lab = min(open_labels, key=lambda k: (len(open_labels[k]), k))

        def preference(split: str, lab: str = lab) -> tuple[float, float, float]:
            return want[split][lab], total[split], rng.random()  # random: ties, by seed

        for i in open_labels[lab]:
            assign(i, max(("val", "train"), key=preference))
        pending = open_labels
    for i in order:
        if result[i] is None:  # images without annotations fill what is left
            assign(i, "val" if total["val"] > total["train"] else "train")
    out = [r or "train" for r in result]
    _repair(out, labels, counts)
    return out


def _repair(out: list[str], labels: Sequence[frozenset[str]], counts: Counter) -> None:
    """Move single images so each class with ≥ 2 images is in both splits (when possible)."""
    for lab in sorted(counts, key=lambda k: (counts[k], k)):
        if counts[lab] < 2:
            continue
        for split, other in (("val", "train"), ("train", "val")):
            have = [i for i, s in enumerate(out) if s == split and lab in labels[i]]
            if have:
                continue
            per_other = Counter(x for i, s in enumerate(out) if s == other for x in labels[i])
            # a donor must not take the last image of another class from its split
            donors = [
                i
                for i, s in enumerate(out)
                if s == other
                and lab in labels[i]
                and all(per_other[x] > 1 or counts[x] < 2 for x in labels[i])
            ]
            if donors and sum(1 for s in out if s == other) > 1:
                out[min(donors, key=lambda i: (len(labels[i]), i))] = split
    for split, other in (("val", "train"), ("train", "val")):
        if split in out or len(out) < 2:
            continue
        per_other = Counter(x for i, s in enumerate(out) if s == other for x in labels[i])
        pool = [i for i, s in enumerate(out) if s == other]
        harmless = [i for i in pool if all(per_other[x] > 1 for x in labels[i])]
        out[min(harmless or pool, key=lambda i: (len(labels[i]), i))] = split


def assign_splits(
    samples: Sequence[Sample], val_fraction: float, seed: int, report: Report
) -> list[str]:
    """The final ``train``/``val`` of each sample.

    Samples carrying a split keep it (``test`` joins ``val``: thingmask evaluates on val); the
    rest are split by :func:`stratified_split`. A source with a train split only gets
    ``val_fraction`` of it moved to val. Classes missing from a split are reported.
    """
    given = [SPLIT_ALIASES.get(s.split or "") for s in samples]
    if "test" in given:
        report.info(
            "split-test-merged",
            "",
            f"{given.count('test')} image(s) of the source's "
            "test split go to val (thingmask trains on train and evaluates on val)",
        )
    given = ["val" if g == "test" else g for g in given]
    if any(given) and "val" not in given:
        report.info(
            "split-train-only",
            "",
            "the source has a train split but no val/test "
            f"split; {val_fraction:.0%} of it is moved to val",
        )
        given = [None] * len(given)
    free = [i for i, g in enumerate(given) if g is None]
    labels = [{inst.category for inst in samples[i].objects} for i in free]
    for i, split in zip(free, stratified_split(labels, val_fraction, seed), strict=True):
        given[i] = split
    splits = [g or "train" for g in given]
    how = (
        f"stratified, val_fraction {val_fraction}, seed {seed}"
        if free == list(range(len(samples)))
        else "kept from the source"
        if not free
        else "source split + stratified"
    )
    report.summary.setdefault("split", {})["how"] = how
    _report_missing(samples, splits, report)
    return splits


def _report_missing(samples: Sequence[Sample], splits: Sequence[str], report: Report) -> None:
    per: dict[str, Counter[str]] = {"train": Counter(), "val": Counter()}
    for s, split in zip(samples, splits, strict=True):
        per[split].update({i.category for i in s.objects})
    for name in sorted(set(per["train"]) | set(per["val"])):
        if not per["train"][name]:
            report.warning(
                "split-class-missing",
                f"class {name!r}",
                "has no training image "
                f"(only {per['val'][name]} in val), so the model cannot learn it",
                "Annotate more images of it, or move some to train.",
            )
        elif not per["val"][name]:
            n = per["train"][name]
            report.warning(
                "split-class-missing",
                f"class {name!r}",
                f"has no validation image"
                f" ({n} in train{', too few to split' if n < 2 else ''}), so its AP "
                "cannot be measured",
                "Annotate more images of it.",
            )
