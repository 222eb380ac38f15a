"""The notebook: structure checks (fast) and one headless papermill run (slow)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest

from thingmask.config import Config

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "thingmask.ipynb"


def _nb():
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must carry the papermill 'parameters' tag"
    return tagged[0]


def test_first_code_cell_is_the_tagged_parameters_cell():
    nb = _nb()
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is _parameters_cell(nb)


def test_parameters_are_literals_matching_config_defaults():
    tree = ast.parse(_parameters_cell(_nb()).source)
    values = {}
    for stmt in tree.body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        values[stmt.targets[0].id] = ast.literal_eval(stmt.value)  # raises if not a literal
    names = {f.name for f in fields(Config)}
    assert set(values) == names | {"run_dir"}
    defaults = Config().to_dict()
    differing = {k: (v, defaults[k]) for k, v in values.items() if k in names and v != defaults[k]}
    assert not differing, f"notebook values differ from Config defaults: {differing}"


def test_papermill_can_parse_every_parameter():
    """papermill skips (with a warning) any parameter line holding more than one '='."""
    import papermill

    inferred = set(papermill.inspect_notebook(str(NOTEBOOK)))
    assert inferred == {f.name for f in fields(Config)} | {"run_dir"}


def test_outputs_stripped_and_generated_from_script():
    nb = _nb()
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_notebook.py"), "--check"], capture_output=True
    )
    assert check.returncode == 0, "run `python scripts/make_notebook.py` and commit the result"


def _engine_param(engine):
    marks = [pytest.mark.slow]
    if engine == "detectron2":
        import importlib.util

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
            "iterations=4",
            "checkpoint_period=2",
            "synthetic_train_images=6",
            "synthetic_val_images=3",
            "synthetic_video_frames=6",
            "synthetic_image_size=64",
            "image_size=64",
            "max_image_size=64",
            "batch_size=2",
            "score_threshold=0.0",
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
        "predictions.png",
        "summary.json",
        "demo_cutout.mp4",
    ):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    executed = nbformat.read(run / "notebook.ipynb", as_version=4)
    assert all(c.get("execution_count") for c in executed.cells if c.cell_type == "code")
    assert json.loads((run / "model_meta.json").read_text())["engine"] == engine
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["mean_iou"] <= 1.0
    import av

    with av.open(str(run / "demo_cutout.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(stream)) == 6
    assert not list(run.rglob("*.part*")), "temporary files left behind"
