"""``thingmask`` command line: subcommands mirror the notebook's sections, same config file.

    thingmask demo     [--config configs/demo.yaml] [KEY=VALUE ...]   whole notebook, headless
    thingmask generate [--config ...]                                 bundled synthetic data
    thingmask prepare  SRC --output DIR [...]                         annotations → COCO
    thingmask train    [--config ...] [KEY=VALUE ...]                 sections 2–6
    thingmask evaluate [--run RUN_DIR]                                box/mask AP
    thingmask predict  IMAGE... [--run RUN_DIR] --output DIR          display things on images
    thingmask video    SRC --output OUT [--run RUN_DIR] [...]         cut-out video + data

Bad input ends with one line naming the file/setting and the fix (exit 2); ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from thingmask.config import Config, ConfigError, load_config, parse_overrides

log = logging.getLogger("thingmask")

DEFAULT_NOTEBOOK = Path("notebooks/thingmask.ipynb")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, parse_overrides(getattr(args, "overrides", []) or []))


def _add_common(parser: argparse.ArgumentParser, overrides: bool = True) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="settings YAML (default: built-in defaults); e.g. configs/demo.yaml",
    )
    if overrides:
        parser.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="override settings, e.g. iterations=100 display_things='[cat, bird]'",
        )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


# --- subcommands ------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from thingmask.datasets.synthetic import generate

    config = _config(args)
    dataset = generate(config)
    print(f"synthetic dataset ready: {dataset.root} (classes {list(dataset.class_names)})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from thingmask import pipeline

    started = time.time()
    config = _config(args)
    dataset = pipeline.prepare_data(config)
    run_dir = pipeline.start_run(config)
    metrics = pipeline.train(config, dataset, run_dir)
    ap = pipeline.evaluate(config, dataset, run_dir)
    predictor = pipeline.load_predictor(config, run_dir)
    grid = pipeline.predict_images(config, dataset, predictor, run_dir)
    print(
        pipeline.summary(
            run_dir,
            started,
            train_iterations=metrics.get("iterations"),
            mask_AP=ap.get("segm", {}).get("AP"),
            predictions=str(grid),
        )
    )
    return 0


def _run_dir(args: argparse.Namespace, config: Config) -> Path | None:
    from thingmask import pipeline

    if config.zero_training:
        return None
    return Path(args.run) if args.run else pipeline.latest_run(config)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from thingmask import pipeline

    config = _config(args)
    run_dir = _run_dir(args, config)
    if run_dir is not None:
        from thingmask.engines import read_model_meta

        read_model_meta(run_dir)  # fail before touching the dataset when there is no model
    # An existing dataset is evaluated as it is (never regenerated under the model's feet).
    dataset = pipeline.prepare_data(
        config.replace(generate_synthetic=False) if Path(config.dataset_dir).is_dir() else config
    )
    print(json.dumps(pipeline.evaluate(config, dataset, run_dir), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import cv2

    from thingmask import pipeline
    from thingmask.detections import keep
    from thingmask.io_utils import atomic_path
    from thingmask.visualize import draw_instances

    config = _config(args)
    predictor = pipeline.load_predictor(config, _run_dir(args, config))
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.images:
        bgr = cv2.imread(name, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{name}: not a readable image (png/jpg/...)")
        dets = keep(predictor(bgr), config.display_things)
        rgb = draw_instances(
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
            dets.masks,
            dets.class_names,
            class_names=predictor.class_names,
            scores=dets.scores,
        )
        dst = out_dir / f"{Path(name).stem}_pred.png"
        with atomic_path(dst) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        print(f"{name}: kept {len(dets)} ({', '.join(dets.class_names) or 'none'}) -> {dst}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Execute the notebook headless with papermill; the executed copy lands in the run folder."""
    import os

    import papermill as pm

    config = _config(args)  # validated here: unknown keys in the YAML fail before any work
    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise FileNotFoundError(
            f"notebook {notebook} not found; run from the repository root or pass --notebook PATH"
        )
    run_dir = config.new_run_dir()
    params = {**config.to_dict(), "run_dir": str(run_dir)}
    partial = run_dir / ".notebook.part.ipynb"
    print(f"running {notebook} headless; run folder {run_dir}", flush=True)
    try:
        pm.execute_notebook(
            str(notebook),
            str(partial),
            parameters=params,
            cwd=str(Path.cwd()),
            log_output=args.verbose,
            progress_bar=not args.verbose,
            kernel_name=args.kernel,
        )
    except pm.PapermillExecutionError as exc:
        failed = run_dir / "notebook.failed.ipynb"
        os.replace(partial, failed)
        raise RuntimeError(
            f"notebook cell {exc.exec_count} failed: {exc.ename}: {exc.evalue} "
            f"(executed notebook kept at {failed})"
        ) from None
    os.replace(partial, run_dir / "notebook.ipynb")
    summary = run_dir / "summary.json"
    if summary.is_file():
        print(summary.read_text())
    print(f"done: {run_dir}")
    return 0


def _plugin(module: str) -> tuple[Callable, Callable]:
    import importlib

    mod = importlib.import_module(module)
    return mod.add_cli_arguments, mod.run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thingmask", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole notebook headless (papermill)")
    _add_common(p)
    p.add_argument("--notebook", default=str(DEFAULT_NOTEBOOK))
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: notebook's)")
    p.add_argument("--verbose", action="store_true", help="stream cell output")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="create the bundled synthetic dataset and video")
    _add_common(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="prepare data, train, evaluate, predict a grid")
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="box and mask AP of a trained run on the val split")
    _add_common(p)
    p.add_argument("--run", default="", help="run folder (default: newest under output_dir)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="draw the display things found on images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--output", required=True, help="folder for the drawn images")
    p.add_argument("--run", default="", help="run folder (default: newest under output_dir)")
    _add_common(p, overrides=False)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (repeatable)",
    )
    p.set_defaults(func=cmd_predict)

    for name, module, help_text in (
        ("prepare", "thingmask.datasets.prepare", "annotations → validated COCO train/val"),
        ("video", "thingmask.video_job", "cut-out video(s) and per-animal data"),
    ):
        try:
            add_args, run = _plugin(module)
        except ImportError as exc:  # pragma: no cover - only when a stage is missing
            log.debug("subcommand %s unavailable: %s", name, exc)
            continue
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        if not any(a.dest == "config" for a in p._actions):
            _add_common(p, overrides=not any(a.dest == "overrides" for a in p._actions))
        p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("thingmask: interrupted", file=sys.stderr)
        return 130
    except (
        ConfigError,
        ValueError,
        TypeError,
        FileNotFoundError,
        ImportError,
        RuntimeError,
        OSError,
    ) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"thingmask {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
