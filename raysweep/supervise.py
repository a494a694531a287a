"""Keep a run alive when Ray's local cluster dies under it (issue: a cold Palette run lost in evaluation).

On one machine, ``raysweep unlearn`` / ``pretrain`` / ``sweep`` start a local Ray cluster in the command's own
process. Ray fate-shares its node processes: when one of them dies (the dashboard agent exiting on a SIGTERM took
the raylet with it in the wave-1 Palette run), the raylet exits and the driver's core worker aborts the whole
Python process with a native stack trace: no exception reaches Python, so the command cannot catch it itself.

So the command runs as a small parent that starts the real work in a child process (the same command line, with
``RAYSWEEP_SUPERVISED=1``). A dying Ray ends the child in one of three ways, by timing: Ray's native fatal handler
kills it with SIGABRT (SIGSEGV / SIGBUS); Ray's core worker ``_Exit(1)``s it (``QuickExit``) the first time it
talks to a raylet that is gone, silently, with no Python code run (CI saw this one: status 1, nothing printed);
or a Ray system error reaches Python and :func:`run_child` exits :data:`RAY_DIED`. Since status 1 is also how
Python ends on an uncaught exception, :func:`run_child` keeps the child's own failures apart: it prints their
traceback and exits :data:`FAILED`, which the parent passes on to the user as status 1. When the child ends one of
the three ways, the parent starts it again, up to
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
import traceback
from collections.abc import Callable, Sequence

ENV = "RAYSWEEP_SUPERVISED"
RAY_DIED = 75  # EX_TEMPFAIL: the child saw a Ray system error (raylet / node / actor died) in Python
RAY_QUICK_EXIT = 1  # Ray's core worker `QuickExit` (`_Exit(1)`): a failed call to a raylet whose process is gone
FAILED = 70  # EX_SOFTWARE: the child's own failure (an exception, or status 1), reported to the user as status 1
RESTART_SIGNALS = (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS)  # how Ray's native fatal handler ends a process


def supervised() -> bool:
    return os.environ.get(ENV) == "1"


def ray_died(returncode: int) -> bool:
    """Did the child (run through :func:`run_child`) end the way a Ray cluster dying under it ends a process?"""
    if returncode in (RAY_DIED, RAY_QUICK_EXIT):
        return True
    return returncode < 0 and -returncode in {int(s) for s in RESTART_SIGNALS}


def run_child(body: Callable[[], int]) -> int:
    """The supervised child's side: ``body()``'s exit status, made unambiguous for :func:`run_supervised`. A Ray
    system error reaching Python ends the process at once with :data:`RAY_DIED`; any other exception prints its
    traceback and gives :data:`FAILED`, as does a status of 1, so that a status 1 the parent sees can only be Ray's
    ``QuickExit``. Config errors and other bad input (status 2) pass through unchanged."""
    try:
        rc = body()
    except ray_system_errors() as e:
        print(f"raysweep: Ray system error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # now, without Ray's exit handlers: with its node gone they would end the process with status 1
        # (QuickExit), restarted as well but with the cause printed above unconfirmed by the status
        os._exit(RAY_DIED)
    except Exception:
        traceback.print_exc()
        return FAILED
    return FAILED if rc == 1 else rc


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
            if rc == FAILED:
                return 1
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
    if rc == RAY_QUICK_EXIT:
        return "Ray ended the process with status 1: its raylet was gone"
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
