"""The video stage: cut the display things out of videos, plus their data.

``process_video`` streams one video through the pipeline (:mod:`thingmask.jobs.cutout`: decode,
batched inference, keep the display things, [temporal stage], composite, each in a thread) and
encodes the cut-out frames and exports as they arrive (CSV / RLE / mask video / per-animal
clips): memory stays flat whatever the video's length. ``process_many`` does it for a file,
folder or glob, one output per video; a bad file is reported and the rest continue.
``thingmask video`` (cli.py) calls them. The files written are listed in
:mod:`thingmask.jobs.outputs`.

Safety: no output may be, replace or contain an input (checked before anything is written);
every output is written under a temporary name and renamed when complete, so a failure in any
stage leaves nothing under a final name. Resume: the metadata JSON is written last and is the
"done" marker. Re-running with the same source and settings skips a finished video (and writes
nothing); an unfinished one (killed: only a hidden ``.<name>.part.*`` file is left) is done again
from the start.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from thingmask.config import Config
from thingmask.cutout.composite import Canvas
from thingmask.cutout.temporal import make_stage
from thingmask.detections import Detections
from thingmask.errors import InputError
from thingmask.io_utils import atomic_write_json, atomic_write_text
from thingmask.jobs.batch import find_videos, output_for, summary_csv, summary_table
from thingmask.jobs.cutout import CutFrame, Needs, cutout_stream
from thingmask.jobs.exports import CsvExporter, InstanceClips, MaskVideo, RleExporter
from thingmask.jobs.outputs import (
    VideoResult,
    already_done,
    check_apart,
    fingerprint,
    output_paths,
    read_marker,
)
from thingmask.jobs.stream import named_stage
from thingmask.video import (
    EXTENSIONS,
    VideoError,
    VideoWriter,
    open_video,
    output_tag,
    partial_path,
)

__all__ = ["OnFrame", "plan_batch", "process_many", "process_video", "write_summary"]

log = logging.getLogger(__name__)

OnFrame = Callable[[int, np.ndarray, Detections], None]


def process_video(
    src: str | Path,
    dst: str | Path,
    predictor: Callable[[np.ndarray], Detections],
    config: Config,
    on_frame: OnFrame | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> VideoResult:
    """Cut the display things out of one video, streaming through the pipeline.

    Args:
        src: input video (any FFmpeg-readable container; rotation metadata is applied).
        dst: output path (``.mp4`` / ``.webm`` / ``.mov``; for ``png`` a folder).
        predictor: an engine's predictor (``(H, W, 3)`` uint8 **BGR** frame → Detections with
            class names; ``predict_batch`` / ``predict_tensors`` are used when it has them);
            its ``class_names`` attribute is checked against display_things.
        config: a :class:`thingmask.config.Config` (video_format, canvas, exports,
            inference_batch, ...).
        on_frame: optional ``on_frame(index, frame_bgr, kept_detections)`` called after each
            frame is written, in order (``frame_bgr`` is the source frame, not the composite).
        force: redo even when a finished output with the same settings exists.
        progress: show a tqdm progress bar with ETA.

    Returns:
        A :class:`VideoResult`; the metadata JSON beside the output holds the same and more.

    Raises:
        VideoError (a ValueError naming the file) for a missing/unreadable video; InputError
        when an output would overwrite the input; ConfigError when display_things are not
        classes of the model; StageError (a RuntimeError naming the stage) when a stage fails
        mid-video. Nothing is left under a final output name then.
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    want = EXTENSIONS[config.video_format]
    if want and dst.suffix.lower() != want:
        raise ValueError(
            f"output {dst}: video_format={config.video_format!r} writes {want} "
            f"files; name the output *{want} or change video_format"
        )
    paths = output_paths(dst, config)
    class_names = getattr(predictor, "class_names", None)
    if class_names is not None:
        config.check_classes(class_names)
    if not src.is_file():
        raise VideoError(f"{src}: video file not found. Check the path (video_input).")
    check_apart(paths.values(), [src])
    job = fingerprint(src, config, predictor)
    if not force:
        done = already_done(paths, job["key"])
        if done is not None:
            log.info(
                "%s: already done with the same settings (%s); skipping", src, paths["metadata"]
            )
            fields = VideoResult.__dataclass_fields__
            result = VideoResult(**{k: v for k, v in done["result"].items() if k in fields})
            result.status, result.wall_s = "skipped", round(time.perf_counter() - t0, 3)
            return result
    _forget_done_marker(paths["metadata"])
    leftovers = [
        partial_path(p)
        for p in (paths["video"], paths["csv"], paths["rle"], paths["mask_video"])
        if partial_path(p).exists()
    ]
    if leftovers:
        log.info(
            "%s: an unfinished earlier run left %s; starting this video again",
            src,
            ", ".join(p.name for p in leftovers),
        )
    result, info, video_meta = _run(src, paths, predictor, config, on_frame, progress)
    result.wall_s = round(time.perf_counter() - t0, 3)
    result.fps = round(result.frames_read / result.wall_s, 2) if result.wall_s else 0.0
    result.metadata = str(paths["metadata"])
    atomic_write_json(
        paths["metadata"],
        {
            "status": "done",
            "source": info,
            "output": video_meta,
            "job": job,
            "result": result.to_dict(),
        },
    )
    log.info(
        "%s -> %s: %d frames, %d instances, %.1f s (%.1f fps)",
        src,
        dst,
        result.frames_written,
        result.instances,
        result.wall_s,
        result.fps,
    )
    return result


def _forget_done_marker(path: Path) -> None:
    """Remove the old done marker before redoing a video (it goes back only after success);
    refuse to delete a file of that name that thingmask did not write."""
    if not path.exists():
        return
    if read_marker(path) is None:
        raise InputError(
            f"{path}: exists and is not thingmask's metadata file, so it is not replaced. "
            "Move it, or choose another output name."
        )
    path.unlink()


def _run(
    src: Path,
    paths: dict[str, Path],
    predictor: Any,
    config: Config,
    on_frame: OnFrame | None,
    progress: bool,
) -> tuple[VideoResult, dict[str, Any], dict[str, Any]]:
    """Stream ``src`` through the pipeline into every enabled output; returns the result, the
    source's info and the writer's description. Outputs are renamed into place only here, at
    the end, all together; on any failure each one is removed."""
    canvas = Canvas.from_config(config)
    dst = paths["video"]
    result = VideoResult(source=str(src), output=str(dst))
    stage = make_stage(config, mask_threshold=float(getattr(predictor, "mask_threshold", 0.5)))
    if config.per_instance_clips and not config.tracking:
        log.info("per_instance_clips needs track ids: tracking is switched on for %s", src)
    needs = Needs(
        detections=bool(on_frame is not None or config.export_rle or config.per_instance_clips),
        rows=bool(config.export_csv),
        union=bool(config.export_mask_video),
    )
    with (
        open_video(src, max_bad_frames=config.max_bad_frames) as reader,
        contextlib.ExitStack() as stack,
    ):
        info = reader.info
        tag = output_tag("cut-out", src)
        writer = stack.enter_context(
            VideoWriter(
                dst,
                info.width,
                info.height,
                info.rate,
                fmt=config.video_format,
                alpha=canvas.has_alpha,
                audio_source=src if config.keep_audio else None,
                tag=tag,
            )
        )
        exports = _Exports(stack, paths, config, info, canvas, src)
        track_ids: set[int] = set()
        bar = stack.enter_context(
            tqdm(
                total=info.frames or None,
                unit="frame",
                desc=src.name,
                disable=not progress,
                leave=False,
            )
        )
        with cutout_stream(
            reader.frames(), predictor, config, canvas, needs=needs, stage=stage
        ) as cuts:
            for cut in cuts:
                with named_stage("encode"):
                    writer.write(cut.cutout, cut.frame.time)
                with named_stage("export"):
                    exports.add(cut)
                track_ids.update(cut.track_ids)
                result.instances += cut.count
                if on_frame is not None:
                    with named_stage("on_frame"):
                        on_frame(cut.frame.index, cut.frame.image, _host(cut))
                bar.update(1)
        with named_stage("finish"):  # finalise and rename every output, in reverse order
            stack.close()
        result.frames_read = reader.frames_read
        result.bad_frames = reader.bad_frames
        result.missing_frames = reader.missing_frames
        video_meta = writer.describe()
    result.frames_written = video_meta["frames"]
    result.tracks = len(track_ids)
    result.padding = video_meta["padding_right_bottom"]
    result.timing = video_meta["timing"]
    result.audio = video_meta["audio"]
    result.outputs = {"video": str(dst)}
    for kind, enabled in (
        ("csv", config.export_csv),
        ("rle", config.export_rle),
        ("mask_video", config.export_mask_video),
    ):
        if enabled:
            result.outputs[kind] = str(paths[kind])
    if exports.clips is not None:
        result.outputs["clips"] = [str(p) for p in exports.clips.written]
    return result, info.to_dict(), video_meta


def _host(cut: CutFrame) -> Detections:
    if cut.detections is None:  # Needs.detections is set whenever on_frame is given
        raise RuntimeError("the pipeline brought no detections back for on_frame")
    return cut.detections


class _Exports:
    """The enabled data outputs of one video, fed one :class:`CutFrame` at a time."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        paths: dict[str, Path],
        config: Config,
        info: Any,
        canvas: Canvas,
        src: Path,
    ) -> None:
        self.csv = stack.enter_context(CsvExporter(paths["csv"])) if config.export_csv else None
        self.rle = stack.enter_context(RleExporter(paths["rle"])) if config.export_rle else None
        self.mask = (
            stack.enter_context(
                MaskVideo(
                    paths["mask_video"],
                    info.width,
                    info.height,
                    info.rate,
                    tag=output_tag("mask video", src),
                )
            )
            if config.export_mask_video
            else None
        )
        self.clips = (
            stack.enter_context(
                InstanceClips(
                    paths["clips"],
                    paths["video"].stem,
                    info.rate,
                    config.video_format,
                    canvas,
                    max_gap=config.track_max_missed,  # the tracker retires an id after that
                    tag=output_tag("animal clip", src),
                )
            )
            if config.per_instance_clips
            else None
        )

    def add(self, cut: CutFrame) -> None:
        index, t = cut.frame.index, cut.frame.time
        if self.csv is not None and cut.rows is not None:
            self.csv.add_rows(index, t, cut.rows)
        if self.rle is not None:
            self.rle.add(index, t, _host(cut))
        if self.mask is not None and cut.union is not None:
            self.mask.add_union(t, cut.union)
        if self.clips is not None:
            self.clips.add(cut.frame.image, t, _host(cut))


def process_many(
    src: str | Path,
    out_dir: str | Path,
    predictor: Callable[[np.ndarray], Detections],
    config: Config,
    *,
    force: bool = False,
    progress: bool = True,
) -> list[VideoResult]:
    """``process_video`` for every video of a file / folder / glob, one output each in
    ``out_dir`` (``<stem>_cutout.<ext>``). A failing video is logged and recorded (status
    ``failed``); the others continue. thingmask's own outputs found among the inputs are left
    out, so a second run into the same folder redoes nothing and writes nothing.

    Writes ``out_dir/summary.csv`` (when anything was done or failed) and logs a summary table;
    returns the results in order. Raises InputError (before writing anything) when ``out_dir``
    is the input folder or an output would overwrite an input.
    """
    jobs = plan_batch(src, out_dir, config)
    results: list[VideoResult] = []
    for video, dst in tqdm(
        jobs, unit="video", desc="videos", disable=not progress or len(jobs) < 2
    ):
        try:
            results.append(
                process_video(video, dst, predictor, config, force=force, progress=progress)
            )
        except Exception as exc:  # one bad file must not stop the batch
            log.error("%s: failed: %s", video, exc)
            results.append(
                VideoResult(
                    source=str(video),
                    output=str(dst),
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
    write_summary(out_dir, results)
    return results


def plan_batch(src: str | Path, out_dir: str | Path, config: Config) -> list[tuple[Path, Path]]:
    """``(video, output)`` for every video of a batch (:func:`process_many`, and the Ray batch
    ``thingmask.distributed.ray_batch``), after checking that no output would overwrite an input;
    makes
    ``out_dir``. Raises InputError (before writing anything) as :func:`process_many` says."""
    videos = find_videos(src)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, videos, src)
    taken: set[str] = set()
    jobs = [(video, output_for(video, out_dir, config, taken)) for video in videos]
    for _, dst in jobs:  # one video's outputs must not overwrite another input of the batch
        check_apart(output_paths(dst, config).values(), videos)
    summary = out_dir / "summary.csv"
    check_apart([summary], videos)
    if summary.exists() and not summary.read_text(encoding="utf-8").startswith(summary_csv([])):
        raise InputError(
            f"{summary}: exists and is not thingmask's batch summary, so it is not replaced. "
            "Move it, or choose another output folder."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return jobs


def write_summary(out_dir: str | Path, results: list[VideoResult]) -> None:
    """``out_dir/summary.csv`` (when anything was done or failed) and the summary table logged."""
    summary = Path(out_dir) / "summary.csv"
    if any(r.status != "skipped" for r in results):
        atomic_write_text(summary, summary_csv(results))
    log.info("video summary (%s):\n%s", summary, summary_table(results))


def _check_out_dir(out_dir: Path, videos: list[Path], src: str | Path) -> None:
    """The output folder must not be the folder (or glob's folder) the inputs were listed
    from; a single input file may have its outputs beside it."""
    if Path(src).is_file():
        return
    out = out_dir.resolve()
    for folder in {v.parent.resolve() for v in videos}:
        if out == folder:
            raise InputError(
                f"output folder {out_dir} is the input folder of {src}; thingmask never writes "
                "into the folder it reads videos from. Choose another output folder, e.g. "
                f"--output {Path(out_dir) / 'cutouts'}"
            )
