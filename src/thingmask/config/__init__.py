"""The one settings object of a thingmask run.

The notebook's global-variables cell (papermill ``parameters`` tag), ``configs/*.yaml`` and the
CLI's ``KEY=VALUE`` overrides all feed :class:`Config`. It is frozen: a run's settings cannot drift
after validation, and so are its containers: lists become tuples and mappings read-only mappings
(``config.display_things.append("dog")`` raises). :meth:`Config.to_dict` gives the plain literals
back (str, int, float, bool, list, dict), so the resolved config can be written to YAML and
reloaded unchanged.

Class-id convention: the config speaks class *names* only. Engines convert to their own ids
(detectron2: contiguous 0-based; torchvision: 1-based with 0 = background) at their boundary.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thingmask.augment import parse_augmentations
from thingmask.detections import Detections, keep_things
from thingmask.errors import ConfigError, setting_fix
from thingmask.threads import parse_threads

__all__ = [
    "AUGMENTATION_DEFAULT",
    "CANVAS_MODES",
    "ENGINES",
    "Config",
    "ConfigError",
    "load_config",
    "parse_overrides",
    "run_config",
]

ENGINES = ("torchvision", "detectron2")
DEVICES = ("auto", "cpu", "cuda", "mps")
CANVAS_MODES = ("black", "white", "color", "blur", "grey", "image", "transparent")
VIDEO_FORMATS = ("mp4", "webm", "mov", "png")
BACKBONES = ("resnet50_fpn", "resnet18_fpn", "mobilenet_v3_fpn", "tiny_fpn")
AUGMENTATION_DEFAULT = ("flip_horizontal", "brightness", "contrast")
MAX_SMOOTHING_WINDOW = 5


@dataclass(frozen=True)
class Config:
    """Validated, frozen settings. Field comments are the documentation of each global variable."""

    # --- run -----------------------------------------------------------------------------------
    run_name: str = "demo"  # prefix of the run folder outputs/<run_name>-<YYYYmmdd-HHMMSS>/
    output_dir: str = "outputs"  # where run folders are created
    seed: int = 0  # seeds data generation, splits, training
    device: str = "auto"  # auto | cpu | cuda | mps

    # --- dataset -------------------------------------------------------------------------------
    dataset_dir: str = "data/synthetic"  # prepared COCO dataset: train.json, val.json, images/
    dataset_source: str = ""  # raw annotations to import with `prepare` ("" = none)
    dataset_format: str = "auto"  # auto | coco | labelme | via | cvat | roboflow | yolo
    # class names for a YOLO-seg export without its class list: "cat,dog" or an Ultralytics
    # dataset yaml (data.yaml, with `names:`); "" = the class list found in the export
    dataset_class_names: str = ""
    generate_synthetic: bool = True  # (re)create the bundled synthetic dataset in dataset_dir
    synthetic_train_images: int = 120  # synthetic dataset size
    synthetic_val_images: int = 24
    synthetic_image_size: int = 160  # square synthetic images, pixels
    synthetic_video_frames: int = 48  # frames of the generated demo video
    val_fraction: float = 0.2  # used when a dataset has no split yet
    class_map: Mapping[str, str] = field(
        default_factory=dict
    )  # rename/merge {"doggo": "dog"}; "" drops
    display_things: tuple[str, ...] = ("cat", "bird")  # classes to keep
    # of kept detections overlapping by more than duplicate_iou, the best-scoring one stays
    one_label_per_animal: bool = True  # whatever its class: the CSV and tracks count it once
    duplicate_iou: float = 0.5  # mask IoU above which two kept detections are one animal

    # --- model / training ----------------------------------------------------------------------
    engine: str = "torchvision"  # torchvision | detectron2
    zero_training: bool = False  # use a COCO-pretrained model as is, no training
    pretrained: bool = False  # start from COCO-pretrained weights (needs internet once)
    backbone: str = "tiny_fpn"  # resnet50_fpn | resnet18_fpn | mobilenet_v3_fpn | tiny_fpn
    d2_base_config: str = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"  # detectron2 zoo
    augmentations: tuple[Any, ...] = AUGMENTATION_DEFAULT  # names or {"name": ..., params}
    iterations: int = 600  # optimizer steps
    batch_size: int = 4  # images per step
    learning_rate: float = 0.01
    optimizer: str = "sgd"  # sgd (momentum 0.9) | adamw (torchvision engine; suits from-scratch)
    image_size: int = 160  # shortest side the model sees, pixels
    max_image_size: int = 256  # longest side cap, pixels
    checkpoint_period: int = 200  # save a checkpoint every N steps
    resume: bool = True  # continue from the newest valid checkpoint of the same run name
    score_threshold: float = 0.5  # detections below are dropped
    test_time_flip: bool = False  # masks averaged with the mirror image's (torchvision engine)
    inference_batch: int = 4  # frames per forward pass in the video stage (GPU: 4-8)
    num_workers: int = 0  # data-loader worker processes
    # cores to use, shared out per stage (thingmask.threads): a number or "auto" (this machine's,
    # at most OMP_NUM_THREADS; training: minus those other processes keep busy)
    threads: int | str = "auto"
    # mixed precision when training on CUDA (float16 autocast + gradient scaling, both engines;
    # detectron2: SOLVER.AMP.ENABLED); ignored on CPU and MPS, which train in float32
    amp: bool = False

    # --- video / outputs -----------------------------------------------------------------------
    video_input: str = ""  # a file, folder or glob; "" = the synthetic demo video
    video_output: str = ""  # "" = <run folder>/<input stem>_cutout.<ext>
    video_format: str = "mp4"  # mp4 (H.264) | webm (VP9 alpha) | mov (ProRes 4444) | png (RGBA)
    canvas: str = "black"  # black | white | color | blur | grey | image | transparent
    canvas_color: tuple[int, ...] = (0, 0, 0)  # RGB for canvas="color"
    canvas_image: str = ""  # background picture for canvas="image"
    keep_audio: bool = True  # carry the source's audio into the output
    tracking: bool = False  # stable track ids across frames (mask IoU, per-track class vote)
    track_max_missed: int = 5  # frames a track lives on unseen (hidden, missed) keeping its id
    # blend each animal's soft mask with the frames around it and fill one-frame dropouts; holds
    # output back by smoothing_window frames; switches tracking on
    temporal_smoothing: bool = False
    smoothing_window: int = 1  # frames on each side that smoothing blends (= delay in frames)
    edge_refinement: bool = False  # snap mask edges to the image (guided filter, in each box)
    export_csv: bool = True  # per-instance, per-frame CSV
    export_rle: bool = False  # COCO-RLE masks per frame (JSON lines)
    export_mask_video: bool = False  # black/white mask video
    per_instance_clips: bool = False  # one cropped clip per tracked animal
    max_bad_frames: float = 0.05  # fraction of undecodable frames tolerated before an error

    # --- Colab ---------------------------------------------------------------------------------
    save_to_drive: bool = False  # copy the run folder to Google Drive (Colab only)
    drive_folder: str = "MyDrive/thingmask"  # folder inside the mounted Drive
    drive_checkpoint_period: int = 0  # copy checkpoints to Drive every N steps (0 = off)
    terminate_runtime: bool = False  # release the Colab runtime after a verified save

    def __post_init__(self) -> None:
        _validate(self)

    # -- helpers --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "settings") -> Config:
        """Build from a mapping; unknown keys are an error that suggests the closest valid key."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{source}: expected a mapping of setting names to values, got "
                f"{type(values).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(hints)}. "
                f"Valid settings: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # Read-only mappings do not pickle; a Config travels (to Ray workers, spawned training
        # processes) as its plain settings and is validated again on arrival.
        return (_from_plain, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of literals (lists copied), suitable for YAML/JSON."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> Config:
        """A new validated config with some settings changed."""
        return self.from_dict({**self.to_dict(), **changes}, source="override")

    def save_yaml(self, path: str | Path) -> Path:
        """Write the resolved config (atomically: temp name, then rename)."""
        from thingmask.io_utils import atomic_write_text

        return atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    def check_classes(self, class_names: Iterable[str]) -> None:
        """Check ``display_things`` against the dataset's (or model's) classes.

        Raises ConfigError naming the unknown names and listing the valid ones.
        """
        valid = list(class_names)
        bad = [t for t in self.display_things if t not in valid]
        if bad:
            raise ConfigError(
                f"display_things: {bad} are not classes of the dataset/model. "
                f"Valid choices: {valid}. "
                + setting_fix("display_things", "[" + ",".join(valid[:2]) + "]")
            )

    def keep(self, detections: Detections) -> Detections:
        """What a run keeps: ``display_things``, one label per animal when on. Pure."""
        iou = self.duplicate_iou if self.one_label_per_animal else None
        return keep_things(detections, self.display_things, iou)

    def new_run_dir(self, now: _dt.datetime | None = None) -> Path:
        """``<output_dir>/<run_name>-<YYYYmmdd-HHMMSS>`` (created; never an existing folder)."""
        stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        base = Path(self.output_dir) / f"{self.run_name}-{stamp}"
        path, n = base, 1
        while path.exists():  # two runs in the same second must not share a folder
            path = base.with_name(f"{base.name}-{n}")
            n += 1
        path.mkdir(parents=True)
        return path


def _from_plain(values: dict[str, Any]) -> Config:
    return Config.from_dict(values, source="pickled settings")


def _plain(value: Any) -> Any:
    """Frozen containers back to the YAML/JSON literals they came from (tuples → lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _freeze(value: Any) -> Any:
    """Lists → tuples and mappings → read-only mappings, recursively: a validated Config cannot
    be changed behind its validation (``config.display_things.append("dog")`` fails)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


_TYPE_NAMES = {
    str: "a text",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    tuple: "a list",
    Mapping: "a mapping",
}


def _fail(key: str, value: Any, expected: str) -> typing.NoReturn:
    raise ConfigError(f"{key}: got {_plain(value)!r}; expected {expected}. " + setting_fix(key))


def _check_types(cfg: Config) -> None:
    """Each field's type, coercing the spellings YAML and notebooks use (1 for 1.0, lists for
    tuples), then freezing containers."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        want = typing.get_origin(hints[f.name]) or hints[f.name]
        if want is types.UnionType:  # int | str: either (bool is no int here)
            if isinstance(value, bool) or not isinstance(value, typing.get_args(hints[f.name])):
                _fail(f.name, value, "an integer or a text")
            continue
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, f.name, float(value))  # 1 is a fine learning rate spelling
            continue
        if want is tuple:
            ok = isinstance(value, (list, tuple))
        elif want is Mapping:
            ok = isinstance(value, Mapping)
        else:
            ok = isinstance(value, want) and not (want in (int, float) and isinstance(value, bool))
        if not ok:
            _fail(f.name, value, _TYPE_NAMES.get(want, getattr(want, "__name__", str(want))))
        if want in (tuple, Mapping):
            object.__setattr__(cfg, f.name, _freeze(value))


def _validate(cfg: Config) -> None:
    _check_types(cfg)

    def choice(key: str, options: Iterable[str]) -> None:
        options = tuple(options)
        if getattr(cfg, key) not in options:
            _fail(key, getattr(cfg, key), f"one of {list(options)}")

    def positive(key: str, allow_zero: bool = False) -> None:
        v = getattr(cfg, key)
        if v < 0 or (v == 0 and not allow_zero):
            _fail(key, v, "a number >= 0" if allow_zero else "a number > 0")

    choice("engine", ENGINES)
    choice("device", DEVICES)
    choice("canvas", CANVAS_MODES)
    choice("video_format", VIDEO_FORMATS)
    choice("backbone", BACKBONES)
    choice("optimizer", ("sgd", "adamw"))
    choice("dataset_format", ("auto", "coco", "labelme", "via", "cvat", "roboflow", "yolo"))
    for key in (
        "synthetic_train_images",
        "synthetic_val_images",
        "synthetic_image_size",
        "synthetic_video_frames",
        "iterations",
        "batch_size",
        "image_size",
        "max_image_size",
        "checkpoint_period",
        "learning_rate",
        "inference_batch",
    ):
        positive(key)
    for key in ("num_workers", "drive_checkpoint_period", "track_max_missed"):
        positive(key, allow_zero=True)
    if not 1 <= cfg.smoothing_window <= MAX_SMOOTHING_WINDOW:
        _fail(
            "smoothing_window",
            cfg.smoothing_window,
            f"1..{MAX_SMOOTHING_WINDOW} frames (a wider window blurs fast motion)",
        )
    if not 0.0 < cfg.val_fraction < 1.0:
        _fail("val_fraction", cfg.val_fraction, "a fraction between 0 and 1, e.g. 0.2")
    for key in ("score_threshold", "max_bad_frames", "duplicate_iou"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            _fail(key, getattr(cfg, key), "a number between 0 and 1")
    if cfg.max_image_size < cfg.image_size:
        _fail("max_image_size", cfg.max_image_size, f">= image_size ({cfg.image_size})")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", cfg.run_name):
        _fail("run_name", cfg.run_name, "letters, digits, '.', '_' or '-' (it names a folder)")
    if not cfg.display_things or not all(isinstance(t, str) and t for t in cfg.display_things):
        _fail("display_things", cfg.display_things, "a non-empty list of class names")
    if len(set(cfg.display_things)) != len(cfg.display_things):
        _fail("display_things", cfg.display_things, "each class name once")
    names = cfg.dataset_class_names.strip()
    if names and not names.lower().endswith((".yaml", ".yml", ".txt", ".names")):
        # "cat,dog": a file path is only read (and checked) by `thingmask prepare`
        items = [n.strip() for n in names.split(",")]
        if not all(items) or len(set(items)) != len(items):
            _fail(
                "dataset_class_names",
                cfg.dataset_class_names,
                'class names in id order, each once, comma-separated ("cat,dog"), or the path '
                "of an Ultralytics dataset yaml (data.yaml)",
            )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in cfg.class_map.items()):
        _fail("class_map", cfg.class_map, 'a mapping of names to names, e.g. {"doggo": "dog"}')
    rgb = cfg.canvas_color
    if len(rgb) != 3 or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in rgb
    ):
        _fail("canvas_color", rgb, "three integers 0..255 (R, G, B), e.g. [0, 255, 0]")
    if cfg.canvas == "image" and not cfg.canvas_image:
        _fail("canvas_image", cfg.canvas_image, 'a picture file when canvas="image"')
    if cfg.canvas == "transparent" and cfg.video_format == "mp4":
        _fail(
            "video_format",
            cfg.video_format,
            'webm, mov or png with canvas="transparent" (H.264 MP4 has no alpha channel)',
        )
    parse_augmentations(cfg.augmentations)
    try:
        parse_threads(cfg.threads)
    except ValueError:
        _fail("threads", cfg.threads, '"auto" or an integer >= 1 (the cores to use)')


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["iterations=10", "display_things=[cat, dog]"]`` → dict. Values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. iterations=100")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
    return out


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Load ``path`` (safe YAML) and apply ``overrides``. ``path=None`` means the defaults;
    ``base``: settings under both (a run's own ``config.yaml``, see :func:`run_config`)."""
    values: dict[str, Any] = dict(base or {})
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(
                f"config file {p} does not exist. Pass an existing YAML file, "
                "e.g. configs/demo.yaml"
            )
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{p}: expected a mapping of settings at the top level, got {type(loaded).__name__}"
            )
        values.update(loaded)
    values.update(overrides or {})
    return Config.from_dict(values, source=source)


RUN_CONFIG = "config.yaml"  # the resolved settings a training run saved in its folder

# a run's settings (config/run.py) need Config above: imported last, re-exported here
from thingmask.config.run import run_config  # noqa: E402
