"""The video stage: cut the display things out of videos, plus their data.

``process_video`` streams one video through the pipeline (:mod:`thingmask.jobs.cutout`: decode,
batched inference, keep the display things, [temporal stage], composite, each in a thread) and
encodes the cut-out frames and exports as they arrive (CSV / RLE / mask video / per-animal
clips): memory stays flat whatever the video's length. ``process_many`` does it for a file,
folder or glob, one output per video; a bad file is reported and the rest continue.
``thingmask video`` (cli.py) calls them. The files written are listed in
:mod:`thingmask.jobs.outputs`.

Safety (issue 18; the rules live in :mod:`thingmask.ownership` and :mod:`thingmask.jobs.commit`):
no output may be, replace or contain an input, nor replace a file thingmask did not write
(checked before anything is written); one writer per output folder (its lock, held for the
batch); every output is written into the job's own fresh hidden stage and renamed into place
together once the video decodes to every frame, the metadata JSON ("done" marker) last. Resume:
re-running with the same source and settings skips a finished video (and writes nothing); an
unfinished one (killed: only its hidden stage is left, removed by the next run) is done again
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
from thingmask.io_utils import atomic_write_json
from thingmask.jobs.batch import clean_output_folders, plan_batch, write_summary
from thingmask.jobs.commit import (
    check_complete,
    commit,
    final_names,
    open_stage,
    remove_leftover_stages,
    say_when_blank,
)
from thingmask.jobs.cutout import CutFrame, Needs, cutout_stream
from thingmask.jobs.exports import CsvExporter, InstanceClips, MaskVideo, RleExporter
from thingmask.jobs.outputs import (
    VideoResult,
    already_done,
    check_apart,
    fingerprint,
    marker_outputs,
    output_paths,
    planned_outputs,
    read_marker,
)
from thingmask.jobs.stream import named_stage
from thingmask.ownership import check_writable, folder_lock
from thingmask.threads import ThreadGovernor
from thingmask.video import EXTENSIONS, VideoError, VideoWriter, open_video, output_tag
from thingmask.video.common import remove_path

__all__ = ["OnFrame", "plan_batch", "process_many", "process_video", "run_job", "write_summary"]

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
    overwrite: bool = False,
    progress: bool = True,
) -> VideoResult:
    """Cut the display things out of one video, streaming through the pipeline.

    Holds the output folder's lock for the job (:func:`thingmask.ownership.folder_lock`: a
    second writer into the same folder stops with InputError) and removes the unfinished jobs
    that killed runs left there; :func:`run_job` does the work.

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
        overwrite: replace files at the output names that thingmask did not write (by default
            they are refused: InputError naming them).
        progress: show a tqdm progress bar with ETA.

    Returns:
        A :class:`VideoResult`; the metadata JSON beside the output holds the same and more.

    Raises:
        VideoError (a ValueError naming the file) for a missing/unreadable video; InputError
        when an output would overwrite the input or a file thingmask did not write, or another
        run holds the folder; ConfigError when display_things are not classes of the model;
        StageError (a RuntimeError naming the stage) when a stage fails mid-video. Nothing is
        left under a final output name then.
    """
    src, dst = Path(src), Path(dst)
    _check(src, dst, predictor, config, overwrite)  # before the lock file is made: refusals
    with folder_lock(dst.parent):  # write nothing, not even that
        remove_leftover_stages(dst.parent)
        return run_job(
            src,
            dst,
            predictor,
            config,
            on_frame,
            force=force,
            overwrite=overwrite,
            progress=progress,
        )


def _check(
    src: Path, dst: Path, predictor: Any, config: Config, overwrite: bool
) -> dict[str, Path]:
    """Every check that needs no lock: format, classes, input, outputs apart from the input and
    each one absent or thingmask's own. Returns the output paths."""
    _check_format(dst, config)
    paths = output_paths(dst, config)
    class_names = getattr(predictor, "class_names", None)
    if class_names is not None:
        config.check_classes(class_names)
    if not src.is_file():
        raise VideoError(f"{src}: video file not found. Check the path (video_input).")
    check_apart(paths.values(), [src])
    check_writable(
        [*planned_outputs(paths, config).values(), paths["metadata"]], overwrite=overwrite
    )
    return paths


def _check_format(dst: Path, config: Config) -> None:
    want = EXTENSIONS[config.video_format]
    if want and dst.suffix.lower() != want:
        raise ValueError(
            f"output {dst}: video_format={config.video_format!r} writes {want} "
            f"files; name the output *{want} or change video_format"
        )


def run_job(
    src: Path,
    dst: Path,
    predictor: Any,
    config: Config,
    on_frame: OnFrame | None = None,
    *,
    force: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> VideoResult:
    """:func:`process_video` without taking the folder's lock: for callers that hold it for a
    whole batch (:func:`process_many`, the Ray workers of ``thingmask.distributed.ray_batch``).

    Order: check everything (classes, input, every output name: absent or thingmask's own),
    write all outputs into a private stage (:mod:`thingmask.jobs.commit`), check the written
    video decodes to every frame, then rename the outputs into place, the done marker last.
    """
    t0 = time.perf_counter()
    paths = _check(src, dst, predictor, config, overwrite)
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
    planned = planned_outputs(paths, config)
    old = read_marker(paths["metadata"])
    wanted = set(planned.values())
    stale = [
        p
        for p in (marker_outputs(old) if old is not None else [])
        if p not in wanted and not any(w in p.parents for w in wanted)
    ]
    stage = open_stage(dst.parent, paths["metadata"].stem)
    staged = {kind: stage / path.name for kind, path in paths.items()}
    try:
        result, info, video_meta = _run(src, staged, predictor, config, on_frame, progress)
        with named_stage("check"):  # a marker never lies: the file holds every frame
            check_complete(staged["video"], config.video_format, result.frames_written)
            if "mask_video" in planned:
                check_complete(staged["mask_video"], "mp4", result.frames_written)
        result.output, result.outputs = str(dst), final_names(result.outputs, stage, dst.parent)
        result.wall_s = round(time.perf_counter() - t0, 3)
        result.fps = round(result.frames_read / result.wall_s, 2) if result.wall_s else 0.0
        result.metadata = str(paths["metadata"])
        say_when_blank(src, result, config)
        atomic_write_json(
            staged["metadata"],
            {"status": "done", "source": info, "output": video_meta, "job": job,
             "result": result.to_dict()},
        )  # fmt: skip
        made = [k for k in planned if staged[k].exists()]  # no clips when nothing was tracked
        stale += [planned[k] for k in planned if k not in made]
        with named_stage("finish"):
            commit(
                [(staged[k], planned[k]) for k in made],
                (staged["metadata"], paths["metadata"]),
                stale,
                overwrite=overwrite,
            )
    except KeyboardInterrupt:  # the stage (and mp4's playable partial) stays until the next run
        raise
    except BaseException:
        remove_path(stage)
        raise
    remove_path(stage)
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
    device = str(getattr(getattr(predictor, "device", None), "type", "cpu"))
    threads = ThreadGovernor(config.threads, device, "video")  # decode, torch, cut-out, encode
    decode = threads.plan.decode
    with (
        open_video(src, max_bad_frames=config.max_bad_frames, threads=decode) as reader,
        contextlib.ExitStack() as stack,
    ):
        stack.enter_context(threads)  # torch's and OpenCV's threads, put back at the end
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
                threads=threads.plan.encode,
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
            reader.frames(), predictor, config, canvas, needs=needs, stage=stage, threads=threads
        ) as cuts:
            for cut in cuts:
                with named_stage("encode"):
                    writer.write(cut.cutout, cut.frame.time)
                with named_stage("export"):
                    exports.add(cut)
                track_ids.update(cut.track_ids)
                result.instances += cut.count
                result.empty_frames += cut.count == 0
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
    overwrite: bool = False,
    progress: bool = True,
) -> list[VideoResult]:
    """``process_video`` for every video of a file / folder / glob, one output each in
    ``out_dir`` (``<stem>_cutout.<ext>``; a glob's sub-folders are mirrored, see
    :func:`thingmask.jobs.batch.output_for`). A failing video is logged and recorded (status
    ``failed``); the others continue. thingmask's own outputs found among the inputs are left
    out, so a second run into the same folder redoes nothing and writes nothing.

    Holds ``out_dir``'s lock for the whole batch (a second run into it stops with InputError).
    Writes ``out_dir/summary.csv`` (when anything was done or failed) and logs a summary table;
    returns the results in order. Raises InputError (before writing anything) when ``out_dir``
    is the input folder, an output would overwrite an input, or a file at an output name was
    not written by thingmask (``overwrite`` replaces those).
    """
    jobs = plan_batch(src, out_dir, config, overwrite=overwrite)
    results: list[VideoResult] = []
    with folder_lock(out_dir):
        clean_output_folders(jobs)
        for video, dst in tqdm(
            jobs, unit="video", desc="videos", disable=not progress or len(jobs) < 2
        ):
            try:
                results.append(
                    run_job(
                        video,
                        dst,
                        predictor,
                        config,
                        force=force,
                        overwrite=overwrite,
                        progress=progress,
                    )
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
        write_summary(out_dir, results, overwrite=overwrite)
    return results
