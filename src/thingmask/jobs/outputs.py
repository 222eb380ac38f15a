"""What the video job writes, how it knows its own files, and the guard that keeps every output
off the inputs.

For an output ``<dir>/<stem>.mp4`` the job may write (:func:`output_paths`)::

    <stem>.mp4            cut-out video (webm/mov, or a folder of PNGs, per video_format)
    <stem>.json           metadata, written last: the "done" marker
    <stem>.csv            per-instance per-frame positions        (export_csv)
    <stem>.rle.jsonl      COCO-RLE masks per frame                (export_rle)
    <stem>_mask.mp4       white-on-black mask video               (export_mask_video)
    <stem>_clips/         one cut-out clip per tracked animal     (per_instance_clips)

Own outputs are recognised two ways, so a re-run never takes them as inputs: every video the job
writes carries :data:`thingmask.video.OUTPUT_TAG` in its container ``comment`` (it travels with
the file), and every done marker lists the files of its job.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thingmask.config import Config
from thingmask.errors import InputError
from thingmask.ownership import owned_or_absent
from thingmask.video import read_output_tag

__all__ = [
    "JOB_SETTINGS",
    "VideoResult",
    "already_done",
    "check_apart",
    "fingerprint",
    "is_own_output",
    "listed_outputs",
    "marker_outputs",
    "output_paths",
    "planned_outputs",
    "read_marker",
]

# Settings that change what the outputs contain; a finished video is redone when one changes.
JOB_SETTINGS = (
    "display_things",
    "one_label_per_animal",
    "duplicate_iou",
    "score_threshold",
    "test_time_flip",
    "video_format",
    "canvas",
    "canvas_color",
    "canvas_image",
    "keep_audio",
    "tracking",
    "track_max_missed",
    "temporal_smoothing",
    "smoothing_window",
    "edge_refinement",
    "export_csv",
    "export_rle",
    "export_mask_video",
    "per_instance_clips",
    "max_bad_frames",
)


@dataclass
class VideoResult:
    """What happened to one video. ``status``: ``done``, ``skipped`` (already done) or
    ``failed`` (``error`` says why). ``outputs`` maps kind → path."""

    source: str
    output: str
    status: str = "done"
    error: str = ""
    frames_read: int = 0
    frames_written: int = 0
    bad_frames: int = 0
    missing_frames: int = 0
    instances: int = 0
    tracks: int = 0
    empty_frames: int = 0  # frames in which nothing was kept
    empty_share: float = 0.0  # empty_frames / frames_written (above 0.5 a warning is logged)
    padding: list[int] = field(default_factory=lambda: [0, 0])
    timing: str = ""
    audio: str = ""
    wall_s: float = 0.0
    fps: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    metadata: str = ""

    @property
    def frames(self) -> int:
        """Frames in the output (= ``frames_written``)."""
        return self.frames_written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_paths(dst: str | Path, config: Config) -> dict[str, Path]:
    """Every file the job may write for output ``dst`` (see the module docstring)."""
    dst = Path(dst)
    stem = dst.name if config.video_format == "png" else dst.stem
    base = dst.parent
    return {
        "video": dst,
        "metadata": base / f"{stem}.json",
        "csv": base / f"{stem}.csv",
        "rle": base / f"{stem}.rle.jsonl",
        "mask_video": base / f"{stem}_mask.mp4",
        "clips": base / f"{stem}_clips",
    }


def planned_outputs(paths: dict[str, Path], config: Config) -> dict[str, Path]:
    """The outputs this config makes (kind → final path), without the done marker."""
    enabled = {
        "video": True,
        "csv": config.export_csv,
        "rle": config.export_rle,
        "mask_video": config.export_mask_video,
        "clips": config.per_instance_clips,
    }
    return {kind: paths[kind] for kind, on in enabled.items() if on}


def fingerprint(src: Path, config: Config, predictor: Any) -> dict[str, Any]:
    """The job's identity: source (size, mtime), the output settings and the model. ``key`` is
    its short hash; a done marker with the same key means the outputs are current."""
    stat = src.stat()
    settings = {k: getattr(config, k) for k in JOB_SETTINGS}
    model = {
        "class_names": [str(c) for c in getattr(predictor, "class_names", ())],
        "run_dir": str(getattr(predictor, "run_dir", "")),
    }
    blob = json.dumps(
        {"settings": settings, "model": model, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        sort_keys=True,
        default=str,
    )
    return {
        "settings": settings,
        "model": model,
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "key": hashlib.sha256(blob.encode()).hexdigest()[:16],
    }


def read_marker(path: Path) -> dict[str, Any] | None:
    """A thingmask done marker (metadata JSON) at ``path``, or None (missing, unreadable, or
    some other JSON file)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("job"), dict):
        return None
    if not isinstance(meta.get("result"), dict):
        return None
    return meta


def marker_outputs(meta: dict[str, Any]) -> list[Path]:
    """The files a done marker says its job wrote (video, exports, clips)."""
    listed = meta.get("result", {}).get("outputs", {})
    if not isinstance(listed, dict):
        return []
    items = [p for item in listed.values() for p in (item if isinstance(item, list) else [item])]
    return [Path(p) for p in items if isinstance(p, str)]


def already_done(paths: dict[str, Path], key: str) -> dict[str, Any] | None:
    """The done marker when the job with ``key`` finished and all its files still exist."""
    if not paths["video"].exists():
        return None
    meta = read_marker(paths["metadata"])
    if meta is None or meta.get("status") != "done" or meta["job"].get("key") != key:
        return None
    manifests: dict[Path, Any] = {}
    for p in [*marker_outputs(meta), paths["metadata"]]:  # deleted or changed since: redo
        if not p.exists() or not owned_or_absent(p, manifests, paths["metadata"].parent):
            return None
    return meta


def is_own_output(path: Path, listed: set[Path] | None = None) -> bool:
    """True when ``path`` was written by thingmask's video job: its container carries the
    output tag, or it is in ``listed`` (resolved paths from done markers)."""
    if listed and _resolved(path) in listed:
        return True
    return read_output_tag(path) is not None


def listed_outputs(folder: Path) -> set[Path]:
    """Resolved paths of every output that the done markers in ``folder`` list."""
    found: set[Path] = set()
    for json_path in folder.glob("*.json"):
        meta = read_marker(json_path)
        if meta is not None:
            found.update(_resolved(p) for p in marker_outputs(meta))
    return found


def check_apart(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """Raise InputError when any output would be, replace or contain an
    input: the same path once resolved (relative paths, ``..``, symbolic links), the same file
    under another name (a hard link: same device and inode), or an output folder (png, clips)
    holding an input. Inputs are never written to; this makes sure of it before anything is.
    """
    inputs = [Path(p) for p in inputs]
    keys = {_resolved(p): p for p in inputs}
    inodes = {inode: p for p in inputs if (inode := _inode(p)) is not None}
    for out in outputs:
        for candidate in (Path(out),):  # temporary files live in the job's own fresh stage
            resolved, inode = _resolved(candidate), _inode(candidate)
            problem: tuple[str, Path] | None = None
            if resolved in keys:
                problem = ("is", keys[resolved])
            elif inode is not None and inode in inodes:
                problem = ("is a hard link to", inodes[inode])
            else:
                inside = [p for r, p in keys.items() if resolved in r.parents]
                if inside:
                    problem = ("is a folder holding", inside[0])
            if problem is not None:
                raise InputError(
                    f"output {candidate} {problem[0]} the input {problem[1]}; thingmask never "
                    "writes over its inputs. Choose another output name or folder "
                    "(e.g. --output cutouts/)."
                )


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
