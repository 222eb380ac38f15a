# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     provenance: []
#     toc_visible: true
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # thingmask — keep only the animals you choose
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/thingmask/blob/main/notebooks/thingmask.ipynb)
# ← replace `OWNER` in this link with the GitHub account that holds your copy of the repository
# (there is no public copy yet). In Colab, also set `thingmask_source` in section 1: it says
# where the set-up installs the package from (your fork, or the repository uploaded to Drive).
#
# This notebook takes a video of animals in front of a moving background (leaves, water, other
# animals, a panning camera) and gives back **only the animals you choose**, cut out onto a blank
# canvas, plus their masks and positions as data. It trains Mask R-CNN on your annotated frames,
# with torchvision (pip, CPU/GPU/Apple) or detectron2 (GPU).
#
# Each section shows the core of its step in a short cell you can read, change and copy
# (registration, `MyTrainer`, the class filter, the cut-out, the frame loop), then hands the
# heavy lifting to the `thingmask` package — the same code the `thingmask` command line runs.
# Set the global variables, press **Runtime → Run all** and walk away; it also runs on a laptop
# and headless (`make demo` executes it with papermill on `configs/demo.yaml`).
#
# | § | section | you look at |
# |---|---|---|
# | 1 | global variables: the only cell you must edit | |
# | 2 | set-up: install (Colab), the machine, the settings | GPU or not |
# | 3 | dataset: import, validate, split, register | samples, class counts |
# | 4 | training: `MyTrainer` with your augmentations, resumable | loss curve |
# | 5 | evaluation: box and mask AP per class | AP bar plot |
# | 6 | inference: the display-things filter | before / after |
# | 7 | cut-out: `get_masked_image` on one frame | frame, mask, cut-out |
# | 8 | video: the frame loop, then the full job | the cut-out video |
# | 9 | save to Google Drive, summary, walk away | where everything is |

# %% [markdown]
# ## 1 · Global variables
#
# Every setting of a run lives here, as plain literals (no code, no derived values): papermill
# replaces them (the cell carries the `parameters` tag — keep this cell as it is, Colab cannot
# re-add a lost tag), and you see at a glance what a run did. Section 2 turns them into a
# validated, frozen `Config`: a wrong type, an unknown canvas or a display thing that is not a
# class of the dataset stops the run at once with one message naming the setting and the fix —
# not after an hour of training.
#
# *Class names, never ids*: `display_things` lists names from your dataset (or from COCO's 80
# classes with `zero_training = True`), any number, in any order.

# %% tags=["parameters"]
# --- set-up: where Colab installs thingmask from (section 2); not used elsewhere ---
# Anything pip installs: your fork "git+https://github.com/<you>/thingmask@main", the repository
# uploaded to Drive "/content/drive/MyDrive/thingmask-src", or a wheel file (.whl).
thingmask_source = "git+https://github.com/OWNER/thingmask@main"  # OWNER: yours (see above)
# --- run ---
run_name = "demo"                      # run folder: outputs/<run_name>-<YYYYmmdd-HHMMSS>/
output_dir = "outputs"                 # where run folders go
run_dir = ""                           # empty: a new timestamped folder (thingmask demo sets it)
seed = 0                               # data generation, split and training seed
device = "auto"                        # auto | cpu | cuda | mps
# --- dataset ---
dataset_dir = "data/synthetic"         # prepared COCO: train.json, val.json, images/
generate_synthetic = True              # True: build the bundled synthetic dataset there
synthetic_train_images = 120           # synthetic dataset: training images
synthetic_val_images = 24              # synthetic dataset: validation images
synthetic_image_size = 160             # synthetic images are square, this many pixels
synthetic_video_frames = 48            # frames of the synthetic demo video
dataset_source = ""                    # your annotations to import (empty: none); data/README.md
dataset_format = "auto"                # auto | coco | labelme | via | cvat | roboflow | yolo
dataset_class_names = ""               # YOLO-seg without a class list: "cat,dog" or a data.yaml
val_fraction = 0.2                     # share of images for validation when not split yet
class_map = {}                         # rename/merge/drop classes: {"doggo": "dog", "junk": ""}
display_things = ["cat", "bird"]       # the classes to keep in the output (any number, any order)
one_label_per_animal = True            # one detection per animal: overlapping ones, best score wins
duplicate_iou = 0.5                    # mask IoU above which two detections are one animal
# --- model and training ---
engine = "torchvision"                 # torchvision (pip, CPU/CUDA/MPS) | detectron2 (GPU, Colab)
zero_training = False                  # True: COCO-pretrained model as is, no training
pretrained = False                     # start from COCO weights (needs internet once)
backbone = "tiny_fpn"                  # resnet50_fpn | resnet18_fpn | mobilenet_v3_fpn | tiny_fpn
d2_base_config = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"  # detectron2 model zoo
augmentations = ["flip_horizontal", "brightness", "contrast"]  # names, or {"name": ..., params}
iterations = 600                       # optimizer steps
batch_size = 4                         # images per step
learning_rate = 0.01                   # base learning rate
optimizer = "sgd"                      # sgd | adamw (torchvision engine; adamw suits from-scratch)
image_size = 160                       # shortest image side seen by the model (pixels)
max_image_size = 256                   # cap on the longest side (pixels)
checkpoint_period = 200                # checkpoint every N steps (resume after a disconnect)
resume = True                          # continue from the newest valid checkpoint of run_name
score_threshold = 0.5                  # drop detections below this confidence
test_time_flip = False                 # masks averaged with the mirror image's (torchvision)
inference_batch = 4                    # frames per forward pass in the video stage
num_workers = 0                        # data-loader worker processes (0: in the main process)
threads = "auto"                       # cores to use: "auto" (fits the machine and its load) or 2
amp = False                            # mixed precision on a CUDA GPU (faster training); CPU: off
# --- video and outputs ---
video_input = ""                       # file, folder or glob (empty: the synthetic demo video)
video_output = ""                      # empty: <run folder>/<video name>_cutout.<format>
video_format = "mp4"                   # mp4 (H.264) | webm (VP9+alpha) | mov (ProRes 4444) | png
canvas = "black"                       # black | white | color | blur | grey | image | transparent
canvas_color = [0, 0, 0]               # RGB for the "color" canvas
canvas_image = ""                      # background picture for the "image" canvas
keep_audio = True                      # carry the source's sound into the output
tracking = False                       # stable ids per animal across frames
track_max_missed = 5                   # frames an animal may go unseen and keep its id
temporal_smoothing = False             # steadier masks, fills 1-frame dropouts (turns tracking on)
smoothing_window = 1                   # frames blended on each side (also the frames of delay)
edge_refinement = False                # snap mask edges to the image (guided filter)
export_csv = True                      # one CSV row per animal per frame
export_rle = False                     # COCO-RLE masks per frame (JSON lines)
export_mask_video = False              # black-and-white mask video
max_bad_frames = 0.05                  # share of undecodable frames tolerated before an error
per_instance_clips = False             # one cropped clip per tracked animal
# --- Colab ---
save_to_drive = False                  # copy the run folder to Google Drive (Colab only)
drive_folder = "MyDrive/thingmask"     # folder inside your Drive
drive_checkpoint_period = 0            # copy checkpoints to Drive every N steps (0: off)
terminate_runtime = False              # release the runtime after a verified save

# %% [markdown]
# ## 2 · Set-up
#
# **The problem.** A fresh Colab runtime has torch, numpy and OpenCV, but not thingmask. Three
# pitfalls wait here:
# - *Colab's torch is built for its GPU driver.* Installing a package whose requirements pull
#   another torch replaces it and breaks CUDA. So thingmask is installed with `--no-deps`, and
#   only what Colab lacks is added, with torch, torchvision and numpy pinned where they are.
# - *`pip install -e .` does not help a running kernel.* An editable install of a `src/` layout
#   registers an import hook that Python reads only at start-up: `import thingmask` fails until a
#   restart, and run-all stops. The cell installs a normal (non-editable) copy into
#   site-packages, which is already on the path, and tells the import system to look again.
# - *The source must be reachable.* `thingmask_source` (section 1) is your fork's URL or a Drive
#   folder; when pip cannot get it, the cell stops and says how to fix it.
#
# Outside Colab the cell does nothing: `make demo` / `make test` installed everything in `.venv`.

# %%
# Colab only: install thingmask from `thingmask_source` into THIS kernel (no restart needed).
import importlib, importlib.util, os, shutil, subprocess, sys, tempfile

if "google.colab" in sys.modules and importlib.util.find_spec("thingmask") is None:
    if "OWNER" in thingmask_source:  # the placeholder: nothing to install from yet
        raise RuntimeError("thingmask_source still names OWNER, a placeholder.\nSet it in section "
                           "1 to git+https://github.com/<you>/thingmask@main or a Drive folder.")
    if thingmask_source.startswith("/content/drive/"):  # your copy on Drive: mount Drive first
        from google.colab import drive
        drive.mount("/content/drive")
    tmp = tempfile.mkdtemp()  # a folder is built from a copy (pip writes build files into it)
    source = thingmask_source if not os.path.isdir(thingmask_source) else shutil.copytree(
        thingmask_source, tmp + "/copy", ignore=shutil.ignore_patterns(".*", "data", "outputs"))
    pip = subprocess.run(  # not -e: see above; --no-deps: Colab's torch stays
        [sys.executable, "-m", "pip", "install", "-q", "--no-color", "--no-deps",
         "--no-build-isolation", source],
        capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    shutil.rmtree(tmp, ignore_errors=True)  # the build copy
    if pip.returncode != 0:
        raise RuntimeError(f"could not install thingmask from {thingmask_source!r}:\n"
                           f"{pip.stderr.strip()[-1500:]}\nFix: set thingmask_source in section 1 "
                           "to a public fork (git+https://...) or the repository folder on Drive.")
    importlib.invalidate_caches()  # the running kernel now finds the new package
    from thingmask.colab.install import install_missing
    print(install_missing())  # what Colab lacks; torch, torchvision and numpy are never touched

# %%
# detectron2 engine (optional): built from source against Colab's torch (~5 min, once per runtime)
import importlib, importlib.util, subprocess, sys

if (
    engine == "detectron2"
    and "google.colab" in sys.modules
    and importlib.util.find_spec("detectron2") is None
):
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "setuptools<81", "wheel", "ninja"], check=True)  # <81: pkg_resources
    subprocess.run(  # --no-build-isolation: compile against the torch already installed
        [*pip, "--no-build-isolation", "git+https://github.com/facebookresearch/detectron2.git"
         "@02b5c4e295e990042a714712c21dc79b731e8833"],
        check=False,
    )
    importlib.invalidate_caches()  # the settings cell falls back to torchvision if it failed

# %% [markdown]
# The next cell checks the machine and validates the settings. For a GPU in Colab:
# *Runtime → Change runtime type → T4 GPU → Save*, then *Runtime → Run all*. With
# `save_to_drive = True` Colab asks for Drive access right here, at the start — not hours later
# while you are away.

# %%
import logging
import time

import numpy as np
from IPython.display import HTML, Image, display

from thingmask import colab, pipeline

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
started = time.time()
config = pipeline.config_from_namespace(globals())  # section 1's variables, validated
print(colab.describe_environment(config))  # from here on, cells read config.<setting>
drive_root = colab.ensure_drive(config)  # asks for Drive access now, not hours later

# %% [markdown]
# ## 3 · Dataset
#
# The model learns from a **COCO instance-segmentation** dataset: `train.json`, `val.json` and an
# `images/` folder. With `generate_synthetic = True` thingmask draws one: cats and birds (the
# animals) and leaves (a distractor the output leaves out) on swaying, rippling, panning
# backgrounds, plus a short test video with its ground-truth masks.
#
# For your own footage, annotate frames with labelme, CVAT, VIA or Roboflow, set
# `dataset_source` to the export and `generate_synthetic = False`. Exports have traps that
# `prepare` catches: **CVAT marks every mask `iscrowd=1`**, and detectron2 silently skips crowd
# annotations in training (a model that learns nothing, without an error); Roboflow adds a parent
# class with id 0; polygons with fewer than 3 points; images rotated by EXIF. **Errors** stop the
# run with the fix, **warnings** are reported and the run goes on. Walk-through: `data/README.md`.

# %%
dataset = pipeline.prepare_data(config)  # generate, or import + validate + split
print(f"{dataset.root}: classes {list(dataset.class_names)}")

# %% [markdown]
# ### Registration: telling the engine where the data is
#
# detectron2 finds datasets by name in two global catalogs: `DatasetCatalog` (name → a function
# returning the records) and `MetadataCatalog` (name → class names and other facts). Pitfall:
# `DatasetCatalog.register` **refuses a name that is already registered**, so re-running a
# naive registration cell raises — this one removes the old entry first. torchvision needs no
# catalog: a dataset object yields one image and its target at a time. Either way the class
# order of the list printed below is the order of the model's outputs.

# %%
from thingmask.engines import get_engine

registration = get_engine(config.engine).register_dataset(dataset)  # safe to re-run
print(registration)  # class names in the model's output order; ids never leave the engine
if registration.catalog:  # detectron2: the catalogs it reads the dataset from, by name
    from detectron2.data import DatasetCatalog, MetadataCatalog

    train_name, val_name = registration.catalog
    records = DatasetCatalog.get(train_name)  # dicts: file_name, height, width, annotations
    print(f"{train_name}: {len(records)} records, {MetadataCatalog.get(train_name).thing_classes}")

# %% [markdown]
# A look at the samples: masks and class names drawn on a few training images, and how many
# instances each class has. A class with far fewer instances than the others is the first thing
# to fix, by annotating more.

# %%
preview = pipeline.preview_dataset(config, dataset, show=True)
print(preview.table)

# %% [markdown]
# ## 4 · Training
#
# Both engines train with a trainer class you can see and change: the package supplies a safe
# base (atomic checkpoints, resume, copies to Drive), and the cells below subclass it to build
# the training data loader from the `augmentations` of section 1.
#
# Pitfalls this avoids:
# - **Frozen BatchNorm from scratch.** detectron2's model-zoo configs freeze BatchNorm (its
#   statistics come from ImageNet). Training from random weights with frozen BatchNorm normalises
#   with numbers that were never learned; the loss stalls. Without `pretrained`, thingmask uses
#   GroupNorm and trains every stage.
# - **Colab disconnects.** Colab ends idle or long sessions and deletes the runtime's disk.
#   Checkpoints are written every `checkpoint_period` steps (atomically: a half-written file is
#   never taken for a checkpoint); with `drive_checkpoint_period > 0` they are also copied to
#   Drive, and a new runtime running this notebook with `resume = True` continues from the
#   newest valid one instead of starting over.

# %% [markdown]
# **`MyTrainer`, the class that trains.** For detectron2 it subclasses `SafeTrainer` (a
# `DefaultTrainer` with atomic checkpoints, safe loading and resume, the Drive hooks and COCO
# evaluation) and overrides one method, as detectron2's own projects do: `build_train_loader`,
# whose mapper resizes each image and then applies your augmentations. Change the list in
# section 1, or the method, to change what the model sees.

# %%
if config.engine == "detectron2":
    from detectron2.data import build_detection_train_loader

    from thingmask.engines.detectron2_engine.trainer import (
        SafeTrainer, recorded_augmentations, train_mapper)

    class MyTrainer(SafeTrainer):
        """SafeTrainer whose training data get `config.augmentations` (section 1)."""

        @classmethod
        def build_train_loader(cls, cfg):
            augs = recorded_augmentations(cfg)  # config.augmentations -> detectron2 Augmentations
            return build_detection_train_loader(cfg, mapper=train_mapper(cfg, augs))

    print("MyTrainer(SafeTrainer) with augmentations", list(config.augmentations))

# %% [markdown]
# The torchvision engine has the same shape: a `Trainer` class that reads top to bottom like
# torchvision's reference loop (`build_model`, `build_train_loader`, `build_optimizer`,
# `run_step`, `train`) with the same safe checkpoints, resume and hooks. Override any of them.

# %%
if config.engine == "torchvision":
    from thingmask.augment import parse_augmentations
    from thingmask.engines.torchvision_engine import Trainer, train_loader

    class MyTrainer(Trainer):
        """Trainer whose training batches get `config.augmentations` (section 1)."""

        def build_train_loader(self):
            augs = parse_augmentations(self.config.augmentations)  # names -> specs (images + masks)
            # start_iteration: a resumed run sees the batches an unbroken one would have seen
            return train_loader(
                self.config, self.dataset, augs, self.start_iteration, device=self.device
            )

    print("MyTrainer(Trainer) with augmentations", list(config.augmentations))

# %% [markdown]
# Training itself: a run folder, then `MyTrainer` through the engine (which sets up the model,
# resumes and writes `model_final.pth`, `model_meta.json` and the loss curve).

# %%
run_folder = pipeline.start_run(config, run_dir)  # run_dir (section 1) empty: a new folder
hooks, resume_from = colab.training_hooks(config, run_folder)  # Drive copies; where to resume
print(f"resuming from {resume_from}" if resume_from else "training from the start")
metrics = pipeline.train(
    config, dataset, run_folder, hooks=hooks, resume_from=resume_from, trainer=MyTrainer
)
if (run_folder / "loss_curve.png").is_file():
    display(Image(str(run_folder / "loss_curve.png")))

# %% [markdown]
# ## 5 · Evaluation
#
# COCO box and mask average precision on the validation split, overall and per class
# (`eval.json` and `eval_ap.png` in the run folder). AP50 above ~0.8 on the synthetic data means
# the cut-outs will look clean; a class far below the others needs more annotations.

# %%
ap = pipeline.evaluate(config, dataset, run_folder)
if (run_folder / "eval_ap.png").is_file():
    display(Image(str(run_folder / "eval_ap.png")))

# %% [markdown]
# ## 6 · Inference: the display-things filter
#
# The predictor takes one **BGR** image (OpenCV's order) and returns `Detections`: masks
# `(N, H, W)` bool, boxes, scores and **class names** (never ids: detectron2 counts classes from
# 0, torchvision reserves 0 for background; each engine converts at its boundary). The model
# finds every class it knows; keeping only the display things is one boolean index — any
# number of classes, in any order, and nothing else changes. Then, with `one_label_per_animal`,
# one label per animal: a model that knows look-alike classes (two fish species) may find one
# animal once per class; of detections whose masks overlap by more than `duplicate_iou`, the
# best-scoring one stays, so the CSV and the tracks count each animal once.

# %%
import cv2

from thingmask.datasets import load_coco_json
from thingmask.detections import keep, suppress_duplicates
from thingmask.visualize import draw_instances, save_grid

predictor = pipeline.load_predictor(config, run_folder)
first = load_coco_json(dataset.val_json)["images"][0]
image = cv2.imread(str(dataset.image_root / first["file_name"]))  # (H, W, 3) uint8 BGR
dets = predictor(image)  # every class the model knows
kept = keep(dets, config.display_things)  # the filter: dets[np.isin(dets.class_names, things)]
if config.one_label_per_animal:  # overlapping masks: the best-scoring one stays (config.keep)
    kept = suppress_duplicates(kept, config.duplicate_iou)
drawn = [  # image[..., ::-1]: BGR -> RGB for drawing
    draw_instances(image[..., ::-1], d.masks, d.class_names, predictor.class_names, d.scores)
    for d in (dets, kept)
]
titles = [f"all: {', '.join(dets.class_names)}", f"kept: {', '.join(kept.class_names)}"]
filter_figure = save_grid(drawn, run_folder / "filter.png", titles=titles, columns=2, show=True)

# %% [markdown]
# More validation images, display things only (`predictions.png` in the run folder):

# %%
grid = pipeline.predict_images(config, dataset, predictor, run_folder, show=True)

# %% [markdown]
# ## 7 · Cut-out: `get_masked_image` on one frame
#
# The cut-out keeps the pixels under the union of the kept masks and puts the `canvas` (black,
# white, a colour, blur, grey, a picture, or transparency) everywhere else. It returns a new
# image and never changes the frame it is given, so the same frame can be cut out onto several
# canvases. `transparent` gives BGRA, which only webm, mov and png can store.

# %%
from thingmask.cutout.composite import Canvas, get_masked_image
from thingmask.video import open_video

video_source = pipeline.video_sources(config)[0]  # the first video (the demo video by default)
with open_video(video_source) as reader:
    frame = next(reader.frames())  # .image is (H, W, 3) uint8 BGR, rotation applied
kept = config.keep(predictor(frame.image))
background = Canvas.from_config(config)  # config.canvas, canvas_color, canvas_image
cutout = get_masked_image(frame.image, kept, background)  # a new image; frame.image unchanged
mask = np.dstack([kept.union_mask()] * 3).astype(np.uint8) * 255
cutout_figure = save_grid(
    [frame.image[..., ::-1], mask, cutout[..., 2::-1]], run_folder / "cutout.png",
    titles=["frame", f"union mask of {len(kept)} kept", f"cut-out on {background.mode}"],
    columns=3, show=True)

# %% [markdown]
# ## 8 · Video
#
# The frame loop, written out for one video: decode a frame → predict → keep the display things
# → cut out → encode. The package's reader applies the video's rotation and keeps every frame's
# timestamp (phones record variable frame rates); its writer makes **H.264 MP4 that browsers
# play** — OpenCV's usual `mp4v` codec does not play in Chrome, Firefox or Colab — or a
# transparent WebM / ProRes / PNG sequence. One frame at a time, so memory stays flat however
# long the video is. This loop does the first `loop_frames` frames.

# %%
from itertools import islice

from thingmask.video import EXTENSIONS, VideoWriter

loop_frames = 300  # enough to see it work; the full job below does every frame
loop_output = run_folder / f"{video_source.stem}_loop{EXTENSIONS[config.video_format]}"
with open_video(video_source, max_bad_frames=config.max_bad_frames) as reader:
    info = reader.info  # size after rotation, frame rate, duration
    with VideoWriter(loop_output, info.width, info.height, info.rate, fmt=config.video_format,
                     alpha=background.has_alpha) as writer:
        for frame in islice(reader.frames(), loop_frames):
            kept = config.keep(predictor(frame.image))
            writer.write(get_masked_image(frame.image, kept, background), frame.time)
print(f"{writer.frames_written} frames → {loop_output}")
display(HTML(pipeline.preview_html(loop_output)))  # the video inline (when not too big)

# %% [markdown]
# **The full job** runs the same steps on every video of `video_input` (with tracking,
# smoothing and refinement off it gives the loop's frames exactly), plus what a real batch
# needs: the sound carried over; stable ids per animal (`tracking`), steadier masks
# (`temporal_smoothing`) and crisper edges (`edge_refinement`); CSV / RLE / mask-video exports
# and per-animal clips; decoding, batched inference and encoding overlapped; and **resume**:
# each finished video gets a small JSON marker written last, so re-running after a disconnect
# skips finished videos and redoes the unfinished one. On the synthetic video it also scores
# the cut-out against the ground truth (mean foreground IoU).

# %%
video = pipeline.cut_video(config, predictor, run_folder)
print(video)  # the videos written, frames, and on the demo video its scores
for path in video.videos[:3]:  # the first few of a batch
    display(HTML(pipeline.preview_html(path)))

# %% [markdown]
# ## 8b · Label more: the frames worth annotating, pre-labelled, and the ones the model gets wrong
#
# On your own footage the costly step is labels. The loop, as DeepLabCut and SLEAP users know
# it: **pick** diverse frames (k-means over small grey thumbnails: one frame per kind of scene,
# not one a second) → **pre-label** them with this run (masks → editable polygons, labelme JSON
# beside each frame) → **annotate**: correct them in labelme, or untick `prelabel_unreviewed`
# to accept one → **suggest**: the frames where the model probably errs (an animal missing
# for 1-3 frames, uncertain scores, jumping masks, broken tracks) → **re-prepare** and
# **retrain**. Pre-labels nobody reviewed never train: `prepare` leaves them out unless told
# to accept them (done here, since nobody annotates the synthetic data). The command line
# does the same: `thingmask frames`, `prelabel`, `suggest`, `prepare` (README).

# %%
from thingmask.labeling.frames import FrameOptions, write_frames
from thingmask.labeling.prelabel import write_prelabels

label_frames = 8  # frames per video per round (20 is a good start on real footage)
labels_dir = run_folder / "label-more"  # your labelme project: frames + pre-labels
n_pick = min(label_frames, max(1, info.frames // 2))  # a clip shorter than 16 frames: half
picked, _ = write_frames([video_source], labels_dir, FrameOptions(n=n_pick, seed=config.seed))
print("picked frames", [p.index for p in picked], "→", labels_dir)
# every class the model knows is pre-labelled: a frame trained on must label all its animals
pres, _, _ = write_prelabels(labels_dir, labels_dir, predictor, config, predictor.class_names,
                             all_classes=True, run=str(run_folder))
print(f"{sum(len(p.instances) for p in pres)} instances pre-labelled as polygons, e.g.",
      [name for name, _, _ in pres[0].instances])

# %% [markdown]
# **Annotate** (on your own data): open `labels_dir` in labelme (`labelme <folder> --nodata
# --labels <folder>/labels.txt`), go through the frames, correct the polygons, untick
# `prelabel_unreviewed` where a pre-label is right, save. Then let the model point at the
# frames it probably gets wrong; they are written beside the others, pre-labelled too, and
# `suggestions.csv` says which criteria fired on each.

# %%
from thingmask.labeling.suggest import write_suggestions

suggested, images = write_suggestions([video_source], labels_dir, predictor, config,
                                      label_frames, seed=config.seed)
write_prelabels(images, labels_dir, predictor, config, predictor.class_names,
                all_classes=True, run=str(run_folder))
for s in suggested:
    print(f"frame {s.index} ({s.time:.2f} s): {', '.join(s.criteria)}")

# %% [markdown]
# **Re-prepare and retrain.** `prepare` reads the labelme folder; into an existing prepared
# folder it is the next iteration (val frozen, new images to train; `labels.json` records each
# label's origin and iteration). The retraining here is short, to show the step: on real data
# train as long as section 4.

# %%
from thingmask.datasets.prepare import prepare_dataset

more = prepare_dataset(labels_dir, run_folder / "dataset-more", accept_prelabels=True)
print("label origins:", more.report.summary.get("origins"))
if more.ok:  # a barely trained model may find nothing to pre-label: then there is no dataset
    retrain_config = config.replace(
        dataset_dir=str(more.output), generate_synthetic=False,
        run_name=f"{config.run_name}_more", iterations=max(1, config.iterations // 4),
    )
    retrain_dir = pipeline.start_run(retrain_config)
    pipeline.train(retrain_config, more.dataset, retrain_dir, trainer=MyTrainer)
    retrain_ap = pipeline.evaluate(retrain_config, more.dataset, retrain_dir)
    print(f"retrained on {more.report.summary['images']} frames → {retrain_dir}",
          {k: retrain_ap.segm.get(k) for k in ("AP", "AP50")} if retrain_ap else None)
else:
    print(more.report.text())

# %% [markdown]
# ## 9 · Save to Google Drive, summary, walk away
#
# A Colab runtime and its disk disappear when the session ends. In Colab with
# `save_to_drive = True` the run folder (model, resolved config, metrics, plots, videos) is
# copied to `<drive_folder>/<run folder name>/`, and every file is read back and compared
# (size and SHA-256, and the model must load) before the save counts; `saved.json` is written
# last, so a Drive folder without it is incomplete. Earlier runs are never overwritten. A full
# Drive stops run-all here with a link to free space. Elsewhere this cell only says it skipped.
# Take results from Drive, not as browser downloads: those transfer only while no cell runs.

# %%
saved = colab.save_run_to_drive(config, run_folder)
print(saved or "not saved to Drive (save_to_drive=False or not in Colab)")

# %% [markdown]
# The summary says where everything is. With `terminate_runtime = True` the very last cell
# releases the Colab runtime, so no compute credits are spent idle — but only in Colab, after a
# verified save, with nothing failed, once Drive has finished uploading. A failing cell stops
# *Run all*, so this cell never runs after a failure; otherwise it leaves the runtime up and
# says why.

# %%
print(pipeline.summary(run_folder, started, **video.figures(),
                       mask_AP=ap.mask_ap if ap else None, drive=saved))

# %%
print(colab.finish(config, saved))
