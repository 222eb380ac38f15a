"""The labelling loop: ``thingmask frames`` (which frames to annotate), ``thingmask prelabel``
(a run's predictions as editable annotations) and ``thingmask suggest`` (the frames the model
probably gets wrong, with their pre-labels)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from thingmask.cli.common import add_common, add_set, config_from_args, run_dir_from_args


def cmd_frames(args: argparse.Namespace) -> int:
    """Pick ``--n`` diverse frames per video and write them as JPEGs."""
    from thingmask.jobs.batch import find_videos
    from thingmask.labeling.frames import FrameOptions, write_frames

    videos = find_videos(args.src)
    options = FrameOptions(
        n=args.n,
        method=args.method,
        seed=args.seed,
        start=args.start,
        stop=args.stop,
        min_gap=args.min_gap,
    )
    classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
    picked, written = write_frames(videos, args.output, options, classes)
    for video in videos:
        frames = [p.index for p in picked if p.video == video]
        print(f"{video}: {len(frames)} frames {frames}")
    print(
        f"wrote {written} new file(s) to {args.output}"
        if written
        else f"nothing new: {args.output} already holds these frames"
    )
    return 0


def _predictor(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    from thingmask import pipeline

    config = config_from_args(args)
    run_dir = run_dir_from_args(args, config)
    if run_dir is None:
        raise ValueError("pass --run RUN_DIR: pre-labels come from a trained run")
    predictor = pipeline.load_predictor(config, run_dir)
    if args.all_classes:
        config = config.replace(display_things=list(predictor.class_names))
    return config, predictor, run_dir


def cmd_prelabel(args: argparse.Namespace) -> int:
    """A run's predictions on images (or a video's picked frames) as editable annotations."""
    from thingmask.jobs.batch import VIDEO_EXTENSIONS
    from thingmask.labeling.prelabel import write_prelabels

    source = Path(args.src)
    if source.is_file() and source.suffix.lower() in VIDEO_EXTENSIONS:
        from thingmask.labeling.frames import FrameOptions, write_frames

        write_frames([source], args.output, FrameOptions(n=args.n, seed=args.seed))
        source = Path(args.output) / source.stem
    config, predictor, run_dir = _predictor(args)
    pres, _written, kept = write_prelabels(
        source,
        args.output,
        predictor,
        config,
        predictor.class_names,
        fmt=args.fmt,
        all_classes=args.all_classes,
        run=str(run_dir),
    )
    n_inst = sum(len(p.instances) for p in pres)
    print(f"pre-labelled {len(pres)} image(s), {n_inst} instance(s), {args.fmt} -> {args.output}")
    if kept:
        print(f"kept {kept} file(s) a person already reviewed (never replaced)")
    if args.fmt == "labelme":
        print(
            "next: open the folder in labelme, correct each image (or untick "
            "'prelabel_unreviewed' to accept it) and save; then thingmask prepare "
            f"{args.output} --output DATASET"
        )
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    """Frames the model probably gets wrong, with their pre-labels and the criteria table."""
    from thingmask.jobs.batch import find_videos
    from thingmask.labeling.prelabel import write_prelabels
    from thingmask.labeling.suggest import CRITERIA, write_suggestions

    videos = find_videos(args.src)
    config, predictor, run_dir = _predictor(args)
    found, images = write_suggestions(
        videos, args.output, predictor, config, args.n, seed=args.seed, min_gap=args.min_gap
    )
    if images:
        write_prelabels(
            images,
            args.output,
            predictor,
            config,
            predictor.class_names,
            fmt=args.fmt,
            all_classes=args.all_classes,
            run=str(run_dir),
        )
    for s in found:
        print(f"{s.video}: frame {s.index} ({s.time:.2f} s): {', '.join(s.criteria)}")
    counts = {c: sum(c in s.criteria for s in found) for c in CRITERIA}
    print(
        f"suggested {len(found)} frame(s) -> {args.output} (suggestions.csv; criteria fired: "
        + ", ".join(f"{c} {n}" for c, n in counts.items())
        + ")"
    )
    return 0


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, metavar="RUN_DIR", help="trained run folder")
    p.add_argument(
        "--format",
        dest="fmt",
        default="labelme",
        choices=("labelme", "coco", "labelstudio"),
        help="annotation format (default labelme)",
    )
    p.add_argument(
        "--all-classes", action="store_true", help="every class, not just display_things"
    )


def add_parsers(sub: Any) -> None:
    """``frames``, ``prelabel``, ``suggest``."""
    p = sub.add_parser(
        "frames",
        help="pick diverse frames of videos to annotate",
        description="Pick --n diverse frames per video (k-means over small grey thumbnails, "
        "as DeepLabCut) and write them as <output>/<video>/<video>_<frame>.jpg with "
        "frames.csv. Re-running adds nothing; a larger --n keeps the frames picked before.",
    )
    p.add_argument("src", metavar="VIDEO", help="a video file, a folder of videos or a glob")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the frames")
    p.add_argument("--n", type=int, default=20, help="frames per video (default 20)")
    p.add_argument("--method", default="kmeans", choices=("kmeans", "uniform"))
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.add_argument("--start", type=float, default=0.0, help="start, fraction of the video")
    p.add_argument("--stop", type=float, default=1.0, help="stop, fraction of the video")
    p.add_argument("--min-gap", type=int, default=0, metavar="FRAMES", help="frames between")
    p.add_argument("--classes", default=None, metavar="NAMES", help='labels.txt: "cat,dog"')
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_frames)

    p = sub.add_parser(
        "prelabel",
        help="a run's predictions as editable annotations",
        description="Turn a trained run's masks on images (or on --n picked frames of a video) "
        "into editable polygons: labelme JSON beside each image, COCO for CVAT or Label "
        "Studio tasks. Pre-labels are marked unreviewed; prepare leaves them out until a "
        "person corrects or accepts them.",
    )
    p.add_argument("src", metavar="IMAGES|VIDEO", help="images (file, folder, glob) or a video")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="annotation folder")
    p.add_argument("--n", type=int, default=20, help="frames to pick from a video (default 20)")
    p.add_argument("--seed", type=int, default=0, help="frame-picking seed (video input)")
    _add_run_args(p)
    add_common(p, overrides=False)
    add_set(p)
    p.set_defaults(func=cmd_prelabel)

    p = sub.add_parser(
        "suggest",
        help="frames the model probably gets wrong, pre-labelled",
        description="Run the model on whole videos and flag frames: the animal count changes "
        "for 1-3 frames, uncertain scores, a track's mask or position jumps, tracks break. "
        "--n diverse flagged frames per video are written with pre-labels and "
        "suggestions.csv (which criteria fired). Earlier suggestions are kept.",
    )
    p.add_argument("src", metavar="VIDEO", help="a video file, a folder of videos or a glob")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="annotation folder")
    p.add_argument("--n", type=int, default=20, help="frames per video (default 20)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.add_argument("--min-gap", type=int, default=0, metavar="FRAMES", help="frames between")
    _add_run_args(p)
    add_common(p, overrides=False)
    add_set(p)
    p.set_defaults(func=cmd_suggest)
