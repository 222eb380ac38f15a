"""Streaming video reader over PyAV (FFmpeg's libraries).

Frames come out as ``(H, W, 3)`` uint8 **BGR** with the container's rotation (display matrix)
applied to the pixels, each with its own presentation timestamp (never a rounded ``int(fps)``
clock), streamed one at a time so memory stays bounded. Undecodable frames are skipped and
counted; too many of them is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from thingmask.video.common import OUTPUT_TAG, VideoError

__all__ = ["Frame", "VideoInfo", "VideoReader", "open_video", "read_output_tag"]

log = logging.getLogger(__name__)


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
                first = next(self._raw)
            except StopIteration:
                raise VideoError(
                    f"{self.path}: no video frame could be decoded (empty or "
                    "corrupt file). Re-export or re-download the video."
                ) from None
            self._first: av.VideoFrame | None = first
            self.info = self._make_info(first)
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
            has_audio=_codec_name(audio) is not None,
            codec=_codec_name(s) or "unknown",
            audio_codec=_codec_name(audio),
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
            "in a folder use thingmask.jobs.job.process_many."
        )
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes). Re-export or re-copy the video.")


def _chain(*iterables: Iterable[Any]) -> Iterator[Any]:
    for it in iterables:
        for item in it:
            if item is not None:
                yield item


def _codec_name(stream: Any) -> str | None:
    """A stream's codec name; None for no stream, or one whose codec FFmpeg does not know
    (a damaged header can leave the codec context empty)."""
    context = getattr(stream, "codec_context", None)
    return getattr(context, "name", None) if context is not None else None


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


def read_output_tag(path: str | Path) -> str | None:
    """The thingmask output mark of a video file (see ``common.output_tag``), or None: not
    marked, or not readable as a video (only the container header is read)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            tags = {str(k).lower(): str(v) for k, v in container.metadata.items()}
    except (av.error.FFmpegError, UnicodeDecodeError, OSError, ValueError):
        return None
    comment = tags.get("comment", "")
    return comment if comment.startswith(OUTPUT_TAG) else None
