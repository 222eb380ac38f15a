"""Detections type and the multi-class display-things filter."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.detections import Detections, keep


def make(names, h=8, w=10):
    n = len(names)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        masks[i, i % h, : i + 1] = True
    return Detections(
        masks=masks,
        boxes=np.arange(4 * n, dtype=np.float32).reshape(n, 4),
        class_names=names,
        scores=np.linspace(0.5, 1.0, n),
        track_ids=range(n),
    )


@pytest.mark.parametrize(
    ("names", "wanted", "expected"),
    [
        (["cat", "bird", "leaf", "cat"], ["cat"], ["cat", "cat"]),
        (["cat", "bird", "leaf", "cat"], ["bird", "cat"], ["cat", "bird", "cat"]),
        (["cat", "bird", "leaf", "cat"], {"cat", "bird"}, ["cat", "bird", "cat"]),
        (["cat", "bird", "leaf"], ["zebra"], []),
        ([], ["cat"], []),
        (["leaf"], [], []),
    ],
)
def test_keep_any_number_unordered(names, wanted, expected):
    dets = make(names)
    kept = keep(dets, wanted)
    assert list(kept.class_names) == expected
    assert kept.masks.shape == (len(expected), 8, 10)
    # rows stay aligned: each kept row equals the original row with that index
    idx = [i for i, n in enumerate(names) if n in set(wanted)]
    np.testing.assert_array_equal(kept.masks, dets.masks[idx])
    np.testing.assert_array_equal(kept.boxes, dets.boxes[idx])
    np.testing.assert_array_equal(kept.track_ids, np.array(idx, np.int64))


def test_keep_is_pure():
    dets = make(["cat", "leaf"])
    before = dets.masks.copy()
    keep(dets, ["cat"]).masks[:] = False
    np.testing.assert_array_equal(dets.masks, before)
    assert len(dets) == 2


def test_keep_rejects_a_bare_string():
    with pytest.raises(TypeError, match=r"write \['cat'\]"):
        keep(make(["cat"]), "cat")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"masks": np.zeros((2, 4), bool)}, ValueError, r"expected shape \(N, H, W\)"),
        ({"masks": np.zeros((1, 4, 4), np.float32)}, TypeError, "expected dtype bool"),
        ({"scores": [0.1, 0.2]}, ValueError, "scores: expected 1 rows"),
        ({"class_names": []}, ValueError, "class_names: expected 1 rows"),
        ({"track_ids": [1, 2]}, ValueError, "track_ids: expected 1 rows"),
    ],
)
def test_detections_validates_shapes(kwargs, error, match):
    base = {
        "masks": np.zeros((1, 4, 4), bool),
        "boxes": [[0, 0, 1, 1]],
        "class_names": ["cat"],
        "scores": [0.9],
    }
    with pytest.raises(error, match=match):
        Detections(**{**base, **kwargs})


def test_empty_and_union():
    empty = Detections.empty(5, 7)
    assert len(empty) == 0 and empty.image_size == (5, 7)
    assert not empty.union_mask().any()
    dets = make(["cat", "bird"])
    assert dets.union_mask().sum() == 3
