import pytest

from raysweep.config import Config, ConfigError, flatten, load_config, parse_overrides

DEFAULT = "experiments/configs/mae_fmnist.yaml"


def test_embedded_default_loads_and_roundtrips():
    cfg = load_config(DEFAULT)
    assert cfg.model.family == "mae" and cfg.unlearn.alpha == 0.25
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_dotted_overrides_parse_as_yaml():
    cfg = load_config(DEFAULT, ["unlearn.alpha=0.5", "data.forget_classes=[1, 2]", "unlearn.noise=uniform"])
    assert cfg.unlearn.alpha == 0.5 and cfg.data.forget_classes == [1, 2] and cfg.unlearn.noise == "uniform"
    assert parse_overrides(["a.b=3"]) == {"a.b": 3}
    assert load_config(DEFAULT, ["unlearn.lr=4e-4"]).unlearn.lr == 4e-4      # YAML 1.1 reads 4e-4 as a string


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key.*unlearn\.alhpa.*valid keys: .*unlearn\.alpha"):
        Config.from_dict({"unlearn": {"alhpa": 0.1}})
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(DEFAULT, ["unlearnn.alpha=1"])
    with pytest.raises(ConfigError, match="valid keys: .*model"):
        Config.from_dict({"modle": {}})


@pytest.mark.parametrize("override, match", [
    ("unlearn.alpha=-1", "out of range"),
    ("unlearn.noise=pink", "choose one of"),
    ("model.family=gan", "choose one of"),
    ("unlearn.epochs=0", "out of range"),
    ("unlearn.lr=abc", "must be a number"),
    ("data.forget_classes=[1, 5]", "both data.forget_classes and data.retain_classes"),
    ("data.forget_classes=[]", "forget_classes is empty"),
    ("eval.task.name=blur", "choose one of"),
    ("eval.task.ratio=1.5", "out of range"),
])
def test_bad_values_are_rejected_with_the_fix(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(DEFAULT, [override])


def test_override_must_be_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(DEFAULT, ["unlearn.alpha"])


def test_missing_config_file_names_the_default():
    with pytest.raises(ConfigError, match="mae_fmnist.yaml"):
        load_config("nope.yaml")


def test_replace_and_digest():
    cfg = load_config(DEFAULT)
    other = cfg.replace(**{"unlearn.alpha": 1.0})
    assert other.unlearn.alpha == 1.0 and cfg.unlearn.alpha == 0.25
    assert other.digest("unlearn") != cfg.digest("unlearn") and other.digest("data") == cfg.digest("data")
    flat = flatten(cfg.to_dict())
    assert flat["unlearn.alpha"] == 0.25 and "sweep.space" in flat
