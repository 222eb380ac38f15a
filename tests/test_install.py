"""The Colab set-up's dependency step: install only what is missing, never touch torch/numpy."""

from __future__ import annotations

import subprocess

import pytest

from thingmask.colab import install
from thingmask.colab.install import install_missing, plan_install

COLAB = {  # a Colab-like runtime: old torch, opencv without -headless, no av
    "numpy": "1.26.4",
    "torch": "2.8.0",
    "torchvision": "0.23.0",
    "opencv-python": "4.12.0",
    "pyyaml": "6.0.2",
    "pycocotools": "2.0.7",
}


@pytest.mark.parametrize(
    ("requirement", "installs", "kept"),
    [
        ("av>=14", ["av>=14"], []),  # missing: installed
        ("pycocotools>=2.0.8", ["pycocotools>=2.0.8"], []),  # too old, not protected: upgraded
        ("pyyaml>=6", [], []),  # met
        ("PyYAML>=6", [], []),  # names compare canonicalised
        ("opencv-python-headless>=4.8", [], []),  # met by opencv-python (same cv2)
        ("torch>=2.14", [], ["torch>=2.14: 2.8.0 is installed"]),  # protected: never installed
        ("numpy>=2", [], ["numpy>=2: 1.26.4 is installed"]),
        ("torchaudio>=2", [], ["torchaudio>=2: it is not installed"]),
        ('papermill>=2.5; extra == "notebook"', [], []),  # another extra: skipped
        ('av>=14; sys_platform == "nonexistent"', [], []),  # marker does not apply
    ],
)
def test_plan_installs_only_what_is_missing(requirement, installs, kept):
    plan = plan_install([requirement], COLAB.get)
    assert list(plan.install) == installs
    assert [line.split(";")[0] for line in plan.kept] == kept
    # whatever is installed, the protected distributions that exist stay at their versions
    assert plan.pins == ("torch==2.8.0", "torchvision==0.23.0", "numpy==1.26.4")


def test_plan_honours_requested_extras():
    plan = plan_install(['papermill>=2.5; extra == "notebook"'], COLAB.get, extras=["notebook"])
    assert plan.install == ("papermill>=2.5",)


def fake_pip(returncode=0, stderr=""):
    calls = []

    def run(command, **kwargs):
        constraints = command[command.index("-c") + 1]
        with open(constraints, encoding="utf-8") as fh:
            calls.append((command, fh.read()))
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    return run, calls


def test_install_missing_runs_pip_with_the_torch_pins(monkeypatch):
    monkeypatch.setattr(install.metadata, "requires", lambda _: ["av>=14", "torch>=2.14"])
    run, calls = fake_pip()
    message = install_missing(installed=COLAB.get, run=run, python="PY")
    ((command, constraints),) = calls
    assert command[:4] == ["PY", "-m", "pip", "install"] and command[-1] == "av>=14"
    assert "torch>=2.14" not in command
    assert constraints.splitlines() == ["torch==2.8.0", "torchvision==0.23.0", "numpy==1.26.4"]
    assert message.startswith("installed av>=14") and "never installs torch" in message


def test_nothing_missing_runs_no_pip(monkeypatch):
    monkeypatch.setattr(install.metadata, "requires", lambda _: ["pyyaml>=6"])
    run, calls = fake_pip()
    assert "already installed" in install_missing(installed=COLAB.get, run=run)
    assert calls == []


def test_pip_failure_says_what_to_do(monkeypatch):
    monkeypatch.setattr(install.metadata, "requires", lambda _: ["av>=14"])
    run, _ = fake_pip(1, "ERROR: Could not find a version that satisfies the requirement av")
    with pytest.raises(RuntimeError, match="internet connection") as info:
        install_missing(installed=COLAB.get, run=run)
    assert "Could not find a version" in str(info.value)


def test_real_metadata_of_this_install():
    """The package's own Requires-Dist parse, and this environment lacks nothing of them."""
    plan = plan_install(install.metadata.requires("thingmask") or ())
    assert plan.install == () and any(p.startswith("torch==") for p in plan.pins)
