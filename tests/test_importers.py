"""Round trips: a tiny dataset written in each annotation format → ``prepare_dataset`` → COCO that
pycocotools loads, with masks matching the source shapes (IoU > 0.95)."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image, ImageOps

from thingmask.datasets.coco import load_prepared
from thingmask.datasets.importers import detect_format
from thingmask.datasets.importers._common import circle_polygon, rect_polygon
from thingmask.datasets.prepare import prepare_dataset

W, H = 64, 48
# per image: (class, shape); shapes: ("poly", flat xy), ("rect", x1, y1, x2, y2), ("circle", cx,
# cy, r). Each class appears on at least two images so a stratified split can place it twice.
SCENE = [
    [("cat", ("poly", [6, 6, 30, 8, 22, 30, 8, 26])), ("bird", ("rect", 36, 10, 58, 40))],
    [("bird", ("circle", 20, 24, 11)), ("cat", ("poly", [34, 4, 60, 10, 50, 40]))],
    [("dog", ("poly", [4, 4, 40, 4, 40, 20, 20, 30, 4, 20]))],
    [("cat", ("rect", 2, 2, 22, 22)), ("dog", ("circle", 44, 28, 14))],
]


def shape_polygon(shape) -> list[float]:
    kind, *args = shape
    if kind == "poly":
        return [float(v) for v in args[0]]
    if kind == "rect":
        return rect_polygon(*args)
    return circle_polygon(*args)


def gt_mask(shape, w: int = W, h: int = H) -> np.ndarray:
    """Pixel-centre rasterisation, independent of pycocotools."""
    ys, xs = np.mgrid[0:h, 0:w]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    kind, *args = shape
    if kind == "circle":
        cx, cy, r = args
        inside = (centres[:, 0] - cx) ** 2 + (centres[:, 1] - cy) ** 2 <= r * r
    else:
        flat = shape_polygon(shape)
        inside = MplPath(np.array(flat).reshape(-1, 2)).contains_points(centres)
    return inside.reshape(h, w)


def image_array(i: int, w: int = W, h: int = H) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def save_image(path: Path, i: int, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_array(i)).save(path, fmt)


def expected(names: list[str]) -> list[tuple[str, str, np.ndarray]]:
    return [
        (name, cls, gt_mask(shape))
        for name, objs in zip(names, SCENE, strict=True)
        for cls, shape in objs
    ]


def coco_dict(
    names: list[str],
    cat_ids: dict[str, int],
    start_id: int = 1,
    rle_crowd: bool = False,
    parent: str | None = None,
) -> dict:
    images, anns = [], []
    for k, (name, objs) in enumerate(zip(names, SCENE, strict=True)):
        img_id = start_id + k
        images.append({"id": img_id, "file_name": name, "width": W, "height": H})
        for cls, shape in objs:
            if rle_crowd:
                from pycocotools import mask as mask_utils

                m = gt_mask(shape).astype(np.uint8)
                # CVAT writes uncompressed RLE: column-major run lengths starting with zeros
                flat = m.ravel(order="F")
                runs, cur, n = [], 0, 0
                for v in flat:
                    if v != cur:
                        runs.append(n)
                        cur, n = v, 0
                    n += 1
                runs.append(n)
                seg = {"size": [H, W], "counts": runs}
                assert mask_utils.area(mask_utils.frPyObjects(seg, H, W)) == m.sum()
                extra = {"iscrowd": 1, "attributes": {"occluded": False}}
            else:
                seg = [shape_polygon(shape)]
                extra = {"iscrowd": 0}
            anns.append(
                {
                    "id": len(anns) + start_id,
                    "image_id": img_id,
                    "category_id": cat_ids[cls],
                    "segmentation": seg,
                    "bbox": [0, 0, 1, 1],
                    "area": 1.0,
                    **extra,
                }
            )
    cats = [{"id": i, "name": n, "supercategory": parent or "animal"} for n, i in cat_ids.items()]
    if parent:
        cats.insert(0, {"id": 0, "name": parent, "supercategory": "none"})
    return {"images": images, "annotations": anns, "categories": cats}


# --- builders: each writes a source, returns (source, fmt, expected instances, extra checks) -----
def build_coco(tmp: Path):
    names = [f"img{i}.png" for i in range(len(SCENE))]
    for i, n in enumerate(names):
        save_image(tmp / "src" / "images" / n, i)
    (tmp / "src" / "annotations.json").write_text(
        json.dumps(coco_dict(names, {"cat": 1, "bird": 2, "dog": 3}))
    )
    return tmp / "src", "coco", expected(names), {}


def build_coco_noncontiguous(tmp: Path):
    names = [f"img{i}.png" for i in range(len(SCENE))]
    for i, n in enumerate(names):
        save_image(tmp / "src" / n, i)
    (tmp / "src" / "instances.json").write_text(
        json.dumps(coco_dict(names, {"cat": 3, "bird": 7, "dog": 12}, start_id=100))
    )
    return (
        tmp / "src",
        "coco",
        expected(names),
        {"classes": ("cat", "bird", "dog"), "rules": {"category-ids-remapped"}},
    )


def build_cvat(tmp: Path):
    names = [f"frame_{i:06d}.png" for i in range(len(SCENE))]
    for i, n in enumerate(names):
        save_image(tmp / "src" / "images" / n, i)
    (tmp / "src" / "annotations").mkdir(parents=True)
    (tmp / "src" / "annotations" / "instances_default.json").write_text(
        json.dumps(coco_dict(names, {"cat": 1, "bird": 2, "dog": 3}, rle_crowd=True))
    )
    return tmp / "src", "cvat", expected(names), {"rules": {"crowd-converted"}}


def build_roboflow(tmp: Path):
    split_of = ["train", "train", "valid", "valid"]
    names = [f"img{i}_jpg.rf.abc{i}.png" for i in range(len(SCENE))]
    for i, n in enumerate(names):
        save_image(tmp / "src" / split_of[i] / n, i)
    full = coco_dict(names, {"bird": 1, "cat": 2, "dog": 3}, start_id=0, parent="animals-x")
    for split in ("train", "valid"):
        keep = {img["id"] for img, s in zip(full["images"], split_of, strict=True) if s == split}
        part = {
            "images": [i for i in full["images"] if i["id"] in keep],
            "annotations": [a for a in full["annotations"] if a["image_id"] in keep],
            "categories": full["categories"],
        }
        (tmp / "src" / split / "_annotations.coco.json").write_text(json.dumps(part))
    (tmp / "src" / "README.roboflow.txt").write_text("exported from roboflow")
    return (
        tmp / "src",
        "roboflow",
        expected(names),
        {
            "classes": ("bird", "cat", "dog"),
            "rules": {"category-parent"},
            "split": {
                n: ("val" if s == "valid" else s) for n, s in zip(names, split_of, strict=True)
            },
        },
    )


def _labelme_shape(cls, shape):
    kind, *args = shape
    if kind == "poly":
        pts = np.array(args[0], float).reshape(-1, 2).tolist()
        return {"label": cls, "points": pts, "shape_type": "polygon", "group_id": None, "flags": {}}
    if kind == "rect":
        x1, y1, x2, y2 = args
        return {
            "label": cls,
            "points": [[x1, y1], [x2, y2]],
            "shape_type": "rectangle",
            "group_id": None,
            "flags": {},
        }
    cx, cy, r = args
    return {
        "label": cls,
        "points": [[cx, cy], [cx + r, cy]],
        "shape_type": "circle",
        "group_id": None,
        "flags": {},
    }


def build_labelme(tmp: Path):
    names = [f"batch1/img{i}.png" for i in range(len(SCENE))]
    for i, (name, objs) in enumerate(zip(names, SCENE, strict=True)):
        img_path = tmp / "src" / name
        save_image(img_path, i)
        doc = {
            "version": "5.4.1",
            "flags": {},
            "shapes": [_labelme_shape(c, s) for c, s in objs],
            "imagePath": img_path.name,
            "imageData": None,
            "imageHeight": H,
            "imageWidth": W,
        }
        if i == 3:  # imageData only: the file itself is gone
            doc["imageData"] = base64.b64encode(img_path.read_bytes()).decode()
            img_path.unlink()
        if i == 1:  # a stray line shape: skipped with a warning
            doc["shapes"].append(
                {"label": "cat", "points": [[1, 1], [5, 5]], "shape_type": "line", "group_id": None}
            )
        img_path.with_suffix(".json").write_text(json.dumps(doc))
    return (
        tmp / "src",
        "labelme",
        expected([n.split("/")[1] for n in names]),
        {"rules": {"labelme-shape-unsupported", "labelme-image-embedded"}},
    )


def _via_region(cls, shape):
    kind, *args = shape
    if kind == "poly":
        flat = args[0]
        sa = {"name": "polygon", "all_points_x": flat[0::2], "all_points_y": flat[1::2]}
    elif kind == "rect":
        x1, y1, x2, y2 = args
        sa = {"name": "rect", "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1}
    else:
        cx, cy, r = args
        sa = {"name": "circle", "cx": cx, "cy": cy, "r": r}
    return {"shape_attributes": sa, "region_attributes": {"species": cls, "note": ""}}


def build_via(tmp: Path):
    names = [f"img{i}.png" for i in range(len(SCENE))]
    meta = {}
    for i, (name, objs) in enumerate(zip(names, SCENE, strict=True)):
        save_image(tmp / "src" / name, i)
        regions = [_via_region(c, s) for c, s in objs]
        if i % 2:  # VIA 1 style: regions as {"0": ..., "1": ...}
            regions = {str(k): r for k, r in enumerate(regions)}
        meta[f"{name}1234"] = {
            "filename": name,
            "size": 1234,
            "regions": regions,
            "file_attributes": {},
        }
    project = {
        "_via_settings": {},
        "_via_img_metadata": meta,
        "_via_attributes": {
            "region": {"species": {"type": "dropdown"}, "note": {"type": "text"}},
            "file": {},
        },
    }
    (tmp / "src" / "via_project.json").write_text(json.dumps(project))
    return tmp / "src", "via", expected(names), {}


def build_yolo(tmp: Path):
    classes = ["cat", "bird", "dog"]
    split_of = ["train", "train", "val", "val"]
    names = []
    for i, objs in enumerate(SCENE):
        name = f"img{i}.png"
        names.append(name)
        save_image(tmp / "src" / "images" / split_of[i] / name, i)
        lines = []
        for cls, shape in objs:
            poly = shape_polygon(shape)
            norm = [v / (W if k % 2 == 0 else H) for k, v in enumerate(poly)]
            lines.append(" ".join([str(classes.index(cls))] + [f"{v:.6f}" for v in norm]))
        label = tmp / "src" / "labels" / split_of[i] / f"img{i}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + "\n")
    (tmp / "src" / "data.yaml").write_text(
        "train: images/train\nval: images/val\nnc: 3\nnames: ['cat', 'bird', 'dog']\n"
    )
    return (
        tmp / "src",
        "yolo",
        expected(names),
        {"classes": ("cat", "bird", "dog"), "split": dict(zip(names, split_of, strict=True))},
    )


def build_yolo_roboflow(tmp: Path):
    """Roboflow's "YOLOv8" export: <split>/images + <split>/labels, data.yaml with ../ paths."""
    source, fmt, want, checks = build_yolo(tmp)
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (source / split).mkdir(exist_ok=True)
            (source / kind / split).rename(source / split / kind)
    (source / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\nnames:\n  0: cat\n  1: bird\n  2: dog\n"
    )
    return source, fmt, want, checks


BUILDERS = {
    "coco": build_coco,
    "coco-noncontiguous": build_coco_noncontiguous,
    "cvat-all-crowd-rle": build_cvat,
    "roboflow-parent-0": build_roboflow,
    "labelme": build_labelme,
    "via": build_via,
    "yolo-seg": build_yolo,
    "yolo-roboflow-layout": build_yolo_roboflow,
}


def load_output(out: Path):
    from pycocotools.coco import COCO

    found = {}  # basename -> (split, [(class, mask)])
    for split in ("train", "val"):
        coco = COCO(str(out / f"{split}.json"))
        names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        for img in coco.loadImgs(coco.getImgIds()):
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            assert (out / "images" / img["file_name"]).is_file()
            found[Path(img["file_name"]).name] = (
                split,
                [(names[a["category_id"]], coco.annToMask(a).astype(bool), a) for a in anns],
            )
    return found


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("case", list(BUILDERS))
def test_round_trip(tmp_path, case):
    source, fmt, want, checks = BUILDERS[case](tmp_path)
    assert detect_format(source) == fmt
    result = prepare_dataset(source, tmp_path / "out", val_fraction=0.5, seed=1)
    assert result.ok, result.report.text()
    assert result.report.summary["format"] == fmt
    assert checks.get("rules", set()) <= result.report.rules(), result.report.text()
    ds = load_prepared(tmp_path / "out")
    assert set(ds.class_names) == {"cat", "bird", "dog"}
    if "classes" in checks:
        assert ds.class_names == checks["classes"]
    found = load_output(tmp_path / "out")
    assert len(found) == len(SCENE)
    for name, cls, mask in want:
        _, anns = found[name]
        best = max((iou(mask, m) for c, m, _ in anns if c == cls), default=0.0)
        assert best > 0.95, (case, name, cls, best)
        assert all(a["iscrowd"] == 0 for _, _, a in anns)
    assert sum(len(a) for _, a in found.values()) == len(want)
    for name, split in checks.get("split", {}).items():
        assert found[name][0] == split


def test_rle_stays_rle_and_polygons_stay_polygons(tmp_path):
    build_cvat(tmp_path / "cvat")
    build_coco(tmp_path / "coco")
    assert prepare_dataset(tmp_path / "cvat" / "src", tmp_path / "o1").ok
    assert prepare_dataset(tmp_path / "coco" / "src", tmp_path / "o2").ok
    for out, kind in ((tmp_path / "o1", dict), (tmp_path / "o2", list)):
        for split in ("train", "val"):
            data = json.loads((out / f"{split}.json").read_text())
            assert all(isinstance(a["segmentation"], kind) for a in data["annotations"])


def test_keep_crowd_on_all_crowd_export_is_an_error(tmp_path):
    source, *_ = build_cvat(tmp_path)
    result = prepare_dataset(source, tmp_path / "out", convert_crowd=False)
    assert not result.ok
    assert "crowd-all" in result.report.rules("error")
    assert "iscrowd=1" in result.report.text()


def test_exif_rotated_jpeg_is_written_upright(tmp_path):
    """labelme annotates the displayed (rotated) view; the output must be that view."""
    src = tmp_path / "src"
    src.mkdir()
    ys, xs = np.mgrid[0:H, 0:W]
    smooth = np.stack([xs * 4, ys * 5, (xs < W // 2) * 200], -1).astype(np.uint8)
    display = Image.fromarray(smooth)  # 64x48 as seen in labelme; smooth so JPEG keeps it
    stored = display.transpose(Image.Transpose.ROTATE_90)  # 48x64 on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(src / "phone.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    assert ImageOps.exif_transpose(Image.open(src / "phone.jpg")).size == (W, H)
    shapes = [_labelme_shape(c, s) for c, s in SCENE[0]]
    (src / "phone.json").write_text(
        json.dumps({"shapes": shapes, "imagePath": "phone.jpg", "imageWidth": W, "imageHeight": H})
    )
    save_image(src / "other.png", 1)
    (src / "other.json").write_text(
        json.dumps(
            {
                "shapes": [_labelme_shape(c, s) for c, s in SCENE[1]],
                "imagePath": "other.png",
                "imageWidth": W,
                "imageHeight": H,
            }
        )
    )
    result = prepare_dataset(src, tmp_path / "out", val_fraction=0.5)
    assert result.ok, result.report.text()
    notes = [i for i in result.report.issues if i.rule == "image-exif-rotation"]
    assert notes and "match the rotated view" in notes[0].message
    out = Image.open(tmp_path / "out" / "images" / "phone.jpg")
    assert out.size == (W, H)
    assert out.getexif().get(0x0112, 1) == 1
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(display, np.int16)).mean()
    assert diff < 6  # JPEG noise only; a wrong rotation would not even have this shape
    found = load_output(tmp_path / "out")
    for cls, shape in SCENE[0]:
        assert max(iou(gt_mask(shape), m) for c, m, _ in found["phone.jpg"][1] if c == cls) > 0.95


def test_exif_annotated_on_stored_pixels_drops_the_tag(tmp_path):
    """A tool that ignored EXIF annotated the stored 48x64 pixels: keep them, drop the tag."""
    src = tmp_path / "src"
    src.mkdir()
    stored = Image.fromarray(image_array(0, w=H, h=W))  # 48 wide, 64 high on disk
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(src / "p.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    save_image(src / "q.png", 1)
    poly = [4.0, 4.0, 40.0, 4.0, 40.0, 60.0]
    data = {
        "images": [
            {"id": 1, "file_name": "p.jpg", "width": H, "height": W},
            {"id": 2, "file_name": "q.png", "width": W, "height": H},
        ],
        "annotations": [
            {"id": 1, "image_id": i, "category_id": 1, "segmentation": [poly], "iscrowd": 0}
            for i in (1, 2)
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    (src / "ann.json").write_text(json.dumps(data))
    result = prepare_dataset(src, tmp_path / "out")
    assert result.ok, result.report.text()
    warn = [i for i in result.report.warnings if i.rule == "image-exif-rotation"]
    assert warn and "stored, unrotated pixels" in warn[0].message
    out = Image.open(tmp_path / "out" / "images" / "p.jpg")
    assert out.size == (H, W) and out.getexif().get(0x0112, 1) == 1
    assert ImageOps.exif_transpose(out).size == (H, W)  # no reader rotates it any more


def test_via_without_attributes_uses_default_class(tmp_path):
    """The detectron2 balloon layout: train/ and val/ folders, regions without attributes."""
    for split, idx in (("train", [0, 1]), ("val", [2])):
        meta = {}
        for i in idx:
            save_image(tmp_path / "balloon" / split / f"b{i}.png", i)
            regions = [dict(_via_region("x", s), region_attributes={}) for _, s in SCENE[i]]
            meta[f"b{i}.png99"] = {
                "filename": f"b{i}.png",
                "size": 99,
                "regions": regions,
                "file_attributes": {},
            }
        (tmp_path / "balloon" / split / "via_region_data.json").write_text(json.dumps(meta))
    result = prepare_dataset(tmp_path / "balloon", tmp_path / "out", default_class="balloon")
    assert result.ok, result.report.text()
    assert result.dataset.class_names == ("balloon",)
    val = json.loads((tmp_path / "out" / "val.json").read_text())
    assert [i["file_name"] for i in val["images"]] == ["b2.png"]


def test_via_class_attribute_option(tmp_path):
    source, *_ = build_via(tmp_path)
    result = prepare_dataset(
        source, tmp_path / "out", class_attribute="note", default_class="animal"
    )
    assert result.ok
    assert result.dataset.class_names == ("animal",)
    assert "via-no-class" in result.report.rules("warning")


def test_labelme_group_id_makes_one_instance(tmp_path):
    src = tmp_path / "src"
    save_image(src / "a.png", 0)
    save_image(src / "b.png", 1)
    left = {
        "label": "cat",
        "points": [[2, 2], [20, 2], [20, 40], [2, 40]],
        "shape_type": "polygon",
        "group_id": 1,
    }
    right = dict(left, points=[[40, 2], [60, 2], [60, 40], [40, 40]])
    for name in ("a", "b"):
        (src / f"{name}.json").write_text(
            json.dumps(
                {
                    "shapes": [left, right],
                    "imagePath": f"{name}.png",
                    "imageWidth": W,
                    "imageHeight": H,
                }
            )
        )
    result = prepare_dataset(src, tmp_path / "out")
    assert result.ok
    anns = [
        a
        for s in ("train", "val")
        for a in json.loads((tmp_path / "out" / f"{s}.json").read_text())["annotations"]
    ]
    assert len(anns) == 2 and all(len(a["segmentation"]) == 2 for a in anns)


def test_labelme_mask_shape_becomes_rle(tmp_path):
    src = tmp_path / "src"
    crop = np.zeros((10, 12), np.uint8)
    crop[2:8, 3:9] = 255
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "PNG")
    shape = {
        "label": "cat",
        "points": [[10, 20], [21, 29]],
        "shape_type": "mask",
        "mask": base64.b64encode(buf.getvalue()).decode(),
    }
    for name in ("a", "b"):
        save_image(src / f"{name}.png", 0)
        (src / f"{name}.json").write_text(
            json.dumps(
                {"shapes": [shape], "imagePath": f"{name}.png", "imageWidth": W, "imageHeight": H}
            )
        )
    result = prepare_dataset(src, tmp_path / "out")
    assert result.ok, result.report.text()
    found = load_output(tmp_path / "out")
    mask = found["a.png"][1][0][1]
    want = np.zeros((H, W), bool)
    want[22:28, 13:19] = True
    assert iou(mask, want) == 1.0


def test_yolo_box_line_becomes_rectangle_with_warning(tmp_path):
    src = tmp_path / "src"
    for i in range(2):
        save_image(src / "images" / f"i{i}.png", i)
        (src / "labels").mkdir(parents=True, exist_ok=True)
        (src / "labels" / f"i{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (src / "classes.txt").write_text("cat\n")
    result = prepare_dataset(src, tmp_path / "out")
    assert result.ok
    assert "yolo-bbox-only" in result.report.rules("warning")
    found = load_output(tmp_path / "out")
    want = gt_mask(("rect", 16, 12, 48, 36))
    assert iou(found["i0.png"][1][0][1], want) > 0.95


@pytest.mark.parametrize(
    ("layout", "fmt"),
    [
        ({"a/_annotations.coco.json": "{}"}, "roboflow"),
        ({"data.yaml": "names: [a]"}, "yolo"),
        (
            {
                "annotations/instances_default.json": json.dumps(
                    {"images": [], "annotations": [], "categories": []}
                )
            },
            "cvat",
        ),
        ({"x.json": json.dumps({"shapes": [], "imagePath": "x.png"})}, "labelme"),
        (
            {
                "train/via_region_data.json": json.dumps(
                    {"a.jpg1": {"filename": "a.jpg", "regions": []}}
                )
            },
            "via",
        ),
        ({"ann.json": json.dumps({"images": [], "annotations": [], "categories": []})}, "coco"),
    ],
)
def test_detect_format(tmp_path, layout, fmt):
    for rel, text in layout.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert detect_format(tmp_path) == fmt


def test_detect_format_explains_unknown(tmp_path):
    (tmp_path / "notes.txt.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="--format"):
        detect_format(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        detect_format(tmp_path / "nope")


def test_circle_polygon_is_close_to_the_circle():
    poly = circle_polygon(32, 24, 15)
    area = 0.5 * abs(
        sum(
            poly[i] * poly[(i + 3) % len(poly)] - poly[(i + 2) % len(poly)] * poly[i + 1]
            for i in range(0, len(poly), 2)
        )
    )
    assert area == pytest.approx(math.pi * 15**2, rel=0.01)


def _labelme_beside_images(tmp: Path) -> Path:
    """JSON files in ann/, images in images/, imagePath written on Windows."""
    for i in range(2):
        save_image(tmp / "proj" / "images" / f"x{i}.png", i)
        doc = {
            "shapes": [_labelme_shape(c, s) for c, s in SCENE[i]],
            "imagePath": f"..\\images\\x{i}.png",
            "imageWidth": W,
            "imageHeight": H,
        }
        (tmp / "proj" / "ann").mkdir(parents=True, exist_ok=True)
        (tmp / "proj" / "ann" / f"x{i}.json").write_text(json.dumps(doc))
    return tmp / "proj"


def test_labelme_image_path_with_dotdot_inside_the_source(tmp_path):
    result = prepare_dataset(_labelme_beside_images(tmp_path), tmp_path / "out")
    assert result.ok, result.report.text()
    assert sorted(p.name for p in (tmp_path / "out" / "images").rglob("*.png")) == [
        "x0.png",
        "x1.png",
    ]


def test_labelme_image_path_leaving_the_source_is_refused(tmp_path):
    proj = _labelme_beside_images(tmp_path)
    result = prepare_dataset(proj / "ann", tmp_path / "out")
    assert not result.ok
    errors = [i for i in result.report.errors if i.rule == "file-name-unsafe"]
    assert len(errors) == 2 and "'../images/x0.png'" in errors[0].message


def test_cvat_images_in_subset_folder(tmp_path):
    """Newer CVAT versions put the images of subset "default" in images/default/."""
    source, *_ = build_cvat(tmp_path)
    (source / "images").rename(tmp_path / "tmp_images")
    (source / "images").mkdir()
    (tmp_path / "tmp_images").rename(source / "images" / "default")
    result = prepare_dataset(source, tmp_path / "out")
    assert result.ok, result.report.text()
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == len(SCENE)
