"""The notebook: its source and sync, its visible cells run directly, and papermill runs.

* fast: the jupytext source (notebooks/thingmask.py, what you edit) and the .ipynb agree, the
  parameters cell is tagged and matches Config, cells stay short, and the teaching cells (filter,
  cut-out, frame loop) run on a tiny trained model — the loop giving exactly the frames of
  ``process_video``;
* colab: run-all in a kernel that starts like Colab's (thingmask not importable, google.colab
  imported), installing thingmask from a local copy through ``thingmask_source``;
* slow: the whole notebook headless with papermill, for each engine installed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import cv2
import jupytext
import nbformat
import numpy as np
import pytest

from thingmask.config import Config

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "thingmask.ipynb"
SOURCE = ROOT / "notebooks" / "thingmask.py"
NOTEBOOK_ONLY = {"run_dir", "thingmask_source"}  # parameters that are not Config fields
MAX_CELL_LINES = 25

TINY = {  # a whole run in seconds on one CPU core
    "iterations": 4,
    "checkpoint_period": 2,
    "synthetic_train_images": 6,
    "synthetic_val_images": 3,
    "synthetic_video_frames": 6,
    "synthetic_image_size": 64,
    "image_size": 64,
    "max_image_size": 64,
    "batch_size": 2,
    "score_threshold": 0.0,
}


def _nb():
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must carry the papermill 'parameters' tag"
    return tagged[0]


def _code_cell(nb, text: str) -> str:
    """The source of the one code cell containing ``text``."""
    found = [c.source for c in nb.cells if c.cell_type == "code" and text in c.source]
    assert len(found) == 1, f"expected one code cell containing {text!r}, found {len(found)}"
    return found[0]


# --- source, sync, structure -----------------------------------------------------------------
def test_first_code_cell_is_the_tagged_parameters_cell():
    for nb in (_nb(), jupytext.read(SOURCE)):
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert first_code is _parameters_cell(nb)


def test_parameters_are_literals_matching_config_defaults():
    tree = ast.parse(_parameters_cell(_nb()).source)
    values = {}
    for stmt in tree.body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        values[stmt.targets[0].id] = ast.literal_eval(stmt.value)  # raises if not a literal
    names = {f.name for f in fields(Config)}
    assert set(values) == names | NOTEBOOK_ONLY
    defaults = Config().to_dict()
    differing = {k: (v, defaults[k]) for k, v in values.items() if k in names and v != defaults[k]}
    assert not differing, f"notebook values differ from Config defaults: {differing}"
    assert values["thingmask_source"].startswith("git+https://")


def test_papermill_can_parse_every_parameter():
    """papermill skips (with a warning) any parameter line holding more than one '='."""
    import papermill

    inferred = set(papermill.inspect_notebook(str(NOTEBOOK)))
    assert inferred == {f.name for f in fields(Config)} | NOTEBOOK_ONLY


def test_ipynb_is_in_sync_with_its_jupytext_source():
    """Same cells as notebooks/thingmask.py, outputs stripped, cell tags kept, still paired."""
    nb, source = _nb(), jupytext.read(SOURCE)
    fix = "run `.venv/bin/jupytext --sync notebooks/thingmask.py` (pre-commit does it)"
    assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells] == [
        (c.cell_type, c.source, c.metadata.get("tags", [])) for c in source.cells
    ], f"notebooks/thingmask.ipynb differs from its source: {fix}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"outputs left: {fix}"
        assert set(cell.metadata) <= {"tags"}, f"cell metadata other than tags: {fix}"
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert nb.metadata["accelerator"] == "GPU" and "colab" in nb.metadata


def test_code_cells_are_short():
    long = {
        c.source.splitlines()[0]: len(c.source.splitlines())
        for c in _nb().cells
        if c.cell_type == "code"
        and "parameters" not in c.metadata.get("tags", [])
        and len(c.source.splitlines()) > MAX_CELL_LINES
    }
    assert not long, f"code cells over {MAX_CELL_LINES} lines: {long}"


def test_detectron2_build_cell_pins_the_engine_commit():
    from thingmask.engines.detectron2_engine import DETECTRON2_COMMIT

    cell = _code_cell(_nb(), "facebookresearch/detectron2")
    assert f"@{DETECTRON2_COMMIT}" in cell.replace('"\n', "").replace(' "', "")
    assert "--no-build-isolation" in cell and "setuptools<81" in cell


# --- the teaching cells, run directly ----------------------------------------------------------
TEACHING_CELLS = (  # a line of each cell, in notebook order
    ".register_dataset(dataset)",  # registration, through the engine's public API
    "class MyTrainer(Trainer):",  # the torchvision trainer with config.augmentations
    "kept = keep(dets, config.display_things)",  # the filter, before / after
    "get_masked_image(frame.image, kept, background)  #",  # the cut-out on one frame
    "for frame in islice(reader.frames(), loop_frames)",  # the frame loop
)


def _run_cells(nb, markers: Sequence[str], namespace: dict) -> dict:
    for marker in markers:
        exec(compile(_code_cell(nb, marker), f"<cell {marker!r}>", "exec"), namespace)
    return namespace


def _png_frames(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))]


def test_visible_cells_run_and_the_loop_gives_process_videos_frames(tmp_path, tiny_trained_run):
    """Filter, cut-out and frame-loop cells as written; the loop's frames are exactly
    ``process_video``'s (same predictor, lossless PNG output, a canvas that shows every pixel)."""
    from IPython.display import HTML

    from thingmask import pipeline
    from thingmask.datasets import load_prepared
    from thingmask.datasets.synthetic import generate_video
    from thingmask.jobs.job import process_video

    trained_config, trained_run = tiny_trained_run
    run_dir = Path(shutil.copytree(trained_run, tmp_path / "run"))  # the fixture is read-only
    video = generate_video(tmp_path / "clip", n_frames=6, size=64, seed=1)
    config = trained_config.replace(
        video_input=str(video), video_format="png", canvas="grey", augmentations=["flip_horizontal"]
    )
    names = {**config.to_dict(), "config": config, "run_folder": run_dir}
    names |= {"dataset": load_prepared(config.dataset_dir), "pipeline": pipeline, "np": np}
    names |= {"display": lambda *args, **kwargs: None, "HTML": HTML}
    names["augmentations"] = ["brightness"]  # a stale global: the cells read config instead
    names["display_things"] = ["leaf"]
    ns = _run_cells(_nb(), TEACHING_CELLS, names)
    registration = ns["registration"]
    assert registration.catalog is None and registration.class_names == ("cat", "bird", "leaf")
    assert registration.first_image_classes  # names, decoded from torchvision's 1-based labels
    assert set(registration.first_image_classes) <= {"cat", "bird", "leaf"}
    loader = ns["MyTrainer"](config, names["dataset"], tmp_path / "train").build_train_loader()
    assert [spec.name for spec in loader.dataset.specs] == ["flip_horizontal"]
    assert set(ns["kept"].class_names) <= set(config.display_things)
    assert (run_dir / "filter.png").is_file() and (run_dir / "cutout.png").is_file()
    assert ns["cutout"].shape == ns["frame"].image.shape

    job = process_video(video, tmp_path / "job", ns["predictor"], config, progress=False)
    loop, full = _png_frames(ns["loop_output"]), _png_frames(Path(job.output))
    assert len(loop) == len(full) == 6
    for i, (a, b) in enumerate(zip(loop, full, strict=True)):
        assert np.array_equal(a, b), f"frame {i} differs between the loop and process_video"


def _method_body(source: str, cls: str, method: str) -> str:
    """The statements of ``cls.method`` in ``source`` (docstring dropped), as an AST dump."""
    import textwrap

    tree = ast.parse(textwrap.dedent(source))
    (klass,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls]
    (func,) = [n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == method]
    return "\n".join(ast.dump(s) for s in func.body if not isinstance(s, ast.Expr))


@pytest.mark.parametrize(
    ("marker", "module", "cls"),
    [
        ("class MyTrainer(Trainer):", "thingmask.engines.torchvision_engine.trainer", "Trainer"),
        (
            "class MyTrainer(SafeTrainer):",
            "thingmask.engines.detectron2_engine.trainer",
            "MyTrainer",
        ),
    ],
)
def test_one_mytrainer_per_engine_the_notebook_shows_the_package_default(marker, module, cls):
    """The notebook's ``build_train_loader`` is the package default's, statement for statement:
    both read the augmentations from the config they are given."""
    import importlib

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    package = Path(spec.origin).read_text(encoding="utf-8")
    notebook = _method_body(_code_cell(_nb(), marker), "MyTrainer", "build_train_loader")
    assert notebook == _method_body(package, cls, "build_train_loader")
    assert "config.augmentations" in _code_cell(_nb(), marker) or "cfg" in notebook


@pytest.mark.detectron2
def test_detectron2_mytrainer_cell_maps_with_the_config_augmentations():
    """The notebook's ``MyTrainer(SafeTrainer)``: its loader's mapper resizes, then applies
    ``config.augmentations`` as ``build_cfg`` recorded them (the loader is replaced by its
    mapper here); a stale ``augmentations`` global is not read."""
    pytest.importorskip("detectron2")
    import json as _json

    from detectron2.config import CfgNode, get_cfg

    from thingmask.engines.detectron2_engine.trainer import SafeTrainer

    ns = {"config": Config(engine="detectron2"), "augmentations": ["contrast"]}
    _run_cells(_nb(), ["class MyTrainer(SafeTrainer):"], ns)
    ns["build_detection_train_loader"] = lambda cfg, mapper: mapper
    cfg = get_cfg()
    cfg.THINGMASK = CfgNode({"AUGMENTATIONS": _json.dumps(["flip_horizontal", "brightness"])})
    mapper = ns["MyTrainer"].build_train_loader(cfg)
    assert issubclass(ns["MyTrainer"], SafeTrainer)
    names = [type(a).__name__ for a in mapper.augmentations.augs]
    assert names == ["ResizeShortestEdge", "RandomFlip", "RandomBrightness"]


# --- Colab: run-all from a fresh runtime -------------------------------------------------------
def _setup_cell_in_fake_colab(monkeypatch, tmp_path, source: str, run=None) -> dict:
    """Run the set-up cell as in a fresh Colab runtime: google.colab present, thingmask not
    found; ``run`` stands in for ``subprocess.run`` when given."""
    import importlib.util as util

    import fake_colab

    fake_colab.install(monkeypatch)
    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda n, *a: None if n == "thingmask" else real(n, *a))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a folder source is copied
    if run is not None:
        monkeypatch.setattr(subprocess, "run", run)
    namespace = {"thingmask_source": source}
    exec(compile(_code_cell(_nb(), "into THIS kernel"), "<set-up cell>", "exec"), namespace)
    return namespace


@pytest.mark.colab
def test_colab_setup_says_what_to_do_when_the_source_cannot_be_reached(tmp_path, monkeypatch):
    missing = tmp_path / "not-there.whl"
    with pytest.raises(RuntimeError) as info:
        _setup_cell_in_fake_colab(monkeypatch, tmp_path, str(missing))  # the real pip fails on it
    message = str(info.value)
    assert f"could not install thingmask from {str(missing)!r}" in message
    assert "Fix: set thingmask_source in section 1" in message and "Drive" in message
    assert "\x1b[" not in message  # pip's words without colour codes
    assert "not-there.whl" in message.split("\n", 1)[1]  # pip's own words are passed on


@pytest.mark.colab
def test_colab_setup_builds_a_copy_of_a_folder_source(tmp_path, monkeypatch):
    """pip builds in the source tree: a Drive folder must not get build/ and *.egg-info."""
    commands = []

    def pip(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "stop here")

    folder = _source_copy(tmp_path)
    (folder / "data").mkdir()  # datasets and outputs beside the code are not copied
    with pytest.raises(RuntimeError):
        _setup_cell_in_fake_colab(monkeypatch, tmp_path, str(folder), run=pip)
    ((*_, built),) = commands
    assert "--no-deps" in commands[0] and "-e" not in commands[0]
    assert Path(built) != folder and Path(built).name == "copy"
    assert not Path(built).exists(), "the build copy must be removed after pip ran"
    assert not any(tmp_path.glob("tmp*/copy")), "a build copy was left behind"


@pytest.mark.colab
def test_colab_setup_stops_at_the_owner_placeholder_before_pip(tmp_path, monkeypatch):
    commands = []
    default = ast.literal_eval(
        next(
            s.value
            for s in ast.parse(_parameters_cell(_nb()).source).body
            if s.targets[0].id == "thingmask_source"  # type: ignore[attr-defined]
        )
    )
    with pytest.raises(RuntimeError) as info:
        _setup_cell_in_fake_colab(monkeypatch, tmp_path, default, run=commands.append)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "OWNER" in lines[0] and "section 1" in lines[1]
    assert not commands, "pip must not run on the placeholder"


def _site_without_thingmask(root: Path) -> Path:
    """A view of this environment's site-packages without thingmask (links to everything else)."""
    view = root / "site-view"
    view.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "thingmask" not in entry.name.lower() and entry.suffix != ".pth":
            (view / entry.name).symlink_to(entry)
    return view


def _colab_like_kernel(root: Path) -> tuple[str, Path]:
    """A venv whose kernel starts like Colab's: every library there but thingmask, and
    google.colab (the stand-in) imported before any cell. Returns (kernel name, venv python)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "libraries.pth").write_text(f"{_site_without_thingmask(root)}\n")
    spec = root / "jupyter" / "kernels" / "colab-like"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    argv.append("--IPKernelApp.exec_lines=['import google.colab']")
    env = {"PYTHONPATH": str(ROOT / "tests" / "fake_colab"), "PYTHONNOUSERSITE": "1"}
    kernel = {"argv": argv, "display_name": "Colab-like", "language": "python", "env": env}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return "colab-like", python


def _source_copy(root: Path) -> Path:
    """The repository as a user would put it on Drive (what ``thingmask_source`` points at)."""
    copy = root / "thingmask-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "src", copy / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    return copy


@pytest.mark.colab
def test_colab_run_all_installs_thingmask_in_the_same_kernel(tmp_path, monkeypatch):
    import papermill as pm

    kernel, python = _colab_like_kernel(tmp_path)
    probe = subprocess.run(
        [python, "-c", "import torch, cv2, av; import thingmask"],
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
    )
    assert "No module named 'thingmask'" in probe.stderr, "thingmask must not be importable yet"
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    params = {**TINY, "thingmask_source": str(_source_copy(tmp_path)), "device": "cpu"}
    params |= {"output_dir": str(tmp_path / "out"), "dataset_dir": str(tmp_path / "data")}
    params |= {"run_name": "colab", "optimizer": "adamw", "learning_rate": 0.002}
    executed = tmp_path / "executed.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK), str(executed), parameters=params, kernel_name=kernel, cwd=str(tmp_path)
    )
    nb = nbformat.read(executed, as_version=4)

    def printed(marker: str) -> str:
        cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
        return "".join(o.get("text", "") for o in cell.outputs)

    assert "every requirement is already installed" in printed("into THIS kernel")
    assert "Running in Google Colab." in printed("describe_environment(config)")
    installed = list((tmp_path / "venv").glob("lib/python*/site-packages/thingmask/__init__.py"))
    assert installed, "thingmask was not installed into the kernel's environment"
    (run,) = (tmp_path / "out").glob("colab-*")
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["mean_iou"] <= 1.0 and (run / "demo_cutout.mp4").is_file()
    # section 8b, the labelling loop: frames picked and pre-labelled, suggestions, re-prepared
    labels = run / "label-more"
    assert (labels / "frames.csv").is_file() and (labels / "suggestions.csv").is_file()
    assert list(labels.glob("demo/demo_*.json")), "no pre-labels written"
    assert "label origins:" in printed("prepare_dataset(labels_dir")


# --- the whole notebook, headless --------------------------------------------------------------
def _engine_param(engine):
    marks = [pytest.mark.slow]
    if engine == "detectron2":
        marks += [
            pytest.mark.detectron2,
            pytest.mark.skipif(
                importlib.util.find_spec("detectron2") is None, reason="detectron2 is not installed"
            ),
        ]
    return pytest.param(engine, marks=marks, id=engine)


@pytest.mark.parametrize("engine", [_engine_param("torchvision"), _engine_param("detectron2")])
def test_notebook_runs_headless_with_tiny_parameters(tmp_path, engine):
    """`thingmask demo` with a tiny parameter set: the whole pipeline, end to end."""
    from thingmask.cli import main

    out = tmp_path / "outputs"
    config = "demo.yaml" if engine == "torchvision" else "d2_demo.yaml"
    code = main(
        [
            "demo",
            "--config",
            str(ROOT / "configs" / config),
            "--notebook",
            str(NOTEBOOK),
            f"engine={engine}",
            f"output_dir={out}",
            f"dataset_dir={tmp_path / 'data'}",
            "run_name=nbtest",
            *(f"{k}={v}" for k, v in TINY.items()),
        ]
    )
    assert code == 0
    (run,) = list(out.glob("nbtest-*"))
    for name in (
        "notebook.ipynb",
        "config.yaml",
        "model_meta.json",
        "model_final.pth",
        "metrics.json",
        "loss_curve.png",
        "filter.png",
        "predictions.png",
        "cutout.png",
        "demo_loop.mp4",
        "summary.json",
        "demo_cutout.mp4",
        "label-more/frames.csv",
        "label-more/suggestions.csv",
    ):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    executed = nbformat.read(run / "notebook.ipynb", as_version=4)
    assert all(c.get("execution_count") for c in executed.cells if c.cell_type == "code")
    assert json.loads((run / "model_meta.json").read_text())["engine"] == engine
    summary = json.loads((run / "summary.json").read_text())
    report = json.loads((run / "demo_cutout_eval.json").read_text())  # the demo video scored
    assert summary["mean_iou"] == report["fg_J"] and summary["J"] == round(report["J"], 4)
    assert summary["id_switches"] == report["num_switches"] and "F" in summary
    import av

    with av.open(str(run / "demo_cutout.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(stream)) == 6
    assert not list(run.rglob("*.part*")), "temporary files left behind"


@pytest.mark.slow
def test_run_all_then_every_cell_again_in_the_same_kernel(tmp_path):
    """Run all, then re-run each cell once, in order, in the same kernel: nothing rebinds a
    setting or depends on having run once. Each figure is shown once (no cell both shows a
    figure and returns it)."""
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    params = {**TINY, "output_dir": str(tmp_path / "out"), "dataset_dir": str(tmp_path / "data")}
    params |= {"run_name": "rerun", "device": "cpu", "video_format": "png"}
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), params)
    client = NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    with client.setup_kernel():
        for index, cell in code:
            client.execute_cell(cell, index)  # raises CellExecutionError on any failure
            images = [
                o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})
            ]
            assert len(images) == len(set(images)), f"a figure shown twice: {cell.source[:60]!r}"
        for index, cell in code:
            client.execute_cell(cell, index)
    runs = sorted((tmp_path / "out").glob("rerun-*"))  # run_dir="": the re-run is a new run
    assert runs and all((run / "summary.json").is_file() for run in runs)
