"""Where the notebook runs: Colab or not, installing there, saving to Drive, releasing the runtime.

=====================  ==========================================================
``environment``        :func:`describe_environment`, :func:`in_colab`: the machine, what to change
``install``            :func:`install_missing`: what Colab lacks, Colab's torch left alone
``runtime``            :func:`ensure_drive`, :func:`training_hooks`, :func:`save_run_to_drive`,
                       :func:`finish`: the notebook's Drive and runtime steps
``drive``              :func:`save_run`: a run folder copied to Drive, timestamped and verified
``drive_checkpoints``  checkpoints copied to Drive during training; resuming from them
``verified_copy``      one file copied to a flaky mount and read back
=====================  ==========================================================
"""

from thingmask.colab.environment import describe_environment, in_colab
from thingmask.colab.runtime import (
    RunLog,
    ensure_drive,
    finish,
    finish_run,
    mount_drive,
    save_run_to_drive,
    training_hooks,
)

__all__ = [
    "RunLog",
    "describe_environment",
    "ensure_drive",
    "finish",
    "finish_run",
    "in_colab",
    "mount_drive",
    "save_run_to_drive",
    "training_hooks",
]
