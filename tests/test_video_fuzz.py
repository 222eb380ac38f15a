"""Damaged videos never crash, hang or leave half a file (issue 13): a seeded fuzz batch.

Truncations at many offsets, flipped bits, zeroed container boxes (MP4 atoms, WebM elements)
and one file's header on another's body go through ``process_many`` in a child process (a crash
or a hang inside FFmpeg could not hide there). For every file: no traceback, bounded time, and
either a complete output (it decodes to the frames its metadata counts) with its done marker, or
nothing under any final name; no temporary file is left; the batch goes on to the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import thingmask
from thingmask.jobs.outputs import output_paths, read_marker
from thingmask.video import open_video

H, W, N = 48, 64, 12
SEED = 20261130
PER_FILE_S = 15.0  # generous: a tiny file takes well under a second; a hang takes forever
BATCH_S = 50.0
EXPECTED = ("VideoError", "ValueError")  # what a damaged file may raise inside a stage


def pattern(i: int, shift: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    img = np.dstack([x * 4 % 256, y * 5 % 256, np.full_like(x, 60 + shift)]).astype(np.uint8)
    img[8:20, 4 + i : 16 + i] = (0, 0, 255)  # a red "cat"
    return img


def source(path: Path, fmt: str, n: int = N, audio: bool = True, shift: int = 0) -> bytes:
    codec = {"mp4": "libx264", "webm": "libvpx-vp9", "mov": "libx264"}[fmt]
    opts = {"movflags": "+faststart"} if fmt == "mp4" else {}
    with av.open(str(path), "w", format=fmt, options=opts) as c:
        v = c.add_stream(codec, rate=25)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        a = None
        if audio:
            a = c.add_stream("libopus" if fmt == "webm" else "aac", rate=48000)
            a.layout = "mono"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i, shift), format="bgr24")
            f.pts, f.time_base = i, Fraction(1, 25)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if a is not None:
            for k in range(0, int(48000 * n / 25), 960):
                s = (0.1 * np.sin(np.arange(k, k + 960) / 9.0)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(s, format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 48000, k, Fraction(1, 48000)
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path.read_bytes()


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list:
    """(offset, size, type) of the ISO-BMFF boxes, descending into the usual containers."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if size < 8 or pos + size > end:
            break
        out.append((pos, size, kind))
        if kind in ("moov", "trak", "mdia", "minf", "stbl") and depth < 5:
            out += mp4_boxes(data, pos + 8, pos + size, depth + 1)
        pos += size
    return out


def damaged(folder: Path) -> dict[str, str]:
    """Write the damaged files (and two good ones); returns name -> what was done to it."""
    rng = np.random.default_rng(SEED)
    tmp = folder.parent / "sources"
    tmp.mkdir()
    mp4 = source(tmp / "a.mp4", "mp4")
    webm = source(tmp / "a.webm", "webm")
    mov = source(tmp / "a.mov", "mov", audio=False)
    other = source(tmp / "b.mp4", "mp4", n=7, shift=90)
    made: dict[str, str] = {}

    def put(name: str, data: bytes, what: str) -> None:
        (folder / name).write_bytes(data)
        made[name] = what

    put("good.mp4", mp4, "intact")
    put("good.webm", webm, "intact")
    for base, data in (("mp4", mp4), ("webm", webm), ("mov", mov)):
        cuts = sorted({int(f * len(data)) for f in rng.uniform(0.005, 0.999, 6)} | {1, 40})
        for cut in cuts:
            put(f"cut{cut:06d}.{base}", data[:cut], f"truncated at byte {cut} of {len(data)}")
        for k in range(3):
            buf = bytearray(data)
            where = rng.integers(0, len(buf), 12 if k else 3)
            for pos in where:
                buf[pos] ^= 1 << int(rng.integers(0, 8))
            put(f"flip{k}.{base}", bytes(buf), f"bits flipped at {sorted(where.tolist())}")
    for offset, size, kind in mp4_boxes(mp4):
        if kind in ("ftyp", "moov", "mvhd", "trak", "tkhd", "mdhd", "stsd", "stco", "stsz", "mdat"):
            buf = bytearray(mp4)
            span = size if size <= 4096 else 16
            buf[offset : offset + span] = bytes(span)
            put(f"zero_{kind}_{offset}.mp4", bytes(buf), f"{kind} box zeroed ({span} bytes)")
    for offset in (4, 31, 200):  # WebM: zero the EBML header / segment info / first cluster
        buf = bytearray(webm)
        buf[offset : offset + 24] = bytes(24)
        put(f"zero_{offset}.webm", bytes(buf), f"24 bytes zeroed at {offset}")
    header = next(o + s for o, s, k in mp4_boxes(mp4) if k == "moov")  # faststart: moov first
    put("swap_header.mp4", mp4[:header] + other[header:], "a.mp4's header on b.mp4's body")
    put("swap_header2.mp4", other[:header] + mp4[header:], "b.mp4's header on a.mp4's body")
    put("swap_kind.mp4", webm[:300] + mp4[300:], "a WebM header on an MP4 body")
    return made


CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from thingmask.config import Config
    from thingmask.detections import Detections
    from thingmask.jobs.job import process_many

    class RedIsCat:
        class_names = ("cat",)
        def __call__(self, image):
            mask = (image[..., 2] > 150) & (image[..., 1] < 100) & (image[..., 0] < 100)
            if not mask.any():
                return Detections.empty(*image.shape[:2])
            ys, xs = np.nonzero(mask)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            return Detections(mask[None], [box], ["cat"], [0.9])

    config = Config(display_things=["cat"], export_rle=True, inference_batch=3)
    results = process_many(sys.argv[1], sys.argv[2], RedIsCat(), config, progress=False)
    print("RESULTS " + json.dumps([r.to_dict() for r in results]))
""")


def test_damaged_videos_never_crash_hang_or_leave_half_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    made = damaged(folder)
    assert len(made) >= 40
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(thingmask.__file__).parents[1])}
    env["OMP_NUM_THREADS"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=BATCH_S,
        )
    except subprocess.TimeoutExpired:  # pragma: no cover - the failure this test is for
        pytest.fail(f"the batch of {len(made)} damaged videos did not end in {BATCH_S} s")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS ") :])
    assert sorted(Path(r["source"]).name for r in results) == sorted(made)  # went on to the end
    by_name = {Path(r["source"]).name: r for r in results}
    assert by_name["good.mp4"]["status"] == by_name["good.webm"]["status"] == "done"
    assert by_name["good.mp4"]["frames_written"] == N
    for name, r in by_name.items():
        what = f"{name} ({made[name]})"
        assert r["status"] in ("done", "failed"), what
        assert r["wall_s"] <= PER_FILE_S, what
        paths = output_paths(r["output"], _Cfg)
        if r["status"] == "failed":  # a clear error naming the file, never a bug's exception
            kind, _, rest = r["error"].partition(": ")
            inner = rest.split("stage failed: ")[-1].partition(":")[0]
            assert kind == "VideoError" or (kind == "StageError" and inner in EXPECTED), what
            assert name in r["error"], what
            assert not any(paths[k].exists() for k in ("video", "metadata", "rle")), what
            continue
        marker = read_marker(paths["metadata"])
        assert marker is not None and marker["status"] == "done", what
        with open_video(paths["video"]) as reader:  # complete: every frame it counts is there
            assert sum(1 for _ in reader.frames()) == r["frames_written"] > 0, what
        rle_lines = Path(r["outputs"]["rle"]).read_text().splitlines()
        assert len(rle_lines) == r["frames_written"], what
    kept = {".thingmask.lock", ".thingmask-manifest.json"}  # the folder's lock and manifest
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name not in kept]
    failed = [n for n, r in by_name.items() if r["status"] == "failed"]
    assert failed and len(failed) < len(made)  # the fuzz did damage some, not everything


class _Cfg:  # output_paths only reads video_format
    video_format = "mp4"
