"""Atomic writes and checkpoint discovery."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from thingmask.engines.checkpoints import (
    checkpoint_iteration,
    find_latest_checkpoint,
    save_checkpoint,
)
from thingmask.errors import InputError
from thingmask.io_utils import atomic_path, atomic_write_json, read_image_bgr


def test_atomic_path_renames_on_success_and_cleans_on_error(tmp_path):
    final = tmp_path / "out.mp4"
    with atomic_path(final) as tmp:
        assert tmp.name.endswith(".part.mp4") and tmp.parent == tmp_path
        tmp.write_bytes(b"data")
        assert not final.exists()
    assert final.read_bytes() == b"data"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_atomic_json(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert path.read_text().strip().startswith("{")


def test_latest_valid_checkpoint_skips_truncated(tmp_path):
    state = {"model": {"w": torch.ones(3)}, "iteration": 0}
    save_checkpoint({**state, "iteration": 10}, tmp_path / "model_0000010.pth")
    good = save_checkpoint({**state, "iteration": 20}, tmp_path / "model_0000020.pth")
    bad = tmp_path / "model_0000030.pth"
    bad.write_bytes(good.read_bytes()[:100])  # a copy cut short
    (tmp_path / ".model_0000040.abc.part.pth").write_bytes(b"")
    assert checkpoint_iteration(bad) == 30
    assert find_latest_checkpoint([tmp_path, tmp_path / "nope"]) == good
    assert find_latest_checkpoint([tmp_path / "nope"]) is None


def test_read_image_bgr_reads_bgr_and_names_the_file_it_cannot_read(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue, in OpenCV's order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((4, 5), 7, np.uint8))
    assert np.array_equal(read_image_bgr(tmp_path / "blue.png"), bgr)
    grey = read_image_bgr(tmp_path / "grey.png")
    assert grey.shape == (4, 5, 3) and grey.dtype == np.uint8 and (grey == 7).all()
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "folder.png").mkdir()
    for name in ("missing.png", "notes.png", "folder.png"):
        with pytest.raises(InputError, match=rf"^canvas_image: {tmp_path / name} is missing or"):
            read_image_bgr(tmp_path / name, "canvas_image")
    with pytest.raises(InputError, match=r"^\(empty path\) is missing or not a readable picture"):
        read_image_bgr("")
