"""Write notebooks/thingmask.ipynb from the cell list below (outputs stripped).

The notebook only orchestrates: each code cell is a few lines calling the package. Edit the
cells here, run ``python scripts/make_notebook.py``, and commit both files; a test checks the
committed notebook matches this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from thingmask.engines.detectron2_engine import colab_install_cell

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "thingmask.ipynb"
REPO_URL = "https://github.com/thingmask/thingmask"
COLAB_URL = "https://colab.research.google.com/github/thingmask/thingmask/blob/main/notebooks/thingmask.ipynb"

CELLS: list[tuple[str, str] | tuple[str, str, list[str]]] = [
    (
        "md",
        f"""# thingmask — keep only the animals you choose

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB_URL})

This notebook takes a video of animals in front of a moving background (leaves, water, other
animals, a panning camera) and gives back **only the animals you choose**, cut out onto a blank
canvas, plus their masks and positions as data.

It runs top to bottom with **Runtime → Run all**: set the global variables in the next cell,
press run-all and walk away. The same notebook runs in Colab, on a laptop (CPU or Apple MPS)
and headless (`make demo` executes it with papermill on `configs/demo.yaml`).

| section | what happens |
|---|---|
| 1 | global variables: the only cell you edit |
| 2 | set-up: install (Colab), check the machine, validate the settings |
| 3 | dataset: generate or import, validate, split, look at samples |
| 4 | training: Mask R-CNN (torchvision or detectron2 `MyTrainer`), resumable |
| 5 | evaluation: box and mask AP per class |
| 6 | inference on images: only the display things |
| 7 | video: frame-by-frame cut-out onto a blank canvas + per-animal data |
| 8 | save to Google Drive (timestamped, verified) |
| 9 | summary, then (opt-in) release the Colab runtime |""",
    ),
    (
        "md",
        """## 1 · Global variables

Every setting of the run lives here, as plain literals (no code, no derived values), so papermill
can replace them and so you can see at a glance what a run did. The next cell turns them into a
validated, frozen `Config`: a wrong type, an unknown canvas or a display thing that is not a class
of the dataset stops the run with one message naming the setting and the valid choices.

*Class names, never ids*: `display_things` lists names from your dataset (or from COCO's 80
classes with `zero_training = True`), in any order.""",
    ),
    (
        "code",
        """# --- run ---
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
dataset_source = ""                    # your annotations to import (empty: none); see data/README.md
dataset_format = "auto"                # auto | coco | labelme | via | cvat | roboflow | yolo
dataset_class_names = ""               # YOLO-seg without a class list: "cat,dog" or a data.yaml
val_fraction = 0.2                     # share of images for validation when not split yet
class_map = {}                         # rename/merge/drop classes, e.g. {"doggo": "dog", "junk": ""}
display_things = ["cat", "bird"]       # the classes to keep in the output (any number, any order)
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
inference_batch = 4                    # frames per forward pass in the video stage
num_workers = 0                        # data-loader worker processes (0: in the main process)
# --- video and outputs ---
video_input = ""                       # file, folder or glob (empty: the synthetic demo video)
video_output = ""                      # empty: <run folder>/<video name>_cutout.<format>
video_format = "mp4"                   # mp4 (H.264) | webm (VP9+alpha) | mov (ProRes 4444) | png
canvas = "black"                       # black | white | color | blur | grey | image | transparent
canvas_color = [0, 0, 0]               # RGB for the "color" canvas
canvas_image = ""                      # background picture for the "image" canvas
keep_audio = True                      # carry the source's sound into the output
tracking = False                       # stable ids per animal across frames
export_csv = True                      # one CSV row per animal per frame
export_rle = False                     # COCO-RLE masks per frame (JSON lines)
export_mask_video = False              # black-and-white mask video
max_bad_frames = 0.05                  # share of undecodable frames tolerated before an error
per_instance_clips = False             # one cropped clip per tracked animal
# --- Colab ---
save_to_drive = False                  # copy the run folder to Google Drive (Colab only)
drive_folder = "MyDrive/thingmask"     # folder inside your Drive
drive_checkpoint_period = 0            # copy checkpoints to Drive every N steps (0: off)
terminate_runtime = False              # release the runtime after a verified save""",
        ["parameters"],
    ),
    (
        "md",
        """## 2 · Set-up

In **Colab** the next cell clones thingmask and installs what Colab lacks, *without* touching
Colab's own torch. With `engine = "detectron2"` it also builds detectron2 from its git
repository at a pinned commit (about 5 minutes on a GPU runtime). Locally the cell does nothing:
`make demo` / `make test` already installed everything into `.venv`.

The cell after it says where the notebook runs and whether a GPU is attached. For a GPU in Colab:
*Runtime → Change runtime type → T4 GPU → Save*, then *Runtime → Run all*. With
`save_to_drive = True` Colab asks for Drive access right here, at the start, not hours later
while you are away.""",
    ),
    (
        "code",
        f"""import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("thingmask") is None:
    subprocess.run(["git", "clone", "-q", "{REPO_URL}", "/content/thingmask"], check=False)
    %cd /content/thingmask
    %pip install -q --no-deps -e .
    %pip install -q av pycocotools papermill""",
    ),
    ("code", colab_install_cell()),
    (
        "code",
        """import logging, time
from IPython.display import Image, Video, display
from thingmask import colab, environment, pipeline
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
started = time.time()
config = pipeline.config_from_namespace(globals())
print(environment.describe_environment(config))
drive_root = colab.ensure_drive(config)  # asks for Drive access now, not hours later""",
    ),
    (
        "md",
        """## 3 · Dataset

The model learns from a **COCO instance-segmentation** dataset: `train.json`, `val.json` and an
`images/` folder. With `generate_synthetic = True` thingmask draws one: cats and birds (the
animals) and leaves (a distractor the output leaves out) on swaying, rippling, panning
backgrounds, plus a short test video with its ground-truth masks.

For your own footage, annotate frames with labelme, CVAT, VIA or Roboflow, set `dataset_source`
to the export and `generate_synthetic = False`. `prepare` detects the format, converts it,
validates it (missing images, EXIF rotation, CVAT's all-crowd masks, Roboflow's extra parent
class, polygons with fewer than 3 points, …) and splits it so every class is in both splits.
**Errors** stop the run with the fix; **warnings** are reported and the run goes on. The
walk-through is in `data/README.md`.""",
    ),
    (
        "code",
        """dataset = pipeline.prepare_data(config)
print(f"{dataset.root}: classes {list(dataset.class_names)}")""",
    ),
    (
        "md",
        """### A look at the samples

Masks and class names drawn on a few training images, and how many instances each class has.
A class with far fewer instances than the others is the first thing to fix by annotating more.""",
    ),
    (
        "code",
        """preview = pipeline.preview_dataset(config, dataset, show=True)
print(preview.table)""",
    ),
    (
        "md",
        """## 4 · Training

`engine = "torchvision"` trains torchvision's Mask R-CNN (runs on CPU, CUDA and Apple MPS).
`engine = "detectron2"` registers the dataset with detectron2 (safe to re-run) and trains with
`MyTrainer`, a `DefaultTrainer` subclass whose data loader applies the `augmentations` listed in
section 1. Both engines take the classes from the dataset, write checkpoints every
`checkpoint_period` steps, and **resume** from the newest valid checkpoint of the same
`run_name` instead of starting over. Colab ends idle or long sessions: with
`drive_checkpoint_period > 0` each checkpoint is also copied to Drive (verified), and a new
runtime running this notebook continues from the newest valid one there; checkpoints cut short
by a disconnect are skipped.""",
    ),
    (
        "code",
        """run_dir = pipeline.start_run(config, run_dir)
hooks, resume_from = colab.training_hooks(config, run_dir)
print(f"resuming from {resume_from}" if resume_from else "starting fresh (or from a local checkpoint)")
metrics = pipeline.train(config, dataset, run_dir, hooks=hooks, resume_from=resume_from)
if (run_dir / "loss_curve.png").is_file():
    display(Image(str(run_dir / "loss_curve.png")))""",
    ),
    (
        "md",
        """## 5 · Evaluation

COCO box and mask average precision on the validation split, overall and per class
(`eval.json` and `eval_ap.png` in the run folder). AP50 above ~0.8 on the synthetic data means
the cut-outs will look clean.""",
    ),
    (
        "code",
        """ap = pipeline.evaluate(config, dataset, run_dir)
if (run_dir / "eval_ap.png").is_file():
    display(Image(str(run_dir / "eval_ap.png")))""",
    ),
    (
        "md",
        """## 6 · Inference on images — display things only

The trained model finds every class it knows; only the `display_things` are kept (a pure filter
on the detections, any number of classes, any order).""",
    ),
    (
        "code",
        """predictor = pipeline.load_predictor(config, run_dir)
grid = pipeline.predict_images(config, dataset, predictor, run_dir, show=True)""",
    ),
    (
        "md",
        """## 7 · Video: frame-by-frame cut-out

Each frame is decoded (rotation applied, timestamps kept), the kept animals' pixels are copied
onto the canvas, and the frame is encoded into a browser-playable H.264 MP4 (or a transparent
WebM / ProRes / PNG sequence). Memory stays flat however long the video is. With the synthetic
video, the cut-out is scored against the ground truth (mean foreground IoU).""",
    ),
    (
        "code",
        """video = pipeline.cut_video(config, predictor, run_dir)
print({k: v for k, v in video.items() if k != "videos"})
if str(video.get("video", "")).endswith((".mp4", ".webm")):
    display(Video(video["video"], embed=True, html_attributes="controls loop muted autoplay"))""",
    ),
    (
        "md",
        """## 8 · Save to Google Drive

In Colab with `save_to_drive = True`, the run folder (model, resolved config, metrics, plots,
videos) is copied to `<drive_folder>/<run folder name>/`, then every file is verified (size and
SHA-256, and the model loads) before the save counts; `saved.json` is written last, so a Drive
folder without it is incomplete. Earlier runs are never overwritten. A full Drive stops run-all
here with a link to free space, so the runtime is never released after a failed save.
Elsewhere this cell only says it skipped.""",
    ),
    (
        "code",
        """saved = colab.save_run_to_drive(config, run_dir)
print(saved or "not saved to Drive (save_to_drive=False or not in Colab)")""",
    ),
    (
        "md",
        """## 9 · Summary and walk-away

The summary says where everything is. With `terminate_runtime = True` the very last cell
releases the Colab runtime, so no compute credits are spent idle — but only in Colab, after a
verified save, with nothing failed, once Drive has finished uploading and browser downloads are
done. Any failing cell stops *Run all* with an error, so this cell never runs after a failure;
otherwise it leaves the runtime up and says why.""",
    ),
    (
        "code",
        """print(pipeline.summary(run_dir, started, mean_iou=video.get("mean_iou"),
                       mask_AP=ap.get("segm", {}).get("AP"), drive=saved))""",
    ),
    ("code", """print(colab.finish(config, saved))"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "toc_visible": True},
        "accelerator": "GPU",
    }
    for i, spec in enumerate(CELLS):
        kind, source = spec[0], spec[1]
        tags = spec[2] if len(spec) > 2 else []
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell.id = f"cell-{i:02d}"
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    return nb


def main() -> int:
    nb = build()
    NOTEBOOK.parent.mkdir(parents=True, exist_ok=True)
    text = nbformat.writes(nb)
    if "--check" in sys.argv:
        return 0 if NOTEBOOK.read_text() == text else 1
    NOTEBOOK.write_text(text)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
