"""The labelling loop: frames to annotate, pre-labels as polygons, review rules, suggestions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from labeling_helpers import BrightPredictor, make_video

from thingmask.cli import main
from thingmask.config import Config
from thingmask.datasets.origins import UNREVIEWED_FLAG, review_state
from thingmask.datasets.prepare import prepare_dataset
from thingmask.detections import Detections
from thingmask.errors import InputError
from thingmask.labeling.formats import coco_document, labelstudio_tasks, to_prelabel
from thingmask.labeling.frames import FrameOptions, write_frames
from thingmask.labeling.polygons import mask_to_polygons, polygons_to_mask
from thingmask.labeling.prelabel import write_prelabels
from thingmask.labeling.select import FramePool, pick_diverse
from thingmask.labeling.suggest import FrameSignals, find_suggestions, write_suggestions
from thingmask.ownership import LOCK_NAME, MANIFEST, Manifest, folder_lock

CONFIG = Config(display_things=["cat", "bird"], score_threshold=0.5)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# --- polygons ------------------------------------------------------------------------------------
def test_polygon_round_trip_keeps_median_iou_over_095_on_synthetic_animals() -> None:
    from thingmask.datasets.synthetic import render_scene

    ious = []
    rng = np.random.default_rng(0)
    for size in (64, 160, 400):
        for _ in range(4):
            _, masks, _ = render_scene(rng, size)
            for m in masks:
                if m.sum() < 20:
                    continue
                back = polygons_to_mask(mask_to_polygons(m), size, size)
                ious.append(_iou(back, m))
    median = float(np.median(ious))
    print(
        f"polygon round trip: median IoU {median:.4f} over {len(ious)} masks, min {min(ious):.3f}"
    )
    assert len(ious) > 20 and median >= 0.95


def test_polygons_keep_holes_and_parts() -> None:
    m = np.zeros((80, 120), np.uint8)
    cv2.circle(m, (40, 40), 30, 1, -1)
    cv2.circle(m, (40, 40), 10, 0, -1)  # a hole
    cv2.rectangle(m, (90, 10), (110, 30), 1, -1)  # a second part
    mask = m.astype(bool)
    polys = mask_to_polygons(mask)
    assert len(polys) == 2  # one polygon per part, the hole cut into its ring
    back = polygons_to_mask(polys, 80, 120)
    assert not back[40, 40]  # the hole stays open after COCO rasterisation
    assert back[40, 15] and back[20, 100]
    assert _iou(back, mask) > 0.97
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


# --- selection -----------------------------------------------------------------------------------
def test_pick_diverse_returns_exactly_n_with_duplicates_and_gap_and_keeps() -> None:
    rng = np.random.default_rng(0)
    # 300 frames of one still scene and 5 short distinct scenes: k-means gets empty clusters
    feats = np.zeros((300, 16), np.float32)
    for k in range(5):
        feats[40 * k + 10 : 40 * k + 14] = rng.normal(size=16) * 5
    idx = np.arange(300)
    picked = pick_diverse(idx, feats, 25, min_gap=3, seed=1)
    assert len(picked) == 25 and len(set(picked)) == 25
    assert min(np.diff(picked)) >= 3
    for k in range(5):  # every distinct scene got a frame
        assert any(40 * k + 10 <= p < 40 * k + 14 for p in picked)
    more = pick_diverse(idx, feats, 30, min_gap=3, seed=1, keep=picked)
    assert set(picked) <= set(more) and len(more) == 30
    assert pick_diverse(idx, feats, 25, min_gap=3, seed=1) == picked  # seeded


def test_frame_pool_stays_bounded_and_spread_on_a_long_stream() -> None:
    pool = FramePool(size=100)
    thumbs = 0
    for i in range(100_000):
        want = pool.wants()
        thumbs += want
        pool.offer(i, np.full(4, i, np.float32) if want else None)
    indices, feats = pool.arrays()
    assert 100 <= len(indices) < 200 and feats.shape == (len(indices), 4)
    assert indices[0] == 0 and indices[-1] > 95_000  # spread over the whole video
    assert thumbs < 2500  # thumbnails only for frames kept (~2 x size per doubling), not 100k


# --- frames --------------------------------------------------------------------------------------
@pytest.fixture
def videos(tmp_path: Path) -> Path:
    d = tmp_path / "videos"
    d.mkdir()
    make_video(d / "clip.mp4", n=40)
    make_video(d / "turned.mp4", n=30, rotation=90)
    return d


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_frames_writes_exactly_n_per_video_rotated_reruns_nothing_and_appends(
    videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels"
    vids = sorted(videos.iterdir())
    picked, written = write_frames(vids, out, FrameOptions(n=6, min_gap=2), ["cat", "bird"])
    assert written == 6 + 6 + 2  # frames, frames.csv, labels.txt
    clip = sorted(p.index for p in picked if p.video.name == "clip.mp4")
    assert len(clip) == 6 and min(np.diff(clip)) >= 2
    for p in picked:
        assert (out / p.file).is_file()
        assert p.file == f"{p.video.stem}/{p.video.stem}_{p.index}.jpg"
    turned = cv2.imread(str(out / next(p.file for p in picked if p.video.name == "turned.mp4")))
    assert turned.shape[:2] == (64, 48)  # rotation applied: 64 wide stored, shown upright
    assert (out / "labels.txt").read_text().splitlines()[2:] == ["cat", "bird"]
    rows = (out / "frames.csv").read_text().splitlines()
    assert rows[0] == "video,frame,time_s,file" and len(rows) == 13
    before = _mtimes(out)
    _, written = write_frames(vids, out, FrameOptions(n=6, min_gap=2), ["cat", "bird"])
    assert written == 0 and _mtimes(out) == before  # same arguments: nothing written
    picked2, written = write_frames(vids, out, FrameOptions(n=9, min_gap=2), ["cat", "bird"])
    clip2 = sorted(p.index for p in picked2 if p.video.name == "clip.mp4")
    assert set(clip) < set(clip2) and len(clip2) == 9  # appended, earlier frames kept
    assert written == 3 + 3 + 1


def test_frames_start_stop_and_uniform(videos: Path, tmp_path: Path) -> None:
    opts = FrameOptions(n=5, method="uniform", start=0.5, stop=1.0)
    picked, _ = write_frames([videos / "clip.mp4"], tmp_path / "o", opts)
    assert all(20 <= p.index < 40 for p in picked) and len(picked) == 5
    every, _ = write_frames([videos / "turned.mp4"], tmp_path / "all", FrameOptions(n=30))
    assert sorted(p.index for p in every) == list(range(30))  # N = the video's frames: all


def test_frames_refuses_bad_input_before_writing(videos: Path, tmp_path: Path) -> None:
    clip = videos / "clip.mp4"
    with pytest.raises(InputError, match=r"--n 41 but the video has only 40"):
        write_frames([clip], tmp_path / "o1", FrameOptions(n=41))
    assert not (tmp_path / "o1" / "clip").exists()
    with pytest.raises(InputError, match="holds the input"):
        write_frames([clip], videos, FrameOptions(n=3))
    user = tmp_path / "o2" / "clip"
    user.mkdir(parents=True)
    (user / "clip_0.jpg").write_bytes(b"mine")
    with pytest.raises(InputError, match="thingmask did not write"):
        write_frames([clip], tmp_path / "o2", FrameOptions(n=40))
    assert (user / "clip_0.jpg").read_bytes() == b"mine"
    with pytest.raises(InputError, match="--start"):
        write_frames([clip], tmp_path / "o3", FrameOptions(n=3, start=0.8, stop=0.2))


# --- pre-labels and review -----------------------------------------------------------------------
def test_prelabel_labelme_review_rules_and_prepare(videos: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    write_frames([videos / "clip.mp4"], labels, FrameOptions(n=8), ["cat", "bird"])
    pres, written, kept = write_prelabels(
        labels, labels, BrightPredictor(), CONFIG, ["cat", "bird"], run="runX"
    )
    assert len(pres) == 8 and written == 8 and kept == 0
    files = sorted((labels / "clip").glob("*.json"))
    docs = [json.loads(f.read_text()) for f in files]
    assert all(d["imageData"] is None and d["imagePath"].endswith(".jpg") for d in docs)
    assert all(d["flags"] == {UNREVIEWED_FLAG: True} for d in docs)
    assert all(review_state(d) == "unreviewed" for d in docs)
    assert sum(len(d["shapes"]) for d in docs) >= 8

    # nobody reviewed anything: prepare reports them and leaves them all out
    res = prepare_dataset(labels, tmp_path / "ds0")
    assert not res.ok
    rules = {i.rule for i in res.report.issues}
    assert "prelabel-unreviewed" in rules

    # one accepted (flag unticked), one corrected (a shape moved), the rest unreviewed
    docs[0]["flags"][UNREVIEWED_FLAG] = False
    docs[1]["shapes"][0]["points"][0][0] += 2.0
    for f, d in zip(files[:2], docs[:2], strict=True):
        f.write_text(json.dumps(d))
    assert [review_state(d) for d in docs[:2]] == ["accepted", "corrected"]
    res = prepare_dataset(labels, tmp_path / "ds1", val_fraction=0.5)
    assert res.ok, res.report.text()
    record = json.loads((tmp_path / "ds1" / "labels.json").read_text())
    assert sorted(e["origin"] for e in record["images"].values()) == ["accepted", "corrected"]
    warn = next(i for i in res.report.issues if i.rule == "prelabel-unreviewed")
    assert "6 file(s)" in warn.where and "--accept-prelabels" in warn.fix

    # re-running prelabel never replaces a reviewed file, refreshes the others
    before = files[0].read_text(), files[1].read_text()
    _, _, kept = write_prelabels(labels, labels, BrightPredictor(0.8), CONFIG, ["cat", "bird"])
    assert kept == 2 and (files[0].read_text(), files[1].read_text()) == before

    res = prepare_dataset(labels, tmp_path / "ds2", accept_prelabels=True)
    assert res.ok and res.report.summary["images"] == 8


def test_prepare_iterations_freeze_val_and_record_origins(videos: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    write_frames([videos / "clip.mp4"], labels, FrameOptions(n=6))
    write_prelabels(labels, labels, BrightPredictor(), CONFIG, ["cat", "bird"])
    ds = tmp_path / "ds"
    first = prepare_dataset(labels, ds, val_fraction=0.34, accept_prelabels=True)
    assert first.ok
    rec1 = json.loads((ds / "labels.json").read_text())
    val1 = {k for k, v in rec1["images"].items() if v["split"] == "val"}
    assert rec1["iteration"] == 1 and val1
    # the next batch: more frames, pre-labelled; one earlier label corrected by hand
    write_frames([videos / "clip.mp4"], labels, FrameOptions(n=12))
    write_prelabels(labels, labels, BrightPredictor(), CONFIG, ["cat", "bird"])
    one = sorted((labels / "clip").glob("*.json"))[0]
    doc = json.loads(one.read_text())
    doc["shapes"][0]["points"][0][1] += 1.5
    one.write_text(json.dumps(doc))
    second = prepare_dataset(labels, ds, val_fraction=0.34, seed=5, accept_prelabels=True)
    assert second.ok, second.report.text()
    rec2 = json.loads((ds / "labels.json").read_text())
    assert rec2["iteration"] == 2 and len(rec2["images"]) == 12
    assert {k for k, v in rec2["images"].items() if v["split"] == "val"} == val1  # frozen
    new = set(rec2["images"]) - set(rec1["images"])
    assert len(new) == 6 and all(rec2["images"][k]["iteration"] == 2 for k in new)
    corrected = "clip/" + one.with_suffix(".jpg").name
    assert rec2["images"][corrected] == {**rec2["images"][corrected], "origin": "corrected"}
    assert rec2["images"][corrected]["iteration"] == 2
    untouched = set(rec1["images"]) - {corrected}
    assert all(rec2["images"][k]["iteration"] == 1 for k in untouched)
    # prepare again with nothing new: still iteration 2
    assert prepare_dataset(labels, ds, accept_prelabels=True).ok
    assert json.loads((ds / "labels.json").read_text())["iteration"] == 2


def test_prelabel_copies_user_images_and_never_writes_beside_them(tmp_path: Path) -> None:
    from labeling_helpers import square_frame

    imgs = tmp_path / "photos"
    (imgs / "day1").mkdir(parents=True)
    cv2.imwrite(str(imgs / "day1" / "a.png"), square_frame(3))
    with pytest.raises(InputError, match="holds the input"):
        write_prelabels(imgs, imgs, BrightPredictor(), CONFIG, ["cat", "bird"])
    out = tmp_path / "ann"
    pres, _, _ = write_prelabels(imgs, out, BrightPredictor(), CONFIG, ["cat", "bird"])
    assert (out / "day1" / "a.png").is_file() and (out / "day1" / "a.json").is_file()
    assert sorted(p.name for p in (imgs / "day1").iterdir()) == ["a.png"]
    assert len(pres[0].instances) == 2


def test_coco_and_labelstudio_documents() -> None:
    m = np.zeros((2, 40, 50), bool)
    m[0, 5:15, 5:25] = True
    m[1, 20:30, 30:45] = True
    dets = Detections(m, [[5, 5, 25, 15], [30, 20, 45, 30]], ["cat", "bird"], [0.9, 0.6])
    pre = to_prelabel("clip/clip_3.jpg", dets)
    coco = coco_document([pre], ["cat", "bird"], "run")
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2]
    assert coco["annotations"][0]["bbox"] == pytest.approx([5.0, 5.0, 20.0, 10.0], abs=0.1)
    assert abs(coco["annotations"][0]["area"] - 200) < 1 and "thingmask_prelabel" in coco["info"]
    back = polygons_to_mask(coco["annotations"][1]["segmentation"], 40, 50)
    assert _iou(back, m[1]) > 0.99
    (task,) = labelstudio_tasks([pre], "run", "/data/local-files/?d=")
    assert task["data"]["image"] == "/data/local-files/?d=clip/clip_3.jpg"
    result = task["predictions"][0]["result"][0]
    assert result["type"] == "polygonlabels" and result["value"]["polygonlabels"] == ["cat"]
    xs = [p[0] for p in result["value"]["points"]]
    assert min(xs) == pytest.approx(10.0, abs=0.2) and max(xs) == pytest.approx(50.0, abs=0.2)


# --- suggestions ---------------------------------------------------------------------------------
def _dets(
    boxes: list[tuple[int, int, int, int]], scores: list[float], ids: list[int]
) -> Detections:
    m = np.zeros((len(boxes), 40, 60), bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        m[k, y0:y1, x0:x1] = True
    return Detections(m, boxes, ["cat"] * len(boxes), scores, track_ids=ids)


def test_frame_signals_fire_each_criterion() -> None:
    s = FrameSignals(score_threshold=0.5)
    a, b = (5, 5, 15, 15), (30, 5, 40, 15)
    s.update(0, _dets([a, b], [0.95, 0.95], [1, 2]))
    s.update(1, _dets([a, b], [0.95, 0.95], [1, 2]))
    s.update(2, _dets([a], [0.95], [1]))  # 2 → 1 → 2: a missed animal for two frames
    s.update(3, _dets([a], [0.95], [1]))
    s.update(4, _dets([a, b], [0.95, 0.6], [1, 3]))  # uncertain; a new track mid-video
    s.update(5, _dets([(5, 20, 15, 30), b], [0.95, 0.95], [1, 3]))  # track 1 jumps
    s.update(6, _dets([(5, 20, 15, 30), b], [0.95, 0.95], [1, 3]))
    flags = s.finish()
    assert "count_blip" in flags[2] and "count_blip" in flags[3]
    assert "track_break" in flags[2] and "track_break" in flags[4]
    assert "uncertain" in flags[4]
    assert {"jump", "mask_drop"} <= flags[5]
    assert 0 not in flags and 1 not in flags and 6 not in flags


def test_suggest_flags_the_missed_frames_and_keeps_earlier_rounds(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", n=30, hidden=(12, 13))
    found = find_suggestions(video, BrightPredictor(), CONFIG, n=3)
    assert {12, 13} & {s.index for s in found}
    assert all("count_blip" in s.criteria for s in found if s.index in (12, 13))
    out = tmp_path / "sugg"
    first, images = write_suggestions([video], out, BrightPredictor(), CONFIG, 2)
    assert len(images) == len(first) and all(p.is_file() for p in images)
    second, _ = write_suggestions([video], out, BrightPredictor(), CONFIG, 2)
    assert not {s.index for s in first} & {s.index for s in second}  # added, not replaced
    rows = (out / "suggestions.csv").read_text().splitlines()
    assert rows[0].startswith("video,frame,time_s,file,count_blip")
    assert len(rows) == 1 + len(first) + len(second)


# --- command line --------------------------------------------------------------------------------
def test_cli_frames_and_its_errors(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "f"
    assert main(["frames", str(videos), "--output", str(out), "--n", "4"]) == 0
    assert len(list(out.rglob("*.jpg"))) == 8
    assert main(["frames", str(videos), "--output", str(out), "--n", "4"]) == 0
    assert "nothing new" in capsys.readouterr().out
    for argv, what in (
        (["frames", str(tmp_path / "none.mp4"), "-o", str(out)], "no such file"),
        (["frames", str(videos), "-o", str(tmp_path / "g"), "--n", "500"], "has only"),
        (["frames", str(videos), "-o", str(videos)], "holds the input"),
        (["suggest", str(videos), "-o", str(tmp_path / "s"), "--run", str(tmp_path)], "model"),
        (["prelabel", str(out), "-o", str(out), "--run", str(tmp_path / "nope")], "no such run"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"thingmask {argv[0]}: error:") and what in err, err
        assert err.count("\n") == 1
    assert not (tmp_path / "g").exists() or not list((tmp_path / "g").rglob("*.jpg"))


def test_output_folder_is_not_a_video_folder_copy(videos: Path, tmp_path: Path) -> None:
    # the frames' folder can be copied elsewhere and still be prelabelled in place
    labels = tmp_path / "labels"
    write_frames([videos / "clip.mp4"], labels, FrameOptions(n=3))
    moved = shutil.copytree(labels, tmp_path / "moved")
    pres, written, _ = write_prelabels(moved, moved, BrightPredictor(), CONFIG, ["cat", "bird"])
    assert len(pres) == 3 and written == 3


def test_coco_prelabels_are_unreviewed_until_accepted(videos: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    write_frames([videos / "clip.mp4"], labels, FrameOptions(n=5))
    write_prelabels(labels, labels, BrightPredictor(), CONFIG, ["cat", "bird"], fmt="coco")
    coco = labels / "prelabels_coco.json"
    data = json.loads(coco.read_text())
    assert len(data["images"]) == 5 and data["images"][0]["file_name"].startswith("clip/")
    res = prepare_dataset(coco, tmp_path / "ds")
    assert not res.ok and "prelabel-unreviewed" in {i.rule for i in res.report.issues}
    res = prepare_dataset(coco, tmp_path / "ds", accept_prelabels=True)
    assert res.ok, res.report.text()
    origins = json.loads((tmp_path / "ds" / "labels.json").read_text())["origins"]
    assert origins == {"accepted": 5}


# --- the output folder: thingmask.ownership's manifest and lock ----------------------------------
def test_labelling_folder_has_the_ownership_manifest_and_one_writer(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clip, out = videos / "clip.mp4", tmp_path / "labels"
    picked, _ = write_frames([clip], out, FrameOptions(n=3), ["cat", "bird"])
    write_prelabels(out, out, BrightPredictor(), CONFIG, ["cat", "bird"])
    # one record, the one thingmask.ownership reads: every file written, the picks in its notes
    assert {p.name for p in out.iterdir() if p.name.startswith(".")} == {LOCK_NAME, MANIFEST}
    manifest = Manifest.load(out)
    assert {"frames", "prelabel"} <= manifest.writers
    written = [f for f in out.rglob("*") if f.is_file() and not f.name.startswith(".")]
    assert len(written) == 3 + 3 + 2 and all(manifest.owns(f) for f in written)
    assert manifest.notes["frames"]["clip"]["indices"] == sorted(p.index for p in picked)

    # a person reviewed one labelme file: it is theirs now (ownership says so), kept, not refused
    reviewed = sorted(out.glob("clip/*.json"))[0]
    doc = json.loads(reviewed.read_text())
    doc["flags"][UNREVIEWED_FLAG] = False
    reviewed.write_text(json.dumps(doc))
    assert not Manifest.load(out).owns(reviewed)
    _, written_now, kept = write_prelabels(out, out, BrightPredictor(0.8), CONFIG, ["cat", "bird"])
    assert (written_now, kept) == (2, 1) and json.loads(reviewed.read_text()) == doc

    # while another writer holds the folder's lock, every labelling command is refused at once
    before = _mtimes(out)
    with folder_lock(out):
        with pytest.raises(InputError, match="another thingmask run is writing"):
            write_frames([clip], out, FrameOptions(n=5))
        with pytest.raises(InputError, match="another thingmask run is writing"):
            write_prelabels(out, out, BrightPredictor(), CONFIG, ["cat", "bird"])
        with pytest.raises(InputError, match="another thingmask run is writing"):
            write_suggestions([clip], out, BrightPredictor(), CONFIG, 2)
        assert main(["frames", str(clip), "-o", str(out), "--n", "5"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("thingmask frames: error:") and err.count("\n") == 1
        assert str(out) in err and "another thingmask run is writing" in err
    assert _mtimes(out) == before  # the refused runs wrote nothing
    _, written_now = write_frames([clip], out, FrameOptions(n=5))  # released: the next one runs
    assert written_now == 2 + 1  # two new frames, frames.csv
    assert Manifest.load(out).owns(out / "frames.csv")


def test_labelling_refusals_name_the_users_file(videos: Path, tmp_path: Path) -> None:
    clip, out = videos / "clip.mp4", tmp_path / "labels"
    picked, _ = write_frames([clip], out, FrameOptions(n=3))
    mine = out / Path(picked[0].file).with_suffix(".json")
    mine.write_text('{"my": "own labels"}')  # never written by thingmask: refused, kept
    with pytest.raises(InputError, match="thingmask did not write") as refused:
        write_prelabels(out, out, BrightPredictor(), CONFIG, ["cat", "bird"])
    assert str(refused.value).startswith(f"{mine}: exists and was not written by thingmask")
    assert "\n" not in str(refused.value) and mine.read_text() == '{"my": "own labels"}'
    assert list(out.glob("clip/*.json")) == [mine]  # nothing else written either
    mine.unlink()
    (out / "frames.csv").write_text("edited by hand\n")  # thingmask's file, changed since
    with pytest.raises(InputError, match=r"frames\.csv: exists and was not written"):
        write_frames([clip], out, FrameOptions(n=4))
    assert (out / "frames.csv").read_text() == "edited by hand\n"
