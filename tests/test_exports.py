"""thingmask.jobs.exports: CSV, COCO-RLE lines, mask video, per-animal clips; all atomic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from thingmask.cutout.composite import Canvas
from thingmask.detections import Detections
from thingmask.jobs.exports import (
    CSV_COLUMNS,
    CsvExporter,
    InstanceClips,
    MaskVideo,
    RleExporter,
    instance_stats,
)
from thingmask.video import open_video, partial_path

H, W = 48, 64


def frame_dets(t: int, tracked: bool = True) -> Detections:
    masks = np.zeros((2, H, W), bool)
    masks[0, 10:20, 2 + t : 12 + t] = True  # 10 x 10 cat moving right
    masks[1, 30:40, 40:52] = True  # 10 x 12 bird, still
    masks[1, 30:32, 40:44] = False  # not a full rectangle: centroid != box centre
    return Detections(
        masks=masks,
        boxes=[[2 + t, 10, 12 + t, 20], [40, 30, 52, 40]],
        class_names=["cat", "bird"],
        scores=[0.9, 0.75],
        track_ids=[1, 2] if tracked else None,
    )


def test_instance_stats_matches_numpy() -> None:
    d = frame_dets(3)
    for k in range(2):
        cx, cy, area = instance_stats(d.masks[k], d.boxes[k])
        ys, xs = np.nonzero(d.masks[k])
        assert area == len(xs)
        assert cx == pytest.approx(xs.mean()) and cy == pytest.approx(ys.mean())
    # a box that misses part of the mask still gives the whole mask's numbers
    cx, cy, area = instance_stats(d.masks[0], np.array([0, 0, 4, 4], np.float32))
    assert area == 100
    assert instance_stats(np.zeros((H, W), bool), np.array([0, 0, 10, 20]))[2] == 0


@pytest.mark.parametrize("tracked", [True, False])
def test_csv_rows_match_detections(tmp_path: Path, tracked: bool) -> None:
    path = tmp_path / "pos.csv"
    with CsvExporter(path) as out:
        for t in range(3):
            out.add(t, t / 25, frame_dets(t, tracked))
        out.add(3, 0.12, Detections.empty(H, W))
        assert not path.exists()  # only the temporary file until close
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 6
    for i, row in enumerate(rows):
        t, k = divmod(i, 2)
        d = frame_dets(t)
        assert int(row["frame"]) == t and float(row["time_s"]) == pytest.approx(t / 25)
        assert row["class"] == d.class_names[k]
        assert float(row["score"]) == pytest.approx(d.scores[k], abs=1e-4)
        got_box = [float(row[c]) for c in ("x1", "y1", "x2", "y2")]
        assert got_box == pytest.approx(d.boxes[k].tolist())
        ys, xs = np.nonzero(d.masks[k])
        assert float(row["cx"]) == pytest.approx(xs.mean(), abs=0.01)
        assert float(row["cy"]) == pytest.approx(ys.mean(), abs=0.01)
        assert int(row["area_px"]) == len(xs)
        assert int(row["track_id"]) == ((k + 1) if tracked else -1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
def test_rle_lines_decode_to_the_masks(tmp_path: Path) -> None:
    path = tmp_path / "masks.rle.jsonl"
    with RleExporter(path) as out:
        out.add(0, 0.0, frame_dets(0))
        out.add(1, 0.04, Detections.empty(H, W))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 1] and lines[1]["instances"] == []
    first = lines[0]
    assert (first["height"], first["width"]) == (H, W)
    d = frame_dets(0)
    for k, inst in enumerate(first["instances"]):
        rle = {"size": inst["rle"]["size"], "counts": inst["rle"]["counts"].encode()}
        assert np.array_equal(mask_utils.decode(rle).astype(bool), d.masks[k])
        assert inst["class"] == d.class_names[k] and inst["track_id"] == k + 1
        assert inst["area_px"] == int(d.masks[k].sum())


def test_exporter_error_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pos.csv"
    with pytest.raises(RuntimeError), CsvExporter(path) as out:
        out.add(0, 0.0, frame_dets(0))
        raise RuntimeError("predictor crashed")
    assert not path.exists() and not partial_path(path).exists()


def test_mask_video_is_white_on_black(tmp_path: Path) -> None:
    path = tmp_path / "mask.mp4"
    with MaskVideo(path, W, H, 25) as out:
        for t in range(5):
            out.add(t / 25, frame_dets(t))
    with open_video(path) as r:
        frames = list(r.frames())
    assert len(frames) == 5
    img = frames[2].image
    union = frame_dets(2).masks.any(axis=0)
    inner = union.copy()
    inner[:, 1:] &= union[:, :-1]  # stay a pixel away from edges (codec ringing)
    assert img[inner].min() > 200 and img[~union][:, 0].mean() < 20


def test_instance_clips_one_per_track(tmp_path: Path) -> None:
    frame = np.full((H, W, 3), 120, np.uint8)
    clips = InstanceClips(tmp_path / "clips", "demo", 25, "mp4", Canvas("black"), min_frames=3)
    with clips:
        for t in range(10):
            d = frame_dets(t)
            if t >= 2:  # the bird leaves after two frames: too short for a clip
                d = d[[0]]
            clips.add(frame, t / 25, d)
    names = sorted(p.name for p in clips.written)
    assert names == ["demo_track001_cat.mp4"]
    with open_video(clips.written[0]) as r:
        frames = list(r.frames())
        assert r.info.width == r.info.height == 32  # 1.5 x the 10 px animal, at least 32
    assert len(frames) == 10
    centre = frames[5].image[12:20, 12:20]  # the animal stays in the middle of its clip
    assert centre.mean() > 100 and frames[5].image[:4, :4].mean() < 20
    assert not list((tmp_path / "clips").glob(".*"))  # no temporary files left


def test_instance_clips_need_track_ids(tmp_path: Path) -> None:
    clips = InstanceClips(tmp_path, "x", 25, "mp4", Canvas("black"))
    with pytest.raises(ValueError, match="track ids"):
        clips.add(np.zeros((H, W, 3), np.uint8), 0.0, frame_dets(0, tracked=False))


def test_instance_clips_end_after_a_gap_and_abort_removes_finished_ones(tmp_path: Path) -> None:
    frame = np.full((H, W, 3), 120, np.uint8)
    clips = InstanceClips(tmp_path / "clips", "demo", 25, "mp4", Canvas("black"), min_frames=2)
    clips.max_gap = 2
    for t in range(8):  # the bird (track 2) is seen in frames 0-2 only, the cat throughout
        d = frame_dets(t) if t < 3 else frame_dets(t)[[0]]
        clips.add(frame, t / 25, d)
    assert [p.name for p in clips.written] == ["demo_track002_bird.mp4"]  # ended after the gap
    assert clips.written[0].is_file()
    clips.add(frame, 8 / 25, frame_dets(8))  # id 2 comes back: a new clip, a new name
    clips.abort()  # e.g. the encoder of the main video failed
    assert not clips.written and not (tmp_path / "clips").exists()
