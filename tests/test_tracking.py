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


def _sweep_folder(tmp_path, n=2):
    """A sweep folder as a sweep leaves it: trials/<id>/{config.yaml, metrics.json, samples.png}, frontier.csv."""
    import json

    import yaml

    d = tmp_path / "results" / "sweeps" / "mae-sweep-abc"
    for i in range(n):
        t = d / "trials" / f"t{i}"
        t.mkdir(parents=True)
        (t / "config.yaml").write_text(yaml.safe_dump({"unlearn": {"alpha": 0.1 * (i + 1)}, "sweep": {"seed": 0}}))
        m = {"retain/fid": 10.0 + i, "forget/fid": 20.0 + i, "extractor": "x", "seed": 0, "task": "center"}
        (t / "metrics.json").write_text(json.dumps(m))
        (t / "samples.png").write_bytes(b"png")
    (d / "frontier.csv").write_text("trial\n")
    return d


def test_relog_puts_a_sweep_folder_into_mlflow_once(tiny_cfg, tmp_path):
    """After the tracking store was down, `raysweep relog` logs every finished trial from the files; a second
    call (or trials already logged by the sweep) duplicates nothing."""
    from mlflow.tracking import MlflowClient

    from raysweep.tracking import relog

    d = _sweep_folder(tmp_path)
    uri = tracking_uri(tiny_cfg)
    parent, logged, skipped = relog(d, uri, "exp")
    assert (logged, skipped) == (2, 0)
    assert relog(d, uri, "exp")[1:] == (0, 2)
    _, kids = child_runs(uri, "exp", "mae-sweep-abc")
    assert sorted(k["metrics"]["forget/fid"] for k in kids) == [20.0, 21.0]
    assert {k["params"]["unlearn.alpha"] for k in kids} == {"0.1", "0.2"}
    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("exp").experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 2
    assert {"config.yaml", "metrics.json", "samples.png"} <= {a.path for a in c.list_artifacts(runs[0].info.run_id)}
    assert "frontier.csv" in {a.path for a in c.list_artifacts(parent)}


def test_relog_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    from raysweep.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["relog", "--sweep", str(tmp_path / "empty"), f"tracking.results_dir={tmp_path}"]) == 2
    assert main(["relog", "--sweep", str(tmp_path / "nope"), f"tracking.results_dir={tmp_path}"]) == 2
    assert not (tmp_path / "mlflow.db").exists()  # refused before any store is created


def test_children_left_running_by_a_killed_driver_are_marked_killed(tiny_cfg):
    from mlflow.tracking import MlflowClient

    from raysweep.tracking import mark_interrupted

    uri = tracking_uri(tiny_cfg)
    pid = parent_run(uri, "exp", "sweep-a", tiny_cfg)
    c = MlflowClient(uri)
    exp = c.get_run(pid).info.experiment_id
    done = c.create_run(exp, tags={"mlflow.parentRunId": pid}).info.run_id
    c.set_terminated(done)
    left = c.create_run(exp, tags={"mlflow.parentRunId": pid}).info.run_id
    assert mark_interrupted(uri, pid) == 1
    assert c.get_run(left).info.status == "KILLED" and c.get_run(done).info.status == "FINISHED"
    assert mark_interrupted(uri, pid) == 0
