"""Verified saves, checkpoint copies and resume on a plain folder standing in for Drive."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from pathlib import Path

import fake_colab as fake
import pytest
import torch

from thingmask.colab import drive, verified_copy
from thingmask.colab.drive import save_run, verify_saved
from thingmask.colab.drive_checkpoints import (
    DriveCheckpointHook,
    fetch_checkpoint,
    find_resume_checkpoint,
)
from thingmask.colab.verified_copy import DriveError
from thingmask.engines.checkpoints import save_checkpoint


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    """Record the backoff delays instead of waiting them."""
    delays: list[float] = []
    monkeypatch.setattr(verified_copy, "_sleep", delays.append)
    return delays


def _tiny_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"weight": torch.randn(8, 4), "bias": torch.zeros(8)}


def make_run(root: Path, name: str = "demo-20240102-030405") -> Path:
    run = root / "outputs" / name
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"model": _tiny_state()}, run / "model_final.pth")
    (run / "config.yaml").write_text("run_name: demo\n")
    (run / "metrics.json").write_text(json.dumps({"loss": 0.5}))
    (run / "plots").mkdir()
    (run / "plots" / "loss.png").write_bytes(b"\x89PNG fake" * 100)
    (run / "demo_cutout.mp4").write_bytes(bytes(range(256)) * 40)
    (run / ".model.x1.part.pth").write_bytes(b"half-written")
    save_checkpoint(
        {"model": _tiny_state(), "iteration": 199}, run / "checkpoints" / "model_0000199.pth"
    )
    return run


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_run_copies_verifies_and_writes_manifest_last(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    order: list[str] = []
    monkeypatch.setattr(
        verified_copy, "_copy_file", fake.flaky_copy(verified_copy._copy_file, log=order)
    )
    real_manifest = drive._write_manifest
    monkeypatch.setattr(
        drive, "_write_manifest", lambda p, d: (order.append(p.name), real_manifest(p, d))
    )
    result = save_run(run, tmp_path / "drive")

    assert result.destination == tmp_path / "drive" / run.name
    expected = [
        "config.yaml",
        "demo_cutout.mp4",
        "metrics.json",
        "model_final.pth",
        "plots/loss.png",
    ]
    assert [f.path for f in result.files] == expected  # no checkpoints/, no .part files
    for rec in result.files:
        assert sha(result.destination / rec.path) == sha(run / rec.path) == rec.sha256
    assert order[-1] == "saved.json" and len(order) == len(expected) + 1
    manifest = json.loads((result.destination / "saved.json").read_text())
    assert [f["sha256"] for f in manifest["files"]] == [f.sha256 for f in result.files]
    assert verify_saved(result.destination) == []
    assert not list(result.destination.rglob("*.part*"))


def test_save_run_includes_checkpoints_and_patterns_on_request(tmp_path):
    run = make_run(tmp_path)
    result = save_run(
        run, tmp_path / "drive", include=("*.pth", "*.yaml"), include_checkpoints=True
    )
    assert [f.path for f in result.files] == [
        "checkpoints/model_0000199.pth",
        "config.yaml",
        "model_final.pth",
    ]


def test_corrupted_copy_is_detected_and_retried(tmp_path, monkeypatch, no_sleep):
    run = make_run(tmp_path)
    monkeypatch.setattr(
        verified_copy,
        "_copy_file",
        fake.flaky_copy(verified_copy._copy_file, corrupt={"model_final.pth": 1}),
    )
    result = save_run(run, tmp_path / "drive", backoff=0.5)
    assert sha(result.destination / "model_final.pth") == sha(run / "model_final.pth")
    assert no_sleep == [0.5]


def test_copy_that_never_verifies_is_an_error_and_not_marked_saved(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    monkeypatch.setattr(
        verified_copy,
        "_copy_file",
        fake.flaky_copy(verified_copy._copy_file, corrupt={"metrics.json": 99}),
    )
    with pytest.raises(DriveError, match="did not verify after 4 attempts"):
        save_run(run, tmp_path / "drive")
    dest = tmp_path / "drive" / run.name
    assert not (dest / "saved.json").exists()
    assert verify_saved(dest) and "incomplete" in verify_saved(dest)[0]


@pytest.mark.parametrize(
    ("err", "hint"),
    [
        (errno.ENOSPC, "Drive is full"),
        (errno.EDQUOT, "Drive is full"),
        (errno.EIO, "Drive I/O error"),
        (errno.EACCES, "could not write"),
    ],
)
def test_persistent_os_error_retried_with_backoff_then_explained(
    tmp_path, monkeypatch, no_sleep, err, hint
):
    run = make_run(tmp_path)
    monkeypatch.setattr(
        verified_copy,
        "_copy_file",
        fake.flaky_copy(
            verified_copy._copy_file, errors={"demo_cutout.mp4": [OSError(err, "boom")] * 10}
        ),
    )
    with pytest.raises(DriveError, match=hint) as info:
        save_run(run, tmp_path / "drive", retries=3, backoff=1.0)
    assert "https://drive.google.com/settings/storage" in str(info.value)
    assert no_sleep == [1.0, 2.0, 4.0]


def test_transient_quota_error_recovers(tmp_path, monkeypatch, no_sleep):
    run = make_run(tmp_path)
    monkeypatch.setattr(
        verified_copy,
        "_copy_file",
        fake.flaky_copy(verified_copy._copy_file, errors={"demo_cutout.mp4": [fake.quota_error()]}),
    )
    result = save_run(run, tmp_path / "drive", backoff=3.0)
    assert verify_saved(result.destination) == [] and no_sleep == [3.0]


def test_never_overwrites_an_earlier_run(tmp_path):
    run = make_run(tmp_path)
    foreign = tmp_path / "drive" / run.name  # same name, another machine's run
    foreign.mkdir(parents=True)
    (foreign / "model_final.pth").write_bytes(b"someone else's model")
    first = save_run(run, tmp_path / "drive")
    second = save_run(run, tmp_path / "drive")
    assert first.destination.name == f"{run.name}-1"
    assert second.destination.name == f"{run.name}-2"
    assert (foreign / "model_final.pth").read_bytes() == b"someone else's model"
    assert verify_saved(first.destination) == [] == verify_saved(second.destination)


def test_model_verification(tmp_path):
    run = make_run(tmp_path)
    (run / "model_final.pth").write_bytes(b"not a torch file")
    with pytest.raises(DriveError, match=r"model_final\.pth does not load"):
        save_run(run, tmp_path / "drive")
    assert not (tmp_path / "drive" / run.name / "saved.json").exists()
    assert save_run(run, tmp_path / "drive2", verify_model=None).files  # opt out

    def refuse(folder: Path) -> None:
        raise ValueError("custom check failed")

    with pytest.raises(DriveError, match="custom check failed"):
        save_run(run, tmp_path / "drive3", verify_model=refuse)


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        save_run(tmp_path / "missing", tmp_path / "drive")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nothing to save"):
        save_run(tmp_path / "empty", tmp_path / "drive")


def test_verify_saved_detects_later_damage(tmp_path):
    result = save_run(make_run(tmp_path), tmp_path / "drive")
    (result.destination / "metrics.json").write_text("{}")
    assert any("metrics.json" in p for p in verify_saved(result.destination))


# --- checkpoints -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("period", "copied"),
    [(0, []), (200, [200, 400, 600, 800, 1000, 1200]), (500, [600, 1000]), (1000, [1000])],
)
def test_checkpoint_hook_copies_only_every_period(tmp_path, period, copied):
    run = make_run(tmp_path)
    hook = DriveCheckpointHook(tmp_path / "drive", run, period, keep_last=0)
    for it in range(200, 1201, 200):
        path = save_checkpoint(
            {"model": _tiny_state(), "iteration": it},
            run / "checkpoints" / f"model_{it - 1:07d}.pth",
        )
        hook.after_step(it, {"loss": 1.0})
        hook.after_checkpoint(path, it)
    assert [p.name for p in hook.copied] == [f"model_{it - 1:07d}.pth" for it in copied]
    for dst in hook.copied:
        assert sha(dst) == sha(run / "checkpoints" / dst.name)
    assert hook.failures == []


def test_checkpoint_hook_keeps_last_and_shares_the_run_folder_with_the_save(tmp_path):
    run = make_run(tmp_path)
    hook = DriveCheckpointHook(tmp_path / "drive", run, 200, keep_last=2)
    for it in (200, 400, 600):
        path = save_checkpoint(
            {"model": _tiny_state(), "iteration": it}, run / "checkpoints" / f"model_{it:07d}.pth"
        )
        hook.after_checkpoint(path, it)
    folder = tmp_path / "drive" / run.name / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.pth")) == [
        "model_0000400.pth",
        "model_0000600.pth",
    ]
    result = save_run(run, tmp_path / "drive")  # same folder: it is this run's, not complete
    assert result.destination == folder.parent


def test_checkpoint_hook_failure_is_recorded_not_raised(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    monkeypatch.setattr(
        verified_copy,
        "_copy_file",
        fake.flaky_copy(
            verified_copy._copy_file, errors={"model_0000199.pth": [fake.quota_error()] * 10}
        ),
    )
    seen: list[str] = []
    hook = DriveCheckpointHook(tmp_path / "drive", run, 100, on_failure=seen.append)
    hook.after_checkpoint(run / "checkpoints" / "model_0000199.pth", 200)
    assert len(hook.failures) == 1 and seen == hook.failures and "Drive is full" in seen[0]
    assert hook.copied == []


def test_after_train_copies_the_newest_checkpoint(tmp_path):
    run = make_run(tmp_path)
    hook = DriveCheckpointHook(tmp_path / "drive", run, 1000)
    hook.after_train(run)
    assert [p.name for p in hook.copied] == ["model_0000199.pth"]


# --- resume --------------------------------------------------------------------------------------
def test_resume_picks_newest_valid_checkpoint_and_skips_truncated(tmp_path, caplog):
    root = tmp_path / "drive"

    def ckpt(folder: str, it: int) -> Path:
        return save_checkpoint(
            {"model": _tiny_state(it), "iteration": it},
            root / folder / "checkpoints" / f"model_{it:07d}.pth",
        )

    ckpt("demo-20240101-120000", 199)
    good = ckpt("demo-20240102-090000", 399)
    newest = ckpt("demo-20240102-090000-1", 599)
    truncated = newest.with_name("model_0000799.pth")  # a sync cut short
    truncated.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    newest.unlink()
    ckpt("demo-long-20240103-000000", 999)  # another run name
    ckpt(".demo-20240104-000000.part-1", 1999)  # a temporary folder

    with caplog.at_level(logging.WARNING):
        found = find_resume_checkpoint(root, "demo")
    assert found == good
    assert "model_0000799.pth" in caplog.text
    assert find_resume_checkpoint(tmp_path / "nowhere", "demo") is None
    assert find_resume_checkpoint(root, "cat") is None

    local = fetch_checkpoint(found, tmp_path / "new-run" / "checkpoints")
    assert local.parent == tmp_path / "new-run" / "checkpoints" and sha(local) == sha(good)
    assert torch.load(local, weights_only=True)["iteration"] == 399
    with pytest.raises(DriveError, match="does not load"):
        fetch_checkpoint(truncated, tmp_path / "new-run" / "checkpoints")
