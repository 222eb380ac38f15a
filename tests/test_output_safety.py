"""The user's inputs are only read: ``prepare`` refuses an output that overlaps its source
(resolved paths, symbolic links), never writes through a link, and the generator only removes
files it wrote itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thingmask.cli import main
from thingmask.datasets.prepare import check_output_separate, prepare_dataset
from thingmask.datasets.synthetic import generate, generate_dataset
from thingmask.errors import InputError

W, H = 24, 20
TRI = [2.0, 2.0, 20.0, 3.0, 8.0, 18.0]


def write_coco(src: Path, n: int = 4, name: str = "annotations.json") -> Path:
    """``n`` cat images as plain COCO: ``src/<name>`` + ``src/images/``."""
    images, anns = [], []
    for i in range(n):
        (src / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 30 * i, np.uint8)).save(src / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": W, "height": H})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "segmentation": [TRI]})
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    (src / name).write_text(json.dumps(data))
    return src


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (links not followed) with its bytes and mtime."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


# (source, output, image_dir) relative to tmp_path; setup makes links; what the message says
OVERLAPS = {
    "output is the source": ("src", "src", None, None, "the output is the source folder"),
    "output inside the source": ("src", "src/prepared", None, None, "inside the source folder"),
    "source inside the output": ("src", ".", None, None, "the source folder is inside the output"),
    "output is a link to the source": (
        "src",
        "link",
        None,
        lambda t: _link(t / "link", t / "src"),
        "resolves to",
    ),
    "output images/ is a link into the source": (
        "src",
        "out",
        None,
        lambda t: _link(t / "out" / "images", t / "src" / "images"),
        "the output's images/ folder is inside the source folder",
    ),
    "output is the annotation file's folder": (
        "src/annotations.json",
        "src",
        None,
        None,
        "the output is the annotation file's folder",
    ),
    "output is the --images folder": (
        "src",
        "imgs",
        "imgs",
        None,
        "the output is the image folder (--images)",
    ),
}


@pytest.mark.parametrize("case", list(OVERLAPS))
def test_an_output_overlapping_the_source_is_refused_before_any_write(tmp_path, case):
    source, output, image_dir, setup, says = OVERLAPS[case]
    write_coco(tmp_path / "src")
    (tmp_path / "imgs").mkdir()
    if setup is not None:
        setup(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(InputError) as info:
        prepare_dataset(
            tmp_path / source,
            tmp_path / output,
            image_dir=tmp_path / image_dir if image_dir else None,
        )
    message = str(info.value)
    assert says in message
    assert str(tmp_path / source) in message and f"--output {tmp_path / output}" in message
    assert "Choose a separate output folder" in message  # the fix
    assert snapshot(tmp_path) == before  # nothing written, not even report.json


@pytest.mark.parametrize("case", list(OVERLAPS))
def test_an_output_apart_from_the_source_passes_the_check(tmp_path, case):
    """The same layouts with the output moved out of the way raise nothing."""
    source, _, image_dir, _, _ = OVERLAPS[case]
    write_coco(tmp_path / "src")
    (tmp_path / "imgs").mkdir()
    check_output_separate(
        tmp_path / source, tmp_path / "apart", tmp_path / image_dir if image_dir else None
    )


def test_cli_exits_2_and_leaves_the_source_untouched(tmp_path, capsys):
    src = write_coco(tmp_path / "src")
    before = snapshot(src)
    assert main(["prepare", str(src), "--output", str(src / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thingmask prepare: error: --output") and "overlap" in err
    assert snapshot(src) == before


def test_output_beside_an_annotation_file_is_allowed(tmp_path):
    """A file source names one file: a folder next to it is the user's choice, not an overlap."""
    src = write_coco(tmp_path / "src")
    before = snapshot(src)
    result = prepare_dataset(src / "annotations.json", src / "prepared")
    assert result.ok, result.report.text()
    after = snapshot(src)
    assert {k: v for k, v in after.items() if not k.startswith("prepared")} == before


def test_nothing_is_written_through_hard_links(tmp_path):
    """A folder holding hard links into the source is not prepare's: refused, untouched; in a
    folder prepare wrote, a link the user put at an image's name is refused too."""
    src = write_coco(tmp_path / "src", name="train.json")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    os.link(src / "train.json", out / "train.json")
    os.link(src / "images" / "0.png", out / "images" / "0.png")
    before, listing = snapshot(src), sorted(out.rglob("*"))
    with pytest.raises(InputError, match="not written by thingmask prepare"):
        prepare_dataset(src, out)
    assert snapshot(src) == before and sorted(out.rglob("*")) == listing
    fresh = tmp_path / "fresh"
    assert prepare_dataset(src, fresh).ok
    (fresh / "images" / "0.png").unlink()
    os.link(src / "images" / "0.png", fresh / "images" / "0.png")
    with pytest.raises(InputError, match=r"0\.png: exists and was not written by thingmask"):
        prepare_dataset(src, fresh)
    assert snapshot(src) == before


def test_rerun_removes_only_its_own_copies(tmp_path):
    write_coco(tmp_path / "src", n=4)
    assert prepare_dataset(tmp_path / "src", tmp_path / "out").ok
    mine = tmp_path / "out" / "images" / "mine.png"
    mine.write_bytes(b"user file")
    manifest = tmp_path / "out" / ".prepare-manifest.json"
    good = manifest.read_text()
    data = json.loads(good)
    data["images"]["../train.json"] = data["images"]["0.png"]  # a tampered manifest entry
    manifest.write_text(json.dumps(data))  # edited by hand: no longer prepare's own file
    write_coco(tmp_path / "src2", n=2)
    with pytest.raises(InputError, match=r"prepare-manifest\.json: exists and was not written"):
        prepare_dataset(tmp_path / "src2", tmp_path / "out")
    manifest.unlink()  # the user removes the edited file: prepare goes on
    assert prepare_dataset(tmp_path / "src2", tmp_path / "out").ok
    assert mine.read_bytes() == b"user file"
    assert (tmp_path / "out" / "train.json").is_file()  # never deleted outside images/
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "0.png",
        "1.png",
        "mine.png",
    ]


def test_generator_removes_only_the_files_it_wrote(tmp_path, tiny_config):
    root = tmp_path / "synthetic"
    generate_dataset(root, n_train=4, n_val=3, image_size=32)
    (root / "images" / "mine.jpg").write_bytes(b"user image")
    (root / "images" / "notes.txt").write_text("keep")
    generate_dataset(root, n_train=3, n_val=3, image_size=32)  # fewer: stale copies go
    names = sorted(p.name for p in (root / "images").iterdir())
    assert "train_00003.jpg" not in names and {"mine.jpg", "notes.txt"} <= set(names)

    config = tiny_config.replace(
        dataset_dir=str(tmp_path / "gen"), synthetic_video_frames=2, synthetic_image_size=32
    )
    generate(config)
    notes = tmp_path / "gen" / "video" / "notes.txt"
    notes.write_text("keep")
    generate(config.replace(synthetic_video_frames=3))  # a changed setting regenerates
    assert notes.read_text() == "keep"
    assert (tmp_path / "gen" / "video" / "demo_gt.npz").is_file()
