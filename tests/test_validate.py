"""Validator rules (one bad input each → the expected error/warning and its text), EXIF decisions,
class remapping, and fuzzing: malformed input is reported, never a traceback."""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from thingmask.datasets.geometry import (
    clip_polygon,
    polygon_area,
    polygons_to_rle,
    rle_counts_from_string,
)
from thingmask.datasets.prepare import prepare_dataset
from thingmask.datasets.records import Category, normalize_file_name, orientation_decision
from thingmask.datasets.remap import apply_class_map, parse_class_map
from thingmask.datasets.report import Report
from thingmask.datasets.validate import validate_coco

W, H = 40, 30
SQUARE = [5.0, 5.0, 25.0, 5.0, 25.0, 25.0, 5.0, 25.0]


def base() -> dict:
    """Three images, cat on all three, bird on two: valid, no issue but notes."""
    return {
        "images": [
            {"id": i, "file_name": f"im{i}.png", "width": W, "height": H} for i in (1, 2, 3)
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [SQUARE], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "segmentation": [SQUARE], "iscrowd": 0},
            {"id": 3, "image_id": 3, "category_id": 1, "segmentation": [SQUARE], "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 2, "segmentation": [SQUARE], "iscrowd": 0},
            {"id": 5, "image_id": 2, "category_id": 2, "segmentation": [SQUARE], "iscrowd": 0},
        ],
        "categories": [
            {"id": 1, "name": "cat", "supercategory": "animal"},
            {"id": 2, "name": "bird", "supercategory": "animal"},
        ],
    }


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for i in (1, 2, 3):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(d / f"im{i}.png")
    return d


def _set(path, value):
    def mutate(data, root):
        *keys, last = path
        obj = data
        for k in keys:
            obj = obj[k]
        obj[last] = value

    return mutate


def _crowd(data, root):
    for a in data["annotations"]:
        a["iscrowd"] = 1
        a["segmentation"] = {"size": [H, W], "counts": [0, H * W]}
        a["segmentation"]["counts"] = [5 * H, 20 * H, H * W - 25 * H]


def _unreadable(data, root):
    (root / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def _dotdot(data, root):
    Image.new("RGB", (W, H)).save(root.parent / "secret.png")
    data["images"][0]["file_name"] = "../secret.png"


def _symlink(data, root):
    Image.new("RGB", (W, H)).save(root.parent / "outside.png")
    os.symlink(root.parent / "outside.png", root / "link.png")
    data["images"][0]["file_name"] = "link.png"


def _no_anns(data, root):
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 3]


def _empty_cat(data, root):
    data["categories"].append({"id": 3, "name": "dog"})


def _empty_self_super(data, root):
    data["categories"].append({"id": 3, "name": "dog", "supercategory": "dog"})


def _parent(data, root):
    data["categories"].insert(0, {"id": 0, "name": "animal", "supercategory": "none"})


def _noncontiguous(data, root):
    for c in data["categories"]:
        c["id"] += 10
    for a in data["annotations"]:
        a["category_id"] += 10


def _dup_image(data, root):
    data["images"][1]["id"] = 1


def _dup_ann(data, root):
    data["annotations"][1]["id"] = 1


def _all_dropped(data, root):
    data["annotations"] = []


def _dup_cat_name(data, root):
    data["categories"][1]["name"] = "cat"


CASES = [
    # id, mutation, options, severity, rule, text in the message/fix
    (
        "missing-image",
        _set(["images", 0, "file_name"], "nope.png"),
        {},
        "error",
        "image-missing",
        "no such file",
    ),
    ("unreadable-image", _unreadable, {}, "error", "image-unreadable", "cannot be decoded"),
    (
        "size-mismatch",
        _set(["images", 0, "width"], 100),
        {},
        "error",
        "image-size-mismatch",
        "annotations say 100x30, the file is 40x30",
    ),
    (
        "absolute-path",
        _set(["images", 0, "file_name"], "/etc/passwd"),
        {},
        "error",
        "file-name-unsafe",
        "absolute path",
    ),
    (
        "windows-absolute",
        _set(["images", 0, "file_name"], "C:\\data\\im1.png"),
        {},
        "error",
        "file-name-unsafe",
        "absolute path",
    ),
    ("dotdot", _dotdot, {}, "error", "file-name-unsafe", "contains '..'"),
    ("symlink-outside", _symlink, {}, "error", "file-name-unsafe", "resolves outside"),
    (
        "url",
        _set(["images", 0, "file_name"], "http://x/im1.png"),
        {},
        "error",
        "file-name-unsafe",
        "URL",
    ),
    (
        "unknown-category",
        _set(["annotations", 0, "category_id"], 99),
        {},
        "error",
        "annotation-unknown-category",
        "category_id 99 is not in the categories [1, 2]",
    ),
    (
        "unknown-image",
        _set(["annotations", 0, "image_id"], 42),
        {},
        "error",
        "annotation-unknown-image",
        "image_id 42",
    ),
    ("duplicate-image-id", _dup_image, {}, "error", "image-duplicate-id", "used by two images"),
    (
        "duplicate-file",
        _set(["images", 1, "file_name"], "im1.png"),
        {},
        "error",
        "image-duplicate-file",
        "same file is also image 1",
    ),
    ("duplicate-annotation-id", _dup_ann, {}, "warning", "annotation-duplicate-id", "Renumbered"),
    (
        "two-points",
        _set(["annotations", 0, "segmentation"], [[1, 1, 9, 9]]),
        {},
        "warning",
        "polygon-degenerate",
        "has 2 point(s); a polygon needs 3",
    ),
    (
        "zero-area",
        _set(["annotations", 0, "segmentation"], [[1, 1, 5, 5, 9, 9]]),
        {},
        "warning",
        "polygon-degenerate",
        "zero area",
    ),
    (
        "odd-coordinates",
        _set(["annotations", 0, "segmentation"], [[*SQUARE, 3.0]]),
        {},
        "warning",
        "polygon-degenerate",
        "odd number",
    ),
    (
        "nan-coordinate",
        _set(["annotations", 0, "segmentation"], [[math.nan, 1, 9, 9, 1, 9]]),
        {},
        "warning",
        "polygon-degenerate",
        "NaN",
    ),
    (
        "partly-outside",
        _set(["annotations", 0, "segmentation"], [[30, 5, 60, 5, 60, 25, 30, 25]]),
        {},
        "warning",
        "annotation-outside-image",
        "Clipped to the image border",
    ),
    (
        "bbox-partly-outside",
        _set(["annotations", 0, "bbox"], [-10, 5, 30, 20]),
        {},
        "warning",
        "annotation-outside-image",
        "extends beyond the 40x30 image",
    ),
    (
        "fully-outside",
        _set(["annotations", 0, "segmentation"], [[50, 5, 60, 5, 60, 25]]),
        {},
        "error",
        "annotation-outside-image",
        "entirely outside the 40x30 image",
    ),
    (
        "bbox-fully-outside",
        _set(["annotations", 0, "bbox"], [100, 100, 5, 5]),
        {},
        "error",
        "annotation-outside-image",
        "entirely outside",
    ),
    (
        "no-mask",
        _set(["annotations", 0, "segmentation"], []),
        {},
        "warning",
        "segmentation-missing",
        "instance segmentation needs a mask",
    ),
    (
        "rle-size",
        _set(["annotations", 0, "segmentation"], {"size": [10, 10], "counts": [100]}),
        {},
        "error",
        "rle-size-mismatch",
        "RLE size [10, 10]",
    ),
    (
        "rle-counts",
        _set(["annotations", 0, "segmentation"], {"size": [H, W], "counts": [5, 7]}),
        {},
        "error",
        "rle-invalid",
        "summing to height*width = 1200",
    ),
    (
        "rle-string",
        _set(["annotations", 0, "segmentation"], {"size": [H, W], "counts": "~~~"}),
        {},
        "error",
        "rle-invalid",
        "malformed",
    ),
    ("empty-category", _empty_cat, {}, "warning", "category-empty", "no annotation uses"),
    (
        "empty-category-own-super",
        _empty_self_super,
        {},
        "warning",
        "category-empty",
        "no annotation uses",
    ),
    ("no-annotations-on-image", _no_anns, {}, "warning", "image-no-annotations", "background-only"),
    ("all-crowd-converted", _crowd, {}, "warning", "crowd-converted", "5 of 5 annotations"),
    ("all-crowd-kept", _crowd, {"convert_crowd": False}, "error", "crowd-all", "train on nothing"),
    ("parent-category", _parent, {}, "info", "category-parent", "parent category"),
    (
        "display-things-absent",
        lambda d, r: None,
        {"display_things": ["cat", "dog"]},
        "warning",
        "display-things-absent",
        "'dog' is not a class",
    ),
    ("non-contiguous-ids", _noncontiguous, {}, "info", "category-ids-remapped", "'cat' 11->1"),
    (
        "class-map-typo",
        lambda d, r: None,
        {"class_map": {"brid": "bird"}},
        "warning",
        "class-map-unknown",
        "did you mean 'bird'",
    ),
    ("nothing-to-train", _all_dropped, {}, "error", "no-annotations", "nothing to train on"),
    (
        "nan-width",
        _set(["images", 0, "width"], math.nan),
        {},
        "error",
        "image-size-invalid",
        "positive whole numbers",
    ),
    (
        "string-image-id",
        _set(["images", 0, "id"], "1"),
        {},
        "error",
        "image-record-invalid",
        "not an integer",
    ),
    (
        "category-without-name",
        _set(["categories", 0, "name"], ""),
        {},
        "error",
        "category-invalid",
        "non-empty name",
    ),
    (
        "duplicate-category-name",
        _dup_cat_name,
        {},
        "warning",
        "category-duplicate-name",
        "Merged into one class",
    ),
    (
        "bad-iscrowd",
        _set(["annotations", 0, "iscrowd"], "yes"),
        {},
        "warning",
        "annotation-invalid",
        "iscrowd",
    ),
]


def test_base_is_clean(root):
    samples, names, report = validate_coco(base(), root)
    assert report.ok and not report.warnings, report.text()
    assert names == ["cat", "bird"] and len(samples) == 3


@pytest.mark.parametrize(
    ("mutate", "options", "severity", "rule", "text"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rule(root, mutate, options, severity, rule, text):
    data = base()
    mutate(data, root)
    _, _, report = validate_coco(data, root, **options)
    hits = [i for i in report.issues if i.rule == rule and i.severity == severity]
    assert hits, report.text()
    assert any(text in (i.message + " " + i.fix) for i in hits), report.text()
    assert all(
        i.where
        or i.rule in ("crowd-converted", "crowd-all", "no-annotations", "category-ids-remapped")
        for i in hits
    )
    assert all(i.fix for i in hits if i.severity != "info")  # every problem says what to do
    assert report.ok == (severity != "error")


def test_outside_file_is_never_opened(root, monkeypatch):
    import PIL.Image

    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(
        PIL.Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k)
    )
    data = base()
    _dotdot(data, root)
    validate_coco(data, root)
    assert not any("secret" in p for p in opened)


def test_partly_outside_polygon_is_clipped_not_dropped(root):
    data = base()
    data["annotations"][0]["segmentation"] = [[30, 5, 60, 5, 60, 25, 30, 25]]
    samples, _, _ = validate_coco(data, root)
    inst = samples[0].instances[0]
    xs = inst.segmentation[0][0::2]
    assert max(xs) == W and inst.area == pytest.approx(10 * 20)


def test_crowd_conversion_resets_iscrowd(root):
    data = base()
    _crowd(data, root)
    samples, _, _ = validate_coco(data, root)
    assert all(
        i.iscrowd == 0 and isinstance(i.segmentation, dict) for s in samples for i in s.instances
    )


def test_roboflow_parent_id_0_without_supercategory_link(root):
    data = base()
    data["categories"].insert(0, {"id": 0, "name": "project-x", "supercategory": "none"})
    _, names, report = validate_coco(data, root, fmt="roboflow")
    assert names == ["cat", "bird"] and "category-parent" in report.rules("info")


# --- EXIF: which size is right -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("annotated", "stored", "orientation", "fix", "size", "verdict"),
    [
        ((40, 30), (40, 30), 1, "copy", (40, 30), "ok"),
        (None, (40, 30), 1, "copy", (40, 30), "filled"),
        ((30, 40), (40, 30), 1, "copy", None, "mismatch"),
        ((30, 40), (40, 30), 6, "transpose", (30, 40), "display"),
        ((30, 40), (40, 30), 8, "transpose", (30, 40), "display"),
        ((40, 30), (40, 30), 6, "strip-exif", (40, 30), "stored"),
        ((40, 30), (40, 30), 3, "transpose", (40, 30), "ambiguous"),
        ((50, 50), (50, 50), 6, "transpose", (50, 50), "ambiguous"),
        (None, (40, 30), 6, "transpose", (30, 40), "ambiguous"),
        ((64, 48), (40, 30), 6, "copy", None, "mismatch"),
    ],
)
def test_orientation_decision(annotated, stored, orientation, fix, size, verdict):
    assert orientation_decision(annotated, stored, orientation) == (fix, size, verdict)


def test_mismatch_message_names_the_rotated_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (W, H)).save(tmp_path / "r.jpg", "JPEG", exif=exif.tobytes())
    data = base()
    data["images"] = [{"id": 1, "file_name": "r.jpg", "width": 64, "height": 48}]
    data["annotations"] = data["annotations"][:1]
    _, _, report = validate_coco(data, tmp_path)
    assert "(30x40 after EXIF orientation 6)" in report.text()


# --- small pure helpers --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.jpg", "a.jpg"),
        ("sub/a.jpg", "sub/a.jpg"),
        ("sub\\a.jpg", "sub/a.jpg"),
        ("./a.jpg", "a.jpg"),
        ("/a.jpg", None),
        ("../a.jpg", None),
        ("a/../../b.jpg", None),
        ("C:/x/a.jpg", None),
        ("", None),
        (None, None),
        (5, None),
        ("a\x00.jpg", None),
    ],
)
def test_normalize_file_name(name, ok):
    assert normalize_file_name(name)[0] == ok


def test_clip_polygon():
    cut = clip_polygon([-10, -10, 20, -10, 20, 20, -10, 20], 10, 10)
    assert polygon_area(cut) == pytest.approx(100)
    assert clip_polygon([20, 20, 30, 20, 30, 30], 10, 10) == []


def test_rle_string_decoder_matches_pycocotools():
    from pycocotools import mask as mask_utils

    m = np.zeros((13, 17), np.uint8, order="F")
    m[2:9, 3:12] = 1
    m[10, 1] = 1
    enc = mask_utils.encode(m)
    runs = rle_counts_from_string(enc["counts"].decode())
    assert sum(runs) == m.size
    flat = np.repeat(np.arange(len(runs)) % 2, runs)
    assert np.array_equal(flat.reshape(17, 13).T, m)


# --- class map ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("class_map", "names", "counts"),
    [
        ({"cat": "kitty"}, ["kitty", "bird"], {"kitty": 3, "bird": 2}),
        ({"cat": "animal", "bird": "animal"}, ["animal"], {"animal": 5}),
        ({"bird": "cat"}, ["cat"], {"cat": 5}),
        ({"bird": ""}, ["cat"], {"cat": 3}),
        ({"cat": "bird", "bird": "cat"}, ["bird", "cat"], {"bird": 3, "cat": 2}),
    ],
)
def test_class_map(root, class_map, names, counts):
    samples, got, report = validate_coco(base(), root, class_map=class_map)
    assert got == names, report.text()
    seen = {}
    for s in samples:
        for i in s.instances:
            seen[i.category] = seen.get(i.category, 0) + 1
    assert seen == counts
    assert "class-map-applied" in report.rules("info")


def test_class_map_drop_leaves_images_without_annotations(root):
    _, _, report = validate_coco(base(), root, class_map={"cat": ""})
    assert [i.where for i in report.warnings if i.rule == "image-no-annotations"] == [
        "annotations: image 3 'im3.png'"
    ]


def test_apply_class_map_is_pure(root):
    samples, _, _ = validate_coco(base(), root)
    cats = [Category("cat", "", 1), Category("bird", "", 2)]
    before = copy.deepcopy(samples)
    apply_class_map(samples, cats, {"cat": "dog"}, Report())
    assert samples == before


@pytest.mark.parametrize(
    ("maps", "drops", "want"),
    [
        (["doggo=dog"], [], {"doggo": "dog"}),
        (["a = b", "c="], ["junk"], {"a": "b", "c": "", "junk": ""}),
    ],
)
def test_parse_class_map(maps, drops, want):
    assert parse_class_map(maps, drops) == want


@pytest.mark.parametrize("bad", ["doggo", "=dog"])
def test_parse_class_map_errors(bad):
    with pytest.raises(ValueError, match="--map"):
        parse_class_map([bad])


# --- fuzzing: malformed input is reported, never raised ---------------------------------------
NASTY_FILES = [
    ("not-json", "this is { not json"),
    ("empty", ""),
    ("list-top-level", "[1, 2, 3]"),
    ("null", "null"),
    ("empty-object", "{}"),
    ("missing-annotations", json.dumps({"images": [], "categories": []})),
    ("wrong-types", json.dumps({"images": 5, "annotations": "x", "categories": None})),
    (
        "strings-for-numbers",
        json.dumps(
            {
                "images": [{"id": "1", "file_name": "a.png", "width": "40", "height": "30"}],
                "annotations": [
                    {
                        "id": "1",
                        "image_id": "1",
                        "category_id": "1",
                        "segmentation": [["1", "2", "3", "4", "5", "6"]],
                    }
                ],
                "categories": [{"id": "1", "name": "cat"}],
            }
        ),
    ),
    (
        "huge-ids",
        json.dumps(
            {
                "images": [{"id": 2**70, "file_name": "a.png", "width": 10**12, "height": 2}],
                "annotations": [
                    {
                        "id": 2**80,
                        "image_id": 2**70,
                        "category_id": 2**64,
                        "segmentation": [[0, 0, 1e300, 0, 1e300, 1e300]],
                    }
                ],
                "categories": [{"id": 2**64, "name": "cat"}],
            }
        ),
    ),
    (
        "nan",
        '{"images": [{"id": 1, "file_name": "a.png", "width": NaN, "height": Infinity}], '
        '"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": '
        '[[NaN, 1, 2, 3, 4, 5]], "bbox": [NaN, 0, 1, 1]}], "categories": [{"id": 1, '
        '"name": "cat"}]}',
    ),
    (
        "nested-garbage",
        json.dumps(
            {
                "images": [[[]]],
                "annotations": [None, 1, "a", {}],
                "categories": [{}, [], {"id": True, "name": 3}],
            }
        ),
    ),
    ("deep-nesting", "[" * 5000 + "]" * 5000),
    (
        "rle-bomb",
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 1,
                        "category_id": 1,
                        "segmentation": {"size": [30, 40], "counts": "P" * 500},
                    }
                ],
                "categories": [{"id": 1, "name": "cat"}],
            }
        ),
    ),
    ("utf16-bytes", None),
]


@pytest.mark.parametrize(("text",), [(c[1],) for c in NASTY_FILES], ids=[c[0] for c in NASTY_FILES])
def test_nasty_files_are_reported(tmp_path, text):
    src = tmp_path / "src"
    src.mkdir()
    if text is None:
        (src / "annotations.json").write_bytes('{"images": []}'.encode("utf-16"))
    else:
        (src / "annotations.json").write_text(text)
    Image.new("RGB", (40, 30)).save(src / "a.png")
    result = prepare_dataset(src, tmp_path / "out", fmt="coco")
    assert result.dataset is None and result.report.errors
    assert (tmp_path / "out" / "report.json").is_file()
    assert not (tmp_path / "out" / "train.json").exists()
    result.report.text()  # renders


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "name",
                    "images",
                    "annotations",
                    "categories",
                    "file_name",
                    "width",
                    "height",
                    "image_id",
                    "category_id",
                    "segmentation",
                    "bbox",
                    "iscrowd",
                    "size",
                    "counts",
                    "supercategory",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)
numbers = st.one_of(
    st.integers(-5, 50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
)
coco_like = st.fixed_dictionaries(
    {
        "images": st.lists(
            st.fixed_dictionaries(
                {
                    "id": numbers,
                    "file_name": st.sampled_from(["im1.png", "x.png", "../im1.png", "", 3]),
                    "width": numbers,
                    "height": numbers,
                }
            ),
            max_size=3,
        ),
        "annotations": st.lists(
            st.fixed_dictionaries(
                {
                    "id": numbers,
                    "image_id": numbers,
                    "category_id": numbers,
                    "iscrowd": numbers,
                    "bbox": st.lists(numbers, max_size=5),
                    "segmentation": st.one_of(
                        st.lists(st.lists(numbers, max_size=10), max_size=3),
                        st.fixed_dictionaries(
                            {
                                "size": st.lists(numbers, max_size=3),
                                "counts": st.one_of(
                                    st.lists(numbers, max_size=6), st.text(max_size=6)
                                ),
                            }
                        ),
                        json_values,
                    ),
                }
            ),
            max_size=4,
        ),
        "categories": st.lists(
            st.fixed_dictionaries(
                {"id": numbers, "name": st.one_of(st.sampled_from(["cat", "bird", ""]), numbers)}
            ),
            max_size=3,
        ),
    }
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(json_values, coco_like))
def test_fuzz_validator_reports_never_raises(data, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "fuzz_images"
    if not root.exists():
        root.mkdir()
        Image.new("RGB", (W, H)).save(root / "im1.png")
    samples, names, report = validate_coco(data, root)
    assert isinstance(report, Report)
    report.text()
    json.dumps(report.to_dict(), allow_nan=True)
    if report.ok:
        assert names and all(s.width > 0 for s in samples)


def test_polygons_to_rle_is_the_union_and_drops_pointless_polygons():
    from pycocotools import mask as mask_utils

    left = [0, 0, 4, 0, 4, 4, 0, 4]  # 4 x 4 square at the origin
    right = [2, 0, 8, 0, 8, 4, 2, 4]  # overlaps it by 2 x 4
    rle = polygons_to_rle([left, right, [1, 1, 2, 2]], height=6, width=10)
    assert rle is not None and rle["size"] == [6, 10]
    mask = mask_utils.decode(rle).astype(bool)
    assert mask[:4, :8].all() and mask.sum() == 32  # union, not sum; the 2-point one ignored
    assert polygons_to_rle([[1, 1, 2, 2], []], height=6, width=10) is None
