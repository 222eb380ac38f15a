"""The path of one setting: which modules a ``Config`` passes through on ``pipeline.cut_video``.

Runs ``cut_video`` on a short synthetic video with a stand-in predictor (no model needed) and a
profiler that notes every Python call receiving the ``Config`` as an argument. Prints the modules
in the order the config enters them (consecutive calls inside one module count once), the number
of distinct modules, the moves between them and the climbs back up (entering again a module the
config already passed through: a hub handing the config out to each helper in turn).

    python scripts/trace_config.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from thingmask import pipeline
from thingmask.config import Config
from thingmask.detections import Detections


def _predictor(frame: np.ndarray) -> Detections:
    h, w = frame.shape[:2]
    masks = np.zeros((1, h, w), bool)
    masks[0, h // 4 : h // 2, w // 4 : w // 2] = True
    return Detections(
        masks=masks,
        boxes=np.array([[w // 4, h // 4, w // 2, h // 2]], np.float32),
        class_names=np.array(["cat"]),
        scores=np.array([0.9], np.float32),
        probs=masks.astype(np.uint8) * 255,
    )


class Predictor:
    """The smallest predictor the video job takes (class names, a batch call)."""

    class_names = ("cat", "bird")
    mask_threshold = 0.5
    soft_masks = False  # the temporal stage switches it on; the masks are hard either way

    def __call__(self, frame: np.ndarray) -> Detections:
        return _predictor(frame)

    def predict_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        return [_predictor(f) for f in frames]


_HOLDERS = ("config", "_config", "cfg")


def trace(config: Config, run_dir: Path) -> list[str]:
    entered: list[str] = []

    def profile(frame, event, arg):  # sys.setprofile's signature
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("thingmask") or module == "thingmask.config":
            return
        # the config itself, or an object holding it (self.config, self._config)
        held = (getattr(v, name, None) for v in frame.f_locals.values() for name in _HOLDERS)
        holds = any(v is config for v in frame.f_locals.values()) or any(h is config for h in held)
        if holds and (not entered or entered[-1] != module):
            entered.append(module)

    sys.setprofile(profile)
    try:
        pipeline.cut_video(config, Predictor(), run_dir)
    finally:
        sys.setprofile(None)
    return entered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    from thingmask.video import write_video

    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "clip.mp4", (np.zeros((48, 64, 3), np.uint8),) * 4, 10.0)
        # every stage that reads settings on: tracking, smoothing, refinement, every export
        config = Config(
            video_input=str(video),
            display_things=["cat"],
            device="cpu",
            tracking=True,
            temporal_smoothing=True,
            smoothing_window=1,
            edge_refinement=True,
            export_rle=True,
            export_mask_video=True,
            per_instance_clips=True,
        )
        path = trace(config, Path(tmp) / "run")
    seen: set[str] = set()
    climbs = 0
    for module in path:
        climbs += module in seen
        seen.add(module)
    figures = {"modules": len(seen), "moves": len(path) - 1, "climbs": climbs, "path": path}
    print(" -> ".join(m.removeprefix("thingmask.") for m in path))
    print(f"modules {figures['modules']}, moves {figures['moves']}, climbs {figures['climbs']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
