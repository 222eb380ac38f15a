"""The labelling loop: pick frames worth annotating, pre-label them with a trained run, find the
frames the model probably gets wrong.

* :mod:`.select` — k-means diversity over small grey thumbnails, bounded pool, exact N;
* :mod:`.frames` — ``thingmask frames``: pick and write frames of videos;
* :mod:`.polygons` — masks ↔ editable polygons (holes as keyholes);
* :mod:`.formats` — labelme, COCO (CVAT) and Label Studio pre-label documents;
* :mod:`.prelabel` — ``thingmask prelabel``: a run's predictions on images as annotations;
* :mod:`.suggest` — ``thingmask suggest``: frames flagged by temporal criteria;
* :mod:`.outputs` — the output folder on :mod:`thingmask.ownership`'s rules (its manifest, its
  lock): only files thingmask wrote, unchanged since, are ever replaced.

Whether a pre-label was reviewed, and where each label came from, is decided where datasets are
read: :mod:`thingmask.datasets.origins`.
"""
