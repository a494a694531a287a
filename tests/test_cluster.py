"""cluster.yaml (and its commented GCP / on-prem variants) pass Ray's autoscaler validator."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _commented_block(marker: str) -> dict:
    lines, inside = [], False
    for line in CLUSTER.read_text().splitlines():
        if line.startswith("# ---"):
            inside = marker in line
            continue
        if inside and line.startswith("#"):
            lines.append(line[2:])
    return yaml.safe_load("\n".join(lines))


def test_aws_cluster_validates():
    cfg = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0}  # no trials on the head
    assert any("pip install" in c and "raysweep" in c for c in cfg["setup_commands"])


def test_gcp_variant_validates():
    cfg = yaml.safe_load(CLUSTER.read_text())
    cfg.update(_commented_block("GCP variant"))
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["provider"]["type"] == "gcp"


def test_onprem_variant_validates():
    cfg = _commented_block("On-prem variant")
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert cfg["provider"]["type"] == "local"


@pytest.mark.slow
def test_simulated_multi_node_cluster_runs_a_sweep_into_an_mlflow_server(tmp_path, monkeypatch):
    """What `ray up cluster.yaml` + tune_alpha.py do, minus the cloud: a head that runs no trials (CPU 0) and two
    worker nodes (ray.cluster_utils.Cluster), a real `mlflow server` (sqlite backend, 127.0.0.1, HTTP tracking
    URI), a results folder every node sees; a 2-trial sweep runs end to end and the server holds the parent and
    child runs."""

    import ray
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster

    from tests.conftest import free_port, start_mlflow_server
    from tests.test_sweep import run_script, sweep_cfg

    ray.shutdown()  # a Ray instance left by another test in this process must not be joined
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path / "server", port)
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        cfg = sweep_cfg(tmp_path, 2)
        d = yaml.safe_load(cfg.read_text())
        d["tracking"] = {"results_dir": str(tmp_path / "shared"), "tracking_uri": uri}
        cfg.write_text(yaml.safe_dump(d))
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        res = run_script(cfg, tmp_path)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("raysweep")
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and len(kids) == 2
        assert all({"retain/fid", "forget/fid"} <= set(k.data.metrics) for k in kids)
        assert {"frontier.csv", "frontier.png"} <= {a.path for a in client.list_artifacts(parents[0].info.run_id)}
        assert list((tmp_path / "shared" / "sweeps").glob("*/trials/*/metrics.json"))  # the shared results folder
    finally:
        if cluster is not None:
            cluster.shutdown()
        server.terminate()
        server.wait(timeout=30)


def test_the_cluster_mlflow_server_is_private_and_authenticated():
    """The head's MLflow server binds the private address (not 0.0.0.0) behind the basic-auth app; credentials come
    from ~/.raysweep/mlflow.env (file_mounts, exported before ray start), never from the YAML."""
    text = CLUSTER.read_text()
    cfg = yaml.safe_load(text)
    server = next(c for c in cfg["head_start_ray_commands"] if "mlflow server" in c)
    assert "--app-name basic-auth" in server and "0.0.0.0" not in server and "hostname -I" in server
    assert "~/.raysweep/mlflow.env" in cfg["file_mounts"].values()
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert cmd.startswith("set -a; . ~/.raysweep/mlflow.env; set +a;")
    assert "PASSWORD=" not in "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))


def test_ray_workers_get_the_mlflow_credentials(monkeypatch):
    import os

    monkeypatch.delenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for key in ("enable_metrics_collection", "prestart_worker_first_driver"):  # the machine's own must not leak in
        monkeypatch.delenv(f"RAY_{key}", raising=False)
    import ray

    from raysweep.train import ensure_ray

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "u")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "p")
    monkeypatch.setenv("AWS_SECRET", "not forwarded")
    ensure_ray()
    env = seen["runtime_env"]["env_vars"]
    assert env["MLFLOW_TRACKING_USERNAME"] == "u" and env["MLFLOW_TRACKING_PASSWORD"] == "p" and "AWS_SECRET" not in env
    # a trial is a Train driver in a Ray worker: it gets Train's worker-group start timeout, raised for loaded hosts
    assert float(env["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"]) >= 300
    # a new local cluster: the workers' state API is pinned to its own dashboard (another Ray on the machine must
    # not make it ambiguous); this process's environment is left alone
    assert env["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{seen['dashboard_port']}" and seen["include_dashboard"]
    assert "RAY_API_SERVER_ADDRESS" not in os.environ
    # its own local cluster starts lean (no metrics export, no prestarted idle workers); a user's RAY_<key> wins
    assert seen["_system_config"] == {"enable_metrics_collection": False, "prestart_worker_first_driver": False}
    seen.clear()
    monkeypatch.setenv("RAY_enable_metrics_collection", "1")
    ensure_ray()
    assert seen["_system_config"] == {"prestart_worker_first_driver": False}
    monkeypatch.delenv("RAY_enable_metrics_collection")
    seen.clear()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # joining a cluster: nothing pinned
    ensure_ray()
    assert "RAY_API_SERVER_ADDRESS" not in seen["runtime_env"]["env_vars"] and "dashboard_port" not in seen
    assert "_system_config" not in seen  # a cluster it joins keeps its own settings


def test_the_dashboard_port_is_never_one_of_rays_default_ports(monkeypatch):
    """The OS handed out 52365 (the dashboard agent's default HTTP port) as a free port once, and ray.init refused
    the clash ("port number 52365 that is used by other components"): such a port is drawn again."""
    import socket

    from raysweep import train

    offered = iter([52365, 8265, 40123])

    class FakeSocket:
        def __init__(self):
            self.port = next(offered)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, addr):
            pass

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(socket, "socket", FakeSocket)
    assert train._free_port() == 40123
    offered = iter([52365] * 3)
    with pytest.raises(RuntimeError, match="52365"):
        train._free_port(attempts=3)
