"""The pinned torch/torchvision pair really works (a local +cpu torch breaks PyPI torchvision)."""

from __future__ import annotations

import torch
import torchvision


def test_torchvision_nms_operator_is_registered():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = torchvision.ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # the overlapping lower-score box is suppressed


def test_pinned_versions_match_requirements():
    from pathlib import Path

    pins = dict(
        line.split("==")
        for line in (Path(__file__).resolve().parents[1] / "requirements.txt")
        .read_text()
        .splitlines()
        if line.startswith(("torch==", "torchvision=="))
    )
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]
