"""Mixed precision and data loading for training: CUDA-only switches that leave CPU unchanged.

AMP itself needs a GPU; here (CPU) the tests check that ``amp`` is ignored off CUDA, that the
gradient scaler's path (unscale before clipping, checkpoint, resume) is right with a CPU
``GradScaler``, that detectron2's ``SOLVER.AMP.ENABLED`` follows the device, and that only CUDA
training gets pinned memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thingmask.config import Config  # noqa: E402
from thingmask.datasets import PreparedDataset  # noqa: E402
from thingmask.engines import TrainResult  # noqa: E402
from thingmask.engines import detectron2_engine as d2e  # noqa: E402
from thingmask.engines import torchvision_engine as tv  # noqa: E402
from thingmask.engines.checkpoints import load_checkpoint  # noqa: E402
from thingmask.engines.torchvision_engine.data import loader_options  # noqa: E402

INIT_SCALE = 2.0**10


class CpuScalerTrainer(tv.Trainer):
    """An enabled gradient scaler on CPU (no autocast): the loss-scaling path without a GPU.
    The scale doubles after every step (growth_interval 1), so it tells steps apart."""

    def build_grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, growth_interval=1)


@pytest.fixture
def trained_run(tiny_trained_run):
    return tiny_trained_run  # (config, run_dir): tiny_config trained once (conftest)


def _history(metrics: TrainResult | dict) -> list[float]:
    history = metrics.loss_history if isinstance(metrics, TrainResult) else metrics["loss_history"]
    return [h["loss"] for h in history]


def test_amp_on_cpu_is_ignored_and_training_is_unchanged(tiny_config, tiny_dataset, trained_run):
    config = tiny_config.replace(amp=True)
    trainer = tv.Trainer(config, tiny_dataset, config.new_run_dir())
    assert trainer.amp is False and not trainer.scaler.is_enabled()
    metrics = trainer.train()
    reference = json.loads((trained_run[1] / "metrics.json").read_text())  # amp=False, same run
    assert metrics.details["amp"] is False and reference["amp"] is False
    assert metrics.to_dict()["loss_history"] == reference["loss_history"]  # bit for bit
    state = load_checkpoint(trainer.run_dir / "checkpoints" / "model_0000002.pth")
    assert "grad_scaler" not in state


def test_scaled_steps_clip_the_true_gradients(tiny_config, tiny_dataset, trained_run):
    # Clipping scaled gradients (no unscale_ first) would shrink every step by the scale and
    # the losses after the first step would drift away from the float32 run's.
    metrics = CpuScalerTrainer(tiny_config, tiny_dataset, tiny_config.new_run_dir()).train()
    reference = json.loads((trained_run[1] / "metrics.json").read_text())
    np.testing.assert_allclose(_history(metrics), _history(reference), rtol=1e-5, atol=1e-6)


def test_scaler_state_is_checkpointed_and_restored(tiny_config, tiny_dataset):
    first = CpuScalerTrainer(tiny_config, tiny_dataset, tiny_config.new_run_dir())
    first.train()
    checkpoint = first.run_dir / "checkpoints" / "model_0000002.pth"
    saved = load_checkpoint(checkpoint)["grad_scaler"]
    assert saved["scale"] == INIT_SCALE * 4  # two steps, doubled after each
    resumed = CpuScalerTrainer(
        tiny_config, tiny_dataset, tiny_config.new_run_dir(), resume_from=checkpoint
    )
    assert resumed.start_iteration == 2
    assert resumed.scaler.get_scale() == saved["scale"]
    assert resumed.scaler.state_dict() == saved
    resumed.train()
    final = load_checkpoint(resumed.run_dir / "checkpoints" / "model_0000004.pth")
    assert final["grad_scaler"]["scale"] == INIT_SCALE * 16  # went on from 4x, as unbroken


def test_resume_across_an_amp_switch(tiny_config, tiny_dataset, trained_run):
    plain = trained_run[1] / "checkpoints" / "model_0000002.pth"  # written without a scaler
    fresh = CpuScalerTrainer(
        tiny_config, tiny_dataset, tiny_config.new_run_dir(), resume_from=plain
    )
    assert fresh.start_iteration == 2 and fresh.scaler.get_scale() == INIT_SCALE
    scaled = CpuScalerTrainer(tiny_config, tiny_dataset, tiny_config.new_run_dir())
    scaled.iteration = 2
    path = scaled.save_checkpoint()
    plain_trainer = tv.Trainer(
        tiny_config, tiny_dataset, tiny_config.new_run_dir(), resume_from=path
    )
    assert plain_trainer.start_iteration == 2 and not plain_trainer.scaler.is_enabled()


@pytest.mark.parametrize(
    ("workers", "device", "pin", "persistent"),
    [
        (0, "cpu", False, False),
        (2, "cpu", False, True),
        (0, "cuda", True, False),
        (2, "cuda", True, True),
        (1, "cuda:1", True, True),
        (0, "mps", False, False),
    ],
)
def test_loader_pins_memory_only_for_cuda(workers, device, pin, persistent):
    assert loader_options(workers, torch.device(device)) == {
        "num_workers": workers,
        "pin_memory": pin,
        "persistent_workers": persistent,
    }


@pytest.mark.parametrize(("device", "pin"), [("cpu", False), ("cuda", True)])
def test_train_loader_uses_the_loader_options(tiny_config, tiny_dataset, device, pin):
    # Built, not iterated: a pinned loader can be made without a GPU.
    config = tiny_config.replace(num_workers=1)
    loader = tv.train_loader(config, tiny_dataset, [], device=torch.device(device))
    assert loader.pin_memory is pin and loader.persistent_workers and loader.num_workers == 1
    default = tv.train_loader(tiny_config, tiny_dataset, [])  # config.device = "cpu"
    assert default.pin_memory is False and default.persistent_workers is False


def _dataset(tmp_path: Path) -> PreparedDataset:
    return PreparedDataset(
        name="toy",
        root=tmp_path,
        train_json=tmp_path / "train.json",
        val_json=tmp_path / "val.json",
        image_root=tmp_path / "images",
        class_names=("cat", "bird"),
    )


@pytest.mark.parametrize(
    ("amp", "device", "enabled"),
    [
        (False, "cpu", False),
        (True, "cpu", False),
        (False, "cuda", False),
        (True, "cuda", True),
        (True, "cuda:1", True),
    ],
)
def test_detectron2_amp_follows_the_setting_on_cuda_only(tmp_path, amp, device, enabled):
    ov = d2e.cfg_overrides(Config(amp=amp), _dataset(tmp_path), device=device)
    assert ov["SOLVER.AMP.ENABLED"] is enabled


def test_detectron2_amp_defaults_to_the_cpu_decision(tmp_path):
    assert d2e.cfg_overrides(Config(amp=True), _dataset(tmp_path))["SOLVER.AMP.ENABLED"] is False
    zero = d2e.cfg_overrides(Config(amp=True, zero_training=True), None, device="cuda")
    assert not any(k.startswith("SOLVER") for k in zero)  # nothing to train


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_amp_trains_on_cuda_and_resumes_its_scaler(tiny_config, tiny_dataset):
    config = tiny_config.replace(device="cuda", amp=True, num_workers=1)
    trainer = tv.Trainer(config, tiny_dataset, config.new_run_dir())
    assert trainer.amp and trainer.scaler.is_enabled()
    loader = trainer.build_train_loader()
    assert loader.pin_memory and loader.persistent_workers
    metrics = trainer.train()
    assert metrics.details["amp"] is True and np.isfinite(metrics.final_loss)
    checkpoint = trainer.run_dir / "checkpoints" / "model_0000002.pth"
    saved = load_checkpoint(checkpoint)["grad_scaler"]
    resumed = tv.Trainer(config, tiny_dataset, config.new_run_dir(), resume_from=checkpoint)
    assert resumed.scaler.get_scale() == saved["scale"]
