"""A real sweep on tiny synthetic configs: Tune + Optuna (multi-objective) driving TorchTrainer, MLflow runs,
the frontier CSV; and an interrupted sweep driver resumed with --resume without repeating finished trials."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_OPTIONS, tiny_dict

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def sweep_cfg(tmp_path, n, family="mae"):
    d = tiny_dict(tmp_path)
    d["model"] = {"family": family, "preset": "tiny", "options": dict(TINY_OPTIONS[family])}
    d["unlearn"]["epochs"] = 1
    d["sweep"] = {
        "metrics": ["retain/fid", "forget/fid"],
        "modes": ["min", "max"],
        "num_samples": n,
        "seed": 0,
        "space": {"unlearn.alpha": {"loguniform": [0.1, 2.0]}, "unlearn.noise": {"choice": ["gaussian", "uniform"]}},
    }
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def run_script(cfg, tmp_path, *extra, wait=True, env=None):
    env = env or {**os.environ, "RAYSWEEP_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, str(ROOT / "experiments" / "tune_alpha.py"), "--config", str(cfg), *extra]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def mlflow_children(tmp_path):
    from raysweep.config import Config
    from raysweep.tracking import child_runs, tracking_uri

    cfg = Config.from_dict(tiny_dict(tmp_path))
    return child_runs(tracking_uri(cfg), cfg.tracking.experiment)


def test_two_trial_sweep_logs_mlflow_runs_and_frontier(tmp_path):
    res = run_script(sweep_cfg(tmp_path, 2), tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "frontier plot:" in res.stdout
    parent, kids = mlflow_children(tmp_path)
    assert len(kids) == 2
    for k in kids:
        assert {"retain/fid", "forget/fid", "retain/is", "forget/is"} <= set(k["metrics"])
        assert "unlearn.alpha" in k["params"] and "data.forget_classes" in k["params"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("raysweep").experiment_id
    for run in client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'"):
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "metrics.json", "samples.png"} <= names
        assert run.data.tags["raysweep.extractor"].startswith("raysweep-indomain")
    assert {"frontier.csv", "frontier.png", "best_trials.json"} <= {a.path for a in client.list_artifacts(parent)}
    # the teacher memo: the second trial reads the first one's teacher outputs when it draws the same noise type
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'", order_by=["start_time"])
    first, second = (r.data for r in runs)
    same_noise = first.params["unlearn.noise"] == second.params["unlearn.noise"]
    assert first.metrics["train/teacher_memo_hit_epoch"] == 0.0
    assert second.metrics["train/teacher_memo_hit_epoch"] == (1.0 if same_noise else 0.0)
    # where the wall time went: cold cache, so pretraining and the extractor ran; both trials' start-up measured
    assert "time (s): pretraining" in res.stdout
    pm = client.get_run(parent).data.metrics
    assert pm["seconds/n_trials"] == 2 and pm["seconds/pretrain"] > 0 and pm["seconds/extractor"] > 0
    assert pm["seconds/trials"] >= 2 * (pm["seconds/trial_train"] + pm["seconds/trial_evaluate"])
    assert 0 < pm["seconds/trial_startup"] < pm["seconds/trials"]
    sweeps = list((tmp_path / "results" / "sweeps").iterdir())
    rows = list(csv.DictReader(open(sweeps[0] / "frontier.csv")))
    assert len(rows) == 2 and any(r["on_front"] == "1" for r in rows)
    assert (sweeps[0] / "frontier.png").is_file()
    assert not (sweeps[0] / "teacher-memo").exists()  # gigabytes on a real sweep: gone when it ends


def test_killed_sweep_resumes_without_repeating_trials(tmp_path):
    """The sweep driver SIGKILLed after its first finished trial: --resume finishes the sweep without running a
    finished trial again; MLflow ends with exactly one child run per trial, all FINISHED (the interrupted trial's
    run was marked KILLED, then reopened by its resumed trial)."""
    from mlflow.tracking import MlflowClient

    from tests.conftest import kill_ray, ray_env

    cfg = sweep_cfg(tmp_path, 3)
    env, ray_tmp = ray_env(tmp_path)
    proc = run_script(cfg, tmp_path, wait=False, env=env)
    trials = tmp_path / "results" / "sweeps"
    deadline = time.time() + 600
    done: list[Path] = []
    while time.time() < deadline and proc.poll() is None:  # wait for the first finished trial, then kill
        done = list(trials.glob("*/trials/*/metrics.json"))
        if done:
            break
        time.sleep(2)
    assert done, "no trial finished before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_ray(ray_tmp)  # only this sweep's Ray: `ray stop` would kill every Ray on the machine
    first = {p.parent.name: p.stat().st_mtime for p in done}
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("raysweep").experiment_id
    assert any(r.info.status == "RUNNING" for r in client.search_runs([exp]))  # what the kill left behind
    res = run_script(cfg, tmp_path, "--resume", env=env)
    kill_ray(ray_tmp)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    finished = {p.parent.name: p.stat().st_mtime for p in trials.glob("*/trials/*/metrics.json")}
    assert len(finished) == 3
    for t, mtime in first.items():  # finished trials were not run again
        assert finished[t] == mtime
    assert len(list(trials.iterdir())) == 1  # the same sweep folder was resumed
    kids = client.search_runs([exp], filter_string="tags.`raysweep.trial` != ''")
    assert sorted(r.data.tags["raysweep.trial"] for r in kids) == sorted(finished)  # one child run per trial
    assert all(r.info.status == "FINISHED" for r in kids)


@pytest.mark.parametrize("family", ["mage", "palette"])
def test_tune_alpha_sweeps_the_other_families(tmp_path, family):
    res = run_script(sweep_cfg(tmp_path, 1, family=family), tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _, kids = mlflow_children(tmp_path)
    assert len(kids) == 1 and kids[0]["params"]["model.family"] == family
    assert {"retain/fid", "forget/fid"} <= set(kids[0]["metrics"])
