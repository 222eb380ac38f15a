"""``thingmask`` command line: subcommands mirror the notebook's sections, same config file.

    thingmask demo     [--config configs/demo.yaml] [KEY=VALUE ...]   whole notebook, headless
    thingmask generate [--config ...]                                 bundled synthetic data
    thingmask prepare  SRC --output DIR [...]                         annotations → COCO
    thingmask train    [--config ...] [KEY=VALUE ...]                 sections 2–6
    thingmask evaluate [--run RUN_DIR]                                box/mask AP
    thingmask predict  IMAGE... [--run RUN_DIR] --output DIR          display things on images
    thingmask video    SRC --output OUT [--run RUN_DIR] [...]         cut-out video + data
    thingmask evaluate-video PRED GT [--output DIR]                   J, F, id switches vs GT

Bad input ends with one line naming the file/setting and the fix (exit 2); ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thingmask.config import CANVAS_MODES, VIDEO_FORMATS, Config, load_config, parse_overrides

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
    if args.num_gpus > 1:
        from thingmask.launch import check_processes

        check_processes(config, args.num_gpus)  # before any folder is made
    dataset = pipeline.prepare_data(config)
    run_dir = pipeline.start_run(config)
    if args.num_gpus > 1 and not config.zero_training:  # one process per GPU (DDP)
        from thingmask.launch import train_distributed

        metrics = train_distributed(config, dataset, run_dir, num_gpus=args.num_gpus)
    else:
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
    """``--run``, else None for zero-training, else the newest trained run (one rule, runs.py)."""
    from thingmask.runs import require_latest_run

    if getattr(args, "run", None):
        return Path(args.run)
    if config.zero_training:
        return None
    return require_latest_run(config.output_dir)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from thingmask import pipeline
    from thingmask.engines import read_model_meta

    config = _config(args)
    run_dir = _run_dir(args, config)
    if run_dir is None:
        raise ValueError(
            "evaluate scores a trained run on its validation split; with zero_training=true "
            "there is none. Pass --run RUN_DIR or set zero_training=false"
        )
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


def cmd_prepare(args: argparse.Namespace) -> int:
    """Import, validate and split an annotation export. 0: written (warnings allowed)."""
    from thingmask.datasets.prepare import prepare_dataset
    from thingmask.datasets.remap import parse_class_map

    items = list(args.source or [])
    # SRC and KEY=VALUE share one positional list (argparse cannot take a second positional
    # list after options); an existing path with "=" in its name is still a source
    srcs = [i for i in items if "=" not in i or Path(i).exists()]
    overrides = [i for i in items if i not in srcs] + list(args.overrides or [])
    if len(srcs) > 1:
        raise ValueError(
            f"one source expected, got {srcs}. Usage: thingmask prepare SRC --output DIR"
        )
    config = load_config(args.config, parse_overrides(overrides))
    class_map = parse_class_map(args.map, args.drop, base=config.class_map)
    source = srcs[0] if srcs else config.dataset_source
    if not source:
        raise ValueError(
            "no source. Usage: thingmask prepare SRC --output DIR (or set dataset_source)"
        )
    output = args.output or config.dataset_dir
    if args.output is None and output == Config.dataset_dir:
        raise ValueError(
            f"--output DIR is required (dataset_dir is still the synthetic demo folder "
            f"{output}); e.g. --output data/mydata"
        )
    val_fraction = config.val_fraction if args.val_fraction is None else args.val_fraction
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"--val-fraction {val_fraction}: expected a fraction between 0 and 1, e.g. 0.2"
        )
    result = prepare_dataset(
        source,
        output,
        args.fmt or config.dataset_format,
        val_fraction,
        config.seed if args.seed is None else args.seed,
        class_map,
        config.display_things,
        image_dir=args.images,
        class_attribute=args.class_attribute,
        default_class=args.default_class,
        convert_crowd=args.convert_crowd,
        names=args.names or config.dataset_class_names or None,
        preview=not args.no_preview,
    )
    print(result.report.text())
    if not result.ok:
        raise ValueError(
            f"the dataset has errors (listed above); nothing was written but "
            f"{Path(output) / 'report.json'}. Fix them and run prepare again"
        )
    extra = "" if args.no_preview else ", preview/"
    print(f"\nwrote {output}: train.json, val.json, images/, report.json{extra}")
    return 0


_VIDEO_SWITCHES = (
    ("--csv", "export_csv", "per-instance positions CSV"),
    ("--rle", "export_rle", "COCO-RLE masks (JSON lines)"),
    ("--mask-video", "export_mask_video", "black/white mask video"),
    ("--clips", "per_instance_clips", "one cut-out clip per animal"),
    ("--track", "tracking", "stable track ids"),
)


def cmd_video(args: argparse.Namespace) -> int:
    """Cut-out video(s): 0 when every video is done or skipped, 1 when any failed."""
    from thingmask import pipeline
    from thingmask.video_job import process_many, process_video

    config = _config(args)
    changes = {k: getattr(args, k) for k in ("canvas", "video_format") if getattr(args, k)}
    changes |= {k: getattr(args, k) for _, k, _ in _VIDEO_SWITCHES if getattr(args, k) is not None}
    config = config.replace(**changes) if changes else config
    if args.ray is not None:
        from thingmask.batch_ray import import_ray, process_many_ray

        import_ray()  # before any work: says how to install Ray when it is missing
        if args.src is None and args.ray and Path(args.ray).exists():
            raise ValueError(f"--ray took {args.ray!r} as ADDRESS; put SRC before --ray")
    src = args.src or config.video_input
    if not src:
        raise ValueError("no input video: pass SRC (a file, folder or glob) or set video_input")
    run_dir = _run_dir(args, config)
    out = args.output or config.video_output
    out_dir = Path(out) if out else (run_dir or Path(config.output_dir))
    if args.ray is not None:  # the batch spread over Ray workers, one model each
        ray_options = {"actors": args.ray_actors, "gpus_per_actor": args.ray_gpus_per_actor}
        results = process_many_ray(
            src, out_dir, config, run_dir, address=args.ray or None, force=args.force, **ray_options
        )
    elif Path(src).is_file() and out and Path(out).suffix.lower() in (".mp4", ".webm", ".mov"):
        predictor = pipeline.load_predictor(config, run_dir)
        results = [process_video(src, out, predictor, config, force=args.force)]
    else:
        predictor = pipeline.load_predictor(config, run_dir)
        results = process_many(src, out_dir, predictor, config, force=args.force)
    for r in results:
        print(f"{r.source}: {r.status} -> {r.output} {r.error}".rstrip())
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"thingmask video: {len(failed)} of {len(results)} videos failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_evaluate_video(args: argparse.Namespace) -> int:
    """DAVIS J/F, CLEAR-MOT identities and stability of PRED against GT; JSON + plot."""
    from thingmask.video_eval import evaluate_video, report_stem, report_text, save_report

    report = evaluate_video(args.pred, args.gt, args.display_things or None)
    out_dir = Path(args.output) if args.output else Path(args.pred).parent
    paths = save_report(report, out_dir, report_stem(args.pred))
    print(report_text(report))
    print(f"wrote {paths['json']} and {paths['plot']}")
    return 0


def _add_evaluate_video(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate-video",
        help="J, F, id switches of a video's predictions against ground truth",
        description="Evaluate PRED (an export_rle .rle.jsonl, or a cut-out video for the "
        "foreground figures only) against GT (the synthetic generator's demo_gt.npz): DAVIS "
        "region J and boundary F per object and on the foreground, CLEAR-MOT id switches "
        "and fragmentations, temporal stability. Writes <stem>_eval.json and _eval_J.png.",
    )
    p.add_argument("pred", metavar="PRED", help="<stem>.rle.jsonl or a cut-out video")
    p.add_argument("gt", metavar="GT", help="ground truth, e.g. data/synthetic/video/demo_gt.npz")
    p.add_argument("--output", "-o", default=None, metavar="DIR", help="default: PRED's folder")
    p.add_argument(
        "--display-things",
        nargs="+",
        default=None,
        metavar="NAME",
        help="classes to evaluate (default: those the video job recorded beside PRED)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_evaluate_video)


def _add_prepare(sub: Any) -> None:
    p = sub.add_parser(
        "prepare",
        help="annotations → validated COCO train/val",
        description="Import an annotation export (labelme, VIA, CVAT, Roboflow, YOLO-seg, "
        "COCO), validate it and write a COCO train/val dataset.",
    )
    p.add_argument(
        "source",
        nargs="*",
        metavar="SRC [KEY=VALUE ...]",
        help="the export folder/file (default: dataset_source), then setting overrides",
    )
    _add_common(p, overrides=False)
    _add_set(p)
    p.add_argument("--output", "-o", default=None, metavar="DIR", help="prepared dataset folder")
    p.add_argument(
        "--format",
        dest="fmt",
        default=None,
        choices=("auto", "coco", "labelme", "via", "cvat", "roboflow", "yolo"),
        help="export format (default: dataset_format, normally auto)",
    )
    p.add_argument("--val-fraction", type=float, default=None, help="val share when not split")
    p.add_argument("--seed", type=int, default=None, help="split seed")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW", help="rename/merge")
    p.add_argument("--drop", action="append", default=[], metavar="NAME", help="drop a class")
    p.add_argument("--class-attribute", default=None, metavar="NAME", help="VIA: class attribute")
    p.add_argument("--default-class", default="object", metavar="NAME", help="VIA: fallback")
    p.add_argument("--images", default=None, metavar="DIR", help="COCO: the images' folder")
    crowd = p.add_mutually_exclusive_group()
    crowd.add_argument(
        "--keep-crowd",
        dest="convert_crowd",
        action="store_false",
        default=None,
        help="keep iscrowd=1 masks as crowd regions (default: by format; CVAT's are converted)",
    )
    crowd.add_argument(
        "--convert-crowd",
        dest="convert_crowd",
        action="store_true",
        default=None,
        help="turn iscrowd=1 masks into normal instances",
    )
    p.add_argument(
        "--names",
        default=None,
        metavar="NAMES",
        help='class names in id order: "cat,dog" or an Ultralytics data.yaml '
        "(YOLO without its class list; class order for labelme/VIA)",
    )
    p.add_argument("--no-preview", action="store_true", help="skip <output>/preview/")
    p.set_defaults(func=cmd_prepare)


def _add_video(sub: Any) -> None:
    p = sub.add_parser("video", help="cut-out video(s) and per-animal data")
    p.add_argument("src", nargs="?", default=None, metavar="SRC", help="file, folder or glob")
    p.add_argument("--output", "-o", default=None, metavar="OUT", help="file or folder")
    p.add_argument("--run", default=None, metavar="RUN_DIR", help="trained run folder")
    p.add_argument("--canvas", default=None, choices=CANVAS_MODES, help="background")
    p.add_argument("--format", default=None, dest="video_format", choices=VIDEO_FORMATS)
    for flag, key, text in _VIDEO_SWITCHES:
        p.add_argument(
            flag, dest=key, default=None, action=argparse.BooleanOptionalAction, help=text
        )
    p.add_argument("--force", action="store_true", help="redo videos already finished")
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="spread the videos over Ray workers: ADDRESS auto, HOST:6379 or ray://HOST:10001 "
        "(bare: this machine's cluster or a new local one)",
    )
    p.add_argument("--ray-actors", type=int, metavar="N", help="Ray workers (default: all fit)")
    p.add_argument("--ray-gpus-per-actor", type=float, metavar="F", help="1, 0.5 (2 per GPU), 0")
    _add_common(p, overrides=False)
    _add_set(p)
    p.set_defaults(func=cmd_video)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thingmask", description=(__doc__ or "").split("\n")[0])
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

    _add_prepare(sub)

    p = sub.add_parser("train", help="prepare data, train, evaluate, predict a grid")
    _add_common(p)
    p.add_argument("--num-gpus", type=int, default=1, metavar="N", help="N GPUs, one process each")
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
    _add_set(p)
    p.set_defaults(func=cmd_predict)

    _add_video(sub)
    _add_evaluate_video(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Bad input: ``thingmask <command>: error: <what and the fix>`` on
    stderr and exit 2, no traceback (``--debug`` re-raises to show it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"thingmask {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        expected = (ValueError, TypeError, OSError, ImportError, RuntimeError)
        hint = "" if isinstance(exc, expected) else " (unexpected; --debug shows the traceback)"
        print(f"thingmask {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
