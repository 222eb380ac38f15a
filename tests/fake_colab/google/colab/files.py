"""Stand-in ``google.colab.files``."""

from __future__ import annotations

import os

from google.colab import record


def download(filename):
    if not os.path.exists(filename):
        raise FileNotFoundError(f"Cannot find file: {filename}")
    record("files.download", filename)
