"""Inputs are never written to, and re-runs are idempotent (issue 13, video part).

No output may be, replace or contain an input: the same path (also via ``..`` or a symbolic
link), a hard link to it, or the input's folder. thingmask recognises its own outputs and never
takes them as inputs; running a finished batch again writes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from thingmask.cli import main
from thingmask.config import Config
from thingmask.detections import Detections
from thingmask.errors import InputError
from thingmask.jobs.batch import find_videos
from thingmask.jobs.job import process_many, process_video
from thingmask.video import VideoError, VideoWriter, read_output_tag, write_video

H, W = 32, 48


def clip(path: Path, n: int = 4) -> Path:
    frames = []
    for t in range(n):
        img = np.full((H, W, 3), 90, np.uint8)
        img[4:12, 2 + t : 10 + t] = (0, 0, 255)
        frames.append(img)
    return write_video(path, frames, 25)


class RedIsCat:
    class_names = ("cat",)

    def __call__(self, image: np.ndarray) -> Detections:
        mask = (image[..., 2] > 150) & (image[..., 1] < 100)
        if not mask.any():
            return Detections.empty(*image.shape[:2])
        ys, xs = np.nonzero(mask)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        return Detections(mask[None], [box], ["cat"], [0.9])


def cfg(**kw) -> Config:
    return Config(**{"display_things": ["cat"], **kw})


def fingerprint(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def cli(monkeypatch, tmp_path: Path):
    """``thingmask video ...`` with a stand-in model (a run folder that loads RedIsCat)."""
    import thingmask.pipeline

    run = tmp_path / "outputs" / "demo-20250101-120000"
    run.mkdir(parents=True)
    (run / "model_meta.json").write_text(json.dumps({"engine": "torchvision"}))

    class FakeEngine:
        @staticmethod
        def load_predictor(config, run_dir):
            return RedIsCat()

    monkeypatch.setattr(thingmask.pipeline, "get_engine", lambda name: FakeEngine)

    def call(*args: str) -> int:
        common = [f"--set=output_dir={tmp_path / 'outputs'}", "--set=display_things=[cat]"]
        return main(["video", *args, *common])

    return call


# -- an output never aliases an input ------------------------------------------------------------
def _same(folder: Path, src: Path) -> Path:
    return src


def _dotdot(folder: Path, src: Path) -> Path:
    (folder / "sub").mkdir()
    return folder / "sub" / ".." / src.name


def _symlink(folder: Path, src: Path) -> Path:
    link = folder / "link.mp4"
    link.symlink_to(src)
    return link


def _hardlink(folder: Path, src: Path) -> Path:
    link = folder / "hard.mp4"
    os.link(src, link)
    return link


@pytest.mark.parametrize(
    "make_output, why",
    [
        (_same, "is the input"),
        (_dotdot, "is the input"),
        (_symlink, "is the input"),
        (_hardlink, "is a hard link to the input"),
    ],
)
def test_cli_refuses_an_output_that_is_the_input(cli, tmp_path, capsys, make_output, why) -> None:
    folder = tmp_path / "videos"
    src = clip(folder / "clip.mp4")
    before = fingerprint(src)
    dst = make_output(folder, src)
    assert cli(str(src), "--output", str(dst)) == 2
    err = capsys.readouterr().err
    assert why in err and "never writes over its inputs" in err and "Traceback" not in err
    assert fingerprint(src) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        {"clip.mp4", dst.name} | ({"sub"} if "sub" in str(dst) else set())
    )


def test_cli_refuses_the_input_folder_as_output_folder(cli, tmp_path, capsys) -> None:
    folder = tmp_path / "videos"
    src = clip(folder / "a.mp4")
    before = fingerprint(src)
    assert cli(str(folder), "--output", str(folder)) == 2
    assert "is the input folder" in capsys.readouterr().err
    link = tmp_path / "same_folder"
    link.symlink_to(folder)
    assert cli(str(folder / "*.mp4"), "--output", str(link)) == 2
    assert fingerprint(src) == before and [p.name for p in folder.iterdir()] == ["a.mp4"]


def test_png_output_folder_holding_the_input_is_refused(tmp_path) -> None:
    src = clip(tmp_path / "shots" / "clip.mp4")
    before = fingerprint(src)
    with pytest.raises(InputError, match="is a folder holding the input"):
        process_video(src, tmp_path / "shots", RedIsCat(), cfg(video_format="png"))
    assert fingerprint(src) == before


def test_an_output_of_one_video_may_not_replace_another_input(tmp_path) -> None:
    """A recursive glob takes a user's video from the output folder, named like a's mask video
    (a_cutout_mask.mp4): refused before anything is written."""
    folder = tmp_path / "in"
    clip(folder / "a.mp4")
    other = clip(folder / "cut" / "a_cutout_mask.mp4")
    before = fingerprint(other)
    with pytest.raises(InputError, match="never writes"):
        process_many(
            str(folder / "**" / "*.mp4"), folder / "cut", RedIsCat(), cfg(export_mask_video=True)
        )
    assert fingerprint(other) == before
    assert sorted(p.name for p in (folder / "cut").iterdir()) == ["a_cutout_mask.mp4"]


def test_files_that_are_not_outputs_are_never_replaced(tmp_path) -> None:
    src = clip(tmp_path / "clip.mp4")
    notes = tmp_path / "out" / "clip_cutout.json"
    notes.parent.mkdir()
    notes.write_text('{"my": "own notes"}')
    with pytest.raises(InputError, match="not written by thingmask"):
        process_video(src, tmp_path / "out" / "clip_cutout.mp4", RedIsCat(), cfg())
    assert notes.read_text() == '{"my": "own notes"}'
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    with pytest.raises(VideoError, match="not a PNG sequence written by thingmask"):
        VideoWriter(photos, W, H, 25, fmt="png")
    assert (photos / "holiday.jpg").read_bytes() == b"\xff\xd8 a photo"
    table = tmp_path / "tables" / "summary.csv"
    table.parent.mkdir()
    table.write_text("species,count\ncat,3\n")
    with pytest.raises(InputError, match=r"summary\.csv: exists and was not written by thingmask"):
        process_many(src, table.parent, RedIsCat(), cfg(), progress=False)
    assert table.read_text() == "species,count\ncat,3\n"
    assert sorted(p.name for p in table.parent.iterdir()) == ["summary.csv"]


# -- own outputs are known and never inputs; re-runs write nothing ---------------------------------
def test_outputs_carry_the_thingmask_tag(tmp_path) -> None:
    src = clip(tmp_path / "clip.mp4", n=8)
    config = cfg(export_mask_video=True, per_instance_clips=True, video_format="webm")
    result = process_video(
        src, tmp_path / "out" / "clip_cutout.webm", RedIsCat(), config, progress=False
    )
    assert read_output_tag(src) is None
    tagged = [result.output, result.outputs["mask_video"], *result.outputs["clips"]]
    assert len(tagged) == 3
    assert all(read_output_tag(p).startswith("thingmask output") for p in tagged)


def test_rerun_of_a_finished_batch_writes_nothing(tmp_path, cli) -> None:
    folder = tmp_path / "videos"
    for name in ("a.mp4", "b.mp4"):
        clip(folder / name)
    out = tmp_path / "cut"
    assert cli(str(folder), "--output", str(out), "--mask-video") == 0
    first = snapshot(out)
    assert {"a_cutout.mp4", "b_cutout.mp4", "summary.csv"} <= set(first)
    assert cli(str(folder), "--output", str(out), "--mask-video") == 0
    assert snapshot(out) == first  # nothing rewritten, nothing new


def test_own_outputs_are_never_taken_as_inputs(tmp_path) -> None:
    """Outputs inside the input tree (found by a recursive glob) or copied next to the inputs
    are recognised and left out; only the real inputs are processed."""
    folder = tmp_path / "videos"
    clip(folder / "a.mp4")
    first = process_many(folder, folder / "cut", RedIsCat(), cfg(), progress=False)
    assert [r.status for r in first] == ["done"]
    shutil.copy(first[0].output, folder / "copied_output.mp4")
    assert find_videos(folder) == [folder / "a.mp4"]
    assert find_videos(str(folder / "**" / "*.mp4")) == [folder / "a.mp4"]
    before = snapshot(folder)
    again = process_many(str(folder / "**" / "*.mp4"), folder / "cut", RedIsCat(), cfg())
    assert [r.status for r in again] == ["skipped"]
    assert snapshot(folder) == before
    assert not list(folder.rglob("*_cutout_cutout*"))


def test_a_folder_of_only_outputs_says_so(tmp_path) -> None:
    src = clip(tmp_path / "a.mp4")
    out = tmp_path / "cut"
    process_many(src, out, RedIsCat(), cfg(), progress=False)
    with pytest.raises(VideoError, match="only thingmask's own outputs"):
        find_videos(out)


# -- only thingmask's own files are replaced; one writer per folder (issue 18) --------------------
def test_cli_refuses_users_files_at_output_names_and_overwrite_replaces_only_those(
    cli, tmp_path, capsys
) -> None:
    folder = tmp_path / "in"
    src = clip(folder / "clip.mp4")
    users = {folder / n: f"the user's {n}\n" for n in ("clip.rle.jsonl", "clip_mask.mp4")}
    notes = folder / "clip_notes.txt"
    for path, text in {**users, notes: "notes\n"}.items():
        path.write_text(text)
    before = {p: fingerprint(p) for p in [src, notes, *users]}
    args = [str(src), "-o", str(folder / "clip.webm"), "--format", "webm", "--rle", "--mask-video"]
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert all(str(p) in err for p in users)
    assert {p: fingerprint(p) for p in before} == before
    assert not (folder / "clip.webm").exists() and not (folder / "clip.json").exists()
    assert cli(*args, "--overwrite") == 0
    assert all(p.read_bytes() != text.encode() for p, text in users.items())  # replaced
    assert fingerprint(src) == before[src] and fingerprint(notes) == before[notes]
    assert cli(*args) == 0  # now thingmask's own: a plain re-run skips, no --overwrite needed
    assert "skipped" in capsys.readouterr().out


def test_a_second_writer_into_a_folder_stops_with_one_line(cli, tmp_path, capsys) -> None:
    from thingmask.ownership import folder_lock

    src = clip(tmp_path / "in" / "clip.mp4")
    out = tmp_path / "out"
    with folder_lock(out):  # another driver holds the folder
        assert cli(str(src), "-o", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert "another thingmask run is writing into this folder" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == [".thingmask.lock"]
    assert cli(str(src), "-o", str(out)) == 0  # once it is gone, the batch runs


def test_a_blank_video_says_so_in_the_log_and_the_summary(tmp_path, caplog) -> None:
    src = write_video(tmp_path / "in" / "meadow.mp4", [np.full((H, W, 3), 90, np.uint8)] * 5, 25)
    with caplog.at_level(logging.WARNING):
        (result,) = process_many(src, tmp_path / "out", RedIsCat(), cfg(), progress=False)
    assert result.empty_frames == 5 and result.empty_share == 1.0
    assert "nothing was kept in 5 of 5 frames" in caplog.text and "display_things" in caplog.text
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").read_text().splitlines()))
    assert rows[0]["empty_share"] == "1.0"
    caplog.clear()
    (walk,) = process_many(clip(tmp_path / "in2" / "w.mp4"), tmp_path / "o2", RedIsCat(), cfg())
    assert walk.empty_share == 0.0 and "nothing was kept" not in caplog.text


def test_setting_errors_speak_the_language_of_where_they_are_typed(cli, tmp_path, capsys) -> None:
    src = clip(tmp_path / "in" / "clip.mp4")
    outputs = f"--set=output_dir={tmp_path / 'outputs'}"  # the fixture's stand-in model
    assert (
        main(
            [
                "video",
                str(src),
                "-o",
                str(tmp_path / "o.mp4"),
                outputs,
                "--set=display_things=[zebra]",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--set display_things=[cat]" in err and "--config" in err and "cell" not in err
    with pytest.raises(InputError, match="global-variables cell") as notebook:
        Config(display_things=["zebra"]).check_classes(["cat"])
    assert "--set" not in str(notebook.value)
