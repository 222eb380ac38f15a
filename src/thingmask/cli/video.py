"""``thingmask video`` (cut-out videos and per-animal data, also over Ray) and
``thingmask evaluate-video`` (J, F and id switches against ground truth)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from thingmask.cli.common import add_common, add_set, config_from_args, run_dir_from_args
from thingmask.config import CANVAS_MODES, VIDEO_FORMATS

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
    from thingmask.jobs.job import process_many, process_video

    config = config_from_args(args)
    changes = {k: getattr(args, k) for k in ("canvas", "video_format") if getattr(args, k)}
    changes |= {k: getattr(args, k) for _, k, _ in _VIDEO_SWITCHES if getattr(args, k) is not None}
    config = config.replace(**changes) if changes else config
    if args.ray is not None:
        from thingmask.distributed.ray_batch import import_ray, process_many_ray

        import_ray()  # before any work: says how to install Ray when it is missing
        if args.src is None and args.ray and Path(args.ray).exists():
            raise ValueError(f"--ray took {args.ray!r} as ADDRESS; put SRC before --ray")
    src = args.src or config.video_input
    if not src:
        raise ValueError("no input video: pass SRC (a file, folder or glob) or set video_input")
    run_dir = run_dir_from_args(args, config)
    out = args.output or config.video_output
    out_dir = Path(out) if out else (run_dir or Path(config.output_dir))
    if args.ray is not None:  # the batch spread over Ray workers, one model each
        ray_options = {"actors": args.ray_actors, "gpus_per_actor": args.ray_gpus_per_actor}
        results = process_many_ray(
            src,
            out_dir,
            config,
            run_dir,
            address=args.ray or None,
            force=args.force,
            overwrite=args.overwrite,
            **ray_options,
        )
    elif Path(src).is_file() and out and Path(out).suffix.lower() in (".mp4", ".webm", ".mov"):
        predictor = pipeline.load_predictor(config, run_dir)
        results = [
            process_video(src, out, predictor, config, force=args.force, overwrite=args.overwrite)
        ]
    else:
        predictor = pipeline.load_predictor(config, run_dir)
        results = process_many(
            src, out_dir, predictor, config, force=args.force, overwrite=args.overwrite
        )
    for r in results:
        print(f"{r.source}: {r.status} -> {r.output} {r.error}".rstrip())
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"thingmask video: {len(failed)} of {len(results)} videos failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_evaluate_video(args: argparse.Namespace) -> int:
    """DAVIS J/F, CLEAR-MOT identities and stability of PRED against GT; JSON + plot."""
    from thingmask.evaluation.video_report import (
        evaluate_video,
        report_stem,
        report_text,
        save_report,
    )

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
        "--overwrite",
        action="store_true",
        help="replace files at the output names that thingmask did not write (by default they "
        "are refused, exit 2, the message naming them)",
    )
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
    add_common(p, overrides=False)
    add_set(p)
    p.set_defaults(func=cmd_video)


def add_parsers(sub: Any) -> None:
    """``video`` and ``evaluate-video``."""
    _add_video(sub)
    _add_evaluate_video(sub)
