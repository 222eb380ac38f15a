"""Stand-in ``google.colab.drive``: same signatures as Colab's, no FUSE."""

from __future__ import annotations

import os

from google.colab import record


def mount(mountpoint, force_remount=False, timeout_ms=60000, use_metadata_server=False):
    record("drive.mount", mountpoint, force_remount=force_remount, timeout_ms=timeout_ms)
    os.makedirs(os.path.join(os.path.expanduser(mountpoint), "MyDrive"), exist_ok=True)


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    record("drive.flush_and_unmount", timeout_ms=timeout_ms)
