import pytest
from ray import tune

from raysweep.config import ConfigError, load_config
from raysweep.tune import search_space, sweep_name

DEFAULT = "experiments/configs/mae_fmnist.yaml"


def test_yaml_space_becomes_tune_domains():
    cfg = load_config(DEFAULT)
    space = search_space(
        {
            "unlearn.alpha": {"loguniform": [0.05, 2.0]},
            "unlearn.lr": {"uniform": [1e-5, 1e-4]},
            "unlearn.epochs": {"int": [2, 6]},
            "unlearn.noise": {"choice": ["gaussian", "uniform"]},
            "unlearn.loss_form": {"grid": ["l2", "mse"]},
        },
        cfg,
    )
    assert isinstance(space["unlearn.alpha"], tune.search.sample.Float)
    assert space["unlearn.alpha"].sampler.__class__.__name__ == "_LogUniform"
    assert isinstance(space["unlearn.epochs"], tune.search.sample.Integer)
    assert space["unlearn.epochs"].lower == 2 and space["unlearn.epochs"].upper == 7  # inclusive high
    assert space["unlearn.noise"].categories == ["gaussian", "uniform"]
    assert space["unlearn.loss_form"] == {"grid_search": ["l2", "mse"]}


@pytest.mark.parametrize(
    "space, match",
    [
        ({"unlearn.alhpa": {"uniform": [0, 1]}}, "not a config key"),
        ({"unlearn.alpha": {"normal": [0, 1]}}, "kind in"),
        ({"unlearn.alpha": {"uniform": [1, 0]}}, "low < high"),
        ({"unlearn.alpha": {"loguniform": [0, 1]}}, "low > 0"),
        ({"unlearn.noise": {"choice": ["gaussian", "pink"]}}, "choose one of"),
        ({"unlearn.noise": {"choice": []}}, "non-empty"),
    ],
)
def test_bad_space_is_rejected(space, match):
    with pytest.raises(ConfigError, match=match):
        search_space(space, load_config(DEFAULT))


def test_sweep_name_is_stable_and_has_no_timestamp():
    a, b = load_config(DEFAULT), load_config(DEFAULT)
    assert sweep_name(a) == sweep_name(b)
    assert sweep_name(a) != sweep_name(a.replace(**{"sweep.num_samples": 3}))


def test_grid_sweeps_keep_the_concurrency_limit(tiny_cfg):
    """Tune ignores max_concurrent_trials for a given BasicVariantGenerator: the grid searcher carries it itself."""
    from raysweep.tune import _searcher

    cfg = tiny_cfg.replace(**{"sweep.space": {"unlearn.alpha": {"grid": [0.1, 1.0]}}})
    assert _searcher(cfg).max_concurrent == 1
    assert _searcher(cfg.replace(**{"resources.max_concurrent_trials": 3})).max_concurrent == 3
