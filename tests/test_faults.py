"""Faults, each survived and proven end to end through real Ray processes (docs/reliability.md):

- Ray's dashboard agent killed during a run (the wave-1 Palette failure): the raylet exits with it, the command's
  supervisor starts Ray again, the run resumes from disk and finishes;
- a Train worker killed mid-run: Train restarts the worker group from the last epoch checkpoint, and the result is
  that of an uninterrupted run of the same seed;
- a trial whose loss turns non-finite: marked errored (with its reason, also on its MLflow run), the sweep goes on;
- the tracking server down mid-sweep: the sweep finishes, the results are on disk, `raysweep relog` logs them once.

Every Ray instance here lives in its own short temp folder (``RAY_TMPDIR``), and only its own processes are ever
signalled: nothing here may touch another Ray on the machine (``ray stop`` would kill every one of them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import kill_ray, pids, ray_env, tiny_dict

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def spawn(cmd: list[str], env: dict) -> subprocess.Popen:
    """``cmd`` in the checkout, in its own session (so the test can kill its whole process group), output piped."""
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """The command's output once it ends; if it has not ended within ``timeout``, its process group is killed and
    the test fails with the last of what it printed (a hang must say where it hung)."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out = proc.communicate()[0]
        raise AssertionError(f"still running after {timeout:.0f} s; its last output:\n{out[-6000:]}") from None


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


def wait_for(pred, what: str, proc: subprocess.Popen, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = pred()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the command ended (exit {proc.returncode}) before {what}:\n{proc.stdout.read()}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def tiny_yaml(tmp_path: Path, **unlearn) -> Path:
    d = tiny_dict(tmp_path)
    d["unlearn"].update({"epochs": 3, **unlearn})
    d["data"]["images_per_class"] = 96  # a few seconds per epoch: the faults land mid-run
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def checkpoints(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "results" / "runs").glob("*/train/**/checkpoint_*"))


def test_a_run_survives_the_dashboard_agent_dying_and_resumes_from_disk(tmp_path):
    """The wave-1 Palette run: Ray's dashboard agent exited on a SIGTERM, the raylet exited with it and the driver
    aborted with a native stack trace. Here the agent is sent SIGTERM after the first unlearning epoch; the
    `raysweep` command's supervisor starts Ray again and the run finishes from its checkpoint (no epoch retrained,
    the original not pretrained again)."""
    env, ray_tmp = ray_env(tmp_path)
    cmd = [sys.executable, "-m", "raysweep.cli", "unlearn", "--config", str(tiny_yaml(tmp_path))]
    proc = spawn(cmd, env)
    try:
        first = wait_for(lambda: checkpoints(tmp_path), "the first unlearning checkpoint", proc)
        (agent,) = wait_for(lambda: pids(ray_tmp, "dashboard/agent.py"), "the dashboard agent", proc)
        os.kill(agent, signal.SIGTERM)
        out = finish(proc, 900)
    finally:
        kill_group(proc.pid)
        kill_ray(ray_tmp)
    assert proc.returncode == 0, out[-4000:]
    assert "Ray's local cluster died under the run" in out, out[-4000:]
    (run,) = list((tmp_path / "results" / "runs").iterdir())
    m = json.loads((run / "metrics.json").read_text())
    assert m["forget/fid"] > 0 and (run / "unlearned.pt").is_file()
    assert out.count("pretraining the original") == 1  # the cached original was reused after the restart
    assert set(first) <= set(checkpoints(tmp_path))  # resumed from the checkpoint, not started over


def test_a_killed_train_worker_resumes_from_its_checkpoint_with_the_same_result(tmp_path):
    """SIGKILL one Ray Train worker after the first epoch checkpoint: Train (FailureConfig) restarts the worker
    group from that checkpoint, and the run ends with the metrics of an uninterrupted run of the same seed."""
    env, ray_tmp = ray_env(tmp_path)
    cfg = tiny_yaml(tmp_path)
    base = [sys.executable, "-m", "raysweep.cli", "unlearn", "--config", str(cfg), "--ray-restarts", "0"]
    try:
        clean = subprocess.run([*base, "name=clean"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
        kill_ray(ray_tmp)
        proc = spawn([*base, "name=killed"], env)
        killed_dir = tmp_path / "results" / "runs"
        wait_for(lambda: list(killed_dir.glob("killed-*/train/**/checkpoint_*")), "the first checkpoint", proc)
        workers = wait_for(lambda: pids(ray_tmp, "RayTrainWorker"), "a Train worker", proc)
        os.kill(workers[-1], signal.SIGKILL)
        out = finish(proc, 900)
    finally:
        kill_ray(ray_tmp)
    assert proc.returncode == 0, out[-4000:]
    assert out.count("Attempting to start training worker group") >= 2, out[-4000:]  # Train did restart it
    a = json.loads(next(killed_dir.glob("clean-*/metrics.json")).read_text())
    b = json.loads(next(killed_dir.glob("killed-*/metrics.json")).read_text())
    for k in ("retain/fid", "forget/fid"):
        assert b[k] == pytest.approx(a[k], rel=0.02), (k, a[k], b[k])


def _sweep_yaml(tmp_path: Path, space: dict, n: int, **tracking) -> Path:
    d = tiny_dict(tmp_path)
    d["unlearn"]["epochs"] = 1
    d["sweep"] = {"metrics": ["retain/fid", "forget/fid"], "modes": ["min", "max"], "num_samples": n, "seed": 0}
    d["sweep"]["space"] = space
    d["tracking"].update(tracking)
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_a_trial_with_a_non_finite_loss_errors_with_its_reason_and_the_sweep_goes_on(tmp_path):
    from mlflow.tracking import MlflowClient

    env, ray_tmp = ray_env(tmp_path)
    cfg = _sweep_yaml(tmp_path, {"unlearn.lr": {"grid": [5e-4, 1e6]}}, 1)  # lr 1e6: NaN within a few steps
    try:
        res = subprocess.run(
            [sys.executable, "experiments/tune_alpha.py", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    finally:
        kill_ray(ray_tmp)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "errored:" in res.stdout and "1 trials, 1 on the front" in res.stdout, res.stdout[-3000:]
    (sweep,) = list((tmp_path / "results" / "sweeps").iterdir())
    (bad,) = list(sweep.glob("trials/*/non_finite.txt"))
    assert "non-finite loss" in bad.read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("raysweep").experiment_id
    kids = client.search_runs([exp], filter_string="tags.`raysweep.trial` != ''")
    assert sorted(r.info.status for r in kids) == ["FAILED", "FINISHED"]
    failed = next(r for r in kids if r.info.status == "FAILED")
    assert "non-finite" in failed.data.tags["raysweep.error"] and failed.data.tags["raysweep.trial"] == bad.parent.name


def test_the_tracking_server_going_down_mid_sweep_loses_nothing_and_relog_logs_it_once(tmp_path):
    from mlflow.tracking import MlflowClient

    from tests.conftest import free_port, start_mlflow_server

    env, ray_tmp = ray_env(tmp_path)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path / "server", port)
    space = {"unlearn.alpha": {"loguniform": [0.1, 2.0]}}
    cfg = _sweep_yaml(tmp_path, space, 2, tracking_uri=uri)
    proc = spawn([sys.executable, "experiments/tune_alpha.py", "--config", str(cfg)], env)
    try:
        sweeps = tmp_path / "results" / "sweeps"
        wait_for(lambda: list(sweeps.glob("*/trials/*/metrics.json")), "the first trial's metrics", proc)
        os.killpg(server.pid, signal.SIGKILL)  # the server goes down mid-sweep
        server.wait()
        out = finish(proc, 1200)
        assert proc.returncode == 0, out[-4000:]
        assert "raysweep relog" in out, out[-4000:]
        (sweep,) = list(sweeps.iterdir())
        assert len(list(sweep.glob("trials/*/metrics.json"))) == 2  # every trial's result is on disk
        server = start_mlflow_server(tmp_path / "server", port)  # back up, with what it had before
        relog = [sys.executable, "-m", "raysweep.cli", "relog", "--sweep", str(sweep), "--config", str(cfg)]
        first = subprocess.run(relog, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        again = subprocess.run(relog, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert "0 trial(s) logged, 2 already in MLflow" in again.stdout, again.stdout + again.stderr
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("raysweep").experiment_id
        kids = client.search_runs([exp], filter_string="tags.`raysweep.trial` != ''")
        assert len(kids) == 2 and all(r.info.status == "FINISHED" for r in kids)  # no duplicates, all finished
        assert all("forget/fid" in r.data.metrics for r in kids)
    finally:
        kill_group(proc.pid)
        kill_group(server.pid)
        kill_ray(ray_tmp)
