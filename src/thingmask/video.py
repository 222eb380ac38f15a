"""Video reading and writing over PyAV (FFmpeg's libraries). Never ``cv2.VideoWriter``.

Reading (:func:`open_video`): frames come out as ``(H, W, 3)`` uint8 **BGR** with the container's
rotation (display matrix) applied to the pixels, each with its own presentation timestamp (never a
rounded ``int(fps)`` clock), streamed one at a time so memory stays bounded. Undecodable frames are
skipped and counted; too many of them is an error.

Writing (:class:`VideoWriter`, :func:`write_video`):

============  =================================  ============  =============================
``fmt``       codec / pixels                     alpha         audio from the source
============  =================================  ============  =============================
``mp4``       H.264 (libx264) yuv420p, faststart  no            copied (AAC/MP3/ALAC), else AAC
``webm``      VP9 (libvpx-vp9) yuva420p           yes           copied (Opus/Vorbis), else Opus
``mov``       ProRes 4444 (prores_ks) yuva444p10  yes           copied (AAC/MP3/ALAC/PCM), else AAC
``png``       RGBA PNG sequence in a folder       yes           not possible (logged notice)
============  =================================  ============  =============================

Crash safety: every output is written under a hidden temporary name beside the final one
(``.<stem>.part<ext>``) and renamed when complete. MP4 is first written *fragmented*
(``movflags=frag_keyframe+empty_moov+default_base_moof``, a keyframe every 2 s) so a killed run
leaves a playable partial file; ``close()`` then stream-copies it (seconds, no re-encode) into a
regular MP4 with ``+faststart`` (moov first: browsers start playing before the download ends),
because fragmented MP4 and ``faststart`` exclude each other and some players (QuickTime, older
Safari) handle fragmented files poorly.

Timing policy: the writer takes each frame's source timestamp and keeps it (variable frame rate
stays variable, audio stays in sync). Timestamps that would not increase after rounding to the
output time base are nudged by one tick and counted (``retimed``). Odd sizes of chroma-subsampled
formats (mp4, webm) are padded by one edge-replicated (alpha 0) row/column, never rescaled
(``padding``).
"""

from __future__ import annotations

import contextlib
import csv
import fractions
import io
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

__all__ = [
    "FORMATS",
    "Frame",
    "VideoError",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "open_video",
    "partial_path",
    "video_html",
    "write_video",
]

log = logging.getLogger(__name__)

FORMATS = ("mp4", "webm", "mov", "png")
EXTENSIONS = {"mp4": ".mp4", "webm": ".webm", "mov": ".mov", "png": ""}
_FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"
_AUDIO_COPY = {
    "mp4": {"aac", "mp3", "alac"},
    "mov": {"aac", "mp3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    "webm": {"opus", "vorbis"},
}
_AUDIO_ENCODER = {"mp4": "aac", "mov": "aac", "webm": "libopus"}
_TIME_BASE = Fraction(1, 90000)  # MPEG's 90 kHz clock: exact for 24/25/30/50/60 and NTSC rates


class VideoError(ValueError):
    """A video file is missing, empty, unreadable, undecodable or cannot be written.

    The message names the file and says what to do.
    """


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds (sizes are after rotation, i.e. as displayed).

    ``rate`` is the average frame rate as an exact Fraction (e.g. 30000/1001); ``time_base`` the
    stream's tick; ``duration`` seconds (None when unknown); ``frames`` the container's frame
    count or an estimate from duration x rate (0 when unknown); ``rotation`` counter-clockwise
    degrees applied to the pixels (0, 90, 180, 270).
    """

    path: str
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    duration: float | None
    frames: int
    rotation: int
    has_audio: bool
    codec: str
    audio_codec: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (fractions as strings such as ``"30000/1001"``)."""
        d = asdict(self)
        d["rate"], d["time_base"] = str(self.rate), str(self.time_base)
        return d


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position among the frames that decoded (skipped frames leave no gap).
        image: ``(H, W, 3)`` uint8 **BGR**, rotation applied, C-contiguous, owned by the caller.
        time: presentation time in seconds (``pts * time_base``).
        pts: presentation timestamp in the stream's ``time_base`` ticks.
    """

    index: int
    image: np.ndarray
    time: float
    pts: int


class VideoReader:
    """Streaming reader; use :func:`open_video`. Iterate :meth:`frames` once.

    After iteration: ``frames_read``, ``bad_frames`` (skipped undecodable/corrupt frames) and
    ``truncated`` (the file ends before its declared end or with a read error) and
    ``missing_frames`` (frames the container declares but that could not be read).
    """

    def __init__(self, path: str | Path, max_bad_frames: float = 0.05) -> None:
        self.path = Path(path)
        self.max_bad_frames = float(max_bad_frames)
        self.bad_frames = 0
        self.frames_read = 0
        self.truncated = False
        self.missing_frames = 0
        _check_file(self.path)
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
            raise VideoError(
                f"{self.path}: not a readable video file ({exc}). Pass a video "
                "such as .mp4/.mov/.mkv/.webm/.avi"
            ) from None
        try:
            if not self._container.streams.video:
                n_audio = len(self._container.streams.audio)
                what = (
                    f"only {n_audio} audio stream(s)"
                    if n_audio
                    else "no streams at all (empty or unfinished recording)"
                )
                raise VideoError(
                    f"{self.path}: the file has no video stream, {what}. "
                    "Pass a video file with at least one frame."
                )
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._raw = self._decode()
            try:  # decoding the first frame proves the file is usable and tells its rotation
                self._first = next(self._raw)
            except StopIteration:
                raise VideoError(
                    f"{self.path}: no video frame could be decoded (empty or "
                    "corrupt file). Re-export or re-download the video."
                ) from None
            self.info = self._make_info(self._first)
        except BaseException:
            self._container.close()
            raise
        self._started = False

    # -- public ---------------------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        """Yield each decodable :class:`Frame` in presentation order (one pass only).

        Raises VideoError at the end when more than ``max_bad_frames`` of the frames were bad.
        """
        if self._started:
            raise RuntimeError(
                f"{self.path}: frames() can be iterated only once; open the video again"
            )
        self._started = True
        raw = [self._first]
        self._first = None
        rate = self.info.rate or Fraction(30)
        for av_frame in _chain(raw, self._raw):
            image = av_frame.to_ndarray(format="bgr24")
            k = _quarter_turns(av_frame.rotation)
            if k:
                image = np.rot90(image, k)
            image = np.ascontiguousarray(image)
            pts = av_frame.pts if av_frame.pts is not None else av_frame.dts
            if pts is None:  # raw streams without timestamps: derive them from the frame rate
                time = self.frames_read / float(rate)
                pts = round(time / self.info.time_base)
            else:
                time = float(pts * self.info.time_base)
            yield Frame(self.frames_read, image, time, int(pts))
            self.frames_read += 1
            estimate = max(self.info.frames, self.frames_read + self.bad_frames)
            if self.bad_frames > max(1.0, self.max_bad_frames * estimate):
                self._too_many_bad()
        total = self.frames_read + self.bad_frames
        if total and self.bad_frames / total > self.max_bad_frames:
            self._too_many_bad()
        if self.bad_frames:
            log.warning(
                "%s: skipped %d undecodable frame(s) of %d", self.path, self.bad_frames, total
            )
        if self._declared_frames and total < self._declared_frames:
            self.truncated = True
            self.missing_frames = self._declared_frames - total
            log.warning(
                "%s: ends early: %d of the %d frames the file declares could be read "
                "(truncated file?); the frames before the cut are used",
                self.path,
                total,
                self._declared_frames,
            )

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------
    def _too_many_bad(self) -> None:
        total = self.frames_read + self.bad_frames
        raise VideoError(
            f"{self.path}: {self.bad_frames} of {total} frames could not be "
            f"decoded (more than max_bad_frames={self.max_bad_frames:g}). The file "
            "is damaged: re-export it, or raise max_bad_frames to accept it."
        )

    def _warn_bad(self, what: str, *args: object) -> None:
        # a damaged file can have thousands of bad frames: name the first few, count the rest
        level = logging.WARNING if self.bad_frames <= 5 else logging.DEBUG
        log.log(level, "%s: skipped " + what, self.path, *args)

    def _decode(self) -> Iterator[av.VideoFrame]:
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:  # truncated or damaged container
                self.truncated = True
                log.warning(
                    "%s: stopped reading at a damaged/truncated part (%s); frames "
                    "before it are used",
                    self.path,
                    exc,
                )
                return
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                self.bad_frames += 1
                self._warn_bad(
                    "an undecodable frame near %s s (%s)",
                    _seconds(packet.pts, packet.time_base),
                    exc,
                )
                continue
            for frame in decoded:
                if frame.is_corrupt:
                    self.bad_frames += 1
                    self._warn_bad("a corrupt frame at %s s", _seconds(frame.pts, frame.time_base))
                    continue
                yield frame

    def _make_info(self, first: av.VideoFrame) -> VideoInfo:
        s, c = self._stream, self._container
        rate = s.average_rate or s.guessed_rate or s.base_rate or Fraction(0)
        rate = Fraction(rate)
        time_base = Fraction(s.time_base or Fraction(1, 90000))
        if s.duration is not None:
            duration: float | None = float(s.duration * time_base)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        else:
            duration = None
        frames = self._declared_frames = int(s.frames or 0)
        if not frames and duration and rate:
            frames = round(duration * float(rate))
        rotation = 90 * _quarter_turns(first.rotation)
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        audio = c.streams.audio[0] if c.streams.audio else None
        return VideoInfo(
            path=str(self.path),
            width=w,
            height=h,
            rate=rate,
            time_base=time_base,
            duration=duration,
            frames=frames,
            rotation=rotation,
            has_audio=audio is not None,
            codec=s.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
        )


def open_video(path: str | Path, max_bad_frames: float = 0.05) -> VideoReader:
    """Open ``path`` for streaming; ``reader.info`` describes it, ``reader.frames()`` decodes.

    Raises VideoError (a ValueError naming the file) when the file is missing, empty, not a
    video, or has no decodable frame. Use as a context manager to close the file.
    """
    return VideoReader(path, max_bad_frames=max_bad_frames)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"{path}: video file not found. Check the path (video_input).")
    if path.is_dir():
        raise VideoError(
            f"{path}: is a folder, expected a video file. To process every video "
            "in a folder use thingmask.video_job.process_many."
        )
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes). Re-export or re-copy the video.")


def _chain(*iterables: Iterable[Any]) -> Iterator[Any]:
    for it in iterables:
        for item in it:
            if item is not None:
                yield item


def _quarter_turns(degrees: float) -> int:
    """Counter-clockwise display rotation → np.rot90's k (0..3), rounded to a quarter turn."""
    k = round(float(degrees or 0) / 90.0)
    if abs(float(degrees or 0) - 90 * k) > 1:
        log.warning("rotation of %s degrees is not a multiple of 90; using %d", degrees, 90 * k)
    return k % 4


def _seconds(pts: int | None, time_base: Fraction | None) -> str:
    if pts is None or time_base is None:
        return "?"
    return f"{float(pts * time_base):.3f}"


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def partial_path(final: str | Path) -> Path:
    """The hidden temporary name a :class:`VideoWriter` uses while writing ``final``.

    Deterministic (``.<stem>.part<ext>``) so a re-run finds and replaces a killed run's leftover.
    """
    final = Path(final)
    return final.with_name(f".{final.stem}.part{final.suffix}")


class VideoWriter:
    """Write frames to ``path`` as mp4 / webm / mov / png (see the module docstring).

    Args:
        path: final output (a folder for ``png``); written under :func:`partial_path` first.
        width, height: frame size in pixels as given to :meth:`write` (before padding).
        rate: nominal frame rate (Fraction keeps NTSC rates exact); used for the stream header
            and for frames written without a timestamp.
        fmt: ``"mp4"``, ``"webm"``, ``"mov"`` or ``"png"``.
        alpha: keep an alpha channel (webm/mov/png only); :meth:`write` then takes BGRA.
        audio_source: a media file whose first audio stream is carried into the output.
        time_base: output tick (default 1/90000).
        crf: quality for H.264 / VP9 (lower = better, larger); None = defaults (20 / 32).

    Use as a context manager: a clean exit calls :meth:`close` (finalise + rename); an
    exception removes the partial file, except KeyboardInterrupt, which keeps it (mp4: playable).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        rate: float | Fraction,
        fmt: str = "mp4",
        alpha: bool = False,
        audio_source: str | Path | None = None,
        time_base: Fraction | None = None,
        crf: int | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"video_format: got {fmt!r}; expected one of {list(FORMATS)}")
        if fmt == "mp4" and alpha:
            raise ValueError(
                "video_format='mp4' (H.264) cannot store transparency; use webm, "
                "mov or png for canvas='transparent'"
            )
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"VideoWriter: frame size must be positive, got {width}x{height}")
        if not rate or float(rate) <= 0:
            raise ValueError(f"VideoWriter: frame rate must be > 0, got {rate!r}")
        self.path = Path(path)
        self.fmt, self.alpha = fmt, bool(alpha)
        self.width, self.height = int(width), int(height)
        self.rate = Fraction(rate).limit_denominator(1_000_000)
        self.time_base = Fraction(time_base) if time_base else _TIME_BASE
        pad = fmt in ("mp4", "webm")
        self.padding = (self.width % 2 if pad else 0, self.height % 2 if pad else 0)
        self.frames_written = 0
        self.retimed = 0
        self.audio = "none"
        self.first_time: float | None = None
        self.last_time: float | None = None
        self._last_pts: int | None = None
        self._closed = False
        self._audio: _AudioPump | None = None
        self._first_dts: dict[int, Fraction] = {}
        self.partial = partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove(self.partial)
        if fmt == "png":
            self.partial.mkdir(parents=True)
            self._times: list[float] = []
            if audio_source is not None:
                self.audio = "dropped (a PNG sequence cannot hold audio)"
                log.info(
                    "%s: PNG sequences have no audio track; the audio of %s is not carried",
                    self.path,
                    audio_source,
                )
            return
        # flush_packets: each finished fragment (mp4) / cluster (webm) reaches the disk at once,
        # so a killed run's partial file is playable up to there (not stuck in an I/O buffer)
        options = {
            "mp4": {"movflags": _FRAGMENTED, "flush_packets": "1"},
            "webm": {"flush_packets": "1"},
        }.get(fmt, {})
        self._container = av.open(str(self.partial), "w", format=fmt, container_options=options)
        try:
            self._stream = self._add_video_stream(crf)
            if audio_source is not None:
                self._audio = _AudioPump.create(Path(audio_source), self._container, fmt, self._mux)
                self.audio = self._audio.policy if self._audio else "none (source has no audio)"
        except BaseException:
            self._container.close()
            _remove(self.partial)
            raise

    # -- public ---------------------------------------------------------------------------------
    def write(self, image: np.ndarray, time: float | None = None) -> None:
        """Append one frame: ``(H, W, 3)`` uint8 BGR, or ``(H, W, 4)`` BGRA when ``alpha``.

        ``time``: presentation time in seconds (source timestamp); None = previous + 1/rate.
        The input array is not modified.
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: writer already closed")
        image = np.asarray(image)
        channels = 4 if self.alpha else 3
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(
                f"{self.path}: expected a (H, W, 3|4) uint8 image, got {image.shape} {image.dtype}"
            )
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"{self.path}: frame size {image.shape[1]}x{image.shape[0]} differs "
                f"from the video's {self.width}x{self.height}"
            )
        if image.shape[2] != channels:
            if channels == 4:
                image = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
            else:
                raise ValueError(
                    f"{self.path}: got a BGRA frame but {self.fmt} output was opened "
                    "without alpha; pass alpha=True (webm/mov/png) or a BGR frame"
                )
        if time is None:
            time = 0.0 if self.last_time is None else self.last_time + 1 / float(self.rate)
        pts = round(Fraction(time).limit_denominator(10**9) / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # muxers need strictly increasing timestamps
            self.retimed += 1
        self._last_pts = pts
        time = float(pts * self.time_base)
        if self.first_time is None:
            self.first_time = time
        self.last_time = time
        if self.fmt == "png":
            self._write_png(image, time)
        else:
            self._encode(image, pts)
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the file and rename it to ``path``; returns ``path``. Idempotent."""
        if self._closed:
            return self.path
        self._closed = True
        if self.frames_written == 0:
            self.abort()
            raise VideoError(f"{self.path}: no frames were written; nothing to save")
        if self.fmt == "png":
            self._finish_png()
            return self.path
        try:
            self._mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.finish(self._end_time())
            self._container.close()
            if self.fmt == "mp4":
                self._defragment()
            else:
                os.replace(self.partial, self.path)
        except BaseException:
            _remove(self.partial)
            raise
        return self.path

    def abort(self, keep_partial: bool = False) -> None:
        """Stop without producing ``path``; remove the partial file unless ``keep_partial``."""
        self._closed = True
        if self.fmt != "png":
            with contextlib.suppress(Exception):
                if keep_partial:
                    self._mux(self._stream.encode(None))
                self._container.close()
            if self._audio is not None:
                self._audio.close()
        if keep_partial:
            log.warning(
                "%s: interrupted; the partial output is kept at %s (re-run to redo it)",
                self.path,
                self.partial,
            )
        else:
            _remove(self.partial)

    def describe(self) -> dict[str, Any]:
        """Settings and counters for the output's metadata JSON."""
        codec = {
            "mp4": "h264 (libx264) yuv420p",
            "webm": "vp9 (libvpx-vp9) " + ("yuva420p" if self.alpha else "yuv420p"),
            "mov": "prores 4444 (prores_ks) " + ("yuva444p10le" if self.alpha else "yuv444p10le"),
            "png": "png " + ("rgba" if self.alpha else "rgb24"),
        }[self.fmt]
        return {
            "format": self.fmt,
            "codec": codec,
            "alpha": self.alpha,
            "width": self.width,
            "height": self.height,
            "padding_right_bottom": list(self.padding),
            "encoded_size": [self.width + self.padding[0], self.height + self.padding[1]],
            "rate": str(self.rate),
            "time_base": str(self.time_base),
            "timing": "source timestamps kept per frame (variable frame rate preserved); "
            "non-increasing ones nudged by one tick",
            "retimed_frames": self.retimed,
            "frames": self.frames_written,
            "audio": self.audio,
            "mp4_layout": "written fragmented, remuxed to faststart on close"
            if self.fmt == "mp4"
            else None,
        }

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self.abort(keep_partial=issubclass(exc_type, KeyboardInterrupt))

    # -- internals ------------------------------------------------------------------------------
    def _add_video_stream(self, crf: int | None) -> av.video.stream.VideoStream:
        w, h = self.width + self.padding[0], self.height + self.padding[1]
        if self.fmt == "mp4":
            stream = self._container.add_stream("libx264", rate=self.rate)
            stream.pix_fmt = "yuv420p"
            # keyframe every ~2 s: the fragment granularity of a killed run's partial file
            stream.options = {
                "preset": "veryfast",
                "crf": str(crf if crf is not None else 20),
                "g": str(max(1, round(2 * float(self.rate)))),
            }
        elif self.fmt == "webm":
            stream = self._container.add_stream("libvpx-vp9", rate=self.rate)
            stream.pix_fmt = "yuva420p" if self.alpha else "yuv420p"
            # realtime/cpu-used 8: ~3x faster than "good" at 1080p for ~1.8x the bytes; a
            # cut-out is mostly flat canvas, so files stay small
            stream.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "row-mt": "1",
                "tile-columns": "2",
                "crf": str(crf if crf is not None else 32),
                "b": "0",
            }
            if self.alpha:  # Matroska AlphaMode: tells browsers/decoders the side alpha exists
                stream.metadata["alpha_mode"] = "1"
        else:
            stream = self._container.add_stream("prores_ks", rate=self.rate)
            stream.pix_fmt = "yuva444p10le" if self.alpha else "yuv444p10le"
            stream.options = {"profile": "4444", "vendor": "apl0"}
        stream.width, stream.height = w, h
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        if self.fmt != "mov":  # BT.709 matrix, tagged, so browsers convert the colours back
            cc = stream.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1
            cc.color_range = 1  # limited ("tv") range, what players expect from H.264/VP9
        return stream

    def _encode(self, image: np.ndarray, pts: int) -> None:
        if self.padding != (0, 0):
            px, py = self.padding
            image = np.pad(image, ((0, py), (0, px), (0, 0)), mode="edge")
            if self.alpha:
                image[self.height :, :, 3] = 0
                image[:, self.width :, 3] = 0
        frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(image), format="bgra" if self.alpha else "bgr24"
        )
        if self.fmt != "mov":
            frame = frame.reformat(
                format=self._stream.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG"
            )
            frame.colorspace, frame.color_range = 1, 1
        frame.pts = pts
        frame.time_base = self.time_base
        if self._audio is not None:
            self._audio.pump(float(pts * self.time_base))
        self._mux(self._stream.encode(frame))

    def _mux(self, packets: Any) -> None:
        """Mux packets, remembering each stream's first decode time (see _defragment)."""
        for packet in packets if isinstance(packets, list) else [packets]:
            index = packet.stream.index
            if index not in self._first_dts and packet.dts is not None:
                self._first_dts[index] = packet.dts * packet.time_base
            self._container.mux(packet)

    def _end_time(self) -> float:
        return (self.last_time or 0.0) + 1 / float(self.rate)

    def _defragment(self) -> None:
        """Stream-copy the fragmented partial into a faststart MP4, then rename into place.

        In fragmented mode the muxer moves each track's first decode time to 0 (it writes no edit
        list), which delays B-frame video and desynchronises audio by a few ms. The shift is
        measured per stream against the first packet as written and undone here, so the final
        file's timestamps equal the source's.
        """
        tmp = self.partial.with_name(self.partial.name.replace(".part", ".faststart.part"))
        try:
            with (
                av.open(str(self.partial)) as src,
                av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst,
            ):
                streams = [s for s in src.streams if s.type in ("video", "audio")]
                out = {s.index: dst.add_stream_from_template(s) for s in streams}
                shift: dict[int, int] = {}
                for packet in src.demux(*streams):
                    if packet.dts is None and packet.pts is None:
                        continue  # flush marker
                    index = packet.stream.index
                    if index not in shift:
                        written = self._first_dts.get(index)
                        shift[index] = (
                            0
                            if written is None or packet.dts is None
                            else round((packet.dts * packet.time_base - written) / packet.time_base)
                        )
                    if shift[index]:
                        if packet.pts is not None:
                            packet.pts -= shift[index]
                        if packet.dts is not None:
                            packet.dts -= shift[index]
                    packet.stream = out[index]
                    dst.mux(packet)
            os.replace(tmp, self.path)
        finally:
            _remove(tmp)
        _remove(self.partial)

    def _write_png(self, image: np.ndarray, time: float) -> None:
        import cv2  # local: only PNG output needs OpenCV here

        name = self.partial / f"frame_{self.frames_written:06d}.png"
        if not cv2.imwrite(str(name), image):  # cv2 writes BGRA as an RGBA PNG
            raise VideoError(f"{name}: could not write the PNG frame (disk full or no access)")
        self._times.append(time)

    def _finish_png(self) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["frame", "file", "time_s"])
        for i, t in enumerate(self._times):
            w.writerow([i, f"frame_{i:06d}.png", f"{t:.6f}"])
        (self.partial / "timestamps.csv").write_text(buf.getvalue(), encoding="utf-8")
        _remove(self.path)
        os.replace(self.partial, self.path)


class _AudioPump:
    """Carries the source's first audio stream into an output container, interleaved with video.

    Stream copy when the container accepts the codec, otherwise decode + re-encode. ``pump(t)``
    writes audio up to time ``t`` so a killed run's partial file has audio too.
    """

    def __init__(self, src: Any, stream: Any, out: Any, mux: Any, copy: bool, policy: str) -> None:
        self._src, self._in, self._out, self._mux = src, stream, out, mux
        self._copy, self.policy = copy, policy
        self._packets = src.demux(stream)
        self._pending: list[Any] = []
        self._done = False

    @classmethod
    def create(cls, source: Path, container: Any, fmt: str, mux: Any) -> _AudioPump | None:
        try:
            src = av.open(str(source), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("%s: cannot open for audio (%s); output has no audio", source, exc)
            return None
        if not src.streams.audio:
            src.close()
            return None
        stream = src.streams.audio[0]
        name = stream.codec_context.name
        if name in _AUDIO_COPY[fmt]:
            out = container.add_stream_from_template(stream)
            return cls(src, stream, out, mux, True, f"copied ({name})")
        encoder = _AUDIO_ENCODER[fmt]
        rate = 48000 if encoder == "libopus" else (stream.codec_context.sample_rate or 48000)
        out = container.add_stream(encoder, rate=rate)
        channels = min(2, stream.codec_context.channels or 2)
        out.layout = "stereo" if channels == 2 else "mono"
        log.info(
            "%s: audio %s cannot go into %s as is; re-encoding to %s", source, name, fmt, encoder
        )
        return cls(src, stream, out, mux, False, f"re-encoded ({name} -> {encoder})")

    def pump(self, until: float) -> None:
        """Write source audio with presentation time < ``until`` seconds."""
        while not self._done:
            if not self._pending:
                try:
                    self._pending.append(next(self._packets))
                except (StopIteration, av.error.FFmpegError):
                    self._done = True
                    break
            packet = self._pending[0]
            if (
                packet.pts is not None
                and packet.time_base is not None
                and float(packet.pts * packet.time_base) >= until
            ):
                break
            self._pending.pop(0)
            self._write(packet)

    def finish(self, end: float) -> None:
        """Write audio up to ``end`` seconds (the video's end), flush the encoder, close."""
        self.pump(end)
        if not self._copy:
            with contextlib.suppress(av.error.FFmpegError):
                self._mux(self._out.encode(None))
        self.close()

    def close(self) -> None:
        self._src.close()

    def _write(self, packet: Any) -> None:
        if packet.dts is None and packet.pts is None:
            return  # demuxer's flush marker
        if self._copy:
            packet.stream = self._out
            self._mux(packet)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return  # a damaged audio packet: a short gap beats a failed video
        for frame in frames:
            self._mux(self._out.encode(frame))


def write_video(
    path: str | Path, frames_bgr: Iterable[np.ndarray], fps: float | fractions.Fraction
) -> Path:
    """Write ``(H, W, 3)`` uint8 **BGR** frames as browser-playable H.264 yuv420p MP4.

    Constant frame rate ``fps`` (a Fraction keeps 30000/1001 exact); faststart; odd sizes padded
    to even; written under a temporary name and renamed when complete. Returns ``path``.
    """
    writer: VideoWriter | None = None
    try:
        for image in frames_bgr:
            if writer is None:
                h, w = np.asarray(image).shape[:2]
                writer = VideoWriter(path, w, h, Fraction(fps).limit_denominator(1_000_000))
            writer.write(image)
    except BaseException as exc:
        if writer is not None:
            writer.abort(keep_partial=isinstance(exc, KeyboardInterrupt))
        raise
    if writer is None:
        raise VideoError(f"{path}: no frames to write")
    return writer.close()


def video_html(path: str | Path, width: int = 480) -> str:
    """An HTML5 ``<video>`` tag with the file embedded (base64) for notebooks.

    ``IPython.display.HTML(video_html(path))`` plays mp4 (H.264) and webm (VP9, with
    transparency) inline, also in Colab, where local file URLs do not work. Keep such files
    small (the bytes go into the notebook).
    """
    import base64

    path = Path(path)
    mime = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime"}.get(
        path.suffix.lower()
    )
    if mime is None or not path.is_file():
        raise ValueError(f"{path}: expected an .mp4, .webm or .mov file to show inline")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<video width="{int(width)}" controls loop autoplay muted playsinline '
        f'src="data:{mime};base64,{data}"></video>'
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
