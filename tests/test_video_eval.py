"""evaluate_video and `thingmask evaluate-video`: RLE exports and cut-out videos read back and
scored against the generator's ground-truth file; JSON + plot written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from thingmask.cli import main
from thingmask.datasets.synthetic import save_video_gt
from thingmask.detections import Detections
from thingmask.evaluation.video_report import (
    evaluate_video,
    plot_j_over_time,
    read_rle_jsonl,
    save_report,
)
from thingmask.jobs.exports import RleExporter
from thingmask.video import write_video

H, W, N = 32, 48, 6


def masks_at(t: int) -> np.ndarray:
    m = np.zeros((3, H, W), bool)
    m[0, 4:16, 2 + t : 14 + t] = True  # cat moving right
    m[1, 18:28, 30 - t : 42 - t] = True  # bird moving left
    m[2, 2:8, 38:46] = True  # a leaf (not a display thing)
    return m


def ground_truth(tmp_path: Path) -> Path:
    gt = [(masks_at(t), ["cat", "bird", "leaf"], np.array([1, 2, 3], np.int64)) for t in range(N)]
    return save_video_gt(tmp_path / "demo_gt.npz", gt, H, W)


def write_rle(path: Path, swap_at: int | None = None, drop: int | None = None) -> Path:
    """The display things as a tracked export; ``swap_at``: ids exchanged from that frame on;
    ``drop``: the cat is missing in that frame."""
    with RleExporter(path) as rle:
        for t in range(N):
            ids = [7, 8] if swap_at is None or t < swap_at else [8, 7]
            keep = [1] if t == drop else [0, 1]
            dets = Detections(
                masks_at(t)[keep],
                np.zeros((len(keep), 4), np.float32),
                np.array(["cat", "bird"], object)[keep],
                np.full(len(keep), 0.9),
                track_ids=np.array(ids)[keep],
            )
            rle.add(t, t / 12, dets)
    return path


def write_metadata(path: Path, **settings) -> None:
    path.write_text(json.dumps({"status": "done", "job": {"settings": settings}}))


def test_rle_round_trip_keeps_masks_classes_and_ids(tmp_path: Path) -> None:
    frames = read_rle_jsonl(write_rle(tmp_path / "clip_cutout.rle.jsonl"))
    assert len(frames) == N
    masks, names, ids = frames[2]
    assert np.array_equal(masks, masks_at(2)[:2]) and names == ["cat", "bird"]
    assert ids.tolist() == [7, 8]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {"J": 1.0, "F": 1.0, "fg_J": 1.0, "num_switches": 0, "num_fragmentations": 0}),
        ({"swap_at": 3}, {"J": 0.5, "num_switches": 2, "fg_J": 1.0}),
        ({"drop": 2}, {"num_fragmentations": 1, "dropouts": 1, "num_misses": 1, "num_switches": 0}),
    ],
)
def test_evaluate_rle_export(tmp_path: Path, kwargs, expected) -> None:
    pred = write_rle(tmp_path / "clip_cutout.rle.jsonl", **kwargs)
    write_metadata(tmp_path / "clip_cutout.json", display_things=["cat", "bird"])
    report = evaluate_video(pred, ground_truth(tmp_path))  # display things from the metadata
    assert report["mode"] == "instances" and report["display_things"] == ["cat", "bird"]
    assert {k: report[k] for k in expected} == pytest.approx(expected)
    assert set(report["objects"]) == {"1", "2"}  # the leaf is left out


def test_display_things_are_required_without_metadata(tmp_path: Path) -> None:
    pred = write_rle(tmp_path / "clip.rle.jsonl")
    with pytest.raises(ValueError, match="--display-things"):
        evaluate_video(pred, ground_truth(tmp_path))
    assert evaluate_video(pred, ground_truth(tmp_path), ["cat"])["J"] == 1.0


def test_a_prediction_of_another_size_is_an_error(tmp_path: Path) -> None:
    pred = tmp_path / "big.rle.jsonl"
    with RleExporter(pred) as rle:
        rle.add(0, 0.0, Detections.empty(H * 2, W * 2))
    with pytest.raises(ValueError, match="frames are 96x64 but the ground truth is 48x32"):
        evaluate_video(pred, ground_truth(tmp_path), ["cat"])


def cutout(t: int, canvas: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((H, W, 3), np.uint8)
    img[:] = canvas
    fg = masks_at(t)[:2].any(axis=0)
    img[fg] = (40, 160, 220)
    return img


def test_evaluate_a_black_canvas_cutout_video(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip_cutout.mp4", (cutout(t, (0, 0, 0)) for t in range(N)), 12)
    write_metadata(tmp_path / "clip_cutout.json", display_things=["cat", "bird"], canvas="black")
    report = evaluate_video(video, ground_truth(tmp_path))
    assert report["mode"] == "foreground" and "num_switches" not in report
    assert report["fg_J"] > 0.9  # read back through H.264: approximate, not exact


def test_evaluate_a_png_folder_with_alpha(tmp_path: Path) -> None:
    folder = tmp_path / "clip_cutout"
    folder.mkdir()
    for t in range(N):
        rgba = np.zeros((H, W, 4), np.uint8)
        rgba[masks_at(t)[:2].any(axis=0)] = (40, 160, 220, 255)
        cv2.imwrite(str(folder / f"frame_{t:06d}.png"), rgba)
    report = evaluate_video(folder, ground_truth(tmp_path), ["cat", "bird"])
    assert report["fg_J"] == 1.0 and report["fg_F"] == 1.0


def test_unreadable_canvas_is_a_clear_error(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip_cutout.mp4", (cutout(t, (0, 0, 0)) for t in range(N)), 12)
    write_metadata(tmp_path / "clip_cutout.json", display_things=["cat"], canvas="blur")
    with pytest.raises(ValueError, match="canvas 'blur' cannot be told apart"):
        evaluate_video(video, ground_truth(tmp_path))


def test_report_files_and_plot(tmp_path: Path) -> None:
    pred = write_rle(tmp_path / "clip_cutout.rle.jsonl")
    report = evaluate_video(pred, ground_truth(tmp_path), ["cat", "bird"])
    fig = plot_j_over_time(report)
    assert len(fig.axes[0].lines) == 3  # two objects and the foreground
    paths = save_report(report, tmp_path / "out", "clip_cutout")
    assert json.loads(paths["json"].read_text())["J"] == 1.0
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "out").glob(".*part*"))  # no temporary files left


def test_cli_evaluate_video(tmp_path: Path, capsys) -> None:
    pred = write_rle(tmp_path / "clip_cutout.rle.jsonl", swap_at=3)
    gt = ground_truth(tmp_path)
    argv = ["evaluate-video", str(pred), str(gt), "--output", str(tmp_path / "ev")]
    assert main([*argv, "--display-things", "cat", "bird"]) == 0
    out = capsys.readouterr().out
    assert "id switches 2" in out and (tmp_path / "ev" / "clip_cutout_eval.json").is_file()
    assert main(["evaluate-video", str(pred), str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz: video ground truth not found" in capsys.readouterr().err
