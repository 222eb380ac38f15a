"""Video writing over PyAV (FFmpeg's libraries). Never ``cv2.VideoWriter``.

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
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from thingmask.io_utils import create_exclusive
from thingmask.video.audio import AudioPump
from thingmask.video.common import FORMATS, VideoError, check_replaceable, partial_path, remove_path

__all__ = ["VideoWriter", "write_video"]

log = logging.getLogger(__name__)

_FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"
_TIME_BASE = Fraction(1, 90000)  # MPEG's 90 kHz clock: exact for 24/25/30/50/60 and NTSC rates


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
        tag: text for the container's ``comment`` field; thingmask marks its own outputs
            with :func:`~thingmask.video.common.output_tag` so a re-run never takes them as
            inputs. PNG sequences carry it in ``timestamps.csv``'s folder as ``thingmask.txt``.
        threads: encoder threads (0 = the encoder's default; :mod:`thingmask.threads` plans it).

    An existing ``path`` is replaced when the new output is complete, but only a file for
    mp4/webm/mov, and for png only a folder that holds a PNG sequence (never other files).

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
        tag: str | None = None,
        threads: int = 0,
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
        check_replaceable(self.path, fmt)
        self.tag = tag
        self.threads = int(threads)
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
        self._audio: AudioPump | None = None
        self._first_dts: dict[int, Fraction] = {}
        self.partial = partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_path(self.partial)
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
        # the temporary file is created exclusively (O_EXCL | O_NOFOLLOW) before the muxer opens
        # it: a link someone placed at that name is removed, never written through
        os.close(create_exclusive(self.partial))
        self._container = av.open(str(self.partial), "w", format=fmt, container_options=options)
        if tag:
            self._container.metadata["comment"] = tag
        try:
            self._stream = self._add_video_stream(crf)
            if audio_source is not None:
                self._audio = AudioPump.create(Path(audio_source), self._container, fmt, self._mux)
                self.audio = self._audio.policy if self._audio else "none (source has no audio)"
        except BaseException:
            self._container.close()
            remove_path(self.partial)
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
            remove_path(self.partial)
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
            remove_path(self.partial)

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
        if self.threads > 0:  # else the encoder's default, about one per core
            stream.codec_context.thread_count = self.threads
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
            os.close(create_exclusive(tmp))  # never through a link placed at that name
            with (
                av.open(str(self.partial)) as src,
                av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst,
            ):
                streams = [s for s in src.streams if s.type in ("video", "audio")]
                out = {s.index: dst.add_stream_from_template(s) for s in streams}
                if self.tag:
                    dst.metadata["comment"] = self.tag
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
            remove_path(tmp)
        remove_path(self.partial)

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
        if self.tag:
            (self.partial / "thingmask.txt").write_text(self.tag + "\n", encoding="utf-8")
        check_replaceable(self.path, "png")  # still only an earlier PNG sequence?
        remove_path(self.path)
        os.replace(self.partial, self.path)


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
