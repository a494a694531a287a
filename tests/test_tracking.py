import pytest

from raysweep.config import ConfigError
from raysweep.tracking import child_runs, log_frontier, parent_run, tracking_uri


def test_default_store_is_absolute_sqlite_in_results(tiny_cfg, tmp_path):
    uri = tracking_uri(tiny_cfg)
    assert uri == f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"


def test_multi_node_needs_a_server(tiny_cfg):
    with pytest.raises(ConfigError, match="mlflow server"):
        tracking_uri(tiny_cfg, multi_node=True)
    local = tiny_cfg.replace(**{"tracking.tracking_uri": "sqlite:////tmp/x.db"})
    with pytest.raises(ConfigError, match="server URI"):
        tracking_uri(local, multi_node=True)
    remote = tiny_cfg.replace(**{"tracking.tracking_uri": "http://head:5000"})
    assert tracking_uri(remote, multi_node=True) == "http://head:5000"


def test_parent_run_is_reused_on_resume_and_frontier_logged(tiny_cfg, tmp_path):
    uri = tracking_uri(tiny_cfg)
    pid = parent_run(uri, "exp", "sweep-a", tiny_cfg)
    assert parent_run(uri, "exp", "sweep-a", tiny_cfg) == pid
    assert parent_run(uri, "exp", "sweep-b", tiny_cfg) != pid
    f = tmp_path / "frontier.csv"
    f.write_text("trial\n")
    log_frontier(uri, pid, [f], {"metrics": {"frontier/hypervolume": 1.5}})
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    assert c.get_run(pid).data.metrics["frontier/hypervolume"] == 1.5
    assert "frontier.csv" in [a.path for a in c.list_artifacts(pid)]
    assert (tmp_path / "results" / "mlartifacts").is_dir()  # artifacts next to the store
    assert c.get_run(pid).data.params["unlearn.alpha"] == "0.25"
    parent, kids = child_runs(uri, "exp", "sweep-a")
    assert parent == pid and kids == []


def test_an_unreachable_tracking_server_fails_in_seconds_with_the_fix():
    import time

    from raysweep.config import ConfigError
    from raysweep.tracking import check_reachable

    t = time.perf_counter()
    with pytest.raises(ConfigError, match=r"did not answer.*mlflow server.*leave tracking.tracking_uri unset"):
        check_reachable("http://127.0.0.1:1", timeout=2)
    assert time.perf_counter() - t < 10
