"""The detectron2 engine: Mask R-CNN from detectron2's model zoo, trained with ``MyTrainer``.

Modules, one per stage (those marked * import detectron2 and load only when it is used):

* :mod:`.install`: ``available``, ``resolve_engine``, the commit the set-up cell builds.
* :mod:`.bridge`: the pure config bridge, ``cfg_overrides`` / ``apply_overrides`` (tested
  without detectron2).
* :mod:`.resume`: which checkpoint a run continues from (``prepare_resume``).
* :mod:`.catalog` *: ``register_dataset`` (``DatasetCatalog`` / ``MetadataCatalog``).
* :mod:`.cfg` *: ``build_cfg`` (zoo base + overrides) and ``run_cfg`` (a trained run).
* :mod:`.backbone` *: ``tiny_fpn`` (the shared ``TinyBody`` under detectron2's FPN).
* :mod:`.checkpointer` *: ``SafeCheckpointer`` (atomic saves, safe loads).
* :mod:`.trainer` *: ``SafeTrainer``, ``train_mapper``, ``MyTrainer`` (the notebook's base).
* :mod:`.predictor` *: ``D2Predictor`` (batched; :class:`~thingmask.engines.Predictor`).
* :mod:`.engine`: ``train`` / ``evaluate`` / ``load_predictor`` and ``ENGINE`` (what
  ``get_engine("detectron2")`` returns).

Class ids: detectron2 uses contiguous 0-based ids in ``dataset.class_names`` order (COCO
category id k -> k - 1); everything returned speaks class names.
"""

from thingmask.engines.detectron2_engine.bridge import (
    D2_CONFIG_FILE,
    DEFAULT_BASE_CONFIG,
    ZOO_URL_PREFIX,
    apply_overrides,
    cfg_overrides,
    dataset_names,
)
from thingmask.engines.detectron2_engine.engine import ENGINE, evaluate, load_predictor, train
from thingmask.engines.detectron2_engine.install import DETECTRON2_COMMIT, available, resolve_engine
from thingmask.engines.detectron2_engine.resume import prepare_resume

__all__ = [
    "D2_CONFIG_FILE",
    "DEFAULT_BASE_CONFIG",
    "DETECTRON2_COMMIT",
    "ENGINE",
    "ZOO_URL_PREFIX",
    "apply_overrides",
    "available",
    "cfg_overrides",
    "dataset_names",
    "evaluate",
    "load_predictor",
    "prepare_resume",
    "resolve_engine",
    "train",
]
