"""Train/val split: deterministic by seed, stratified over multi-label images, existing split
kept."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thingmask.datasets.records import Instance, Sample
from thingmask.datasets.report import Report
from thingmask.datasets.split import assign_splits, split_of_path, stratified_split


def labelled(seed: int, n: int = 60) -> list[set[str]]:
    """Multi-label images with skewed class frequencies, one class on exactly two images."""
    rng = random.Random(seed)
    classes = ["cat", "bird", "dog", "fox", "owl"]
    weights = [0.6, 0.4, 0.2, 0.1, 0.05]
    out = [{c for c, w in zip(classes, weights, strict=True) if rng.random() < w} for _ in range(n)]
    for s in out:
        s.discard("rare")
    out[7].add("rare")
    out[41].add("rare")
    return out


def per_split(labels, splits):
    seen = {"train": set(), "val": set()}
    for lab, sp in zip(labels, splits, strict=True):
        seen[sp] |= lab
    return seen


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_stratified_every_class_in_both_splits(seed, fraction):
    labels = labelled(seed)
    splits = stratified_split(labels, fraction, seed)
    seen = per_split(labels, splits)
    counts = {c: sum(c in s for s in labels) for c in set().union(*labels)}
    for cls, n in counts.items():
        if n >= 2:
            assert cls in seen["train"] and cls in seen["val"], (cls, n)
    n_val = splits.count("val")
    assert abs(n_val - fraction * len(labels)) <= max(3, 0.3 * fraction * len(labels))


def test_deterministic_by_seed():
    labels = labelled(5)
    a = stratified_split(labels, 0.2, seed=11)
    assert a == stratified_split(labels, 0.2, seed=11)
    assert a != stratified_split(labels, 0.2, seed=12)


@pytest.mark.parametrize(
    ("labels", "want"),
    [
        ([], []),
        ([{"cat"}], ["train"]),
        ([{"cat"}, {"cat"}], None),  # one each, in some order
        ([set(), set(), set()], None),
    ],
)
def test_small_inputs(labels, want):
    out = stratified_split(labels, 0.2, 0)
    if want is not None:
        assert out == want
    else:
        assert sorted(set(out)) == ["train", "val"]


def test_bad_fraction_is_explained():
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split([{"a"}, {"a"}], 1.5, 0)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.sets(st.sampled_from("abcde"), max_size=3), min_size=2, max_size=40),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**16),
)
def test_split_properties(labels, fraction, seed):
    out = stratified_split(labels, fraction, seed)
    assert len(out) == len(labels) and set(out) <= {"train", "val"}
    assert "train" in out and "val" in out
    assert out == stratified_split(labels, fraction, seed)


def sample(name: str, classes: list[str], split: str | None = None) -> Sample:
    inst = tuple(Instance(c, [[0, 0, 5, 0, 5, 5]], 0, 12.5, (0, 0, 5, 5)) for c in classes)
    return Sample(name, Path(name), 10, 10, inst, split)


def test_existing_split_is_kept():
    samples = [sample(f"{i}.png", ["cat"], "train" if i < 5 else "val") for i in range(7)]
    report = Report()
    assert assign_splits(samples, 0.5, 0, report) == ["train"] * 5 + ["val"] * 2
    assert report.summary["split"]["how"] == "kept from the source"


def test_test_split_joins_val():
    samples = [
        sample("a", ["cat"], "train"),
        sample("b", ["cat"], "train"),
        sample("c", ["cat"], "test"),
    ]
    report = Report()
    assert assign_splits(samples, 0.2, 0, report) == ["train", "train", "val"]
    assert "split-test-merged" in report.rules("info")


def test_train_only_source_is_split():
    samples = [sample(f"{i}", ["cat"], "train") for i in range(10)]
    report = Report()
    out = assign_splits(samples, 0.2, 0, report)
    assert out.count("val") == 2
    assert "split-train-only" in report.rules("info")


def test_unsplit_images_join_an_existing_split():
    samples = [sample("a", ["cat"], "train"), sample("b", ["cat"], "val")]
    samples += [sample(f"n{i}", ["cat"]) for i in range(10)]
    out = assign_splits(samples, 0.2, 0, Report())
    assert out[:2] == ["train", "val"] and "val" in out[2:] and "train" in out[2:]


def test_class_missing_from_a_split_is_reported():
    samples = [
        sample("a", ["cat"], "train"),
        sample("b", ["cat", "dog"], "train"),
        sample("c", ["cat"], "val"),
    ]
    report = Report()
    assign_splits(samples, 0.2, 0, report)
    texts = [i.message for i in report.warnings if i.rule == "split-class-missing"]
    assert texts == [
        "has no validation image (1 in train, too few to split), so its AP cannot be measured"
    ]


@pytest.mark.parametrize(
    ("parts", "want"),
    [
        (("images", "train"), "train"),
        (("valid",), "val"),
        (("Validation", "x"), "val"),
        (("test",), "test"),
        (("batch1",), None),
        (("images", "val2017"), "val"),  # COCO / coco128-seg folder names
        (("train2017",), "train"),
        ((), None),
    ],
)
def test_split_of_path(parts, want):
    assert split_of_path(parts) == want


def test_ignore_regions_are_no_class_in_the_split():
    """An ignore region must neither steer the stratification nor be reported as a class."""
    from thingmask.datasets.records import IGNORE

    ignore = Instance(IGNORE, {}, 1, 1.0, (0, 0, 1, 1), ignore=True)
    cat = Instance("cat", [], 0, 1.0, (0, 0, 1, 1))
    samples = [Sample(f"{i}.png", Path(f"{i}.png"), 4, 4, (cat,)) for i in range(4)]
    samples[0] = Sample("0.png", Path("0.png"), 4, 4, (cat, ignore))  # on one image only
    report = Report()
    assign_splits(samples, 0.5, 0, report)
    assert not any(IGNORE in i.where for i in report.issues)
