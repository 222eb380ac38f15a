"""Config validation: every bad setting gives one clear error naming key, value and choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thingmask.config import Config, ConfigError, load_config, parse_overrides


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"engine": "yolo"}, r"engine: got 'yolo'; expected one of \['torchvision', 'detectron2"),
        ({"iterations": "100"}, r"iterations: got '100'; expected an integer"),
        ({"iterations": 0}, r"iterations: got 0; expected a number > 0"),
        ({"iterations": True}, r"iterations: got True; expected an integer"),
        ({"learning_rate": -0.1}, r"learning_rate: got -0.1; expected a number > 0"),
        ({"display_things": []}, r"display_things: got \[\]; expected a non-empty list"),
        ({"display_things": "cat"}, r"display_things: got 'cat'; expected a list"),
        ({"display_things": ["cat", "cat"]}, r"each class name once"),
        ({"canvas": "pink"}, r"canvas: got 'pink'; expected one of \['black', 'white'"),
        ({"canvas_color": [0, 300, 0]}, r"canvas_color: .*three integers 0..255"),
        ({"canvas": "image"}, r"canvas_image: .*a picture file"),
        ({"canvas": "transparent"}, r"video_format: got 'mp4'.*no alpha channel"),
        ({"val_fraction": 1.5}, r"val_fraction: got 1.5; expected a fraction"),
        ({"score_threshold": 2}, r"score_threshold: got 2.0; expected a number between 0 and 1"),
        ({"run_name": "my run/1"}, r"run_name: .*names a folder"),
        ({"max_image_size": 10}, r"max_image_size: got 10; expected >= image_size"),
        ({"augmentations": ["twirl"]}, r"unknown augmentation 'twirl'.*flip_horizontal"),
        (
            {"augmentations": [{"name": "brightness", "amount": 2}]},
            r"no parameter\(s\) \['amount'\]",
        ),
        (
            {"augmentations": "flip_horizontal"},
            r"augmentations: got 'flip_horizontal'; expected a list",
        ),
        ({"class_map": {"doggo": 3}}, r"class_map: .*mapping of names to names"),
        ({"device": "tpu"}, r"device: got 'tpu'; expected one of"),
    ],
)
def test_bad_settings_name_key_value_and_fix(changes, expected):
    with pytest.raises(ConfigError, match=expected):
        Config.from_dict(changes)


def test_unknown_key_suggests_closest():
    with pytest.raises(
        ConfigError,
        match=r"unknown setting\(s\) 'iteration' \(did you mean "
        r"'iterations'\?\)",
    ):
        Config.from_dict({"iteration": 5})


def test_defaults_valid_frozen_and_int_accepted_for_float():
    cfg = Config(learning_rate=1)
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    with pytest.raises(AttributeError):
        cfg.iterations = 3  # type: ignore[misc]


def test_yaml_round_trip(tmp_path):
    cfg = Config(
        display_things=["bird"], augmentations=["flip_vertical", {"name": "rotation", "angle": 5}]
    )
    path = cfg.save_yaml(tmp_path / "config.yaml")
    assert load_config(path) == cfg
    assert not list(tmp_path.glob("*.part*"))  # written via a temporary name


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=f"{bad}: expected a mapping"):
        load_config(bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("engine: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(unsafe)


def test_overrides_parse_yaml_values():
    over = parse_overrides(
        ["iterations=7", "display_things=[cat, dog]", "pretrained=true", "video_input="]
    )
    assert over == {
        "iterations": 7,
        "display_things": ["cat", "dog"],
        "pretrained": True,
        "video_input": "",
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["iterations"])


def test_check_classes_lists_valid_choices():
    cfg = Config(display_things=["cat", "zebra"])
    cfg.check_classes(["cat", "zebra", "leaf"])
    with pytest.raises(
        ConfigError,
        match=r"\['zebra'\] are not classes.*Valid choices: "
        r"\['cat', 'bird'\]",
    ):
        cfg.check_classes(["cat", "bird"])


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    import datetime as dt

    cfg = Config(output_dir=str(tmp_path), run_name="exp")
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    first, second = cfg.new_run_dir(now), cfg.new_run_dir(now)
    assert first.name == "exp-20260102-030405" and second.name == "exp-20260102-030405-1"


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_the_bundled_configs_are_found():
    # the configs are found from the test file, not the working directory
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "d2_demo.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_bundled_config_files_are_valid(path):
    values = yaml.safe_load(path.read_text())
    config = Config.from_dict(values, source=str(path))
    assert config.to_dict() == {**Config().to_dict(), **values}


def test_containers_are_frozen_and_to_dict_gives_literals():
    cfg = Config(display_things=["cat"], class_map={"doggo": "dog"}, canvas_color=[1, 2, 3])
    with pytest.raises(AttributeError):
        cfg.display_things.append("dog")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        cfg.class_map["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.augmentations[0] = "flip_vertical"  # type: ignore[index]
    plain = cfg.to_dict()
    assert plain["display_things"] == ["cat"] and isinstance(plain["display_things"], list)
    assert plain["class_map"] == {"doggo": "dog"} and type(plain["class_map"]) is dict
    assert plain["canvas_color"] == [1, 2, 3]
    assert Config.from_dict(plain) == cfg


def test_augmentation_mappings_inside_the_config_are_frozen():
    cfg = Config(augmentations=[{"name": "rotation", "angle": 5}])
    with pytest.raises(TypeError):
        cfg.augmentations[0]["angle"] = 90  # type: ignore[index]
    assert cfg.to_dict()["augmentations"] == [{"name": "rotation", "angle": 5}]


def test_a_config_pickles_to_an_equal_frozen_config():
    import pickle

    cfg = Config(class_map={"doggo": "dog"}, augmentations=[{"name": "rotation", "angle": 5}])
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and back.class_map["doggo"] == "dog"
    with pytest.raises(TypeError):
        back.class_map["x"] = "y"  # type: ignore[index]
