"""Keep a run alive when Ray's local cluster dies under it (issue: a cold Palette run lost in evaluation).

On one machine, ``raysweep unlearn`` / ``pretrain`` / ``sweep`` start a local Ray cluster in the command's own
process. Ray fate-shares its node processes: when one of them dies (the dashboard agent exiting on a SIGTERM took
the raylet with it in the wave-1 Palette run), the raylet exits and the driver's core worker aborts the whole
Python process with a native stack trace: no exception reaches Python, so the command cannot catch it itself.

So the command runs as a small parent that starts the real work in a child process (the same command line, with
``RAYSWEEP_SUPERVISED=1``). When the child ends the way a dying Ray ends it (killed by SIGABRT / SIGSEGV / SIGBUS,
or exit :data:`RAY_DIED` after a Ray system error reached Python), the parent starts it again, up to
``--ray-restarts`` times: a fresh Ray, and the run resumes from what is on disk (cached originals, the Train
checkpoint of the last finished epoch, ``unlearned.pt`` before evaluation, a sweep's finished trials via
``--resume``). Any other ending (success, a config error, a bug, Ctrl-C, SIGTERM / SIGKILL) is passed through
unchanged. SIGTERM / SIGHUP sent to the parent are forwarded to the child; once the parent got one of them or
SIGINT, nothing is restarted, however the child then ends (a SIGTERM that reaches Ray's native code mid-step
ends it with SIGABRT, which alone would look like Ray dying).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

ENV = "RAYSWEEP_SUPERVISED"
RAY_DIED = 75  # EX_TEMPFAIL: the child saw a Ray system error (raylet / node / actor died) in Python
RESTART_SIGNALS = (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS)  # how Ray's native fatal handler ends a process


def supervised() -> bool:
    return os.environ.get(ENV) == "1"


def ray_died(returncode: int) -> bool:
    """Did the child end the way a Ray cluster dying under it ends a process?"""
    return returncode == RAY_DIED or (returncode < 0 and -returncode in {int(s) for s in RESTART_SIGNALS})


def ray_system_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean Ray itself failed (not the run's code): the child exits with :data:`RAY_DIED`."""
    import ray.exceptions as rex

    return (
        rex.RaySystemError,
        rex.LocalRayletDiedError,
        rex.NodeDiedError,
        rex.ActorDiedError,
        rex.ActorUnavailableError,
        rex.WorkerCrashedError,
    )


def run_supervised(command: Sequence[str], restarts: int, resume_flag: str | None = None) -> int:
    """Run ``command`` (this raysweep command line: ``[sys.executable, "-m", "raysweep.cli", ...]`` or a script) as
    a child and start it again (``restarts`` times at most) when Ray died under it; ``resume_flag`` (e.g.
    ``--resume``) is added from the second attempt on."""
    cmd = list(command)
    env = {**os.environ, ENV: "1"}
    for attempt in range(restarts + 1):
        if attempt and resume_flag and resume_flag not in cmd:
            cmd.append(resume_flag)
        rc, stopped = _wait_forwarding_signals(subprocess.Popen(cmd, env=env))
        if stopped or not ray_died(rc) or attempt == restarts:
            if ray_died(rc) and not stopped:
                print(
                    f"raysweep: Ray's local cluster died under the run again ({_how(rc)}); gave up after "
                    f"{restarts} restart(s). Everything finished so far is on disk: the same command resumes it.",
                    file=sys.stderr,
                    flush=True,
                )
            return rc if rc >= 0 else 128 - rc
        print(
            f"raysweep: Ray's local cluster died under the run ({_how(rc)}); starting Ray again and resuming from "
            f"what is on disk (restart {attempt + 1} of {restarts}; cached models, finished epochs and saved "
            "weights are not recomputed)",
            file=sys.stderr,
            flush=True,
        )
    raise AssertionError("unreachable")


def _how(rc: int) -> str:
    if rc < 0:
        return f"the process was killed by {signal.Signals(-rc).name}"
    return "a Ray system error"


def _wait_forwarding_signals(child: subprocess.Popen) -> tuple[int, bool]:
    """Wait for ``child``; returns its exit status and whether this process was asked to stop meanwhile.
    SIGTERM / SIGHUP sent to this process go to the child (which ends the run its own way) instead of orphaning
    it; SIGINT is only noted here, since Ctrl-C reaches the child through the terminal's process group already
    (forwarding it would interrupt the child twice)."""
    stopped = False

    def forward(signum, _frame):
        nonlocal stopped
        stopped = True
        if child.poll() is None:
            child.send_signal(signum)

    def note(_signum, _frame):
        nonlocal stopped
        stopped = True

    before = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    before[signal.SIGINT] = signal.signal(signal.SIGINT, note)
    try:
        while True:
            try:
                return child.wait(), stopped
            except InterruptedError:  # pragma: no cover - PEP 475 retries wait() itself
                continue
    finally:
        for s, h in before.items():
            signal.signal(s, h)
