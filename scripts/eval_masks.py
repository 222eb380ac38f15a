"""Post-processing levers on the demo video with one trained model: per-animal J, F, id switches.

    python scripts/eval_masks.py --run outputs/demo-20261207-060144 [--config configs/demo.yaml]
    python scripts/eval_masks.py --run RUN --variant one_label_per_animal=false \\
        --variant edge_refinement=false --variant refine_eps=0.0003

Each ``--variant`` (``KEY=VALUE[,KEY=VALUE]``; settings of the config, plus ``refine_eps``, the
guided filter's eps, ``refine_grid``, the mask grid its radius follows, and ``flip``, the
torchvision predictor's test-time flip) re-runs the notebook's
section 8 (``pipeline.cut_video``: the video job on the synthetic demo video, scored against the
generator's ground truth) with the same model, after the baseline (the config as is). Prints one
row per variant: J, F (DAVIS, per animal), fg_J, fg_F (the cut-out as a whole), id switches and
the video stage's wall time. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from thingmask import pipeline  # noqa: E402
from thingmask.config import Config, load_config, parse_overrides  # noqa: E402
from thingmask.cutout import refine, temporal  # noqa: E402


def run_variant(config: Config, run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    eps = float(extra.pop("refine_eps", 1e-3))
    flip = bool(extra.pop("flip", False))
    grid = int(extra.pop("refine_grid", refine.GRID))
    original_grid = refine.GRID
    original_refiner = temporal.EdgeRefiner

    def refiner(mask_threshold: float = 0.5) -> refine.EdgeRefiner:
        return refine.EdgeRefiner(eps=eps, mask_threshold=mask_threshold)

    config = config.replace(**extra)
    predictor = pipeline.load_predictor(config, run_dir)
    if flip:
        predictor.test_time_flip = True  # type: ignore[attr-defined]
    refine.GRID = grid
    temporal.EdgeRefiner = refiner  # type: ignore[assignment,misc]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = pipeline.cut_video(config, predictor, Path(tmp))
            out["video_s"] = time.perf_counter() - t0
    finally:
        refine.GRID = original_grid
        temporal.EdgeRefiner = original_refiner  # type: ignore[misc]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--run", required=True, help="a trained demo run folder")
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--variant", action="append", default=[], help="KEY=VALUE[,KEY=VALUE]")
    args = p.parse_args()
    config = load_config(args.config)
    run_dir = Path(args.run)
    print(f"{'variant':44s} {'J':>6s} {'F':>6s} {'fg_J':>6s} {'fg_F':>6s} {'ids':>4s} {'s':>6s}")
    for spec in ["", *args.variant]:
        extra = parse_overrides([s for s in spec.split(",") if s]) if spec else {}
        out = run_variant(config, run_dir, dict(extra))
        print(
            f"{spec or 'baseline (the config as is)':44s} {out['J']:6.4f} {out['F']:6.4f} "
            f"{out['fg_J']:6.4f} {out['fg_F']:6.4f} {out['id_switches']:4d} {out['video_s']:6.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
