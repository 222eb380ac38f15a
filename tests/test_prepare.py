"""``prepare_dataset`` and ``thingmask prepare``: layout, exit codes, idempotent re-runs,
preview."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thingmask.cli import main
from thingmask.config import Config
from thingmask.datasets.coco import load_prepared
from thingmask.datasets.prepare import prepare_dataset, prepare_from_config
from thingmask.datasets.preview import class_counts, format_counts, preview_dataset
from thingmask.datasets.records import Sample
from thingmask.datasets.write import output_names

W, H = 40, 30
TRI = [4.0, 4.0, 30.0, 6.0, 12.0, 26.0]


def write_coco(
    src: Path,
    n: int = 6,
    *,
    missing: bool = False,
    empty_image: bool = False,
    names: list[str] | None = None,
) -> Path:
    """``n`` images alternating cat/bird (+ a cat everywhere) as plain COCO."""
    names = names or [f"img{i}.png" for i in range(n)]
    images, anns = [], []
    for i, name in enumerate(names):
        path = src / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (missing and i == 0):
            Image.fromarray(np.full((H, W, 3), 20 * i, np.uint8)).save(path)
        images.append({"id": i + 1, "file_name": name, "width": W, "height": H})
        if empty_image and i == n - 1:
            continue
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": i + 1,
                "category_id": 1,
                "segmentation": [TRI],
                "iscrowd": 0,
            }
        )
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": i + 1,
                "category_id": 1 + i % 2 + 1,
                "segmentation": [[20, 10, 38, 10, 38, 28, 20, 28]],
                "iscrowd": 0,
            }
        )
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "bird"}, {"id": 3, "name": "doggo"}]
    (src / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return src


def cli(*argv: str) -> int:
    return main(["prepare", *[str(a) for a in argv]])


def test_layout_is_loadable_and_ids_contiguous(tmp_path):
    write_coco(tmp_path / "src")
    result = prepare_dataset(tmp_path / "src", tmp_path / "out", class_map={"doggo": "dog"})
    assert result.ok, result.report.text()
    ds = load_prepared(tmp_path / "out")
    assert ds.class_names == ("cat", "bird", "dog")
    for split in ("train", "val"):
        data = json.loads((tmp_path / "out" / f"{split}.json").read_text())
        assert [c["id"] for c in data["categories"]] == [1, 2, 3]
        for img in data["images"]:
            assert (ds.image_root / img["file_name"]).is_file()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ok"] and report["summary"]["classes"] == ["cat", "bird", "dog"]
    assert not list(tmp_path.rglob("*.part*"))  # atomic writes left no temporaries


def test_rerun_is_idempotent_and_cheap(tmp_path):
    write_coco(tmp_path / "src")
    prepare_dataset(tmp_path / "src", tmp_path / "out")
    out = tmp_path / "out"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    result = prepare_dataset(tmp_path / "src", out)
    assert result.ok
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(after) == set(before)
    manifest = out / ".thingmask-manifest.json"  # records report.json's new copy
    assert all(after[p] == before[p][0] for p in after if p != manifest)
    images = [p for p in before if "images" in p.parts]
    assert all(p.stat().st_mtime_ns == before[p][1] for p in images)  # not rewritten


def test_rerun_with_fewer_images_removes_stale_copies_only(tmp_path):
    write_coco(tmp_path / "src", n=6)
    prepare_dataset(tmp_path / "src", tmp_path / "out")
    mine = tmp_path / "out" / "images" / "my_notes.txt"
    mine.write_text("keep me")
    write_coco(tmp_path / "src2", n=4)
    assert prepare_dataset(tmp_path / "src2", tmp_path / "out").ok
    left = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert left == ["img0.png", "img1.png", "img2.png", "img3.png", "my_notes.txt"]


def test_names_are_sanitised_and_subfolders_kept(tmp_path):
    names = ["batch 1/a b.png", "batch 1/a_b.png", "b2/ünïcode (2).png", "b2/x.png"]
    write_coco(tmp_path / "src", n=4, names=names)
    result = prepare_dataset(tmp_path / "src", tmp_path / "out")
    assert result.ok, result.report.text()
    got = sorted(
        p.relative_to(tmp_path / "out" / "images").as_posix()
        for p in (tmp_path / "out" / "images").rglob("*.png")
    )
    assert got == ["b2/x.png", "b2/ünïcode_2_.png", "batch_1/a_b-1.png", "batch_1/a_b.png"]


def test_output_names_unique_case_insensitively():
    samples = [Sample(n, Path(n), 1, 1) for n in ("A.png", "a.png", ".hidden.png")]
    assert output_names(samples) == ["A.png", "a-1.png", "hidden.png"]


def test_errors_write_only_the_report(tmp_path):
    write_coco(tmp_path / "src", missing=True)
    result = prepare_dataset(tmp_path / "src", tmp_path / "out")
    assert result.dataset is None and not result.ok
    assert "image-missing" in result.report.rules("error")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".thingmask-manifest.json",  # report.json recorded as prepare's own
        "report.json",
    ]


def test_prepare_from_config(tmp_path):
    write_coco(tmp_path / "src")
    config = Config(
        dataset_source=str(tmp_path / "src"),
        dataset_dir=str(tmp_path / "out"),
        generate_synthetic=False,
        class_map={"doggo": ""},
        display_things=["cat"],
    )
    result = prepare_from_config(config)
    assert result.ok
    assert result.dataset.class_names == ("cat", "bird")
    from thingmask.config import ConfigError

    with pytest.raises(ConfigError, match="dataset_source"):
        prepare_from_config(Config())


def test_preview_files_and_counts(tmp_path):
    write_coco(tmp_path / "src")
    ds = prepare_dataset(tmp_path / "src", tmp_path / "out").dataset
    preview = preview_dataset(ds, tmp_path / "preview", n_images=4)
    for path in (preview.samples_png, preview.counts_png, preview.counts_csv):
        assert path.is_file() and path.stat().st_size > 0
    counts = class_counts(ds)
    assert [c.name for c in counts] == ["cat", "bird", "doggo"]
    assert sum(c.train_instances + c.val_instances for c in counts) == 12
    assert all(c.train_images <= c.train_instances for c in counts)
    assert "class" in format_counts(counts) and "doggo" in preview.table
    csv = preview.counts_csv.read_text().splitlines()
    assert csv[0] == "class,train_instances,train_images,val_instances,val_images"
    assert len(csv) == 4


# --- CLI -----------------------------------------------------------------------------------------
def test_cli_warnings_exit_0(tmp_path, capsys):
    write_coco(tmp_path / "src", empty_image=True)
    code = cli(tmp_path / "src", "--output", tmp_path / "out", "--no-preview")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "WARNING [image-no-annotations]" in out and "wrote" in out
    load_prepared(tmp_path / "out")


def test_cli_errors_exit_2(tmp_path, capsys):
    write_coco(tmp_path / "src", missing=True)
    code = cli(tmp_path / "src", "--output", tmp_path / "out")
    captured = capsys.readouterr()
    assert code == 2
    assert "ERROR [image-missing]" in captured.out and "fix:" in captured.out
    assert "report.json" in captured.err


def test_cli_options_map_drop_split_overrides(tmp_path, capsys):
    write_coco(tmp_path / "src", n=10)
    code = cli(
        tmp_path / "src",
        "--output",
        tmp_path / "out",
        "--map",
        "doggo=dog",
        "--drop",
        "bird",
        "--val-fraction",
        "0.3",
        "--seed",
        "3",
        "--set",
        "display_things=[cat, dog]",
    )
    assert code == 0, capsys.readouterr().out
    ds = load_prepared(tmp_path / "out")
    assert ds.class_names == ("cat", "dog")
    assert len(json.loads(ds.val_json.read_text())["images"]) == 3
    assert (tmp_path / "out" / "preview" / "samples.png").is_file()
    assert "display-things-absent" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output", "OUT"], "no source"),
        (["SRC"], "--output DIR is required"),
        (["SRC", "--output", "OUT", "--map", "nonsense"], "expected OLD=NEW"),
        (["SRC", "--output", "OUT", "--val-fraction", "2"], "between 0 and 1"),
        (["SRC", "iterations=-1", "--output", "OUT"], "iterations"),
        (["SRC", "--output", "OUT", "--set", "iterations=-1"], "iterations"),
        (["SRC", "OTHER", "--output", "OUT"], "one source expected"),
    ],
)
def test_cli_usage_errors(tmp_path, capsys, argv, message):
    (tmp_path / "OTHER").mkdir()
    write_coco(tmp_path / "SRC")
    argv = [str(tmp_path / a) if a in ("SRC", "OUT", "OTHER") else a for a in argv]
    assert cli(*argv) == 2
    assert message in capsys.readouterr().err


def test_cli_format_error_is_reported(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt.json").write_text("[]")
    assert cli(tmp_path / "src", "--output", tmp_path / "out") == 2
    assert "format-unknown" in capsys.readouterr().out


def test_wired_into_thingmask_cli(tmp_path, capsys):
    cli_mod = pytest.importorskip("thingmask.cli")
    write_coco(tmp_path / "src")
    code = cli_mod.main(
        [
            "prepare",
            str(tmp_path / "src"),
            "display_things=[cat]",
            "--output",
            str(tmp_path / "out"),
            "--no-preview",
            "--set",
            "seed=3",
        ]
    )
    assert code == 0, capsys.readouterr()
    load_prepared(tmp_path / "out")


def test_synthetic_dataset_round_trips(tiny_dataset, tmp_path):
    """The bundled generator's output is itself a valid source; its split is kept."""
    result = prepare_dataset(tiny_dataset.root, tmp_path / "out")
    assert result.ok, result.report.text()
    assert result.dataset.class_names == tiny_dataset.class_names
    for split in ("train", "val"):
        before = json.loads(getattr(tiny_dataset, f"{split}_json").read_text())
        after = json.loads(getattr(result.dataset, f"{split}_json").read_text())
        assert len(after["images"]) == len(before["images"])
        assert len(after["annotations"]) == len(before["annotations"])
    assert preview_dataset(tiny_dataset, tmp_path / "prev").samples_png.is_file()
