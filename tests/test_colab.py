"""Colab glue against a stand-in ``google.colab`` (tests/fake_colab), and outside Colab."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

from thingmask.colab import RunLog, drive, drive_checkpoints, environment, verified_copy
from thingmask.colab import runtime as colab
from thingmask.colab.drive import save_run
from thingmask.colab.verified_copy import DriveError
from thingmask.config import Config, ConfigError
from thingmask.engines.checkpoints import save_checkpoint

pytestmark = pytest.mark.colab

import fake_colab as fake  # noqa: E402 - tests/ is on sys.path (pytest rootdir insertion)


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """Fresh session log; no real waiting."""
    sleeps: list[float] = []
    monkeypatch.setattr(colab, "SESSION", RunLog())
    monkeypatch.setattr(verified_copy, "_sleep", sleeps.append)
    return sleeps


@pytest.fixture
def gc(monkeypatch):
    """The stand-in google.colab, installed for this test only."""
    return fake.install(monkeypatch)


def make_config(tmp_path: Path, **kw) -> Config:
    values = {
        "run_name": "demo",
        "output_dir": str(tmp_path / "outputs"),
        "save_to_drive": True,
        "terminate_runtime": True,
    }
    return Config(**{**values, **kw})


def make_run(config: Config) -> Path:
    run = config.new_run_dir()
    torch.save({"model": {"w": torch.ones(3)}}, run / "model_final.pth")
    (run / "metrics.json").write_text('{"AP": 0.9}')
    return run


# --- outside Colab -------------------------------------------------------------------------------
def test_outside_colab_every_step_is_a_logged_no_op(tmp_path, caplog):
    assert "google.colab" not in sys.modules and not environment.in_colab()
    config = make_config(tmp_path)
    run = make_run(config)
    with caplog.at_level(logging.INFO, logger="thingmask.colab"):
        assert colab.mount_drive(tmp_path / "mnt") is None
        assert colab.save_run_to_drive(config, run, mount_point=tmp_path / "mnt") is None
        assert colab.flush_drive() is False
        message = colab.finish(config)
    assert "not running in Colab" in message
    assert "Drive mount skipped" in caplog.text
    assert not (tmp_path / "mnt").exists()
    text = environment.describe_environment(config)
    assert "outside Colab" in text and "Python" in text


def test_absolute_drive_folder_saves_anywhere(tmp_path):
    config = make_config(tmp_path, drive_folder=str(tmp_path / "share"))
    result = colab.save_run_to_drive(config, make_run(config))
    assert result is not None and result.destination.parent == tmp_path / "share"
    assert colab.SESSION.saves == [result]


def test_environment(monkeypatch, gc):
    env = environment.environment()
    assert env.in_colab and env.python.count(".") == 2 and env.torch == torch.__version__
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    no_gpu = environment.environment("cuda")
    assert (no_gpu.gpu, no_gpu.gpu_name) == (False, None) and no_gpu.device in ("cpu", "mps")
    text = environment.describe_environment(Config(device="cuda"), env=no_gpu)
    assert "Runtime → Change runtime type → T4 GPU" in text and "not available" in text
    gpu = environment.Env(True, True, "Tesla T4", "cuda", "3.11.0", "2.5.0", "12.1")
    text = environment.describe_environment(env=gpu)
    assert "Tesla T4" in text and "Change runtime type" not in text


# --- Drive mount -------------------------------------------------------------------------------
def test_mount_drive_calls_colab_and_returns_the_mount_point(tmp_path, gc):
    mnt = colab.mount_drive(tmp_path / "drive", timeout=30)
    assert mnt == tmp_path / "drive"
    (call,) = gc.CALLS
    assert call == ("drive.mount", (str(mnt),), {"force_remount": False, "timeout_ms": 30000})
    config = make_config(tmp_path)
    assert colab.drive_dir(config, mnt) == mnt / "MyDrive" / "thingmask"


def test_mount_failure_is_a_drive_error_with_the_faq_hint(tmp_path, gc):
    gc.fail("drive.mount", ValueError("mount failed"))
    with pytest.raises(DriveError, match="Drive mount failed: mount failed") as info:
        colab.mount_drive(tmp_path / "drive")
    assert "faq.html#drive-timeout" in str(info.value)
    assert "flush_and_unmount()" in str(info.value)


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("MyDrive/thingmask", "MNT/MyDrive/thingmask"),
        ("My Drive/runs", "MNT/MyDrive/runs"),
        ("/data/share", "/data/share"),
        ("MyDrive/../etc", ConfigError),
    ],
)
def test_drive_dir(folder, expected):
    config = Config(drive_folder=folder)
    if isinstance(expected, type):
        with pytest.raises(expected, match="drive_folder"):
            colab.drive_dir(config, "MNT")
    else:
        assert colab.drive_dir(config, "MNT") == Path(expected)


# --- termination ---------------------------------------------------------------------------------
def saved_in_colab(tmp_path: Path, gc, **kw):
    config = make_config(tmp_path, **kw)
    result = colab.save_run_to_drive(config, make_run(config), mount_point=tmp_path / "mnt")
    return config, result


def test_release_when_opted_in_and_all_saves_verified(tmp_path, gc):
    config, result = saved_in_colab(tmp_path, gc)
    assert result.destination.parent == tmp_path / "mnt" / "MyDrive" / "thingmask"
    message = colab.finish(config, result)
    assert message == "Runtime released."
    assert gc.names() == ["drive.mount", "drive.flush_and_unmount", "runtime.unassign"]
    assert "runtime" in colab.SESSION.summary() and "failures   : none" in colab.SESSION.summary()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("not_opted_in", "terminate_runtime is False"),
        ("failure", "failure(s) recorded"),
        ("no_save", "nothing was saved"),
        ("damaged_after_save", "different from the saved hash"),
        ("unverified", "is not verified"),
        ("flush_fails", "Drive flush failed"),
    ],
)
def test_release_is_refused(tmp_path, gc, case, reason):
    config, result = saved_in_colab(tmp_path, gc, terminate_runtime=case != "not_opted_in")
    saves = [result]
    if case == "failure":
        colab.SESSION.record_failure("video: codec missing")
    elif case == "no_save":
        saves = [None]
        colab.SESSION.saves.clear()
    elif case == "damaged_after_save":
        (result.destination / "metrics.json").write_text("{}")
    elif case == "unverified":
        saves = [
            drive.SaveResult(
                result.source,
                result.destination,
                result.files,
                result.manifest,
                0.0,
                verified=False,
            )
        ]
        colab.SESSION.saves.clear()
    elif case == "flush_fails":
        gc.fail("drive.flush_and_unmount", ValueError("flush_and_unmount failed"))
    message = colab.finish(config, saves[0])
    assert message.startswith("Runtime left running") and reason in message
    assert "runtime.unassign" not in gc.names()


def test_failing_unassign_is_reported(tmp_path, gc):
    config, result = saved_in_colab(tmp_path, gc)
    gc.fail("runtime.unassign", RuntimeError("Unable to request VM unassignment."))
    message = colab.finish(config, result)
    assert "delete it by hand" in message and "Disconnect and delete runtime" in message


def test_run_log_step_records_and_reraises(tmp_path, gc):
    config, result = saved_in_colab(tmp_path, gc)
    with pytest.raises(ZeroDivisionError), colab.SESSION.step("section 7"):
        1 / 0  # noqa: B018
    assert colab.SESSION.failures == ["section 7: division by zero"]
    assert "runtime.unassign" not in gc.names() and "left running" in colab.finish(config)
    summary = colab.SESSION.summary(run_dir="outputs/x", metrics={"mask_AP": 0.8})
    assert "FAILED     : section 7" in summary and "mask_AP" in summary
    assert str(result.destination) in summary and "wall time" in summary


def test_save_failure_is_recorded(tmp_path, gc, monkeypatch):
    config = make_config(tmp_path)
    monkeypatch.setattr(
        verified_copy,
        "_copy_file",
        fake.flaky_copy(
            verified_copy._copy_file, errors={"model_final.pth": [fake.quota_error()] * 9}
        ),
    )
    with pytest.raises(DriveError, match="Drive is full"):
        colab.save_run_to_drive(config, make_run(config), mount_point=tmp_path / "mnt")
    assert colab.SESSION.failures and "Drive is full" in colab.SESSION.failures[0]


# --- resume ----------------------------------------------------------------------------------
def test_training_hooks_resume_from_drive_on_a_fresh_runtime(tmp_path, gc):
    config = make_config(tmp_path, drive_checkpoint_period=100)
    mnt = tmp_path / "mnt"
    old = mnt / "MyDrive" / "thingmask" / "demo-20240101-000000" / "checkpoints"
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 299}, old / "model_0000299.pth")
    run = config.new_run_dir()
    hooks, resume_from = colab.training_hooks(config, run, mount_point=mnt)
    assert resume_from == run / "checkpoints" / "model_0000299.pth" and resume_from.is_file()
    (hook,) = hooks
    assert isinstance(hook, drive_checkpoints.DriveCheckpointHook) and hook.last_copied == 299

    local = save_checkpoint(
        {"model": {"w": torch.ones(2)}, "iteration": 499}, run / "checkpoints" / "model_0000499.pth"
    )
    _, again = colab.training_hooks(config.replace(drive_checkpoint_period=0), run, mount_point=mnt)
    assert again == local  # the local checkpoint is further along than Drive's
    _, none = colab.training_hooks(config.replace(resume=False), run, mount_point=mnt)
    assert none is None


def test_stand_in_does_not_leak(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        fake.install(mp)
        assert environment.in_colab()
        assert save_run  # the real package still imports normally alongside the stand-in
    assert "google.colab" not in sys.modules and not environment.in_colab()
