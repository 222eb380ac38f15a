"""The bundled synthetic world: animals on a dynamic background, generated, never downloaded.

Three classes, COCO category ids 1..3 in this order (:data:`CLASS_NAMES`):

* ``cat``  — round body, head, triangular ears, legs, thick tail; orange-brown with dark stripes.
* ``bird`` — body, head, beak, wings (folded or raised), fanned tail; blue-ish with spots.
* ``leaf`` — a distractor: a big green leaf drifting like the background foliage. The demo's
  ``display_things`` leave it out, so a good model must segment it *and* not call it an animal.

Backgrounds are deliberately busy: multi-scale noise in colours that overlap the animals' (brown
earth, blue water), swaying grass blades, small foliage leaves, rippling water and, in the video,
a camera pan. Animals overlap partially and leave the frame.

Pure core: :func:`render_scene` / :func:`render_video` take a ``numpy.random.Generator`` and
return BGR ``uint8`` images with exact ``(N, H, W) bool`` visible-instance masks. Thin I/O shell:
:func:`generate_dataset`, :func:`generate_video`, :func:`generate` write the prepared COCO layout
(see :mod:`thingmask.datasets`), the demo video and its ground truth, atomically.

Everything is a pure function of the seed: same seed → identical arrays and identical files.
"""

from thingmask.datasets.synthetic.dataset import (
    GENERATOR_VERSION,
    MANIFEST,
    VIDEO_GT_NAME,
    VIDEO_NAME,
    generate,
    generate_dataset,
    generate_video,
    mask_to_polygons,
)
from thingmask.datasets.synthetic.scenes import VideoFrameGT, render_scene, render_video
from thingmask.datasets.synthetic.things import CLASS_NAMES
from thingmask.datasets.synthetic.video_gt import load_video_gt, save_video_gt

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "MANIFEST",
    "VIDEO_GT_NAME",
    "VIDEO_NAME",
    "VideoFrameGT",
    "generate",
    "generate_dataset",
    "generate_video",
    "load_video_gt",
    "mask_to_polygons",
    "render_scene",
    "render_video",
    "save_video_gt",
]
