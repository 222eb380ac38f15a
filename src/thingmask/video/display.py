"""Showing a video inline in a notebook."""

from __future__ import annotations

from pathlib import Path

__all__ = ["video_html"]


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
