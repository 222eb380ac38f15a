"""Cut-out: from a frame's kept detections to the picture and the masks that hold still.

=============  ====================================================================
``composite``  :func:`get_masked_image`, :class:`Canvas`: the kept animals' pixels on a canvas
               (numpy on the CPU, :func:`composite_tensor` on the GPU)
``tracking``   :class:`Tracker`: stable track ids by mask IoU and optimal assignment
``smoothing``  :class:`TemporalSmoother`: a track's soft mask blended over a few frames
``refine``     :class:`EdgeRefiner`: edge-aware (guided filter) refinement of soft masks
``temporal``   :func:`make_temporal_stage` / :func:`make_stage`: tracking → smoothing →
               refinement as one streaming stage; :func:`through_stage` runs it in the pipeline
``windows``    instances as windows around their boxes (what the stages above work on)
=============  ====================================================================
"""

from thingmask.cutout.composite import Canvas, composite_mask, get_masked_image
from thingmask.cutout.temporal import TemporalStage, make_stage, make_temporal_stage
from thingmask.cutout.tracking import Tracker

__all__ = [
    "Canvas",
    "TemporalStage",
    "Tracker",
    "composite_mask",
    "get_masked_image",
    "make_stage",
    "make_temporal_stage",
]
