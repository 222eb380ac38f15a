"""Video reading and writing over PyAV (FFmpeg's libraries). Never ``cv2.VideoWriter``.

=============  ====================================================================
``reader``     :func:`open_video` → :class:`VideoReader`: BGR frames, rotation applied,
               per-frame timestamps, damaged frames skipped and counted
``writer``     :class:`VideoWriter`, :func:`write_video`: mp4 / webm / mov / png, alpha,
               source timestamps kept, written under a temporary name and renamed
``audio``      the source's audio carried into the output (copied or re-encoded)
``common``     :data:`FORMATS`, :data:`EXTENSIONS`, :class:`VideoError`, :func:`partial_path`,
               :func:`output_tag` (the mark thingmask puts on its own outputs)
``display``    :func:`video_html` (inline playback in notebooks)
=============  ====================================================================
"""

from thingmask.video.common import (
    EXTENSIONS,
    FORMATS,
    OUTPUT_TAG,
    VideoError,
    output_tag,
    partial_path,
)
from thingmask.video.display import video_html
from thingmask.video.reader import Frame, VideoInfo, VideoReader, open_video, read_output_tag
from thingmask.video.writer import VideoWriter, write_video

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "OUTPUT_TAG",
    "Frame",
    "VideoError",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "open_video",
    "output_tag",
    "partial_path",
    "read_output_tag",
    "video_html",
    "write_video",
]
