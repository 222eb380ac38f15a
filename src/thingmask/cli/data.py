"""``thingmask prepare``: an annotation export → a validated COCO train/val dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from thingmask.cli.common import add_common, add_set
from thingmask.config import Config, load_config, parse_overrides


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
        accept_prelabels=args.accept_prelabels,
    )
    print(result.report.text())
    if not result.ok:
        raise ValueError(
            f"the dataset has errors (listed above); nothing was written but "
            f"{Path(output) / 'report.json'}. Fix them and run prepare again"
        )
    extra = "" if args.no_preview else ", preview/"
    summary = result.report.summary
    print(f"\nwrote {output}: train.json, val.json, images/, labels.json, report.json{extra}")
    print(f"labelling iteration {summary.get('iteration')}, label origins {summary.get('origins')}")
    return 0


def add_parsers(sub: Any) -> None:
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
    add_common(p, overrides=False)
    add_set(p)
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
    p.add_argument(
        "--accept-prelabels",
        action="store_true",
        help="train on thingmask pre-labels nobody reviewed, as they are (scripts, tests)",
    )
    p.set_defaults(func=cmd_prepare)
