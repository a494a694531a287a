"""The supervisor that restarts a raysweep command when Ray's local cluster dies under it (raysweep/supervise.py);
the end-to-end case (Ray's dashboard agent killed mid-run) is in test_faults.py."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raysweep.supervise import ENV, FAILED, RAY_DIED, ray_died, run_child, run_supervised

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import os, signal, sys
from pathlib import Path
marker = Path(sys.argv[1])
assert os.environ["{env}"] == "1"
n = int(marker.read_text()) if marker.exists() else 0
marker.write_text(str(n + 1))
Path(sys.argv[1] + ".args").write_text(" ".join(sys.argv[2:]))
if n < int(sys.argv[2]):
    {die}
sys.exit(0)
"""


def child(tmp_path, die: str, failures: int) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(env=ENV, die=die))
    return [sys.executable, str(script), str(tmp_path / "attempts"), str(failures)]


def attempts(tmp_path) -> int:
    return int((tmp_path / "attempts").read_text())


@pytest.mark.parametrize(
    "rc, restart",
    [(0, False), (1, True), (2, False), (FAILED, False), (RAY_DIED, True), (-int(signal.SIGABRT), True),
     (-int(signal.SIGSEGV), True), (-int(signal.SIGKILL), False), (-int(signal.SIGTERM), False),
     (-int(signal.SIGINT), False)],
)  # fmt: skip
def test_only_a_dying_ray_counts_as_a_restartable_ending(rc, restart):
    assert ray_died(rc) is restart


def test_a_child_aborted_by_ray_is_started_again_with_the_resume_flag(tmp_path, capsys):
    rc = run_supervised(child(tmp_path, "os.abort()", 1), restarts=1, resume_flag="--resume")
    assert rc == 0 and attempts(tmp_path) == 2
    assert (tmp_path / "attempts.args").read_text().endswith("--resume")
    assert "Ray's local cluster died under the run (the process was killed by SIGABRT)" in capsys.readouterr().err


def test_restarts_are_bounded_and_other_endings_pass_through(tmp_path, capsys):
    assert run_supervised(child(tmp_path, f"sys.exit({RAY_DIED})", 5), restarts=2) == RAY_DIED
    assert attempts(tmp_path) == 3 and "gave up after 2 restart(s)" in capsys.readouterr().err
    (tmp_path / "attempts").unlink()
    assert run_supervised(child(tmp_path, "sys.exit(2)", 5), restarts=2) == 2  # a config error: never restarted
    assert attempts(tmp_path) == 1
    (tmp_path / "attempts").unlink()
    rc = run_supervised(child(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)", 5), restarts=2)
    assert rc == 128 + signal.SIGKILL and attempts(tmp_path) == 1  # OOM killer / kill -9: not Ray's doing


def test_the_childs_own_failures_are_kept_apart_from_rays_status_1(capsys):
    """In the child, an exception (traceback printed) or a status of 1 becomes FAILED, so that status 1 is left to
    Ray's QuickExit; bad input (2) and success pass through."""

    def boom() -> int:
        raise RuntimeError("a bug in the run")

    assert run_child(boom) == FAILED
    assert "RuntimeError: a bug in the run" in capsys.readouterr().err
    assert [run_child(lambda rc=rc: rc) for rc in (0, 1, 2)] == [0, FAILED, 2]


def test_a_ray_system_error_in_the_child_exits_ray_died(tmp_path):
    body = "raise ray.exceptions.LocalRayletDiedError()"
    script = f"import ray.exceptions\nfrom raysweep.supervise import run_child\nrun_child(lambda: exec({body!r}))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == RAY_DIED, out.stderr[-2000:]
    assert "Ray system error: LocalRayletDiedError" in out.stderr


def test_a_silent_status_1_is_restarted_and_the_childs_own_failure_is_reported_as_1(tmp_path, capsys):
    rc = run_supervised(child(tmp_path, "os._exit(1)", 1), restarts=1)  # Ray's QuickExit: nothing printed, status 1
    assert rc == 0 and attempts(tmp_path) == 2
    assert "its raylet was gone" in capsys.readouterr().err
    (tmp_path / "attempts").unlink()
    rc = run_supervised(child(tmp_path, f"sys.exit({FAILED})", 5), restarts=2)  # run_child's word for a failure
    assert rc == 1 and attempts(tmp_path) == 1
    assert "starting Ray again" not in capsys.readouterr().err


RAYLET_GONE = """
import os, signal, sys, time
from pathlib import Path
import ray
from raysweep.cli import run_script

marker = Path(sys.argv[1])
n = int(marker.read_text()) if marker.exists() else 0
marker.write_text(str(n + 1))


def body():
    if n == 0:  # the first attempt: its raylet dies under it, then the run asks Ray for something
        ray.init(num_cpus=1, include_dashboard=False)
        os.kill(ray._private.worker._global_node.all_processes["raylet"][0].process.pid, signal.SIGKILL)
        time.sleep(2)
        ray.get(ray.put(1))
        Path(sys.argv[1] + ".survived").touch()  # never reached: Ray ends the process first
    return 0


sys.exit(run_script(body, "raylet-gone"))
"""


@pytest.mark.slow
def test_a_driver_whose_raylet_died_ends_with_status_1_and_is_started_again(tmp_path, capsys, monkeypatch):
    """The ending CI met (the dashboard-agent test, stop 52): the raylet gone, the driver's next call to it makes
    Ray's core worker ``_Exit(1)`` the process, with no exception and nothing printed. Checked against the Ray in use,
    through the same ``run_script`` the commands use; the supervisor starts the run again."""
    from tests.conftest import kill_ray, ray_env

    script = tmp_path / "raylet_gone.py"
    script.write_text(RAYLET_GONE)
    env, ray_tmp = ray_env(tmp_path)
    for k, v in {"RAY_TMPDIR": env["RAY_TMPDIR"], "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}.items():
        monkeypatch.setenv(k, v)
    try:
        rc = run_supervised([sys.executable, str(script), str(tmp_path / "attempts")], restarts=1)
    finally:
        kill_ray(ray_tmp)
    assert rc == 0 and attempts(tmp_path) == 2, capsys.readouterr().err[-3000:]
    assert not (tmp_path / "attempts.survived").exists()
    assert "Ray ended the process with status 1: its raylet was gone" in capsys.readouterr().err


def test_the_console_script_supervises_only_ray_commands(tmp_path, monkeypatch):
    """`raysweep unlearn` (the console script) runs under the supervisor on the Ray runtime; a bad config is
    refused in the parent before any child starts; `resources.runtime=local` and `--ray-restarts 0` run in-process."""
    from raysweep import cli

    calls = []
    fake = lambda cmd, n, flag=None: calls.append((cmd, n, flag)) or 0  # noqa: E731
    monkeypatch.setattr("raysweep.supervise.run_supervised", fake)
    monkeypatch.delenv(ENV, raising=False)
    res = f"tracking.results_dir={tmp_path}"
    assert cli.main(["unlearn", "--smoke-test", res], supervise=True) == 0
    assert calls[-1][0][1:4] == ["-m", "raysweep.cli", "unlearn"] and calls[-1][1:] == (1, None)
    assert cli.main(["sweep", "--ray-restarts", "3", res], supervise=True) == 0
    assert calls[-1][1:] == (3, "--resume")
    assert cli.main(["unlearn", "unlearn.alpha=nan", res], supervise=True) == 2 and len(calls) == 2
    ran = []
    monkeypatch.setattr(cli, "cmd_unlearn", lambda args: ran.append(args) or 0)
    assert cli.main(["unlearn", "resources.runtime=local", res], supervise=True) == 0
    assert cli.main(["unlearn", "--ray-restarts", "0", res], supervise=True) == 0
    assert len(calls) == 2 and len(ran) == 2  # both ran in this process


def test_a_stop_signal_to_the_supervisor_is_never_answered_by_a_restart(tmp_path, capsys):
    """SIGTERM sent to the supervisor: the child gets it; if the child then dies the way a dying Ray ends it
    (SIGABRT, as Ray's native handler does when the signal lands mid-step), the run is not started again."""
    import threading

    # the first attempt waits for the SIGTERM and aborts on it; a restarted one would exit 0 (and fail below)
    die = (
        "(signal.signal(signal.SIGTERM, lambda *_: os.abort()), Path(sys.argv[1] + '.ready').touch(), signal.pause())"
        " if n == 0 else sys.exit(0)"
    )
    cmd = child(tmp_path, die, 5)

    def stop_when_ready():
        for _ in range(600):
            if (tmp_path / "attempts.ready").exists():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            threading.Event().wait(0.05)

    threading.Thread(target=stop_when_ready, daemon=True).start()
    rc = run_supervised(cmd, restarts=2)
    assert rc == 128 + signal.SIGABRT and attempts(tmp_path) == 1
    assert "starting Ray again" not in capsys.readouterr().err
