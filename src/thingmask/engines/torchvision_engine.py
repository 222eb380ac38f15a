"""torchvision Mask R-CNN engine: train / resume / evaluate / predict on any prepared COCO dataset.

Pure pip (CPU, CUDA or Apple MPS). The classes come from ``dataset.class_names`` — 1..N classes
with no code change. Class-id convention inside this module only: torchvision label 0 is the
background and label ``i + 1`` is ``class_names[i]``; everything returned speaks class *names*.

Backbones (``config.backbone``):

* ``resnet50_fpn`` — torchvision's ``maskrcnn_resnet50_fpn``; with ``pretrained`` it starts from
  the COCO weights (downloaded once into the torch hub cache).
* ``resnet18_fpn``, ``mobilenet_v3_fpn`` — torchvision backbones + FPN; ``pretrained`` loads
  ImageNet weights, otherwise GroupNorm from scratch.
* ``tiny_fpn`` — a small GroupNorm CNN + FPN with slim heads, from scratch: trains the synthetic
  demo on a laptop CPU in minutes.

A run folder written by :func:`train`::

    checkpoints/model_0000200.pth   model + optimizer + scheduler + iteration + loss history
    model_final.pth                 model weights only
    model_meta.json                 engine, class names, backbone, sizes (read by load_predictor)
    metrics.json, loss_curve.png    loss history and wall time
    eval.json, eval_ap.png          written by :func:`evaluate`
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.datasets.coco import DatasetError, PreparedDataset, load_coco_json
from thingmask.detections import Detections
from thingmask.engines import COCO_CLASSES, TrainHook, read_model_meta
from thingmask.engines.checkpoints import (
    checkpoint_iteration,
    find_latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from thingmask.io_utils import atomic_path, atomic_write_json

__all__ = [
    "TorchvisionPredictor",
    "build_model",
    "evaluate",
    "load_predictor",
    "resolve_device",
    "train",
]

log = logging.getLogger(__name__)

ENGINE = "torchvision"
EVAL_SCORE_THRESHOLD = 0.05  # COCO AP integrates over all confidences; 0.5 would cap recall
_GRAD_CLIP = 10.0
_TINY_ROI_BATCH = 32  # RoIs sampled per image for tiny_fpn (its mask head dominates a CPU step)
_TINY_MASK_SIZE = 28  # tiny_fpn mask logits; 56 (see _fine_mask_predictor) was slower, not better


# ----------------------------------------------------------------------------------------------
# device
# ----------------------------------------------------------------------------------------------
def resolve_device(name: str) -> Any:
    """``config.device`` → ``torch.device`` (``"auto"``: CUDA, then Apple MPS, else CPU)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device: got 'cuda' but no CUDA GPU is visible to torch. Use "
            "device='auto' or 'cpu' (in Colab: Runtime > Change runtime type > GPU)."
        )
    if name == "mps" and not has_mps:
        raise ValueError("device: got 'mps' but Apple MPS is not available. Use device='auto'.")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------
def _group_norm(channels: int) -> Any:
    from torch import nn

    return nn.GroupNorm(math.gcd(channels, 16), channels)


def _fine_mask_predictor(channels: int, num_labels: int) -> Any:
    """14x14 RoI features → 56x56 mask logits (two 2x up-convolutions instead of one).

    torchvision sizes the mask targets from the logits, so the finer output needs nothing else;
    on small images a 28x28 mask spans ~2 px per cell and rounds off ears, tails and beaks.
    """
    from torch import nn

    half = max(16, channels // 2)
    return nn.Sequential(
        nn.ConvTranspose2d(channels, channels, 2, 2),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(channels, half, 2, 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, num_labels, 1),
    )


def _tiny_backbone(out_channels: int = 64) -> Any:
    """A 4-stage GroupNorm CNN (strides 4, 8, 16, 32) + FPN for fast from-scratch training."""
    from torch import nn
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _group_norm(cout), nn.ReLU(inplace=True)
        )

    class Residual(nn.Module):
        def __init__(self, ch: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                conv(ch, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False), _group_norm(ch)
            )

        def forward(self, x: Any) -> Any:
            return nn.functional.relu(x + self.body(x))

    widths = (32, 64, 96, 128)

    class TinyFPN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(conv(3, 24, 2), conv(24, widths[0], 2))
            stages, cin = [], widths[0]
            for i, w in enumerate(widths):
                stages.append(nn.Sequential(conv(cin, w, 1 if i == 0 else 2), Residual(w)))
                cin = w
            self.stages = nn.ModuleList(stages)
            self.fpn = FeaturePyramidNetwork(
                list(widths), out_channels, extra_blocks=LastLevelMaxPool(), norm_layer=_group_norm
            )
            self.out_channels = out_channels

        def forward(self, x: Any) -> Any:
            feats, x = OrderedDict(), self.stem(x)
            for i, stage in enumerate(self.stages):
                x = stage(x)
                feats[str(i)] = x
            return self.fpn(feats)

    return TinyFPN()


def _load_weights(weights: Any, what: str, zero_training: bool) -> Any | None:
    """Fetch torchvision weights (torch hub cache, else download) → state dict, or None offline."""
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, SSL, hash mismatch, ...: all mean "no weights here"
        hint = (
            "connect to the internet once (the file is then cached in the torch hub folder, "
            "~/.cache/torch/hub/checkpoints), or copy "
            f"{Path(str(weights.url)).name} there yourself"
        )
        if zero_training:
            raise RuntimeError(
                f"zero_training needs the {what} ({weights.url}) but they could not be loaded "
                f"({exc}). To fix: {hint}; or set zero_training=False and train on your dataset."
            ) from None
        log.warning(
            "pretrained=True but the %s could not be loaded (%s). Training from scratch "
            "instead: expect lower accuracy. To use them, %s.",
            what,
            exc,
            hint,
        )
        return None


def _anchor_sizes(image_size: int, n_maps: int) -> tuple:
    # torchvision's anchors (32..512 px) suit 800 px images; small images get them halved.
    base = (32, 64, 128, 256, 512) if image_size >= 480 else (16, 32, 64, 128, 256)
    if n_maps == len(base):
        return tuple((s,) for s in base)  # one size per pyramid level
    return (base,) * n_maps  # few levels (mobilenet): every size on every level


def _fpn_body(backbone: str, norm: str) -> Any:
    """Backbone + FPN without weights; ``norm``: frozen_bn (for pretrained) or group_norm."""
    from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    layer = FrozenBatchNorm2d if norm == "frozen_bn" else _group_norm
    if backbone == "tiny_fpn":
        return _tiny_backbone(64)
    if backbone in ("resnet50_fpn", "resnet18_fpn"):
        return resnet_fpn_backbone(
            backbone_name=backbone.split("_")[0],
            weights=None,
            norm_layer=layer,
            trainable_layers=3 if norm == "frozen_bn" else 5,
        )
    return mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=layer,
        trainable_layers=3 if norm == "frozen_bn" else 6,
    )


def _pretrained_state(backbone: str, zero_training: bool) -> dict[str, Any] | None:
    """COCO Mask R-CNN weights (resnet50_fpn) or ImageNet backbone weights, keyed for our model."""
    from torchvision import models as tvm
    from torchvision.models import detection as tvd

    if backbone == "resnet50_fpn" or zero_training:
        return _load_weights(
            tvd.MaskRCNN_ResNet50_FPN_Weights.DEFAULT,
            "COCO-pretrained Mask R-CNN weights",
            zero_training,
        )
    if backbone == "tiny_fpn":
        log.warning(
            "pretrained=True: there are no pretrained weights for tiny_fpn; it trains "
            "from scratch (choose resnet50_fpn for COCO weights)"
        )
        return None
    enum, prefix = (
        (tvm.ResNet18_Weights.IMAGENET1K_V1, "backbone.body.")
        if backbone == "resnet18_fpn"
        else (tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1, "backbone.body.")
    )
    state = _load_weights(enum, "ImageNet backbone weights", False)
    if state is None:
        return None
    return {
        prefix + k.removeprefix("features."): v
        for k, v in state.items()
        if not k.startswith(("fc.", "classifier."))
    }


def build_model(
    backbone: str,
    num_classes: int,
    image_size: int,
    max_image_size: int,
    pretrained: bool = False,
    zero_training: bool = False,
    norm: str | None = None,
    mask_size: int | None = None,
) -> Any:
    """A torchvision ``MaskRCNN`` for ``num_classes`` foreground classes (labels 1..N, 0 = bg).

    ``pretrained`` loads COCO (resnet50_fpn) or ImageNet (resnet18/mobilenet) weights when they
    can be had, else warns and starts from scratch. ``zero_training`` returns the 91-label COCO
    model with its weights (raises offline). ``norm`` (``"frozen_bn"``/``"group_norm"``) rebuilds
    a trained model's structure without downloading anything; ``mask_size`` (28 or 56, default
    56 for tiny_fpn, else 28) is the side of the predicted mask logits. Both are stored on the
    model (``thingmask_norm``, ``thingmask_mask_size``) and written to ``model_meta.json``.
    """
    import torch
    from torchvision.models import detection as tvd
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    if zero_training:
        backbone = "resnet50_fpn"
    state = (
        _pretrained_state(backbone, zero_training)
        if (norm is None and (pretrained or zero_training))
        else None
    )
    if norm is None:
        norm = "frozen_bn" if state is not None else "group_norm"
    body = _fpn_body(backbone, norm)
    sizes = {"min_size": image_size, "max_size": max_image_size}
    if backbone == "resnet50_fpn" and norm == "frozen_bn":
        # torchvision's own layout, so the COCO weights load unchanged
        model = tvd.MaskRCNN(body, num_classes=91, **sizes)
        if state is not None:
            model.load_state_dict(state)
        if not zero_training:
            rep = model.roi_heads.box_head.fc7.out_features
            model.roi_heads.box_predictor = FastRCNNPredictor(rep, num_classes + 1)
            model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, num_classes + 1)
        model.thingmask_norm, model.thingmask_mask_size = norm, 28
        return model

    kw: dict[str, Any] = {}
    ch = body.out_channels
    sampling = 2
    if mask_size is None:
        mask_size = _TINY_MASK_SIZE if backbone == "tiny_fpn" else 28
    if mask_size not in (28, 56):
        raise ValueError(f"mask_size: got {mask_size}; expected 28 or 56")
    if backbone == "tiny_fpn":
        # Small images make RoI bins about one feature pixel: one sample per bin is enough, and
        # RoIAlign's backward dominates CPU training time otherwise.
        sampling = 1
        rep, mask_layers = 256, (64, 64, 64, 64)
        # small images, few objects: fewer proposals and sampled RoIs keep CPU steps short
        kw = {
            "rpn_pre_nms_top_n_train": 600,
            "rpn_post_nms_top_n_train": 300,
            "rpn_pre_nms_top_n_test": 300,
            "rpn_post_nms_top_n_test": 100,
            "box_batch_size_per_image": _TINY_ROI_BATCH,
            "box_detections_per_img": 50,
        }
    else:
        rep, mask_layers = 1024, (256, 256, 256, 256)
    with torch.no_grad():  # learn the pyramid's level names rather than hard-code them
        levels = [k for k in body.eval()(torch.zeros(1, 3, 64, 64)) if k != "pool"]
    body.train()
    n_maps = len(levels) + 1  # + the max-pooled extra level
    anchors = AnchorGenerator(_anchor_sizes(image_size, n_maps), ((0.5, 1.0, 2.0),) * n_maps)
    model = tvd.MaskRCNN(
        body,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(ch, anchors.num_anchors_per_location()[0]),
        box_roi_pool=MultiScaleRoIAlign(levels, 7, sampling),
        box_head=TwoMLPHead(ch * 49, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes + 1),
        mask_roi_pool=MultiScaleRoIAlign(levels, 14, sampling),
        mask_head=MaskRCNNHeads(ch, list(mask_layers), 1, norm_layer=_group_norm),
        mask_predictor=(
            _fine_mask_predictor(mask_layers[-1], num_classes + 1)
            if mask_size == 56
            else MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes + 1)
        ),
        **sizes,
        **kw,
    )
    if state is not None:
        missing = model.load_state_dict(state, strict=False).missing_keys
        loaded = [k for k in state if k not in missing]
        log.info("loaded %d pretrained backbone tensors", len(loaded))
    model.thingmask_norm, model.thingmask_mask_size = norm, mask_size
    return model


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
class CocoInstances:
    """Images + instance masks of one COCO json (prepared layout), labels 1..K by class name.

    ``load(i)`` → ``(image_bgr (H, W, 3) uint8, masks (N, H, W) bool, labels (N,) int64)``.
    Crowd annotations (``iscrowd=1``) are skipped: Mask R-CNN trains on single instances.
    """

    def __init__(self, json_path: Path, image_root: Path, class_names: Sequence[str]) -> None:
        data = load_coco_json(json_path)
        self.json_path, self.image_root = Path(json_path), Path(image_root)
        id_to_name = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        unknown = sorted(set(id_to_name.values()) - set(class_names))
        if unknown:
            raise DatasetError(
                f"{json_path}: categories {unknown} are not among the classes {list(class_names)}"
            )
        self.id_to_label = {cid: list(class_names).index(n) + 1 for cid, n in id_to_name.items()}
        self.images = list(data["images"])
        self.anns: dict[int, list[dict]] = {int(im["id"]): [] for im in self.images}
        crowd = 0
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                crowd += 1
                continue
            self.anns.setdefault(int(ann["image_id"]), []).append(ann)
        if crowd:
            log.warning(
                "%s: %d crowd annotations (iscrowd=1) are not used for training", json_path, crowd
            )

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, index: int) -> np.ndarray:
        import cv2

        path = self.image_root / self.images[index]["file_name"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(
                f"{self.json_path}: image {path} is missing or unreadable. "
                "Check file_name against the images/ folder."
            )
        return image

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from thingmask.datasets.coco import annotation_to_mask

        info = self.images[index]
        image = self.read_image(index)
        h, w = image.shape[:2]
        anns = self.anns.get(int(info["id"]), [])
        masks = (
            np.stack([annotation_to_mask(a, h, w) for a in anns])
            if anns
            else np.zeros((0, h, w), bool)
        )
        labels = np.asarray([self.id_to_label[int(a["category_id"])] for a in anns], np.int64)
        return image, masks, labels


def _boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


class TrainSamples:
    """Sample ``p`` of the whole run (p = step * batch + j), augmented; deterministic in p.

    Image order is a per-epoch permutation seeded by (seed, epoch); augmentation randomness is
    seeded by (seed, p). Resuming at step k therefore sees exactly the samples an uninterrupted
    run would, whatever the number of loader workers.
    """

    def __init__(
        self,
        data: CocoInstances,
        augmentations: Sequence[Any],
        seed: int,
        total: int,
        start: int = 0,
    ) -> None:
        from thingmask.augment import parse_augmentations

        self.data, self.seed, self.total, self.start = data, seed, total, start
        self.specs = parse_augmentations(augmentations)
        self._perm: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.total - self.start

    def index_of(self, p: int) -> int:
        n = len(self.data)
        epoch = p // n
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
        return int(self._perm[epoch][p % n])

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        import torch

        from thingmask.augment import apply_numpy

        p = self.start + i
        image, masks, labels = self.data.load(self.index_of(p))
        image, masks = apply_numpy(
            self.specs, image, masks, np.random.default_rng([self.seed, 1, p])
        )
        keep = masks.any(axis=(1, 2))  # instances cropped/rotated away vanish
        masks, labels = masks[keep], labels[keep]
        rgb = np.ascontiguousarray(image[..., ::-1])
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
        target = {
            "boxes": torch.from_numpy(_boxes_from_masks(masks)).reshape(-1, 4),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
        }
        return tensor, target


def _collate(batch: list) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def _lr_factor(iterations: int) -> Any:
    warmup = max(1, min(100, iterations // 10))

    def factor(step: int) -> float:  # linear warm-up, then cosine decay to 5 %
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        progress = min(1.0, (step - warmup) / max(1, iterations - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _make_optimizer(config: Any, params: list) -> Any:
    import torch

    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-4)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=0.9, weight_decay=1e-4)


def _model_meta(config: Any, class_names: Sequence[str], model: Any) -> dict[str, Any]:
    return {
        "engine": ENGINE,
        "class_names": list(class_names),
        "backbone": config.backbone,
        "norm": model.thingmask_norm,
        "mask_size": model.thingmask_mask_size,
        "optimizer": config.optimizer,
        "image_size": config.image_size,
        "max_image_size": config.max_image_size,
        "pretrained": config.pretrained,
        "iterations": config.iterations,
        "weights": "model_final.pth",
    }


def _resume_checkpoint(config: Any, resume_from: str | Path | None) -> Path | None:
    if resume_from is not None:
        path = Path(resume_from)
        if not path.is_file():
            raise FileNotFoundError(
                f"resume_from: {path} does not exist. Pass a checkpoint file "
                "(run folder/checkpoints/model_NNNNNNN.pth) or None."
            )
        return path
    if not config.resume:
        return None
    folders = sorted(Path(config.output_dir).glob(f"{config.run_name}-*/checkpoints"))
    return find_latest_checkpoint(folders)


def train(
    config: Any,
    dataset: PreparedDataset,
    run_dir: str | Path,
    hooks: Iterable[TrainHook] = (),
    resume_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train Mask R-CNN on ``dataset`` into ``run_dir``; return the metrics dict.

    Resumes from ``resume_from`` (a checkpoint file), else — when ``config.resume`` — from the
    newest valid checkpoint in ``<output_dir>/<run_name>-*/checkpoints``: model, optimizer,
    scheduler and iteration are restored, and training continues to ``config.iterations``.
    """
    import torch
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    hooks = list(hooks)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    class_names = tuple(dataset.class_names)
    model = build_model(
        config.backbone,
        len(class_names),
        config.image_size,
        config.max_image_size,
        pretrained=config.pretrained,
    ).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(config, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config.iterations))
    meta = _model_meta(config, class_names, model)
    start, history = 0, []
    resume_path = _resume_checkpoint(config, resume_from)
    if resume_path is not None:
        state = load_checkpoint(resume_path)
        old = state.get("meta", {})
        keys = ("class_names", "backbone", "norm", "mask_size", "optimizer")
        differ = {k: (old.get(k), meta[k]) for k in keys if old.get(k) != meta[k]}
        same = not differ
        if not same and resume_from is not None:
            raise ValueError(
                f"resume_from: {resume_path} does not match this run: "
                + "; ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in differ.items())
                + ". Start a new run (resume=False) or pick a matching checkpoint."
            )
        if same:
            model.load_state_dict(state["model"])
            if "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])
            if "scheduler" in state:
                scheduler.load_state_dict(state["scheduler"])
            if "torch_rng" in state:  # RPN/RoI sampling draws from it: same draws as unbroken
                torch.set_rng_state(state["torch_rng"])
            start = int(state.get("iteration", checkpoint_iteration(resume_path)))
            history = list(state.get("history", []))
            log.info("resuming from %s at iteration %d", resume_path, start)
        else:
            log.warning(
                "not resuming from %s: it differs from this run (%s); training from scratch",
                resume_path,
                differ,
            )

    data = CocoInstances(dataset.train_json, dataset.image_root, class_names)
    total = config.iterations * config.batch_size
    samples = TrainSamples(
        data,
        config.augmentations,
        config.seed,
        total,
        start=min(start, config.iterations) * config.batch_size,
    )
    # Own generator: the loader would otherwise draw its base seed from the global RNG, whose
    # state a resumed run restores from the checkpoint.
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.num_workers,
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(config.seed),
    )
    log.info(
        "training %s Mask R-CNN (%s) on %d images, classes %s, device %s, iterations %d..%d",
        ENGINE,
        config.backbone,
        len(data),
        list(class_names),
        device,
        start,
        config.iterations,
    )
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(
        total=config.iterations,
        initial=start,
        desc="train",
        unit="it",
        disable=start >= config.iterations,
    )
    iteration = start
    for images, targets in loader:
        iteration += 1
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at iteration {iteration} (loss {float(loss)}). Lower "
                f"learning_rate (now {config.learning_rate}) or resume from an earlier "
                "checkpoint."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, _GRAD_CLIP)
        optimizer.step()
        scheduler.step()
        scalars = {k: float(v.detach()) for k, v in loss_dict.items()}
        scalars["loss"] = float(loss.detach())
        history.append({"iteration": iteration, "lr": optimizer.param_groups[0]["lr"], **scalars})
        bar.update(1)
        bar.set_postfix(loss=f"{scalars['loss']:.3f}")
        if iteration % 20 == 0 or iteration == config.iterations:
            log.info(
                "iter %d/%d loss %.4f (%s)",
                iteration,
                config.iterations,
                scalars["loss"],
                ", ".join(f"{k} {v:.3f}" for k, v in scalars.items() if k != "loss"),
            )
        for hook in hooks:
            hook.after_step(iteration, scalars)
        if iteration % config.checkpoint_period == 0 or iteration == config.iterations:
            path = save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "iteration": iteration,
                    "meta": meta,
                    "history": history,
                    "torch_rng": torch.get_rng_state(),
                },
                ckpt_dir / f"model_{iteration:07d}.pth",
            )
            for hook in hooks:
                hook.after_checkpoint(path, iteration)
    bar.close()
    wall = time.perf_counter() - t0
    meta["mask_threshold"], calibration = calibrate_mask_threshold(
        model, dataset, device, config.score_threshold
    )

    save_checkpoint(
        {"model": model.state_dict(), "iteration": iteration, "meta": meta},
        run_dir / "model_final.pth",
    )
    atomic_write_json(run_dir / "model_meta.json", meta)
    metrics = {
        "engine": ENGINE,
        "backbone": config.backbone,
        "device": str(device),
        "start_iteration": start,
        "iterations": iteration,
        "train_images": len(data),
        "batch_size": config.batch_size,
        "wall_time_s": round(wall, 2),
        "seconds_per_iteration": round(wall / max(1, iteration - start), 4),
        "final_loss": history[-1]["loss"] if history else None,
        "mask_threshold": meta["mask_threshold"],
        "mask_threshold_val_iou": calibration,
        "loss_history": history,
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    if history:
        save_loss_curve(history, run_dir / "loss_curve.png")
    for hook in hooks:
        hook.after_train(run_dir)
    log.info("trained %d iterations in %.1f s; model in %s", iteration - start, wall, run_dir)
    return metrics


MASK_THRESHOLDS = (0.35, 0.4, 0.45, 0.5, 0.55)  # candidates for calibrate_mask_threshold


def calibrate_mask_threshold(
    model: Any, dataset: PreparedDataset, device: Any, score_threshold: float
) -> tuple[float, dict[str, float]]:
    """The mask-probability threshold that best reproduces the validation split's masks.

    Small objects' thin parts (tails, ears, legs) come out of the 28x28 mask head as soft
    probabilities, often just under 0.5. Per candidate in :data:`MASK_THRESHOLDS`, the mean IoU
    between the union of all predicted masks (score >= ``score_threshold``) and the union of all
    ground-truth masks of each validation image is measured; the best wins, 0.5 on ties (within
    0.002) or without validation images. Uses the validation split only, never test videos.

    Returns:
        ``(threshold, {str(candidate): mean IoU})``.
    """
    import torch

    from thingmask.metrics import foreground_iou

    data = CocoInstances(dataset.val_json, dataset.image_root, dataset.class_names)
    if not len(data):
        return 0.5, {}
    was_training = model.training
    model.eval()
    totals = dict.fromkeys(MASK_THRESHOLDS, 0.0)
    with torch.inference_mode():
        for i in range(len(data)):
            image, masks, _ = data.load(i)
            gt = masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], bool)
            rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1]))
            out = model([rgb.permute(2, 0, 1).to(device).float() / 255])[0]
            probs = out["masks"][out["scores"] >= score_threshold, 0].cpu().numpy()
            for t in MASK_THRESHOLDS:
                pred = (probs > t).any(axis=0) if len(probs) else np.zeros_like(gt)
                totals[t] += foreground_iou(pred, gt)
    model.train(was_training)
    means = {t: v / len(data) for t, v in totals.items()}
    best = max(MASK_THRESHOLDS, key=lambda t: means[t])
    if means[best] - means[0.5] < 0.002:
        best = 0.5
    log.info(
        "mask threshold %.2f (validation foreground IoU %s)",
        best,
        ", ".join(f"{t}: {v:.3f}" for t, v in means.items()),
    )
    return best, {str(t): round(v, 4) for t, v in means.items()}


def save_loss_curve(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Plot the total and component losses per iteration (moving average) to a PNG."""
    from matplotlib.figure import Figure

    its = np.asarray([h["iteration"] for h in history])
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    keys = ["loss", *sorted(k for k in history[0] if k.startswith("loss_"))]
    k = max(1, len(history) // 50)
    for key in keys:
        vals = np.asarray([h.get(key, np.nan) for h in history], float)
        smooth = np.convolve(vals, np.ones(k) / k, mode="valid")
        ax.plot(its[k - 1 :], smooth, label=key, linewidth=2.0 if key == "loss" else 1.0)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"loss (moving average of {k})")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# inference
# ----------------------------------------------------------------------------------------------
class TorchvisionPredictor:
    """Callable: BGR uint8 ``(H, W, 3)`` image → :class:`Detections` (class names, not ids).

    Masks are the model's mask probabilities above ``mask_threshold`` (0.5, or the value
    calibrated on the validation split by :func:`train`); instances scoring below
    ``score_threshold`` are dropped. :meth:`predict_batch` runs several frames in one forward.
    """

    def __init__(
        self,
        model: Any,
        label_names: Sequence[str],
        device: Any,
        score_threshold: float,
        mask_threshold: float = 0.5,
    ) -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self._label_names = list(label_names)  # index = torchvision label ("" = not a class)
        self.class_names = tuple(n for n in label_names if n)

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        return self.predict_batch([image_bgr])[0]

    def predict_batch(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        """Detections for each ``(H, W, 3)`` uint8 BGR image (sizes may differ)."""
        import torch

        tensors = []
        for i, img in enumerate(images_bgr):
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(
                    f"predictor: image {i} must be an (H, W, 3) BGR array, got "
                    f"{getattr(img, 'shape', type(img).__name__)}"
                )
            if img.dtype != np.uint8:
                raise TypeError(f"predictor: image {i} must be uint8 (0..255), got {img.dtype}")
            rgb = np.ascontiguousarray(img[..., ::-1])
            tensors.append(torch.from_numpy(rgb).permute(2, 0, 1).to(self.device).float() / 255)
        with torch.inference_mode():
            outputs = self.model(tensors) if tensors else []
        return [
            self._to_detections(o, img.shape[0], img.shape[1])
            for o, img in zip(outputs, images_bgr, strict=True)
        ]

    def _to_detections(self, out: dict[str, Any], h: int, w: int) -> Detections:
        scores = out["scores"].float().cpu().numpy()
        labels = out["labels"].cpu().numpy()
        keep = scores >= self.score_threshold
        keep &= np.array(
            [0 < lab < len(self._label_names) and bool(self._label_names[lab]) for lab in labels],
            bool,
        ).reshape(-1)
        if not keep.any():
            return Detections.empty(h, w)
        idx = np.nonzero(keep)[0]
        masks = (out["masks"][idx, 0] > self.mask_threshold).cpu().numpy()
        return Detections(
            masks=masks,
            boxes=out["boxes"][idx].float().cpu().numpy(),
            class_names=np.asarray([self._label_names[labels[i]] for i in idx], object),
            scores=scores[idx],
        )


def _coco_label_names() -> list[str]:
    """torchvision's 91 COCO labels → names; background and the unused "N/A" ids map to ""."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    cats = MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    names = ["" if c in ("__background__", "N/A") else c for c in cats]
    if [n for n in names if n] != list(COCO_CLASSES):
        log.warning("torchvision's COCO category list differs from thingmask's COCO_CLASSES")
    return names


def _latest_run(config: Any) -> Path:
    runs = sorted(
        (p.parent for p in Path(config.output_dir).glob(f"{config.run_name}-*/model_meta.json")),
        key=lambda p: p.stat().st_mtime,
    )
    if not runs:
        raise FileNotFoundError(
            f"no trained model found in {config.output_dir}/{config.run_name}-*/. Train one "
            "first (`thingmask train` or the notebook's section 4), pass the run folder, or set "
            "zero_training=True to use a COCO-pretrained model."
        )
    return runs[-1]


def load_predictor(
    config: Any, run_dir: str | Path | None = None, score_threshold: float | None = None
) -> TorchvisionPredictor:
    """A predictor for a trained run folder, or for the COCO model when ``run_dir`` is None and
    ``config.zero_training`` is set. ``run_dir=None`` otherwise means the newest run of
    ``config.run_name``. ``score_threshold`` defaults to ``config.score_threshold``."""
    import torch

    device = resolve_device(config.device)
    threshold = config.score_threshold if score_threshold is None else score_threshold
    if run_dir is None and config.zero_training:
        if config.image_size < 480:
            log.warning(
                "zero_training with image_size=%d: COCO models see 800 px images in "
                "training; set image_size=800, max_image_size=1333 for better masks",
                config.image_size,
            )
        model = build_model(
            "resnet50_fpn", 90, config.image_size, config.max_image_size, zero_training=True
        )
        return TorchvisionPredictor(model, _coco_label_names(), device, threshold)
    run_dir = _latest_run(config) if run_dir is None else Path(run_dir)
    meta = read_model_meta(run_dir)
    if meta.get("engine") != ENGINE:
        raise ValueError(
            f"{run_dir}: trained with engine {meta.get('engine')!r}; load it with "
            f"engine={meta.get('engine')!r}"
        )
    class_names = list(meta["class_names"])
    model = build_model(
        meta["backbone"],
        len(class_names),
        int(meta["image_size"]),
        int(meta["max_image_size"]),
        norm=meta.get("norm", "group_norm"),
        mask_size=int(meta.get("mask_size", 28)),
    )
    state = torch.load(
        run_dir / meta.get("weights", "model_final.pth"), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state.get("model", state))
    return TorchvisionPredictor(
        model,
        ["", *class_names],
        device,
        threshold,
        mask_threshold=float(meta.get("mask_threshold", 0.5)),
    )


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
def evaluate(
    config: Any, dataset: PreparedDataset, run_dir: str | Path, batch_size: int = 4
) -> dict[str, Any]:
    """COCO box + mask AP of the run's model on the validation split.

    Detections down to score 0.05 count (AP integrates over confidence); masks use the run's
    calibrated ``mask_threshold`` (chosen on this same split, so mask AP is slightly optimistic).

    Writes ``run_dir/eval.json`` and ``run_dir/eval_ap.png``; returns the metrics
    (see :func:`thingmask.evaluation.coco_evaluate`).
    """
    from tqdm.auto import tqdm

    from thingmask.evaluation import coco_evaluate, save_ap_plot

    run_dir = Path(run_dir)
    model_dir: Path | None = run_dir
    if config.zero_training and not (run_dir / "model_meta.json").is_file():
        model_dir = None  # no trained model: score the COCO model (classes matched by name)
    predictor = load_predictor(config, model_dir, score_threshold=EVAL_SCORE_THRESHOLD)
    data = CocoInstances(dataset.val_json, dataset.image_root, dataset.class_names)
    predictions: dict[int, Detections] = {}
    for start in tqdm(range(0, len(data), batch_size), desc="evaluate", unit="batch"):
        idx = list(range(start, min(len(data), start + batch_size)))
        images = [data.read_image(i) for i in idx]
        for i, dets in zip(idx, predictor.predict_batch(images), strict=True):
            predictions[int(data.images[i]["id"])] = dets
    metrics = coco_evaluate(dataset.val_json, predictions, dataset.class_names)
    atomic_write_json(run_dir / "eval.json", metrics)
    save_ap_plot(metrics, run_dir / "eval_ap.png")
    log.info("validation AP: box %.1f, mask %.1f", metrics["bbox"]["AP"], metrics["segm"]["AP"])
    return metrics
