"""The bundled synthetic world: determinism, COCO correctness, video ground truth, idempotence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from thingmask.config import Config
from thingmask.datasets.coco import DatasetError, annotation_to_mask, load_coco_json
from thingmask.datasets.synthetic import (
    CLASS_NAMES,
    generate,
    generate_dataset,
    load_video_gt,
    mask_to_polygons,
    render_scene,
    render_video,
    save_video_gt,
)
from thingmask.evaluation.masks import mask_iou


def test_render_scene_is_a_pure_function_of_the_rng():
    a = render_scene(np.random.default_rng(3), 64, must_include="bird")
    b = render_scene(np.random.default_rng(3), 64, must_include="bird")
    c = render_scene(np.random.default_rng(4), 64, must_include="bird")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_render_scene_output_contract(name):
    image, masks, names = render_scene(np.random.default_rng(0), 80, must_include=name)
    assert image.shape == (80, 80, 3) and image.dtype == np.uint8
    assert masks.dtype == bool and masks.shape == (len(names), 80, 80)
    assert name in names and set(names) <= set(CLASS_NAMES)
    assert masks.reshape(len(names), -1).any(1).all()  # no empty instance
    assert masks.sum(0).max() <= 1  # visible masks: occlusion resolved, no overlap


def test_same_seed_gives_identical_files(tmp_path, tiny_dataset):
    again = generate_dataset(tmp_path / "again", n_train=6, n_val=3, image_size=64, seed=0)
    for rel in ("train.json", "val.json", "images/train_00000.jpg", "images/val_00002.jpg"):
        assert (again.root / rel).read_bytes() == (tiny_dataset.root / rel).read_bytes(), rel
    other = generate_dataset(tmp_path / "other", n_train=6, n_val=3, image_size=64, seed=1)
    assert (other.root / "train.json").read_bytes() != (
        tiny_dataset.root / "train.json"
    ).read_bytes()


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_class_in_both_splits_with_valid_annotations(tiny_dataset, split):
    data = load_coco_json(tiny_dataset.root / f"{split}.json")
    assert [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])] == list(
        CLASS_NAMES
    )
    assert {a["category_id"] for a in data["annotations"]} == {1, 2, 3}
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for ann in data["annotations"]:
        mask = annotation_to_mask(ann, *sizes[ann["image_id"]])
        ys, xs = np.nonzero(mask)
        assert ann["iscrowd"] == 0
        assert abs(ann["area"] - mask.sum()) <= 0.02 * ann["area"] + 2
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert all((tiny_dataset.image_root / im["file_name"]).is_file() for im in data["images"])


def test_polygons_reproduce_the_rendered_masks(tiny_dataset):
    # Re-render each training scene exactly as the generator does and compare with the json.
    data = load_coco_json(tiny_dataset.train_json)
    for i, image in enumerate(sorted(data["images"], key=lambda im: im["id"])):
        _, masks, names = render_scene(
            np.random.default_rng([0, 1, i]), 64, must_include=CLASS_NAMES[i % 3]
        )
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert [CLASS_NAMES[a["category_id"] - 1] for a in anns] == names
        for ann, mask in zip(anns, masks, strict=True):
            assert mask_iou(annotation_to_mask(ann, 64, 64), mask) > 0.9


@pytest.mark.parametrize("seed", range(5))
def test_mask_to_polygons_round_trip_is_exact_for_solid_shapes(seed):
    import cv2
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    m = np.zeros((50, 60), np.uint8)
    cv2.ellipse(
        m,
        (int(rng.integers(10, 50)), int(rng.integers(10, 40))),
        (int(rng.integers(3, 20)), int(rng.integers(3, 20))),
        float(rng.uniform(0, 180)),
        0,
        360,
        1,
        -1,
    )
    m[rng.integers(0, 50), :5] = 1  # a separate thin piece: several polygons
    polys = mask_to_polygons(m.astype(bool))
    back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 50, 60)))
    assert np.array_equal(back.astype(bool), m.astype(bool))


def test_too_few_images_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="n_val=2; need at least 3"):
        generate_dataset(tmp_path / "d", n_train=6, n_val=2, image_size=64)


def test_video_frames_and_ground_truth(tmp_path):
    frames, gt = render_video(5, 64, seed=2)
    again, _ = render_video(5, 64, seed=2)
    assert len(frames) == len(gt) == 5
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    assert not np.array_equal(frames[0], frames[4])  # things move and the camera pans
    for frame, (masks, names, ids) in zip(frames, gt, strict=True):
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        assert masks.dtype == bool and masks.shape == (len(names), 64, 64) == (len(ids), 64, 64)
        assert set(names) <= set(CLASS_NAMES) and len(set(ids.tolist())) == len(ids)
    # a stable id keeps its class through the clip
    classes = {}
    for _, names, ids in gt:
        for n, i in zip(names, ids.tolist(), strict=True):
            assert classes.setdefault(i, n) == n
    path = save_video_gt(tmp_path / "gt.npz", gt, 64, 64)
    loaded = load_video_gt(path)
    for (m1, n1, i1), (m2, n2, i2) in zip(gt, loaded, strict=True):
        assert np.array_equal(m1, m2) and n1 == n2 and np.array_equal(i1, i2)


def test_generate_is_idempotent_and_protects_other_datasets(tmp_path, tiny_config):
    config = tiny_config.replace(dataset_dir=str(tmp_path / "synthetic"), generate_synthetic=True)
    dataset = generate(config)
    video = Path(config.dataset_dir) / "video" / "demo.mp4"
    assert video.is_file() and (video.parent / "demo_gt.npz").is_file()
    assert len(load_video_gt(video.parent / "demo_gt.npz")) == config.synthetic_video_frames
    stamp = (dataset.train_json.stat().st_mtime_ns, video.stat().st_mtime_ns)
    generate(config)
    assert (dataset.train_json.stat().st_mtime_ns, video.stat().st_mtime_ns) == stamp
    manifest = json.loads((Path(config.dataset_dir) / "synthetic_manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["n_train"] == 6

    foreign = tmp_path / "mine"
    shutil.copytree(dataset.root, foreign)
    (foreign / "synthetic_manifest.json").unlink()
    with pytest.raises(DatasetError, match="generate_synthetic=False"):
        generate(config.replace(dataset_dir=str(foreign)))


# --- video ground truth with identities (issue 12) ------------------------------------------------
@pytest.mark.parametrize(("size", "n_frames"), [(48, 6), (72, 4)])
def test_video_identity_ground_truth_is_deterministic_by_seed(size, n_frames):
    _, gt = render_video(n_frames, size, seed=5)
    _, again = render_video(n_frames, size, seed=5)
    _, other = render_video(n_frames, size, seed=6)
    for (m1, n1, i1), (m2, n2, i2) in zip(gt, again, strict=True):
        assert np.array_equal(m1, m2) and n1 == n2 and np.array_equal(i1, i2)
    assert any(
        m1.shape != m2.shape or not np.array_equal(m1, m2)
        for (m1, _, _), (m2, _, _) in zip(gt, other, strict=True)
    )


DEMO = Config()  # the demo video: synthetic_video_frames at synthetic_image_size, seed


@pytest.fixture(scope="module")
def demo_gt() -> list:
    """The demo video's ground truth, rendered once for this module."""
    return render_video(DEMO.synthetic_video_frames, DEMO.synthetic_image_size, DEMO.seed)[1]


@pytest.mark.parametrize(
    ("size", "n_frames", "seed"),
    [(48, 6, 1), (72, 4, 1), (DEMO.synthetic_image_size, DEMO.synthetic_video_frames, DEMO.seed)],
)
def test_video_ids_follow_their_animal_and_masks_are_the_visible_parts(
    size, n_frames, seed, demo_gt
):
    """Each id's mask is exactly its own thing's silhouette minus what is in front of it,
    rendered independently of the compositor, in every frame and at any frame size."""
    from thingmask.datasets.synthetic.scenes import demo_scene
    from thingmask.datasets.synthetic.things import render_thing

    scene = demo_scene(n_frames, size, seed)
    is_demo = (size, n_frames, seed) == (
        DEMO.synthetic_image_size,
        DEMO.synthetic_video_frames,
        DEMO.seed,
    )
    gt = demo_gt if is_demo else render_video(n_frames, size, seed)[1]
    for f, (masks, names, ids) in enumerate(gt):
        alone = np.stack(
            [
                render_thing(thing, scene.time(f), size, size, scene.camera_x(f))[1]
                for thing in scene.things
            ]
        )
        # what each thing shows: its silhouette minus the things in front of it (drawn later)
        in_front = np.flip(np.cumsum(np.flip(alone, 0), 0), 0) - alone > 0
        visible = alone & ~in_front
        assert masks.sum(0).max() <= 1  # visible masks never overlap
        assert ids.tolist() == [k + 1 for k in range(len(alone)) if visible[k].any()]
        for mask, name, tid in zip(masks, names, ids.tolist(), strict=True):
            assert name == scene.things[tid - 1].name  # ids are 1-based, back to front
            assert np.array_equal(mask, visible[tid - 1]), (f, tid)


def test_demo_ids_are_stable_and_move_smoothly(demo_gt):
    """In the demo clip each id keeps its class, and its centroid moves a little per frame
    (an id swap between two animals would jump)."""
    size, gt = DEMO.synthetic_image_size, demo_gt
    classes: dict[int, str] = {}
    last: dict[int, np.ndarray] = {}
    for masks, names, ids in gt:
        for mask, name, tid in zip(masks, names, ids.tolist(), strict=True):
            assert classes.setdefault(tid, name) == name
            ys, xs = np.nonzero(mask)
            centre = np.array([xs.mean(), ys.mean()])
            if tid in last and mask.sum() > 0.02 * mask.size:
                assert np.linalg.norm(centre - last[tid]) < 0.15 * size, tid
            last[tid] = centre
    assert {classes[i] for i in classes} == {"cat", "bird", "leaf"}
    assert (
        sorted(classes.values()).count("cat") == 2 and sorted(classes.values()).count("bird") == 2
    )


def test_generated_ground_truth_file_matches_the_renderer(tmp_path, tiny_config):
    """generate() writes demo_gt.npz for the configured size; load_video_gt returns the same
    (masks, class names, ids) per frame as render_video."""
    config = tiny_config.replace(
        dataset_dir=str(tmp_path / "gen"), synthetic_video_frames=4, synthetic_image_size=40
    )
    generate(config)
    loaded = load_video_gt(tmp_path / "gen" / "video" / "demo_gt.npz")
    _, gt = render_video(4, 40, seed=config.seed)
    assert len(loaded) == 4
    for (m1, n1, i1), (m2, n2, i2) in zip(gt, loaded, strict=True):
        assert m2.dtype == bool and m2.shape == m1.shape == (len(n2), 40, 40)
        assert i2.dtype == np.int64
        assert np.array_equal(m1, m2) and n1 == n2 and np.array_equal(i1, i2)
