"""The video job: whole videos through the model to cut-out videos and their data.

===========  ======================================================================
``job``      :func:`process_video`, :func:`process_many`: one video or a batch, resumable
``cutout``   :func:`cutout_stream`: decode ∥ batched inference ∥ keep + temporal + composite
``stream``   :class:`Stream`: stages in threads joined by bounded queues
``exports``  positions CSV, COCO-RLE masks, mask video, per-animal clips
``outputs``  the names a job writes, its done markers and the guard on its own files
``batch``    which files are inputs, what each output is called, the summary table
===========  ======================================================================
"""

from thingmask.jobs.job import process_many, process_video
from thingmask.jobs.outputs import VideoResult

__all__ = ["VideoResult", "process_many", "process_video"]
