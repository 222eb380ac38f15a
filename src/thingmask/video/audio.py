"""The source's audio carried into a cut-out video, interleaved with the frames as they come."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import av

__all__ = ["AudioPump"]

log = logging.getLogger(__name__)

_AUDIO_COPY = {
    "mp4": {"aac", "mp3", "alac"},
    "mov": {"aac", "mp3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    "webm": {"opus", "vorbis"},
}
_AUDIO_ENCODER = {"mp4": "aac", "mov": "aac", "webm": "libopus"}


class AudioPump:
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
    def create(cls, source: Path, container: Any, fmt: str, mux: Any) -> AudioPump | None:
        try:
            src = av.open(str(source), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("%s: cannot open for audio (%s); output has no audio", source, exc)
            return None
        if not src.streams.audio:
            src.close()
            return None
        stream = src.streams.audio[0]
        if stream.codec_context is None:  # a damaged header: the codec is unknown
            log.warning("%s: the audio codec is unreadable; output has no audio", source)
            src.close()
            return None
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
