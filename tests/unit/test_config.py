from pathlib import Path

import pytest
import yaml

from fairxray.config import ConfigError, load_params, parse_params

REPO = Path(__file__).resolve().parents[2]


def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_params_yaml_loads_as_frozen_typed_config():
    p = load_params(REPO / "params.yaml")
    assert p.profile == "demo" and p.is_demo
    assert p.data.classes[0] == "Atelectasis" and isinstance(p.data.classes, tuple)
    assert isinstance(p.images.size, int)
    with pytest.raises(AttributeError):
        p.data.seed = 1  # frozen


def test_unknown_key_is_named_with_the_file(tmp_path):
    raw = raw_params()
    raw["data"]["colour"] = 3
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"params\.yaml: unknown key 'data\.colour'"):
        load_params(f)


def test_missing_key_is_named(tmp_path):
    raw = raw_params()
    del raw["images"]["synthetic"]["noise"]
    with pytest.raises(ConfigError, match=r"x\.yaml: missing key 'images\.synthetic\.noise'"):
        parse_params(raw, "x.yaml")


@pytest.mark.parametrize(
    "section,key,value,pattern",
    [
        ("data", "per_cell", "fifty", "'data.per_cell' must be an integer"),
        ("data", "classes", "Edema", "'data.classes' must be a list"),
        ("images", "on_error", "ignore", "'images.on_error' must be 'fail' or 'skip'"),
        (
            "data",
            "protocol",
            "nih-official",
            "'data.protocol' 'nih-official' is not in data.protocols",
        ),
        ("data", "age_bins", [0, 60, 60], "'data.age_bins' must be at least 3 increasing edges"),
    ],
)
def test_bad_values_are_named(section, key, value, pattern):
    raw = raw_params()
    raw[section][key] = value
    with pytest.raises(ConfigError, match=pattern):
        parse_params(raw, "p.yaml")


def test_paper_profile_requires_real_folders():
    raw = raw_params()
    raw["profile"] = "paper"
    with pytest.raises(
        ConfigError, match="paper profile needs 'data.images_dir' and 'data.weights_dir'"
    ):
        parse_params(raw, "p.yaml")


def test_synthetic_scale_per_age_bin():
    raw = raw_params()
    raw["data"]["age_bins"] = [0, 40, 60, 100]
    with pytest.raises(ConfigError, match="one factor per age bin"):
        parse_params(raw, "p.yaml")
    raw["images"]["synthetic"]["age_signal_scale"] = [1.0, 0.8, 0.5]
    assert parse_params(raw).data.age_bins == (0, 40, 60, 100)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_every_listed_model_and_method_is_registered():
    from fairxray import adapt
    from fairxray.models import list_models

    p = load_params(REPO / "params.yaml")
    paper = yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text())
    for name in (*p.models, *paper["models"]):
        assert name in list_models(), name
    for method in p.methods:
        assert adapt.get_method(method).name == method
    # The registry holds the paper's five families (six entries) and the demo's toy model.
    assert {
        "clip-vit-b16",
        "clip-vit-b32",
        "medclip-resnet",
        "medclip-vit",
        "gloria",
        "biomedclip",
        "toy",
    } <= set(list_models())
