"""The notebook's sections as functions: each notebook cell and CLI subcommand calls one of these.

Sections: 3 data and samples → 4 train → 5 evaluate → 6 images → 8 video → 9 summary. The
notebook shows the core of each step in its own cells (registration, MyTrainer, the filter, the
cut-out, the frame loop) and calls these for the rest. Every function takes the one
:class:`~thingmask.config.Config` explicitly and can be re-run.
"""

from __future__ import annotations

import ast
import difflib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.config import Config, ConfigError
from thingmask.datasets import PreparedDataset, load_coco_json, load_prepared
from thingmask.datasets.preview import Preview
from thingmask.detections import Detections, keep
from thingmask.engines import (
    COCO_CLASSES,
    EngineTrainer,
    EvalResult,
    Predictor,
    TrainHook,
    TrainResult,
    get_engine,
    read_model_meta,
)
from thingmask.evaluation.video import FrameObjects
from thingmask.io_utils import atomic_write_json, read_image_bgr

__all__ = [
    "CutResult",
    "DemoScores",
    "config_from_namespace",
    "cut_video",
    "evaluate",
    "load_predictor",
    "predict_images",
    "prepare_data",
    "preview_dataset",
    "preview_html",
    "start_run",
    "summary",
    "train",
    "video_sources",
]

log = logging.getLogger(__name__)


# Names of the global-variables cell that are not Config settings: the Colab set-up reads
# thingmask_source; `thingmask demo` passes run_dir (section 4 reads it).
NOTEBOOK_ONLY = frozenset({"thingmask_source", "run_dir"})


def config_from_namespace(namespace: Mapping[str, Any]) -> Config:
    """The validated config from the notebook's global variables (names = Config fields).

    A name assigned in the global-variables cell (or papermill's injected copy of it) that is no
    setting is an error with a did-you-mean hint: ``iteratons = 5`` must not be ignored. Those
    cells are found in the kernel's input history (``In``) as the cells made only of
    ``name = literal`` lines. Any other global whose name is close to a setting's is logged as a
    warning. ``engine="detectron2"`` without an importable detectron2 falls back to torchvision
    with a warning (the set-up cell's build may have been skipped or failed).
    """
    names = {f.name for f in fields(Config)}
    declared = parameter_cell_names(namespace)
    unknown = {k: namespace.get(k) for k in declared - names - NOTEBOOK_ONLY}
    for name in sorted(set(namespace) - names - declared - NOTEBOOK_ONLY):
        close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.85)
        if close and not name.startswith("_") and _is_literal(namespace[name]):
            log.warning("global %r is not a setting; did you mean %r?", name, close[0])
    values = {k: v for k, v in namespace.items() if k in names}
    if values.get("engine") == "detectron2":
        from thingmask.engines.detectron2_engine.install import resolve_engine

        values["engine"] = resolve_engine("detectron2")
    return Config.from_dict({**values, **unknown}, source="global-variables cell")


def parameter_cell_names(namespace: Mapping[str, Any]) -> set[str]:
    """Names assigned in the executed cells of ``namespace['In']`` (IPython's input history)
    that hold nothing but ``name = literal`` assignments: the global-variables cell and
    papermill's injected parameters. Empty outside IPython."""
    found: set[str] = set()
    for source in namespace.get("In", ()) or ():
        try:
            body = ast.parse(str(source)).body
        except SyntaxError:
            continue
        if body and all(_literal_assignment(node) for node in body):
            found.update(node.targets[0].id for node in body)  # type: ignore[attr-defined]
    return found


def _literal_assignment(node: ast.stmt) -> bool:
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
        return False
    if not isinstance(node.targets[0], ast.Name):
        return False
    try:
        ast.literal_eval(node.value)
    except ValueError:
        return False
    return True


def _is_literal(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | tuple | dict | type(None))


def prepare_data(config: Config) -> PreparedDataset:
    """Section 2: make the dataset the config points at ready, and check the display things.

    ``generate_synthetic`` → the bundled generator writes ``dataset_dir`` (skipped when already
    there); ``dataset_source`` → import + validate + split with ``thingmask prepare``; otherwise
    ``dataset_dir`` must already hold a prepared dataset.
    """
    if config.generate_synthetic:
        from thingmask.datasets.synthetic import generate

        dataset = generate(config)
    elif config.dataset_source:
        from thingmask.datasets.prepare import prepare_from_config

        result = prepare_from_config(config)
        log.log(
            logging.WARNING if result.report.warnings else logging.INFO,
            "dataset report:\n%s",
            result.report.text(),
        )
        if result.dataset is None:
            raise ConfigError(
                f"dataset_source {config.dataset_source}: the dataset has errors "
                f"(see the report above):\n{result.report.text()}"
            )
        dataset = result.dataset
    else:
        dataset = load_prepared(config.dataset_dir)
    if not config.zero_training:
        config.check_classes(dataset.class_names)
    log.info("dataset %s: classes %s", dataset.root, list(dataset.class_names))
    return dataset


def preview_dataset(config: Config, dataset: PreparedDataset, show: bool = False) -> Preview:
    """Section 3: sample grid with masks + per-class counts, saved under
    ``<output_dir>/previews/<dataset folder name>/`` — never inside the dataset folder, which may
    be the user's own."""
    from thingmask.datasets.preview import preview_dataset as _preview

    out = Path(config.output_dir) / "previews" / Path(dataset.root).name
    preview = _preview(dataset, out, seed=config.seed, show=show)
    log.info("instances and images per class:\n%s", preview.table)
    return preview


def start_run(config: Config, run_dir: str | Path = "") -> Path:
    """A new run folder (``outputs/<run_name>-<YYYYmmdd-HHMMSS>``) holding the resolved config.

    ``run_dir`` given (e.g. by `thingmask demo`, which saves the executed notebook there) is used
    as is. Re-running the cell with the same ``run_dir`` reuses the folder.
    """
    path = Path(run_dir) if run_dir else config.new_run_dir()
    path.mkdir(parents=True, exist_ok=True)
    config.save_yaml(path / "config.yaml")
    log.info("run folder: %s", path)
    return path


def train(
    config: Config,
    dataset: PreparedDataset,
    run_dir: Path,
    hooks: Sequence[TrainHook] = (),
    resume_from: Path | None = None,
    trainer: type[EngineTrainer] | None = None,
) -> TrainResult | None:
    """Section 4: train the configured engine; a no-op in zero-training mode.

    ``trainer``: the engine's trainer class to use (torchvision: a ``Trainer`` subclass,
    detectron2: a ``SafeTrainer`` subclass such as the notebook's ``MyTrainer``), or None for
    the package default. Returns the engine's :class:`~thingmask.engines.TrainResult`, None
    when nothing was trained.
    """
    if config.zero_training:
        log.info("zero_training=True: using a COCO-pretrained model, no training")
        return None
    return get_engine(config.engine).train(
        config, dataset, run_dir, hooks=hooks, resume_from=resume_from, trainer=trainer
    )


def evaluate(config: Config, dataset: PreparedDataset, run_dir: Path) -> EvalResult | None:
    """Section 5: box/mask AP on the val split (written to ``run_dir/eval.json``); None in
    zero-training mode (COCO's classes are not the dataset's)."""
    if config.zero_training:
        log.info("zero_training=True: COCO classes differ from the dataset's; skipping AP")
        return None
    return get_engine(config.engine).evaluate(config, dataset, run_dir)


def load_predictor(config: Config, run_dir: Path | None) -> Predictor:
    """The predictor of a trained run (engine read from its ``model_meta.json``) or, with
    ``zero_training``, a COCO-pretrained one. Display things are checked against its classes."""
    if config.zero_training:
        predictor = get_engine(config.engine).load_predictor(config, None)
        config.check_classes(COCO_CLASSES)
        return predictor
    if run_dir is None:
        raise ValueError("load_predictor: run_dir is required unless zero_training=True")
    engine = read_model_meta(run_dir)["engine"]
    predictor = get_engine(engine).load_predictor(config, run_dir)
    config.check_classes(predictor.class_names)
    return predictor


def predict_images(
    config: Config,
    dataset: PreparedDataset,
    predictor: Predictor,
    run_dir: Path,
    count: int = 8,
    show: bool = False,
) -> Path:
    """Section 6: predictions for the display things only, on val images, as a grid PNG."""
    import cv2

    from thingmask.visualize import draw_instances, save_grid

    coco = load_coco_json(dataset.val_json)
    rng = np.random.default_rng(config.seed)
    images = coco["images"]
    chosen = [
        images[i] for i in sorted(rng.choice(len(images), min(count, len(images)), replace=False))
    ]
    drawn, titles = [], []
    listed_in = f"{dataset.val_json} file_name"
    for info in chosen:
        bgr = read_image_bgr(dataset.image_root / info["file_name"], listed_in)
        dets = keep(predictor(bgr), config.display_things)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        drawn.append(
            draw_instances(
                rgb,
                dets.masks,
                dets.class_names,
                class_names=predictor.class_names,
                scores=dets.scores,
            )
        )
        titles.append(f"{info['file_name']}: {len(dets)} kept")
    path = run_dir / "predictions.png"
    save_grid(drawn, path, titles=titles, show=show)
    return path


def video_sources(config: Config) -> list[Path]:
    """Section 8's videos: ``video_input`` (a file, a folder of videos or a glob), else the
    synthetic demo video of ``dataset_dir``. Raises ``VideoError`` (a ValueError naming the path
    and the fix) when there is none."""
    from thingmask.jobs.batch import find_videos

    return find_videos(_demo_video_paths(config)[0])


def _demo_video_paths(config: Config) -> tuple[Path, Path | None]:
    if config.video_input:
        return Path(config.video_input), None
    root = Path(config.dataset_dir) / "video"
    gt = root / "demo_gt.npz"
    return root / "demo.mp4", gt if gt.is_file() else None


@dataclass(frozen=True)
class DemoScores:
    """The demo video's kept instances against the generator's per-animal ground truth
    (:mod:`thingmask.evaluation.video`), fractions 0..1: ``j``, ``f`` (DAVIS J and F, per
    object), ``fg_j``/``fg_f`` (the cut-out as a whole), ``mean_iou``/``min_iou`` (foreground
    IoU over the frames), and counts ``id_switches`` (CLEAR-MOT) and ``vanished``."""

    j: float
    f: float
    fg_j: float
    fg_f: float
    id_switches: int
    vanished: int
    mean_iou: float
    min_iou: float


@dataclass(frozen=True)
class CutResult:
    """What :func:`cut_video` made: ``videos`` (one, or each of a batch), ``frames`` (of the
    one video; None for a batch) and ``scores`` (the demo video only, else None)."""

    videos: tuple[Path, ...]
    frames: int | None = None
    scores: DemoScores | None = None

    def figures(self) -> dict[str, float]:
        """The key scores for a summary line: ``mean_iou``, ``J``, ``F``, ``id_switches``
        (empty without scores)."""
        if self.scores is None:
            return {}
        s = self.scores
        return {"mean_iou": s.mean_iou, "J": s.j, "F": s.f, "id_switches": s.id_switches}

    def __str__(self) -> str:
        frames = "" if self.frames is None else f"{self.frames} frames: "
        shown = ", ".join(str(v) for v in self.videos[:3])
        lines = [f"{len(self.videos)} video(s), {frames}{shown}{' ...' * (len(self.videos) > 3)}"]
        if self.scores is not None:
            lines.append(", ".join(f"{k} {v:.4g}" for k, v in asdict(self.scores).items()))
        return "\n".join(lines)


def cut_video(config: Config, predictor: Predictor, run_dir: Path) -> CutResult:
    """Section 8: the cut-out video (and data exports) for ``config.video_input``.

    With the synthetic demo video (its ground truth ``demo_gt.npz`` beside it), the kept
    instances are scored frame by frame against the generator's per-animal ground truth
    (:class:`DemoScores`; ``id_switches`` is the report's ``num_switches``). The full report
    goes to ``<run>/<stem>_cutout_eval.json`` with a plot of J over time.
    """
    from thingmask.jobs.job import process_many, process_video
    from thingmask.video import EXTENSIONS

    src, gt_path = _demo_video_paths(config)
    if src.is_dir() or any(ch in str(src) for ch in "*?["):
        results = process_many(src, run_dir, predictor, config)
        return CutResult(videos=tuple(Path(r.output) for r in results))
    dst = (
        Path(config.video_output)
        if config.video_output
        else run_dir / f"{src.stem}_cutout{EXTENSIONS[config.video_format]}"
    )
    predicted: list[FrameObjects] = []

    def on_frame(index: int, frame: np.ndarray, kept: Detections) -> None:
        ids = kept.track_ids if kept.track_ids is not None else np.full(len(kept), -1)
        predicted.append((kept.masks, [str(n) for n in kept.class_names], ids))

    # force: a finished output is normally skipped, but then nothing would be scored.
    scored = gt_path is not None
    result = process_video(
        src, dst, predictor, config, on_frame=on_frame if scored else None, force=scored
    )
    scores = _score_demo_video(config, predicted, gt_path, run_dir, dst) if gt_path else None
    return CutResult(videos=(Path(result.output),), frames=result.frames, scores=scores)


def _score_demo_video(
    config: Config, predicted: list[FrameObjects], gt_path: Path, run_dir: Path, dst: Path
) -> DemoScores:
    """J, F, id switches (and the full report on disk) of the demo video's kept instances."""
    from thingmask.datasets.synthetic import load_video_gt
    from thingmask.evaluation.video import evaluate_instances
    from thingmask.evaluation.video_report import save_report

    report = evaluate_instances(predicted, load_video_gt(gt_path), config.display_things)
    save_report(report, run_dir, dst.stem if dst.suffix else dst.name)  # <stem>_eval.json
    per_frame = report["per_frame"]["fg_J"]
    return DemoScores(
        j=round(float(report["J"]), 4),
        f=round(float(report["F"]), 4),
        fg_j=round(float(report["fg_J"]), 4),
        fg_f=round(float(report["fg_F"]), 4),
        id_switches=int(report["num_switches"]),
        vanished=int(report["vanished"]),
        mean_iou=float(np.mean(per_frame)),
        min_iou=float(np.min(per_frame)),
    )


def preview_html(path: str | Path, max_mb: float = 50.0, width: int = 480) -> str:
    """HTML showing a result video inline: the video itself (mp4 / webm up to ``max_mb``,
    embedded, so it also plays in Colab), else a line saying where it is — a large video
    embedded would bloat the notebook and stall the browser."""
    from thingmask.video import video_html

    path = Path(path)
    size_mb = path.stat().st_size / 1e6 if path.is_file() else 0.0
    if path.suffix.lower() in (".mp4", ".webm") and 0 < size_mb <= max_mb:
        return video_html(path, width)
    what = "a PNG sequence" if path.is_dir() else f"{size_mb:.0f} MB"
    return f"<p><code>{path}</code> ({what}): open it from the file browser or Drive.</p>"


def summary(run_dir: Path, started: float, **figures: Any) -> str:
    """The closing lines of a run: where things are, key figures, wall time (also JSON)."""
    wall = time.time() - started
    data = {"run_dir": str(run_dir), "wall_time_s": round(wall, 1), **figures}
    atomic_write_json(run_dir / "summary.json", data)
    lines = [f"run folder : {run_dir}", f"wall time  : {wall / 60:.1f} min ({wall:.0f} s)"]
    lines += [f"{k:<11}: {v}" for k, v in figures.items()]
    return "\n".join(lines)
