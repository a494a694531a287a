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


class _FakeSession:
    """The two queues of a Tune trial session that Ray's Train-to-Tune report forwarding goes through."""

    def __init__(self, forwarded):
        import queue

        self._inter_actor_queue = forwarded
        self.result_queue = queue.Queue(1)


def test_a_trial_waits_until_tune_took_the_forwarded_train_reports(monkeypatch):
    """The trial function must not report (or return) while a forwarded Train report still waits for the trial's
    main thread: both would block on Ray's one-slot result queue for ever (a sweep hung so in CI)."""
    import queue
    import threading
    import time

    import ray.train._internal.session as ray_session

    from raysweep.tune import _wait_for_forwarded_reports

    forwarded = queue.Queue(1)
    forwarded.put({"train/loss": 1.0})  # the last worker report, not yet taken by the main thread
    session = _FakeSession(forwarded)
    monkeypatch.setattr(ray_session, "get_session", lambda: session)
    taken = []

    def main_thread():  # the trial's main thread, back after a slow driver
        time.sleep(0.6)
        item = forwarded.get()
        session.result_queue.put(item)
        time.sleep(0.2)
        taken.append(session.result_queue.get())

    threading.Thread(target=main_thread, daemon=True).start()
    assert _wait_for_forwarded_reports(timeout=10, every=0.1)
    assert taken == [{"train/loss": 1.0}]  # it returned only after the main thread had taken the report

    forwarded.put({"train/loss": 2.0})  # nobody takes it: gives up after the timeout, says so
    assert not _wait_for_forwarded_reports(timeout=0.3, every=0.1)
    monkeypatch.setattr(ray_session, "get_session", lambda: object())  # no forwarding queues: nothing to wait for
    assert not _wait_for_forwarded_reports(timeout=0.3, every=0.1)
