"""Annotation tools' own conventions, as their converters apply them: labelme ``__ignore__``,
``_background_`` and ``labels.txt``; YOLO-seg without its class list (``--names``); VIA's
polyline and category order; COCO's ``iscrowd`` per exporter; class lists given by the user."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thingmask.cli import main
from thingmask.config import Config, ConfigError
from thingmask.datasets.class_names import parse_class_names
from thingmask.datasets.importers import detect_format
from thingmask.datasets.prepare import prepare_dataset, prepare_from_config
from thingmask.errors import InputError

W, H = 48, 40
BOX_A = [[2, 2], [20, 2], [20, 18], [2, 18]]  # 18 x 16
BOX_B = [[26, 20], [44, 20], [44, 36], [26, 36]]
BOX_C = [[24, 2], [44, 2], [44, 14], [24, 14]]
FLAT_A = [float(v) for p in BOX_A for v in p]  # BOX_A as a COCO polygon


def save_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def box_mask(points: list[list[int]]) -> np.ndarray:
    (x1, y1), (x2, y2) = points[0], points[2]
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


def labelme_file(path: Path, shapes: list[tuple[str, list[list[int]]]], seed: int = 0) -> None:
    save_image(path.with_suffix(".png"), seed)
    doc = {
        "version": "5.4.1",
        "shapes": [
            {"label": label, "points": pts, "shape_type": "polygon", "group_id": None}
            for label, pts in shapes
        ],
        "imagePath": path.with_suffix(".png").name,
        "imageData": None,
        "imageWidth": W,
        "imageHeight": H,
    }
    path.write_text(json.dumps(doc))


def outputs(out: Path) -> list[tuple[str, dict, dict]]:
    """Every annotation of both splits as (split, annotation, its image)."""
    found = []
    for split in ("train", "val"):
        data = json.loads((out / f"{split}.json").read_text())
        images = {im["id"]: im for im in data["images"]}
        found += [(split, a, images[a["image_id"]]) for a in data["annotations"]]
    return found


def decode(ann: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
    return mask_utils.decode(rle).astype(bool)


# --- labelme: __ignore__ and _background_ ---------------------------------------------------------
def labelme_with_ignore(src: Path) -> None:
    """train/: two cat+dog images; val/: one cat image with an __ignore__ region and a
    _background_ shape, one dog image."""
    labelme_file(src / "train" / "a.json", [("cat", BOX_A), ("dog", BOX_B)], 1)
    labelme_file(src / "train" / "b.json", [("dog", BOX_A), ("cat", BOX_B)], 2)
    labelme_file(
        src / "val" / "c.json", [("cat", BOX_A), ("__ignore__", BOX_B), ("_background_", BOX_C)], 3
    )
    labelme_file(src / "val" / "d.json", [("dog", BOX_B)], 4)


def test_labelme_ignore_becomes_a_crowd_region_of_every_class(tmp_path):
    labelme_with_ignore(tmp_path / "src")
    result = prepare_dataset(tmp_path / "src", tmp_path / "out")
    assert result.ok, result.report.text()
    assert result.dataset.class_names == ("cat", "dog")  # neither reserved label is a class
    assert {"labelme-ignore-kept", "labelme-background-skipped"} <= result.report.rules("info")
    anns = outputs(tmp_path / "out")
    crowds = [(s, a, im) for s, a, im in anns if a["iscrowd"]]
    assert sorted(a["category_id"] for _, a, _ in crowds) == [1, 2]  # one per class
    for split, ann, image in crowds:
        assert split == "val" and image["file_name"] == "val/c.png"
        assert isinstance(ann["segmentation"], dict)  # COCO crowds are RLE
        assert np.array_equal(decode(ann), box_mask(BOX_B))
    objects = [a for _, a, _ in anns if not a["iscrowd"]]
    assert len(objects) == 6  # the _background_ shape is not an object either
    summary = result.report.summary
    assert summary["instances"] == 6 and summary["ignore_regions"] == 1


def test_coco_evaluation_ignores_detections_on_the_ignore_region(tmp_path):
    """The promise made to the user: a detection inside __ignore__ costs no precision."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labelme_with_ignore(tmp_path / "src")
    assert prepare_dataset(tmp_path / "src", tmp_path / "out").ok
    gt = COCO(str(tmp_path / "out" / "val.json"))
    objects = [a for a in gt.dataset["annotations"] if not a["iscrowd"]]
    dets = [dict(image_id=a["image_id"], category_id=a["category_id"], score=0.5) for a in objects]
    for d, a in zip(dets, objects, strict=True):
        d["segmentation"] = gt.annToRLE(a)
    crowd = next(a for a in gt.dataset["annotations"] if a["iscrowd"])
    # the most confident detection lies on the ignore region: a false positive otherwise
    dets.append(
        dict(image_id=crowd["image_id"], category_id=1, score=0.9, segmentation=gt.annToRLE(crowd))
    )
    for d in dets:  # pycocotools wants bytes counts here
        counts = d["segmentation"]["counts"]
        if isinstance(counts, str):
            d["segmentation"] = dict(d["segmentation"], counts=counts.encode())
    ev = COCOeval(gt, gt.loadRes(dets), "segm")
    ev.params.catIds = [1]
    ev.evaluate()
    ev.accumulate()
    assert ev.eval["precision"][0, :, 0, 0, 2].min() == pytest.approx(1.0)  # AP50, cat


def test_drop_ignore_regions_with_the_class_map(tmp_path):
    labelme_with_ignore(tmp_path / "src")
    result = prepare_dataset(tmp_path / "src", tmp_path / "out", class_map={"__ignore__": ""})
    assert result.ok, result.report.text()
    assert not [a for _, a, _ in outputs(tmp_path / "out") if a["iscrowd"]]
    assert "class-map-unknown" not in result.report.rules()
    assert "ignore regions" in next(
        i.message for i in result.report.issues if i.rule == "class-map-applied"
    )


def test_an_image_with_only_an_ignore_region_is_background(tmp_path):
    src = tmp_path / "src"
    labelme_file(src / "a.json", [("cat", BOX_A)], 1)
    labelme_file(src / "b.json", [("cat", BOX_B)], 2)
    labelme_file(src / "c.json", [("__ignore__", BOX_A)], 3)
    result = prepare_dataset(src, tmp_path / "out")
    assert result.ok, result.report.text()
    assert result.dataset.class_names == ("cat",)
    note = [i for i in result.report.issues if i.rule == "image-no-annotations"]
    assert len(note) == 1 and "only an ignore region" in note[0].message


# --- labelme: the class order ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels_txt", "names", "classes", "rules"),
    [
        (None, None, ("bird", "cat", "dog"), set()),  # labelme2coco needs labels.txt; we sort
        ("__ignore__\n_background_\ndog\ncat\nbird\n", None, ("dog", "cat", "bird"), set()),
        ("dog\ncat\n", None, ("dog", "cat", "bird"), {"class-unlisted"}),  # unlisted: after
        ("dog\ncat\nbird\nfox\n", None, ("dog", "cat", "bird"), {"category-empty"}),
        ("dog\ncat\nbird\n", "bird,dog,cat", ("bird", "dog", "cat"), set()),  # --names wins
    ],
)
def test_labelme_class_order(tmp_path, labels_txt, names, classes, rules):
    src = tmp_path / "src"
    labelme_file(src / "a.json", [("cat", BOX_A), ("dog", BOX_B), ("bird", BOX_C)], 1)
    labelme_file(src / "b.json", [("bird", BOX_A), ("cat", BOX_B), ("dog", BOX_C)], 2)
    if labels_txt is not None:
        (src / "labels.txt").write_text(labels_txt)
    result = prepare_dataset(src, tmp_path / "out", names=names)
    assert result.ok, result.report.text()
    assert result.dataset.class_names == classes
    assert rules <= result.report.rules()
    found = {(im["file_name"], a["category_id"]) for _, a, im in outputs(tmp_path / "out")}
    assert ("a.png", classes.index("cat") + 1) in found  # ids follow the order


# --- YOLO-seg without its class list --------------------------------------------------------------
def yolo_export(root: Path, nested: bool = False, yaml: str | None = None) -> Path:
    """coco128-seg's layout (images/train2017 + labels/train2017, no yaml) with 3 classes; or
    Roboflow's (train/images + train/labels) with ``nested``."""
    lines = {"a": ["0 0.1 0.1 0.4 0.1 0.4 0.4", "2 0.5 0.5 0.9 0.5 0.9 0.9 0.5 0.9"]}
    lines |= {"b": ["1 0.1 0.1 0.5 0.1 0.3 0.6"], "c": ["0 0.5 0.5 0.9 0.5 0.7 0.9"]}
    lines |= {"d": ["1 0.2 0.2 0.6 0.2 0.4 0.8", "2 0.1 0.5 0.4 0.5 0.4 0.9"]}
    for k, (stem, rows) in enumerate(lines.items()):
        base = root / "train" if nested else root
        sub = "" if nested else "train2017"
        save_image(base / "images" / sub / f"{stem}.png", k)
        label = base / "labels" / sub / f"{stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(rows) + "\n")
    if yaml is not None:
        (root / "data.yaml").write_text(yaml)
    return root


@pytest.mark.parametrize("nested", [False, True])
def test_yolo_is_detected_from_its_layout_alone(tmp_path, nested):
    assert detect_format(yolo_export(tmp_path / "src", nested)) == "yolo"


def test_a_folder_of_images_and_other_labels_is_not_yolo(tmp_path):
    save_image(tmp_path / "images" / "a.png", 0)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("a cat on the left\n")
    with pytest.raises(ValueError, match="cannot tell the annotation format"):
        detect_format(tmp_path)


def test_yolo_without_class_list_names_the_missing_list_and_the_fix(tmp_path):
    result = prepare_dataset(yolo_export(tmp_path / "src"), tmp_path / "out")
    assert not result.ok
    [error] = [i for i in result.report.errors if i.rule == "yolo-classes-missing"]
    assert "classes 0..2, so 3 names are needed" in error.message
    assert "data.yaml" in error.message
    assert '--names "cat,dog,bird"' in error.fix and "--names path/to/data.yaml" in error.fix
    assert "dataset_class_names" in error.fix


@pytest.mark.parametrize(
    ("names", "classes"),
    [
        ("cat,bird,dog", ("cat", "bird", "dog")),
        (["cat", "bird", "dog"], ("cat", "bird", "dog")),
        ("YAML:names: [cat, bird, dog]\n", ("cat", "bird", "dog")),
        ("YAML:names:\n  0: dog\n  1: cat\n  2: bird\n", ("dog", "cat", "bird")),
    ],
)
def test_yolo_class_names_given_by_the_user(tmp_path, names, classes):
    src = yolo_export(tmp_path / "src")
    if isinstance(names, str) and names.startswith("YAML:"):
        (tmp_path / "coco128-seg.yaml").write_text(names[5:])  # kept apart, as ultralytics does
        names = str(tmp_path / "coco128-seg.yaml")
    result = prepare_dataset(src, tmp_path / "out", names=names)
    assert result.ok, result.report.text()
    assert result.dataset.class_names == classes
    got = {(im["file_name"], a["category_id"]) for _, a, im in outputs(tmp_path / "out")}
    assert {("images/train2017/a.png", 1), ("images/train2017/a.png", 3)} <= got  # 0->1, 2->3


def test_yolo_names_replace_the_exports_own_list(tmp_path):
    src = yolo_export(tmp_path / "src", yaml="names: [a, b, c]\n")
    result = prepare_dataset(src, tmp_path / "out", names="cat,bird,dog")
    assert result.ok and result.dataset.class_names == ("cat", "bird", "dog")
    assert "yolo-classes-given" in result.report.rules("info")


def test_yolo_class_beyond_the_list_is_an_error(tmp_path):
    result = prepare_dataset(yolo_export(tmp_path / "src"), tmp_path / "out", names="cat,bird")
    assert not result.ok
    errors = [i for i in result.report.errors if i.rule == "yolo-class-unknown"]
    assert sorted(e.where for e in errors) == ["images/train2017/a.png", "images/train2017/d.png"]
    assert all("class [2]" in e.message and "2 name(s)" in e.message for e in errors)
    assert "annotation-unknown-category" not in result.report.rules()  # said once, in YOLO terms


def test_yolo_names_from_cli_and_setting(tmp_path, capsys):
    src = yolo_export(tmp_path / "src")
    assert main(["prepare", str(src), "--output", str(tmp_path / "o1"), "--no-preview"]) == 2
    assert "yolo-classes-missing" in capsys.readouterr().out
    argv = ["prepare", str(src), "--output", str(tmp_path / "o2"), "--no-preview"]
    assert main([*argv, "--names", "cat,bird,dog"]) == 0, capsys.readouterr()
    argv = ["prepare", str(src), "--output", str(tmp_path / "o3"), "--no-preview"]
    assert main([*argv, "--set", "dataset_class_names=cat,bird,dog"]) == 0, capsys.readouterr()
    config = Config(
        dataset_source=str(src),
        dataset_dir=str(tmp_path / "o4"),
        generate_synthetic=False,
        dataset_class_names="cat, bird, dog",
        display_things=["cat"],
    )
    assert prepare_from_config(config).dataset.class_names == ("cat", "bird", "dog")


@pytest.mark.parametrize("value", ["cat,,dog", "cat,cat", " , "])
def test_bad_class_names_setting_is_a_config_error(value):
    with pytest.raises(ConfigError, match="dataset_class_names"):
        Config(dataset_class_names=value)


# --- class lists given by the user ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "file", "want"),
    [
        ("cat,dog", None, ["cat", "dog"]),
        (" cat , dog ", None, ["cat", "dog"]),
        ("cat", None, ["cat"]),
        (("cat", "dog"), None, ["cat", "dog"]),
        ("FILE", ("data.yaml", "names: [cat, dog]"), ["cat", "dog"]),
        ("FILE", ("data.yml", "names: {1: dog, 0: cat}"), ["cat", "dog"]),
        ("FILE", ("d.yaml", "names: {'0': cat, '1': dog}"), ["cat", "dog"]),
        ("FILE", ("classes.txt", "cat\n\ndog\n"), ["cat", "dog"]),
        ("cat,,dog", None, "an empty name"),
        ("cat,dog,cat", None, "given twice"),
        ("missing.yaml", None, "no such file"),
        ("FILE", ("data.yaml", "nc: 2\n"), "needs `names:`"),
        ("FILE", ("data.yaml", "names: {0: cat, 2: dog}"), "must be 0..1"),
        ("FILE", ("data.yaml", "names: [cat, [dog]]"), "non-empty text"),
        ("FILE", ("data.yaml", "names: [cat\n"), "not valid YAML"),
    ],
)
def test_parse_class_names(tmp_path, value, file, want):
    if file is not None:
        (tmp_path / file[0]).write_text(file[1])
        value = str(tmp_path / file[0])
    if isinstance(want, list):
        assert parse_class_names(value) == want
    else:
        with pytest.raises(InputError, match=want) as info:
            parse_class_names(value)
        assert "--names" in str(info.value)  # the message says how to give them


def test_class_names_for_a_coco_export_are_reported_unused(tmp_path):
    labelme_file(tmp_path / "src" / "x.json", [("cat", BOX_A)], 0)  # only to have an image
    data = {
        "images": [{"id": i, "file_name": n, "width": W, "height": H} for i, n in [(1, "x.png")]],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [FLAT_A]}],
        "categories": [{"id": 1, "name": "cat"}],
    }
    (tmp_path / "src" / "x.json").write_text(json.dumps(data))
    result = prepare_dataset(tmp_path / "src" / "x.json", tmp_path / "out", names="dog")
    assert "class-names-unused" in result.report.rules("warning")
    assert result.dataset.class_names == ("cat",)


# --- VIA ------------------------------------------------------------------------------------------
def test_via_polyline_is_skipped_and_categories_follow_the_options(tmp_path):
    src = tmp_path / "src"
    meta = {}
    regions_of = {
        "a.png": [("cat", BOX_A), ("dog", BOX_B), ("bird", BOX_C)],
        "b.png": [("bird", BOX_A), ("dog", BOX_B), ("cat", BOX_C)],
    }
    for k, (name, regions) in enumerate(regions_of.items()):
        save_image(src / name, k)
        meta[name] = {
            "filename": name,
            "size": 1,
            "regions": [
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [p[0] for p in pts],
                        "all_points_y": [p[1] for p in pts],
                    },
                    "region_attributes": {"species": cls},
                }
                for cls, pts in regions
            ],
            "file_attributes": {},
        }
    line = {"name": "polyline", "all_points_x": [1, 30, 30], "all_points_y": [1, 1, 30]}
    meta["a.png"]["regions"].append(
        {"shape_attributes": line, "region_attributes": {"species": "cat"}}
    )
    options = {"dog": "a dog", "cat": "", "bird": "", "fox": ""}
    project = {
        "_via_img_metadata": meta,
        "_via_attributes": {"region": {"species": {"type": "dropdown", "options": options}}},
    }
    (src / "project.json").write_text(json.dumps(project))
    result = prepare_dataset(src, tmp_path / "out")
    assert result.ok, result.report.text()
    assert result.dataset.class_names == ("dog", "cat", "bird")  # option order, fox unused
    skipped = [i for i in result.report.warnings if i.rule == "via-shape-unsupported"]
    assert len(skipped) == 1 and "polyline has no area" in skipped[0].message
    assert len(outputs(tmp_path / "out")) == 6


# --- COCO iscrowd: what each exporter means by it -------------------------------------------------
def coco_export(src: Path, crowd: list[bool], cvat: bool) -> Path:
    """One image per annotation, class cat; ``crowd`` marks which are iscrowd=1 (as RLE)."""
    from pycocotools import mask as mask_utils

    images, anns = [], []
    for i, is_crowd in enumerate(crowd, 1):
        save_image(src / "images" / f"{i}.png", i)
        images.append({"id": i, "file_name": f"{i}.png", "width": W, "height": H})
        m = np.asfortranarray(box_mask(BOX_A).astype(np.uint8))
        rle = mask_utils.encode(m)
        seg = {"size": [H, W], "counts": rle["counts"].decode()} if is_crowd else [FLAT_A]
        ann = {
            "id": i,
            "image_id": i,
            "category_id": 1,
            "segmentation": seg,
            "iscrowd": int(is_crowd),
        }
        if cvat:
            ann["attributes"] = {"occluded": False}
        anns.append(ann)
    name = "annotations/instances_default.json" if cvat else "annotations.json"
    (src / name).parent.mkdir(parents=True, exist_ok=True)
    (src / name).write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]})
    )
    return src


@pytest.mark.parametrize(
    ("cvat", "crowd", "convert", "rule", "crowds_left"),
    [
        (False, [1, 0, 0, 0], None, "crowd-kept", 1),  # COCO: a crowd stays a crowd
        (False, [1, 1, 1, 1], None, "crowd-converted", 0),  # all crowd: nothing to train on
        (False, [1, 0, 0, 0], True, "crowd-converted", 0),  # --convert-crowd
        (True, [1, 0, 0, 0], None, "crowd-converted", 0),  # CVAT: brush masks are animals
        (True, [1, 1, 1, 1], False, "crowd-all", None),  # --keep-crowd on CVAT's: error
    ],
)
def test_crowd_masks_follow_the_exporters_meaning(
    tmp_path, cvat, crowd, convert, rule, crowds_left
):
    src = coco_export(tmp_path / "src", [bool(c) for c in crowd], cvat)
    result = prepare_dataset(src, tmp_path / "out", convert_crowd=convert)
    assert result.report.summary["format"] == ("cvat" if cvat else "coco")
    assert rule in result.report.rules()
    if crowds_left is None:
        assert not result.ok
    else:
        assert result.ok, result.report.text()
        assert sum(a["iscrowd"] for _, a, _ in outputs(tmp_path / "out")) == crowds_left


@pytest.mark.parametrize(
    ("cvat", "flags", "code", "crowds_left"),
    [
        (False, [], 0, 1),
        (False, ["--convert-crowd"], 0, 0),
        (True, [], 0, 0),
        (True, ["--keep-crowd"], 0, 1),
        (True, ["--keep-crowd", "--convert-crowd"], 2, None),  # one or the other
    ],
)
def test_cli_crowd_flags(tmp_path, capsys, cvat, flags, code, crowds_left):
    src = coco_export(tmp_path / "src", [True, False, False, False], cvat)
    argv = ["prepare", str(src), "--output", str(tmp_path / "out"), "--no-preview", *flags]
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse rejects the pair before main's error handling
        got = exc.code
    assert got == code, capsys.readouterr()
    if crowds_left is not None:
        assert sum(a["iscrowd"] for _, a, _ in outputs(tmp_path / "out")) == crowds_left
