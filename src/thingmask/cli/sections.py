"""The notebook's sections as subcommands: demo (the whole notebook), generate, train, evaluate,
predict."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from thingmask.cli.common import (
    DEFAULT_NOTEBOOK,
    add_common,
    add_set,
    config_from_args,
    run_dir_from_args,
)


def cmd_generate(args: argparse.Namespace) -> int:
    from thingmask.datasets.synthetic import generate

    config = config_from_args(args)
    dataset = generate(config)
    print(f"synthetic dataset ready: {dataset.root} (classes {list(dataset.class_names)})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from thingmask import pipeline

    started = time.time()
    config = config_from_args(args)
    if args.num_gpus > 1:
        from thingmask.distributed.launch import check_processes

        check_processes(config, args.num_gpus)  # before any folder is made
    dataset = pipeline.prepare_data(config)
    run_dir = pipeline.start_run(config)
    if args.num_gpus > 1 and not config.zero_training:  # one process per GPU (DDP)
        from thingmask.distributed.launch import train_distributed

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
            train_iterations=metrics.iterations if metrics else None,
            mask_AP=ap.mask_ap if ap else None,
            predictions=str(grid),
        )
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from thingmask import pipeline
    from thingmask.engines import read_model_meta

    config = config_from_args(args)
    run_dir = run_dir_from_args(args, config)
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
    result = pipeline.evaluate(config, dataset, run_dir)
    print(json.dumps(result.to_dict() if result else {}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import cv2

    from thingmask import pipeline
    from thingmask.detections import keep
    from thingmask.io_utils import atomic_path, read_image_bgr
    from thingmask.visualize import draw_instances

    config = config_from_args(args)
    predictor = pipeline.load_predictor(config, run_dir_from_args(args, config))
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.images:
        bgr = read_image_bgr(name, "predict")
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

    config = config_from_args(args)  # validated here: unknown keys in the YAML fail before any work
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


def add_parsers(sub: Any) -> None:
    """``demo``, ``generate``, ``train``, ``evaluate``, ``predict``."""
    p = sub.add_parser("demo", help="run the whole notebook headless (papermill)")
    add_common(p)
    p.add_argument("--notebook", default=str(DEFAULT_NOTEBOOK))
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: notebook's)")
    p.add_argument("--verbose", action="store_true", help="stream cell output")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="create the bundled synthetic dataset and video")
    add_common(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="prepare data, train, evaluate, predict a grid")
    add_common(p)
    p.add_argument("--num-gpus", type=int, default=1, metavar="N", help="N GPUs, one process each")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="box and mask AP of a trained run on the val split")
    add_common(p)
    p.add_argument("--run", default="", help="run folder (default: newest under output_dir)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="draw the display things found on images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--output", required=True, help="folder for the drawn images")
    p.add_argument("--run", default="", help="run folder (default: newest under output_dir)")
    add_common(p, overrides=False)
    add_set(p)
    p.set_defaults(func=cmd_predict)
