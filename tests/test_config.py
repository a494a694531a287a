from pathlib import Path

import pytest

from raysweep.config import Config, ConfigError, flatten, load_config, parse_overrides

DEFAULT = "experiments/configs/mae_fmnist.yaml"


def test_embedded_default_loads_and_roundtrips():
    cfg = load_config(DEFAULT)
    assert cfg.model.family == "mae" and cfg.unlearn.alpha == 0.25
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "name, want",
    [  # the optimiser each YAML's README figures were measured with (docs/deviations.md); change both together
        ("mae_fmnist", ("paper", 0.0, "constant", 0.0, 0.0)),
        ("mage_fmnist", ("paper", 0.0, "constant", 0.0, 0.0)),
        ("palette_fmnist", ("paper", 0.0, "constant", 0.0, 0.0)),
    ],
)
def test_each_yaml_pins_the_optimiser_its_figures_were_measured_with(name, want):
    u = load_config(name).unlearn
    assert (u.optimizer, u.weight_decay, u.schedule, u.warmup_epochs, u.grad_clip) == want


@pytest.mark.parametrize(
    "name, want",  # the original each YAML's README figures were pretrained with (docs/deviations.md); change both
    [("mae_fmnist", "center"), ("mage_fmnist", "center"), ("palette_fmnist", "mixed")],
)
def test_each_yaml_pins_the_pretraining_masks_its_figures_were_measured_with(name, want):
    from raysweep.models import get_family, parse_options

    m = load_config(name).model
    opts = parse_options(m.family, get_family(m.family).Options, m.options)  # the YAML's value or the field default
    assert opts.train_masks == want


def test_dotted_overrides_parse_as_yaml():
    cfg = load_config(DEFAULT, ["unlearn.alpha=0.5", "data.forget_classes=[1, 2]", "unlearn.noise=uniform"])
    assert cfg.unlearn.alpha == 0.5 and cfg.data.forget_classes == [1, 2] and cfg.unlearn.noise == "uniform"
    assert parse_overrides(["a.b=3"]) == {"a.b": 3}
    assert load_config(DEFAULT, ["unlearn.lr=4e-4"]).unlearn.lr == 4e-4  # YAML 1.1 reads 4e-4 as a string


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key.*unlearn\.alhpa.*valid keys: .*unlearn\.alpha"):
        Config.from_dict({"unlearn": {"alhpa": 0.1}})
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(DEFAULT, ["unlearnn.alpha=1"])
    with pytest.raises(ConfigError, match="valid keys: .*model"):
        Config.from_dict({"modle": {}})


@pytest.mark.parametrize(
    "override, match",
    [
        ("unlearn.alpha=-1", "out of range"),
        ("unlearn.noise=pink", "choose one of"),
        ("model.family=gan", "choose one of"),
        ("unlearn.epochs=0", "out of range"),
        ("unlearn.lr=abc", "must be a number"),
        ("data.forget_classes=[1, 5]", "both data.forget_classes and data.retain_classes"),
        ("data.forget_classes=[]", "forget_classes is empty"),
        ("eval.task.name=blur", "choose one of"),
        ("eval.task.ratio=1.5", "out of range"),
        ("unlearn.optimizer=sgd", r"choose one of \['paper', 'adamw', 'adam'\]"),
        ("unlearn.schedule=linear", "choose one of"),
        ("unlearn.betas=[0.9]", "two numbers"),
    ],
)
def test_bad_values_are_rejected_with_the_fix(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(DEFAULT, [override])


def test_override_must_be_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(DEFAULT, ["unlearn.alpha"])


def test_missing_config_file_names_the_default():
    with pytest.raises(ConfigError, match="embedded default is mae_fmnist"):
        load_config("nope.yaml")


def test_replace_and_digest():
    cfg = load_config(DEFAULT)
    other = cfg.replace(**{"unlearn.alpha": 1.0})
    assert other.unlearn.alpha == 1.0 and cfg.unlearn.alpha == 0.25
    assert other.digest("unlearn") != cfg.digest("unlearn") and other.digest("data") == cfg.digest("data")
    flat = flatten(cfg.to_dict())
    assert flat["unlearn.alpha"] == 0.25 and "sweep.space" in flat


@pytest.mark.parametrize(
    "key",
    ["unlearn.alpha", "unlearn.lr", "eval.task.ratio", "data.retain_ratio", "pretrain.lr", "resources.cpus_per_worker"],
)
@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-.inf"])
def test_non_finite_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key}.*not a finite number"):
        load_config(None, [f"{key}={value}"])


def test_use_gpu_takes_yaml_booleans_and_the_readme_cluster_command():
    assert load_config(None, ["resources.use_gpu=true"]).resources.use_gpu == "true"
    assert load_config(None, ["resources.use_gpu=false"]).resources.use_gpu == "false"
    assert load_config(None, ["resources.use_gpu=auto"]).resources.use_gpu == "auto"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "resources.use_gpu=true" in ln)
    overrides = [w for w in line.split() if "=" in w and not w.startswith("--")]
    cfg = load_config(None, [o.replace("<head-private-ip>", "10.0.0.1") for o in overrides])
    assert cfg.resources.use_gpu == "true" and cfg.resources.cpus_per_worker == 4
    with pytest.raises(ConfigError, match="use_gpu"):
        load_config(None, ["resources.use_gpu=maybe"])


def test_config_names_match_their_implementations():
    import raysweep.config as c
    from raysweep.data import masks
    from raysweep.models import FAMILIES
    from raysweep.unlearn.losses import METHODS
    from raysweep.unlearn.noise import NOISES

    assert sorted(FAMILIES) == sorted(c.FAMILY_NAMES)
    assert sorted(METHODS) == sorted(c.METHOD_NAMES)
    assert list(NOISES) == list(c.NOISE_NAMES) and masks.TASKS is c.TASKS


def test_importing_the_config_loads_no_torch_and_the_public_api_works_after_it():
    import subprocess
    import sys

    code = (
        "import sys, raysweep.config; assert 'torch' not in sys.modules, 'torch imported'; "
        "import raysweep; cfg = raysweep.load_config(None); import raysweep.unlearn.losses; "
        "assert callable(raysweep.run_unlearning) and callable(raysweep.run_sweep); "
        "assert raysweep.get_family('mae').__name__.endswith('mae'); print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_packaged_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("mae_fmnist") == load_config("mae_fmnist.yaml")
    assert load_config("palette_fmnist").model.family == "palette"
    with pytest.raises(ConfigError, match=r"packaged configs: \['mae_fmnist', 'mage_fmnist', 'palette_fmnist'\]"):
        load_config("no_such_config")


def test_yaml_syntax_errors_name_the_file_or_the_override(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("unlearn:\n  alpha: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"override 'unlearn.alpha=\[1'.*not valid YAML"):
        load_config(None, ["unlearn.alpha=[1"])


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "run name"])
def test_run_names_stay_inside_the_results_folder(name):
    with pytest.raises(ConfigError, match="plain folder name"):
        load_config(None, [f"name={name!r}"] if name else ["name=''"])


def test_results_dir_that_is_a_file_is_one_message(tmp_path):
    from raysweep.paths import results_dir

    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        results_dir(str(tmp_path / "f"))
