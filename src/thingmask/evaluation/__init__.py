"""Evaluation: how good the masks are, on images and on videos.

================  =================================================================
``coco``          :func:`coco_evaluate`: COCO box and mask AP (pycocotools)
``masks``         mask IoU, foreground IoU (J), boundary F (DAVIS), J&F
``video``         per-object and foreground J/F over a video, CLEAR-MOT (id switches, MOTA)
``video_report``  :func:`evaluate_video`: a cut-out video's exports against ground truth
``plots``         the loss curve and the AP bar plot of a run folder
================  =================================================================
"""

from thingmask.evaluation.coco import coco_evaluate
from thingmask.evaluation.masks import boundary_f, foreground_iou, mask_iou
from thingmask.evaluation.video import clear_mot, evaluate_foreground, evaluate_instances
from thingmask.evaluation.video_report import evaluate_video, save_report

__all__ = [
    "boundary_f",
    "clear_mot",
    "coco_evaluate",
    "evaluate_foreground",
    "evaluate_instances",
    "evaluate_video",
    "foreground_iou",
    "mask_iou",
    "save_report",
]
