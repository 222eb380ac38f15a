"""Work spread over processes and machines.

==============  ================================================================
``ray_batch``   :func:`process_many_ray`: the video batch over Ray actors (``video --ray``)
``launch``      :func:`train_distributed`: training on N GPUs (``train --num-gpus``)
==============  ================================================================

Ray is an optional extra (``thingmask[ray]``): it is imported only when a batch asks for it.
"""

from thingmask.distributed.launch import train_distributed
from thingmask.distributed.ray_batch import process_many_ray

__all__ = ["process_many_ray", "train_distributed"]
