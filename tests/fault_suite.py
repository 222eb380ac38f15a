"""The fault suite of issue 18: break a video batch every way we know, then check the invariants.

Faults: a kill (SIGKILL, SIGINT) at seeded points of a job (mid-video, at the check, inside the
commit, at the summary), an exception injected in each stage, ENOSPC injected in each writer,
links (symbolic and hard, to the input) pre-placed at every temporary name, inputs whose outputs
would share a name, a user's file at every output name, two drivers on one output folder, a
re-run with other settings.

Invariants after each (:func:`check`):

1. no input and no user file changed (sha256 and mtime, links by target);
2. no final name without a complete file (every visible file in the output is thingmask's own,
   recorded in its folder's manifest, and every video decodes to every frame);
3. no marker that lies (each done marker's outputs exist, are recorded, decode to the frames the
   marker states, which are all the source's frames);
4. a re-run finishes every job and leaves no temporary file (no stage, no ``*.part*``), and
   the run after it skips everything (the markers it trusts are right).

``python tests/fault_suite.py`` runs every case and prints the counts; pytest runs it (in its own
process) through ``tests/test_fault_suite.py`` and prints the same counts in its summary
(``conftest.py``). The model is a stand-in (red squares are cats): CPU only, no weights, about
two minutes on two busy cores.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from thingmask.config import Config
from thingmask.detections import Detections
from thingmask.jobs.commit import STAGE_PREFIX, decoded_frames
from thingmask.jobs.job import process_many
from thingmask.jobs.outputs import marker_outputs, read_marker
from thingmask.ownership import LOCK_NAME, MANIFEST, Manifest
from thingmask.video import write_video

SEED = 18
FRAMES = 12
H, W = 48, 64
STATS = {"cases": 0, "invariants": 0}


# -- the world: inputs, a stand-in model, the settings --------------------------------------------
def scene(t: int) -> np.ndarray:
    img = np.full((H, W, 3), (60, 140, 60), np.uint8)
    cv2.rectangle(img, (2 + t, 8), (13 + t, 19), (0, 0, 255), -1)  # a red cat walking right
    return img


class CatPredictor:
    """Red squares are cats. ``hook(call_number)`` runs before each call (fault injection)."""

    class_names = ("cat", "dog")

    def __init__(self, hook: Callable[[int], None] | None = None) -> None:
        self.calls, self.hook = 0, hook

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        self.calls += 1
        if self.hook is not None:
            self.hook(self.calls)
        b, g, r = (image_bgr[..., k].astype(int) for k in range(3))
        m = (r > 150) & (g < 100) & (b < 100)
        if m.sum() < 5:
            return Detections.empty(*image_bgr.shape[:2])
        ys, xs = np.nonzero(m)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        return Detections(masks=m[None], boxes=[box], class_names=["cat"], scores=[0.9])


def config(**changes: Any) -> Config:
    """Every output on: cut-out, CSV, RLE, mask video, per-animal clips (tracking)."""
    base = {
        "display_things": ["cat"],
        "tracking": True,
        "export_csv": True,
        "export_rle": True,
        "export_mask_video": True,
        "per_instance_clips": True,
    }
    return Config(**{**base, **changes})


@dataclass
class World:
    """Two inputs that would share an output name (``sessions/day1/cam.mp4``, ``day2/cam.mp4``),
    the output folder, and every file the user owns (inputs included) with its fingerprint."""

    root: Path
    inputs: list[Path]
    out: Path
    settings: Config
    user: dict[Path, tuple[str, int]] = field(default_factory=dict)

    @property
    def src(self) -> str:
        return str(self.root / "sessions" / "*" / "cam.mp4")

    def protect(self, *paths: Path) -> None:
        """Remember ``paths`` (user files, links) as they are now."""
        for p in paths:
            self.user[p] = fingerprint(p)

    def run(self, **kwargs: Any) -> list[Any]:
        return process_many(
            self.src, self.out, CatPredictor(), self.settings, progress=False, **kwargs
        )


def make_world(tmp: Path, **changes: Any) -> World:
    inputs = []
    for day in ("day1", "day2"):
        path = tmp / "sessions" / day / "cam.mp4"
        path.parent.mkdir(parents=True)
        inputs.append(write_video(path, (scene(t) for t in range(FRAMES)), 25))
    world = World(tmp, inputs, tmp / "out", config(**changes))
    world.protect(*inputs)
    return world


def fingerprint(path: Path) -> tuple[str, int]:
    st = os.lstat(path)
    if path.is_symlink():
        return ("link:" + os.readlink(path), st.st_mtime_ns)
    if path.is_dir():
        return ("dir:" + ",".join(sorted(p.name for p in path.iterdir())), st.st_mtime_ns)
    return (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)


# -- invariants -----------------------------------------------------------------------------------
def holds(condition: bool, what: str) -> None:
    STATS["invariants"] += 1
    if not condition:
        raise AssertionError(f"invariant broken: {what}")


def _visible(out: Path, world: World) -> Iterator[Path]:
    if not out.is_dir():
        return
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if any(part.startswith(".") for part in rel.parts) or p in world.user or p.is_dir():
            continue
        if any(q in world.user for q in p.parents):
            continue
        yield p


def check(world: World, rerun: bool = True, **run_kwargs: Any) -> None:
    """Invariants 1-3, then (``rerun``) a plain re-run, invariant 4, and 1-3 again."""
    _check_state(world)
    if not rerun:
        return
    results = world.run(**run_kwargs)
    holds(
        all(r.status in ("done", "skipped") for r in results),
        f"re-run finishes: {[(r.source, r.status, r.error) for r in results]}",
    )
    leftovers = [
        p
        for p in world.out.rglob("*")
        if (p.name.startswith(STAGE_PREFIX) or ".part" in p.name) and p not in world.user
    ]
    holds(not leftovers, f"no temporary file after a re-run: {leftovers}")
    _check_state(world)
    again = world.run(**run_kwargs)  # resume: a finished batch is skipped, nothing rewritten
    holds(all(r.status == "skipped" for r in again), "a finished batch is skipped")
    markers = [p for p in _visible(world.out, world) if read_marker(p) is not None]
    holds(len(markers) == len(world.inputs), f"one done marker per input: {markers}")


def _check_state(world: World) -> None:
    for path, before in world.user.items():  # 1
        holds(
            (path.exists() or path.is_symlink()) and fingerprint(path) == before,
            f"{path} unchanged",
        )
    manifests: dict[Path, Manifest] = {}
    for path in _visible(world.out, world):  # 2
        folder = path.parent if path.parent.name.endswith("_clips") is False else path.parent.parent
        if folder not in manifests:
            manifests[folder] = Manifest.load(folder)
        holds(manifests[folder].owns(path), f"{path} is a committed thingmask output")
        if path.suffix in (".mp4", ".webm") and path.parent.name.endswith("_clips") is False:
            holds(decoded_frames(path, path.suffix[1:]) == FRAMES, f"{path} holds every frame")
        elif path.suffix == ".mp4":
            holds(decoded_frames(path, "mp4") > 0, f"{path} decodes")
    for path in _visible(world.out, world):  # 3
        meta = read_marker(path)
        if meta is None:
            continue
        result = meta["result"]
        holds(meta.get("status") == "done", f"{path} says done")
        holds(result["frames_written"] == FRAMES, f"{path}: every source frame written")
        for out in marker_outputs(meta):
            holds(out.exists(), f"{path} lists {out}, which exists")
            if out.suffix == ".mp4" and not out.parent.name.endswith("_clips"):
                holds(decoded_frames(out, "mp4") == FRAMES, f"{out} decodes to what {path} says")
            if out.suffix == ".csv":
                rows = out.read_text().splitlines()[1:]
                holds(all(0 <= int(r.split(",")[0]) < FRAMES for r in rows), f"{out} rows")


# -- fault injection ------------------------------------------------------------------------------
@contextlib.contextmanager
def fail_on(target: Any, name: str, nth: int, exc: BaseException) -> Iterator[None]:
    """Make ``target.name`` raise ``exc`` on its ``nth`` call (and on no other)."""
    original = getattr(target, name)
    calls = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == nth:
            raise exc
        return original(*args, **kwargs)

    setattr(target, name, wrapped)
    try:
        yield
    finally:
        setattr(target, name, original)


def enospc(what: str) -> OSError:
    return OSError(errno.ENOSPC, f"No space left on device (injected in {what})")


CHILD = textwrap.dedent("""
    import os, signal, sys, time, types
    sys.path.insert(0, {tests!r})
    import fault_suite as fs
    import thingmask.jobs.commit as commit_mod, thingmask.jobs.job as job_mod
    import thingmask.jobs.batch as batch_mod, thingmask.ownership as own
    point, sig = {point!r}, getattr(signal, {sig!r})

    def die():
        print("dying at", point, flush=True)
        os.kill(os.getpid(), sig)
        time.sleep(2)  # SIGINT: the main thread gets KeyboardInterrupt meanwhile

    def nth(n, real):
        calls = [0]
        def wrapped(*a, **k):
            calls[0] += 1
            if calls[0] == n:
                die()
            return real(*a, **k)
        return wrapped

    kind, _, n = point.partition(":")
    hook = None
    if kind == "frame":
        hook = lambda call: die() if call == int(n) else None
    elif kind == "stall":
        def hook(call):
            if call == int(n):
                print("stalled", flush=True)
                time.sleep(60)
    elif kind == "check":
        job_mod.check_complete = nth(int(n), job_mod.check_complete)
    elif kind == "save":
        own.Manifest.save = nth(int(n), own.Manifest.save)
    elif kind == "replace":
        commit_mod.os = types.SimpleNamespace(**{{**vars(os), "replace": nth(int(n), os.replace)}})
    elif kind == "summary":
        batch_mod.atomic_write_text = nth(1, batch_mod.atomic_write_text)
    world = fs.World(fs.Path({root!r}), [], fs.Path({out!r}), fs.config())
    fs.process_many({src!r}, world.out, fs.CatPredictor(hook), world.settings, progress=False)
    print("finished", flush=True)
""")


def child(world: World, point: str, sig: str = "SIGKILL") -> subprocess.Popen[str]:
    import thingmask

    script = CHILD.format(
        tests=str(Path(__file__).parent),
        point=point,
        sig=sig,
        root=str(world.root),
        out=str(world.out),
        src=world.src,
    )
    env = {**os.environ, "PYTHONPATH": str(Path(thingmask.__file__).parents[1])}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


# -- the cases ------------------------------------------------------------------------------------
def kill_points() -> list[tuple[str, str]]:
    """Seeded: mid-video (first and second video), at the check, in the commit (manifest
    recorded, a rename, the marker's rename), at the summary; SIGKILL and SIGINT."""
    rng = random.Random(SEED)
    mid1, mid2 = rng.randrange(2, FRAMES - 1), FRAMES + rng.randrange(2, FRAMES - 1)
    points = [f"frame:{mid1}", f"frame:{mid2}", "check:1", "save:1", "replace:2", "replace:6"]
    points += ["save:2", "summary:1"]
    cases = [(p, "SIGKILL") for p in points]
    cases += [(p, "SIGINT") for p in (f"frame:{mid1}", "replace:3", "summary:1")]
    return cases


def case_kill(tmp: Path, point: str, sig: str) -> None:
    world = make_world(tmp)
    proc = child(world, point, sig)
    out, err = proc.communicate(timeout=120)
    holds("dying at" in out and "finished" not in out, f"killed at {point}: {out} {err[-500:]}")
    check(world)


def stage_faults() -> dict[str, Callable[[], contextlib.AbstractContextManager[None]]]:
    """An exception in each stage of the job (the second call, so some work was done)."""
    import thingmask.jobs.batch as batch_mod
    import thingmask.jobs.commit as commit_mod
    import thingmask.jobs.cutout as cutout_mod
    import thingmask.jobs.exports as exports
    import thingmask.jobs.job as job_mod
    from thingmask.cutout.tracking import Tracker
    from thingmask.video.reader import VideoReader
    from thingmask.video.writer import VideoWriter

    def decode_fails() -> contextlib.AbstractContextManager[None]:
        real = VideoReader.frames

        def frames(self: VideoReader) -> Iterator[Any]:
            for i, frame in enumerate(real(self)):
                if i == 5:
                    raise RuntimeError("injected: decoder broke")
                yield frame

        return _patched(VideoReader, "frames", frames)

    boom = RuntimeError("injected")
    return {
        "decode": decode_fails,
        "tracking": lambda: fail_on(Tracker, "update", 4, boom),
        "cut-out": lambda: fail_on(cutout_mod, "composite_mask", 4, boom),
        "encode": lambda: fail_on(VideoWriter, "write", 6, boom),
        "export-csv": lambda: fail_on(exports.CsvExporter, "add_rows", 3, boom),
        "export-rle": lambda: fail_on(exports.RleExporter, "add", 3, boom),
        "export-mask": lambda: fail_on(exports.MaskVideo, "add_union", 3, boom),
        "export-clips": lambda: fail_on(exports.InstanceClips, "add", 3, boom),
        "check": lambda: fail_on(job_mod, "check_complete", 1, boom),
        "marker": lambda: fail_on(job_mod, "atomic_write_json", 1, boom),
        "commit-record": lambda: fail_on(Manifest, "record", 1, boom),
        "commit-rename": lambda: _failing_rename(commit_mod, 3, boom),
        "manifest": lambda: fail_on(Manifest, "save", 2, boom),
        "summary": lambda: fail_on(batch_mod, "atomic_write_text", 1, boom),
    }


def writer_faults() -> dict[str, Callable[[], contextlib.AbstractContextManager[None]]]:
    """ENOSPC in each writer: the encoders (cut-out, mask, clips), the MP4 remux, the CSV and
    RLE files, the marker, the manifest, the summary, PNG frames."""
    import thingmask.jobs.batch as batch_mod
    import thingmask.jobs.exports as exports
    import thingmask.jobs.job as job_mod
    import thingmask.ownership as own
    from thingmask.video.writer import VideoWriter

    def in_writer(match: str, method: str, nth: int) -> contextlib.AbstractContextManager[None]:
        real = getattr(VideoWriter, method)
        calls = {"n": 0}

        def wrapped(self: VideoWriter, *args: Any, **kwargs: Any) -> Any:
            if match in self.path.name:
                calls["n"] += 1
                if calls["n"] == nth:
                    raise enospc(f"{method} of {self.path.name}")
            return real(self, *args, **kwargs)

        return _patched(VideoWriter, method, wrapped)

    return {
        "video-encode": lambda: in_writer("cam_cutout.mp4", "_encode", 5),
        "video-remux": lambda: in_writer("cam_cutout.mp4", "_defragment", 1),
        "mask-encode": lambda: in_writer("_mask", "_encode", 5),
        "clip-encode": lambda: in_writer("_track", "_encode", 3),
        "csv": lambda: fail_on(exports.CsvExporter, "add_rows", 4, enospc("csv")),
        "rle": lambda: fail_on(exports.RleExporter, "add", 4, enospc("rle")),
        "marker": lambda: fail_on(job_mod, "atomic_write_json", 2, enospc("marker")),
        "manifest": lambda: fail_on(own, "atomic_write_text", 1, enospc("manifest")),
        "summary": lambda: fail_on(batch_mod, "atomic_write_text", 1, enospc("summary")),
    }


def _failing_rename(module: Any, nth: int, exc: BaseException) -> Any:
    """``module.os.replace`` raising on its ``nth`` call (a commit half done)."""
    import types

    calls = {"n": 0}

    def replace(a: Any, b: Any) -> None:
        calls["n"] += 1
        if calls["n"] == nth:
            raise exc
        os.replace(a, b)

    return _patched(module, "os", types.SimpleNamespace(**{**vars(os), "replace": replace}))


@contextlib.contextmanager
def _patched(target: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


def case_injected(tmp: Path, make: Callable[[], contextlib.AbstractContextManager[None]]) -> None:
    world = make_world(tmp)
    with make():
        try:
            results = world.run()
        except Exception:  # the summary's own failure surfaces; the videos were committed
            results = []
    holds(
        not results or any(r.status == "failed" for r in results),
        f"the injected fault was reported: {[(r.status, r.error) for r in results]}",
    )
    check(world)


def case_png_disk_full(tmp: Path) -> None:
    world = make_world(tmp, video_format="png", per_instance_clips=False, export_mask_video=False)
    calls = {"n": 0}
    real = cv2.imwrite

    def imwrite(path: str, image: np.ndarray, *args: Any) -> bool:
        calls["n"] += 1
        return False if calls["n"] == 4 else bool(real(path, image, *args))

    with _patched(cv2, "imwrite", imwrite):
        results = world.run()
    holds(any(r.status == "failed" for r in results), "a full disk during PNG frames is reported")
    _check_png(world)
    results = world.run()
    holds(all(r.status in ("done", "skipped") for r in results), "re-run finishes the PNGs")
    _check_png(world)


def _check_png(world: World) -> None:
    for path, before in world.user.items():
        holds(fingerprint(path) == before, f"{path} unchanged")
    for folder in world.out.glob("*/cam_cutout"):
        meta = read_marker(folder.parent / "cam_cutout.json")
        holds(meta is not None, f"{folder} has its marker")
        holds(decoded_frames(folder, "png") == FRAMES, f"{folder} holds every frame")
    holds(not list(world.out.rglob(STAGE_PREFIX + "*")), "no stage left")


def temp_names(out: Path) -> list[Path]:
    """Every fixed temporary name a writer of the job could use in an output folder."""
    names = [
        ".cam_cutout.part.mp4",
        ".cam_cutout.faststart.part.mp4",
        ".cam_cutout.part.csv",
        ".cam_cutout.rle.part.jsonl",
        ".cam_cutout_mask.part.mp4",
        ".cam_cutout_mask.faststart.part.mp4",
        ".cam_cutout.part.json",
        ".summary.part.csv",
        MANIFEST + ".part",
    ]
    return [out / n for n in names]


def case_links(tmp: Path, kind: str) -> None:
    """A symbolic or hard link to the input at every temporary name of both output folders."""
    world = make_world(tmp)
    for video in world.inputs:
        folder = world.out / video.parent.name
        folder.mkdir(parents=True)
        for name in temp_names(folder) + [world.out / n.name for n in temp_names(folder)]:
            if name.exists() or name.is_symlink():
                continue
            if kind == "symlink":
                name.symlink_to(video)
            else:
                os.link(video, name)
            world.protect(name)
    check(world)


def case_lock_link(tmp: Path) -> None:
    """A link at the lock file's name is refused, never followed."""
    world = make_world(tmp)
    world.out.mkdir()
    (world.out / LOCK_NAME).symlink_to(world.inputs[0])
    world.protect(world.out / LOCK_NAME)
    try:
        world.run()
        refused = False
    except ValueError as exc:
        refused = LOCK_NAME in str(exc)
    holds(refused, "a link at the lock file's name is refused")
    _check_state(world)


OUTPUT_NAMES = {
    "video": "day1/cam_cutout.mp4",
    "marker": "day1/cam_cutout.json",
    "csv": "day1/cam_cutout.csv",
    "rle": "day1/cam_cutout.rle.jsonl",
    "mask": "day1/cam_cutout_mask.mp4",
    "clips": "day1/cam_cutout_clips/mine.txt",
    "summary": "summary.csv",
    "manifest": "day1/" + MANIFEST,
}


def case_user_file(tmp: Path, kind: str) -> None:
    """A user's file at an output name: refused before anything is written (nothing else
    appears); with ``overwrite``, replaced when it is a file named in the refusal; a folder
    of the user's never is."""
    world = make_world(tmp)
    user = world.out / OUTPUT_NAMES[kind]
    user.parent.mkdir(parents=True)
    user.write_text("the user's own file\n")
    world.protect(user, *([user.parent] if kind == "clips" else []))
    listing = sorted(world.out.rglob("*"))
    try:
        world.run()
        message = ""
    except ValueError as exc:
        message = str(exc)
    named = user.parent if kind == "clips" else user
    holds(str(named) in message and "\n" not in message, f"refusal names {named}: {message!r}")
    holds(sorted(world.out.rglob("*")) == listing, "nothing written before the refusal")
    _check_state(world)
    if kind in ("clips", "manifest"):  # a folder, or a file the ownership rests on: never
        try:
            world.run(overwrite=True)
            replaced = True
        except ValueError:
            replaced = False
        holds(not replaced, f"--overwrite leaves the user's {kind} alone")
        return
    del world.user[user]
    results = world.run(overwrite=True)
    holds(all(r.status == "done" for r in results), "--overwrite runs the batch")
    holds(user.read_bytes() != b"the user's own file\n", f"--overwrite replaced {user}")
    check(world)


def case_colliding_names(tmp: Path) -> None:
    """Same stem in two folders and two extensions in one: four outputs, stable on re-run."""
    world = make_world(tmp)
    extra = world.root / "sessions" / "day1" / "cam.mov"
    extra.write_bytes(world.inputs[0].read_bytes())
    world.inputs.append(extra)
    world.protect(extra)
    src = str(world.root / "sessions" / "*" / "cam.*")
    first = process_many(src, world.out, CatPredictor(), world.settings, progress=False)
    outputs = [r.output for r in first]
    holds(len(set(outputs)) == 3, f"distinct outputs: {outputs}")
    again = process_many(src, world.out, CatPredictor(), world.settings, progress=False)
    holds([r.output for r in again] == outputs, "re-run keeps the names")
    holds(all(r.status == "skipped" for r in again), "re-run skips them all")
    _check_state(world)


def case_two_drivers(tmp: Path) -> None:
    """A second driver while the first holds the folder: refused at once with a clear line;
    the first, killed, leaves only what a re-run cleans up."""
    world = make_world(tmp)
    first = child(world, "stall:3")
    try:
        assert first.stdout is not None
        holds(first.stdout.readline().strip() == "stalled", "first driver started")
        try:
            world.run()
            refused = ""
        except ValueError as exc:
            refused = str(exc)
        holds("another thingmask run is writing" in refused, f"second refused: {refused!r}")
        _check_state(world)
    finally:
        first.kill()
        first.communicate(timeout=30)
    check(world)


def case_two_drivers_at_once(tmp: Path) -> None:
    """Two drivers started together: one works, the other stops (or, when they did not
    overlap, skips the finished work); never two writers in one folder."""
    world = make_world(tmp)
    a, b = child(world, "none:0"), child(world, "none:0")
    outs = [p.communicate(timeout=120) for p in (a, b)]
    finished = ["finished" in o for o, _ in outs]
    refused = ["another thingmask run is writing" in e for _, e in outs]
    holds(
        all(f or r for f, r in zip(finished, refused, strict=True)) and any(finished),
        f"one driver ran, the other finished or was refused: {[e[-300:] for _, e in outs]}",
    )
    check(world)


def case_settings_change(tmp: Path) -> None:
    """A re-run with other settings removes the outputs its old marker lists and no longer
    makes (clips, CSV) and nothing else (a user's file beside them stays)."""
    world = make_world(tmp)
    world.run()
    mine = world.out / "day1" / "cam_cutout_notes.txt"
    mine.write_text("mine")
    world.protect(mine)
    world.settings = config(per_instance_clips=False, export_csv=False)
    check(world)
    holds(not list(world.out.rglob("*_clips")), "old clips removed")
    holds(not list(world.out.rglob("cam_cutout.csv")), "old CSV removed")


def all_cases() -> dict[str, Callable[[Path], None]]:
    cases: dict[str, Callable[[Path], None]] = {}
    for point, sig in kill_points():
        cases[f"kill-{sig}-{point}"] = lambda tmp, p=point, s=sig: case_kill(tmp, p, s)
    for name, make in stage_faults().items():
        cases[f"exception-{name}"] = lambda tmp, m=make: case_injected(tmp, m)
    for name, make in writer_faults().items():
        cases[f"enospc-{name}"] = lambda tmp, m=make: case_injected(tmp, m)
    cases["enospc-png-frame"] = case_png_disk_full
    for kind in ("symlink", "hardlink"):
        cases[f"links-{kind}"] = lambda tmp, k=kind: case_links(tmp, k)
    cases["link-at-lock"] = case_lock_link
    for kind in OUTPUT_NAMES:
        cases[f"user-file-{kind}"] = lambda tmp, k=kind: case_user_file(tmp, k)
    cases["colliding-names"] = case_colliding_names
    cases["two-drivers"] = case_two_drivers
    cases["two-drivers-at-once"] = case_two_drivers_at_once
    cases["settings-change"] = case_settings_change
    return cases


def run_case(name: str, tmp: Path) -> None:
    all_cases()[name](tmp)
    STATS["cases"] += 1


def summary() -> str:
    return f"fault suite: {STATS['cases']} cases, {STATS['invariants']} invariant checks, all held"


if __name__ == "__main__":
    import logging
    import tempfile

    logging.basicConfig(level=logging.ERROR)  # the faults are expected; their logs are noise
    t0 = time.perf_counter()
    for case in all_cases():
        with tempfile.TemporaryDirectory() as tmp:
            run_case(case, Path(tmp))
            print(f"ok  {case}", flush=True)
    print(f"{summary()} ({time.perf_counter() - t0:.0f} s)")
    print(json.dumps(STATS))
