"""thingmask.video: PyAV reader/writer. Fixture videos are generated here with PyAV (tiny)."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from thingmask.video import (
    VideoError,
    VideoWriter,
    open_video,
    partial_path,
    video_html,
    write_video,
)

H, W = 48, 64


def pattern(i: int, h: int = H, w: int = W) -> np.ndarray:
    """A frame with a smooth gradient (codec-friendly) and a moving red square; BGR uint8."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack(
        [x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), np.full_like(x, 90)]
    ).astype(np.uint8)
    img[8:20, 4 + i % (w - 16) : 16 + i % (w - 16)] = (0, 0, 255)
    return img


def make_video(
    path: Path,
    n: int = 12,
    times_ms: list[int] | None = None,
    rotation: int = 0,
    audio_seconds: float = 0.0,
    size: tuple[int, int] = (H, W),
) -> Path:
    """H.264 MP4 via raw PyAV: ``n`` frames at 25 fps, or at ``times_ms`` (variable rate),
    optional display-matrix rotation and an AAC sine track."""
    h, w = size
    times = times_ms if times_ms is not None else [i * 40 for i in range(n)]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            v.set_display_rotation(rotation)
        a = None
        if audio_seconds:
            a = c.add_stream("aac", rate=44100)
            a.layout = "mono"
        for i, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(pattern(i, h, w), format="bgr24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if a is not None:
            done = 0
            while done < audio_seconds * 44100:
                s = np.sin(np.arange(done, done + 1024) / 20.0).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(s, format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 44100, done, Fraction(1, 44100)
                c.mux(a.encode(af))
                done += 1024
            c.mux(a.encode(None))
    return path


def read_all(path: Path, **kw: float) -> tuple[object, list]:
    with open_video(path, **kw) as r:
        return r.info, list(r.frames())


# -- round trip ----------------------------------------------------------------------------------
def test_write_video_round_trip_h264_pads_odd_size(tmp_path: Path) -> None:
    frames = [pattern(i, 47, 63) for i in range(15)]
    before = [f.copy() for f in frames]
    out = write_video(tmp_path / "odd.mp4", frames, Fraction(30000, 1001))
    assert all(np.array_equal(a, b) for a, b in zip(frames, before, strict=True))
    assert not partial_path(out).exists()
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (64, 48)  # padded by one column and row, not rescaled
    with open(out, "rb") as fh:
        head = fh.read(64)
    assert b"moov" in head  # faststart: the index comes first
    info, got = read_all(out)
    assert info.rate == Fraction(30000, 1001)
    assert len(got) == 15
    for i, f in enumerate(got):
        assert abs(f.time - i * 1001 / 30000) < 0.5 * 1001 / 30000
        diff = np.abs(f.image[:47, :63].astype(int) - frames[i].astype(int))
        assert diff.mean() < 6  # lossy, but the same picture at the same place
        assert np.abs(f.image[:47, 63].astype(int) - f.image[:47, 62].astype(int)).mean() < 8


def test_reader_info(tmp_path: Path) -> None:
    path = make_video(tmp_path / "a.mp4", n=10)
    with open_video(path) as r:
        assert (r.info.width, r.info.height) == (W, H)
        assert r.info.rate == 25
        assert r.info.frames == 10
        assert r.info.codec == "h264" and not r.info.has_audio and r.info.rotation == 0
        frames = list(r.frames())
        with pytest.raises(RuntimeError):
            next(r.frames())
    assert [f.index for f in frames] == list(range(10))
    assert frames[3].image.shape == (H, W, 3) and frames[3].image.dtype == np.uint8
    assert frames[3].time == pytest.approx(0.12, abs=1e-6)
    red = frames[0].image[14, 10]
    assert red[2] > 200 and red[0] < 60  # BGR order: red is the last channel


@pytest.mark.parametrize("rotation, k", [(90, 1), (-90, 3), (180, 2)])
def test_rotation_applied_to_pixels(tmp_path: Path, rotation: int, k: int) -> None:
    path = make_video(tmp_path / "rot.mp4", n=3, rotation=rotation)
    info, frames = read_all(path)
    assert info.rotation == (rotation % 360)
    expected = np.rot90(pattern(0), k)  # displayed = stored rotated counter-clockwise
    assert (info.height, info.width) == expected.shape[:2]
    assert frames[0].image.shape == expected.shape
    assert np.abs(frames[0].image.astype(int) - expected.astype(int)).mean() < 6


def test_variable_frame_rate_keeps_timestamps(tmp_path: Path) -> None:
    times_ms = [0, 40, 60, 160, 170, 300, 340, 500]
    src = make_video(tmp_path / "vfr.mp4", times_ms=times_ms)
    info, frames = read_all(src)
    assert [round(f.time * 1000) for f in frames] == times_ms
    for fmt in ("mp4", "webm", "mov"):
        dst = tmp_path / f"out.{fmt}"
        with VideoWriter(dst, info.width, info.height, info.rate, fmt=fmt) as w:
            for f in frames:
                w.write(f.image, f.time)
        _, again = read_all(dst)
        assert [round(f.time * 1000) for f in again] == times_ms, fmt


def _first_audio_time(path: Path) -> float:
    with av.open(str(path)) as c:
        return min(
            float(p.pts * p.time_base)
            for p in c.demux(c.streams.audio[0])
            if p.size and p.pts is not None
        )


def test_audio_copied_into_mp4_and_reencoded_for_webm(tmp_path: Path, caplog) -> None:
    src = make_video(tmp_path / "talk.mp4", n=25, audio_seconds=1.0)
    info, frames = read_all(src)
    assert info.has_audio and info.audio_codec == "aac"
    src_start = _first_audio_time(src)
    expected = {"mp4": ("aac", "copied"), "webm": ("opus", "re-encoded"), "mov": ("aac", "copied")}
    for fmt, (codec, policy) in expected.items():
        dst = tmp_path / f"cut.{fmt}"
        with VideoWriter(dst, W, H, info.rate, fmt=fmt, audio_source=src) as w:
            for f in frames:
                w.write(f.image, f.time)
        assert w.audio.startswith(policy)
        with av.open(str(dst)) as c:
            assert [s.codec_context.name for s in c.streams.audio] == [codec], fmt
            packets = [p for p in c.demux(c.streams.audio[0]) if p.size]
            assert len(packets) > 10
            end = max(float(p.pts * p.time_base) for p in packets)
            assert end == pytest.approx(1.0, abs=0.1)  # audio cut at the video's end
        # in sync: same start as the source (copy: exact; Opus adds a few ms of pre-skip)
        assert _first_audio_time(dst) == pytest.approx(
            src_start, abs=1e-3 if fmt != "webm" else 0.03
        )
        _, again = read_all(dst)
        assert len(again) == 25
    with (
        caplog.at_level(logging.INFO, logger="thingmask.video"),
        VideoWriter(tmp_path / "seq", W, H, 25, fmt="png", audio_source=src) as w,
    ):
        w.write(frames[0].image)
    assert "no audio" in caplog.text and w.audio.startswith("dropped")


# -- damaged and wrong inputs --------------------------------------------------------------------
def test_truncated_file_decodes_up_to_the_cut(tmp_path: Path, caplog) -> None:
    frames = [np.random.default_rng(i).integers(0, 255, (H, W, 3), np.uint8) for i in range(40)]
    full = write_video(tmp_path / "full.mp4", frames, 25)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="thingmask.video"), open_video(cut) as r:
        got = list(r.frames())
    assert 5 < len(got) < 40
    assert r.truncated and r.missing_frames == 40 - len(got) - r.bad_frames
    assert "cut.mp4" in caplog.text
    _, complete = read_all(full)
    for a, b in zip(got, complete, strict=False):  # the same bitstream up to the cut
        assert np.array_equal(a.image, b.image) and a.time == b.time


def test_corrupt_frames_counted_and_threshold(tmp_path: Path) -> None:
    frames = [np.random.default_rng(i).integers(0, 255, (H, W, 3), np.uint8) for i in range(40)]
    data = bytearray(write_video(tmp_path / "ok.mp4", frames, 25).read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start : start + len(data) // 4] = rng.integers(0, 255, len(data) // 4, np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with open_video(bad, max_bad_frames=1.0) as r:
        got = list(r.frames())
    assert r.bad_frames > 0  # skipped and counted, the rest decoded
    assert len(got) + r.bad_frames + r.missing_frames == 40
    assert len(got) >= 20
    with (
        pytest.raises(VideoError, match=r"bad\.mp4.*max_bad_frames"),
        open_video(bad, max_bad_frames=0.0) as r2,
    ):
        list(r2.frames())


def _zero_frame(path: Path) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        f.sample_rate, f.pts = 44100, 0
        c.mux(a.encode(f))
        c.mux(a.encode(None))


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("missing.mp4", None, "not found"),
        ("empty.mp4", lambda p: p.write_bytes(b""), "empty"),
        ("notes.mp4", lambda p: p.write_text("not a video at all"), "not a readable video"),
        ("zero.mp4", _zero_frame, "no video stream"),
        ("zero.mkv", _zero_frame, "(not a readable video|no video frame)"),
        ("sound.m4a", _audio_only, "no video stream"),
        ("folder", lambda p: p.mkdir(), "folder"),
    ],
)
def test_bad_inputs_raise_clear_errors(tmp_path: Path, name: str, make, message: str) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(VideoError, match=message) as err:
        open_video(path)
    assert name in str(err.value)
    assert isinstance(err.value, ValueError)


# -- alpha ---------------------------------------------------------------------------------------
def _decode_alpha(path: Path, fmt: str) -> list[np.ndarray]:
    if fmt == "png":
        files = sorted(path.glob("frame_*.png"))
        return [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files]
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if fmt == "webm":  # FFmpeg's native vp9 decoder drops the alpha side channel
            cc = av.codec.CodecContext.create("libvpx-vp9", "r")
            frames = [f for p in c.demux(s) for f in cc.decode(p)]
        else:
            frames = list(c.decode(s))
        return [f.to_ndarray(format="bgra") for f in frames]


@pytest.mark.parametrize(
    "fmt, size", [("webm", (48, 64)), ("webm", (47, 63)), ("mov", (47, 63)), ("png", (47, 63))]
)
def test_alpha_survives_encoding(tmp_path: Path, fmt: str, size: tuple[int, int]) -> None:
    h, w = size
    alpha = np.zeros((h, w), np.uint8)
    alpha[10:30, 16:48] = 255
    frames = [np.dstack([pattern(i, h, w), alpha]) for i in range(6)]
    path = tmp_path / (f"a.{fmt}" if fmt != "png" else "seq")
    with VideoWriter(path, w, h, 25, fmt=fmt, alpha=True) as writer:
        for f in frames:
            writer.write(f)
    decoded = _decode_alpha(path, fmt)
    assert len(decoded) == 6
    for got in decoded:
        assert got.shape[2] == 4
        got_alpha = got[:h, :w, 3].astype(int)
        assert got_alpha[12:28, 18:46].min() >= 245  # inside the mask (away from the edge)
        outside = np.ones((h, w), bool)
        outside[8:32, 14:50] = False
        assert got_alpha[outside].max() <= 10
        if got.shape[:2] != (h, w):  # padded to even: the padding is transparent
            assert got[h:, :, 3].max() <= 10 and got[:, w:, 3].max() <= 10
    if fmt == "webm":
        with av.open(str(path)) as c:
            assert c.streams.video[0].metadata.get("ALPHA_MODE") == "1"
    if fmt == "png":
        assert (path / "timestamps.csv").read_text().startswith("frame,file,time_s")


# -- writer errors and crash safety --------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, image, error",
    [
        ({"fmt": "mp4", "alpha": True}, None, "cannot store transparency"),
        ({"fmt": "avi"}, None, "video_format"),
        ({}, np.zeros((H + 2, W, 3), np.uint8), "differs"),
        ({}, np.zeros((H, W, 4), np.uint8), "without alpha"),
        ({}, np.zeros((H, W, 3), np.float32), "uint8"),
    ],
)
def test_writer_rejects_bad_input(tmp_path: Path, kwargs, image, error: str) -> None:
    with (
        pytest.raises(ValueError, match=error),
        VideoWriter(tmp_path / "x.mp4", W, H, 25, **kwargs) as w,
    ):
        w.write(image)
    assert not (tmp_path / "x.mp4").exists()
    assert not partial_path(tmp_path / "x.mp4").exists()


def test_interrupted_mp4_leaves_playable_fragmented_partial(tmp_path: Path) -> None:
    dst = tmp_path / "long.mp4"
    with pytest.raises(KeyboardInterrupt), VideoWriter(dst, W, H, 10) as w:
        for i in range(45):  # keyframe every 20 frames at 10 fps: 2 fragments are complete
            w.write(pattern(i))
        raise KeyboardInterrupt
    assert not dst.exists()
    part = partial_path(dst)
    assert part.exists()
    _, frames = read_all(part)
    assert len(frames) >= 20


def test_video_html_embeds_the_file(tmp_path: Path) -> None:
    out = write_video(tmp_path / "show.mp4", [pattern(i) for i in range(3)], 25)
    html = video_html(out, width=320)
    assert html.startswith('<video width="320"') and "data:video/mp4;base64,AAAA" in html
    with pytest.raises(ValueError, match="folder"):
        video_html(tmp_path / "folder")
