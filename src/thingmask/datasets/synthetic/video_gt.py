"""The demo video's ground truth on disk: per frame, per animal, a visible mask, its class and
its stable id, as one compressed ``.npz`` (no pickles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from thingmask.datasets.synthetic.scenes import VideoFrameGT
from thingmask.io_utils import atomic_path

__all__ = ["load_video_gt", "save_video_gt"]


def _pack_gt(gt: list[VideoFrameGT], h: int, w: int) -> dict[str, Any]:
    masks = [m for m, _, _ in gt if len(m)]
    stack = np.concatenate(masks) if masks else np.zeros((0, h, w), bool)
    return {
        "masks_packed": np.packbits(stack.reshape(len(stack), -1), axis=1),
        "frame_index": np.concatenate(
            [np.full(len(m), f, np.int32) for f, (m, _, _) in enumerate(gt)]
            or [np.zeros(0, np.int32)]
        ),
        "class_names": np.asarray([n for _, names, _ in gt for n in names], dtype="<U32"),
        "instance_ids": np.concatenate([ids for _, _, ids in gt] or [np.zeros(0, np.int64)]),
        "n_frames": np.int64(len(gt)),
        "height": np.int64(h),
        "width": np.int64(w),
    }


def save_video_gt(path: str | Path, gt: list[VideoFrameGT], height: int, width: int) -> Path:
    """Write per-frame ground truth as a compressed ``.npz`` (format in :func:`load_video_gt`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, allow_pickle=False, **_pack_gt(gt, height, width))
    return path


def load_video_gt(path: str | Path) -> list[VideoFrameGT]:
    """Read ``demo_gt.npz`` → per frame ``(masks (N, H, W) bool, class_names, ids (N,) int64)``.

    File format (``numpy.savez_compressed``, no pickles) — one row per (frame, instance):

    * ``masks_packed``  (M, ceil(H*W/8)) uint8: ``np.packbits`` of each flattened H x W mask
    * ``frame_index``   (M,) int32: the frame (0-based) the row belongs to
    * ``class_names``   (M,) str;  ``instance_ids`` (M,) int64, stable across frames
    * ``n_frames``, ``height``, ``width``: scalars
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: video ground truth not found. Generate the demo data "
            "with generate_synthetic=True (thingmask generate)."
        )
    with np.load(path, allow_pickle=False) as z:
        h, w, n = int(z["height"]), int(z["width"]), int(z["n_frames"])
        flat = np.unpackbits(z["masks_packed"], axis=1, count=h * w).astype(bool)
        masks = flat.reshape(-1, h, w)
        frame_index, names, ids = z["frame_index"], z["class_names"], z["instance_ids"]
    out: list[VideoFrameGT] = []
    for f in range(n):
        sel = np.nonzero(frame_index == f)[0]
        out.append((masks[sel], [str(names[i]) for i in sel], ids[sel].astype(np.int64)))
    return out
