"""MLflow tracking (the only module that imports mlflow): one parent run per sweep, one child run per trial.

Children get the trial's full config as flattened dotted params, every Tune result as metrics (stepped by
training iteration), and the trial's config YAML, metrics.json and sample grid as artifacts. The parent gets the
frontier CSV and plot and the best trials' summary. Default store: ``sqlite:///<absolute results dir>/mlflow.db``.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback

from raysweep.config import Config, ConfigError, flatten

log = logging.getLogger(__name__)
SWEEP_TAG = "raysweep.sweep"


def tracking_uri(cfg: Config, multi_node: bool = False) -> str:
    """The configured URI, else sqlite in the results folder. Multi-node clusters need a server URI."""
    from raysweep.paths import results_dir

    uri = cfg.tracking.tracking_uri
    if uri is None:
        if multi_node:
            raise ConfigError(
                "this Ray cluster has several nodes, and one sqlite file cannot be shared between "
                "them: run `mlflow server` on the head node and set "
                "tracking.tracking_uri=http://<head>:5000"
            )
        return f"sqlite:///{results_dir(cfg.tracking.results_dir) / 'mlflow.db'}"
    if multi_node and not uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(
            f"tracking.tracking_uri={uri!r} is a local store, which the nodes of a multi-node "
            "cluster cannot share; use an MLflow server URI (http://<head>:5000)"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; ``None`` for a server URI."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Reach the tracking store now, with a short timeout, before any compute is spent (MLflow's own client would
    retry for minutes). Raises :class:`ConfigError` naming the fix."""
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                r.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ConfigError(
                f"the MLflow tracking server {uri} did not answer within {timeout:.0f} s ({reason}); start it "
                "(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or leave tracking.tracking_uri unset to use "
                "the sqlite store in the results folder"
            ) from None
    elif (db := sqlite_path(uri)) is not None:
        if db.exists() and not db.is_file():
            raise ConfigError(f"the MLflow store {db} is not a file; point tracking.results_dir elsewhere")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str) -> str:
    """Get or create the experiment; with a sqlite store its artifacts go next to the database (MLflow's default,
    ./mlruns in whatever the working directory is, would scatter them)."""
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    uri = client.tracking_uri if hasattr(client, "tracking_uri") else ""
    db = sqlite_path(uri)
    location = (db.parent / "mlartifacts").as_uri() if db is not None else None
    return client.create_experiment(name, artifact_location=location)


def parent_run(uri: str, experiment: str, sweep: str, cfg: Config) -> str:
    """The sweep's parent run id: reused when a run tagged with this sweep name exists (``--resume``)."""
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=sweep, tags={SWEEP_TAG: sweep})
    base = {k: v for k, v in flatten(cfg.to_dict()).items() if not k.startswith("sweep.")}
    _log_params(client, run.info.run_id, base)
    client.log_text(run.info.run_id, json.dumps(cfg.to_dict()["sweep"], indent=2, default=str), "sweep.json")
    return run.info.run_id


def _log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def log_finite_metrics(client, run_id: str, metrics: dict) -> None:
    """Every finite number of ``metrics`` (a metrics.json payload: nested dicts, strings and NaNs are skipped)."""
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            client.log_metric(run_id, k, float(v))


def set_provenance_tags(client, run_id: str, metrics: dict) -> None:
    """The seed, package versions and source commit a run's metrics.json recorded, as ``raysweep.*`` tags."""
    client.set_tag(run_id, "raysweep.seed", str(metrics.get("seed", "")))
    for k, v in (metrics.get("provenance") or {}).items():
        client.set_tag(run_id, f"raysweep.version.{k}" if k != "git_commit" else "raysweep.git_commit", v)


TRIAL_TAG = "raysweep.trial"  # a child run's Tune trial id: resumes and `raysweep relog` find it, never duplicate it


class TrialCallback(MLflowLoggerCallback):
    """Tune logger callback creating one child run per trial under the sweep's parent run (Ray has no nesting of
    its own). Module-level so that Tune can pickle it into the experiment state (``--resume``).

    A resumed trial gets its existing child run back (found by :data:`TRIAL_TAG`), never a second one. If the
    tracking store stops answering mid-sweep, the sweep goes on without it (every trial's results are files in the
    sweep folder) and one error names the command that logs them later: ``raysweep relog <sweep folder>``."""

    def __init__(self, uri: str, experiment: str, parent_id: str, base: Config, trials_dir: str):
        super().__init__(
            tracking_uri=uri,
            experiment_name=experiment,
            tags={"mlflow.parentRunId": parent_id, SWEEP_TAG + ".parent": parent_id},
        )
        self.uri, self.base, self.trials_dir, self.parent_id = uri, base, trials_dir, parent_id
        self.offline: str | None = None

    def setup(self, *args, **kwargs):
        self.offline = None
        setup = super().setup
        self._guard("connecting", lambda: setup(*args, **kwargs))
        if not hasattr(self, "_trial_runs"):
            self._trial_runs = {}

    def _guard(self, what: str, fn) -> None:
        """Run one MLflow step; the first failure switches tracking off for the rest of the sweep, loudly."""
        if self.offline:
            return
        try:
            fn()
        except Exception as e:  # any client / HTTP / database error: the sweep itself must go on
            self.offline = f"{type(e).__name__}: {str(e)[:300]}"
            log.error(
                "MLflow tracking store %s failed while %s (%s); the sweep goes on without tracking. Every trial's "
                "config, metrics and pictures stay in %s; once the store is back, log them with: raysweep relog %s",
                self.uri,
                what,
                self.offline,
                self.trials_dir,
                Path(self.trials_dir).parent,
            )

    def log_trial_start(self, trial):
        self._guard(f"starting trial {trial.trial_id}", lambda: self._start(trial))

    def _start(self, trial):
        client = _client(self.uri)
        new = trial not in self._trial_runs
        if new:  # a resumed sweep: the trial's child run from before the interruption, if any
            found = client.search_runs(
                [client.get_run(self.parent_id).info.experiment_id],
                filter_string=f"tags.`{TRIAL_TAG}` = '{trial.trial_id}' and "
                f"tags.mlflow.parentRunId = '{self.parent_id}'",
                max_results=1,
            )
            if found:
                self._trial_runs[trial] = found[0].info.run_id
                client.update_run(found[0].info.run_id, status="RUNNING")
                new = False
        super().log_trial_start(trial)
        if new:  # the full config, as the trial runs it, in dotted keys
            client.set_tag(self._trial_runs[trial], TRIAL_TAG, trial.trial_id)
            full = flatten(self.base.replace(**trial.config).to_dict())
            rest = {k: v for k, v in full.items() if k not in trial.config and not k.startswith("sweep.")}
            _log_params(client, self._trial_runs[trial], rest)

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial in self._trial_runs:
            self._guard(
                f"logging trial {trial.trial_id}",
                lambda: super(TrialCallback, self).log_trial_result(iteration, trial, result),
            )

    def log_trial_end(self, trial, failed: bool = False):
        if trial in self._trial_runs:
            self._guard(f"ending trial {trial.trial_id}", lambda: self._end(trial, failed))

    def _end(self, trial, failed: bool):
        run_id = self._trial_runs[trial]
        client = _client(self.uri)
        log_trial_files(client, run_id, Path(self.trials_dir) / trial.trial_id)  # Tune drops string results
        if failed:  # why, on the run itself (the Tune error file holds the whole traceback)
            from raysweep.tune import NON_FINITE_FILE

            note = Path(self.trials_dir) / trial.trial_id / NON_FINITE_FILE
            err = note.read_text() if note.is_file() else trial.get_error()
            client.set_tag(run_id, "raysweep.error", str(err or "failed (see the trial's error file)")[-4000:])
        super().log_trial_end(trial, failed)


def log_trial_files(client, run_id: str, run_dir: Path) -> None:
    """A trial folder's config, metrics and pictures onto its child run, with the tags that say which extractor,
    task, generation and exact weights produced the numbers."""
    for name in ("config.yaml", "metrics.json", "samples.png", "tsne.png"):
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    if (run_dir / "metrics.json").is_file():
        m = json.loads((run_dir / "metrics.json").read_text())
        for k in ("extractor", "task", "generation"):
            client.set_tag(run_id, f"raysweep.{k}", m.get(k, ""))
        for k in ("original_sha256", "unlearned_sha256", "extractor_sha256"):  # exact weights of this run
            client.set_tag(run_id, f"raysweep.{k}", m.get(k) or "")
        set_provenance_tags(client, run_id, m)


def mark_interrupted(uri: str, parent_id: str) -> int:
    """Children of ``parent_id`` still RUNNING belong to trials a killed driver left behind: mark them KILLED
    (a resumed trial sets its run back to RUNNING, then FINISHED or FAILED). Returns how many."""
    client = _client(uri)
    exp = client.get_run(parent_id).info.experiment_id
    stale = client.search_runs(
        [exp], filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'"
    )
    for r in stale:
        client.set_tag(r.info.run_id, "raysweep.interrupted", "true")
        client.set_terminated(r.info.run_id, status="KILLED")
    return len(stale)


def relog(sweep_dir: Path, uri: str, experiment: str) -> tuple[str, int, int]:
    """``raysweep relog``: log a sweep folder's finished trials (``trials/<id>/metrics.json``) into MLflow, e.g.
    after the tracking store was down during the sweep. Trials that already have a FINISHED child run are skipped,
    so running it twice duplicates nothing; the frontier files go onto the parent run. Returns (parent run id,
    runs logged, runs skipped)."""
    import yaml

    from raysweep.tune import TUNE_DIR

    sweep = sweep_dir.name
    trials = sorted(p.parent for p in (sweep_dir / "trials").glob("*/metrics.json"))
    if not (sweep_dir / TUNE_DIR).is_dir() and not trials:
        raise ConfigError(f"{sweep_dir} is not a sweep folder (no {TUNE_DIR}/ and no trials/*/metrics.json)")
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'", max_results=1)
    parent = (
        found[0].info.run_id
        if found
        else client.create_run(exp_id, run_name=sweep, tags={SWEEP_TAG: sweep}).info.run_id
    )
    logged = skipped = 0
    for d in trials:
        old = client.search_runs(
            [exp_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{d.name}' and tags.mlflow.parentRunId = '{parent}'",
            max_results=1,
        )
        if old and old[0].info.status == "FINISHED":
            skipped += 1
            continue
        run_id = (
            old[0].info.run_id
            if old
            else client.create_run(
                exp_id,
                run_name=d.name,
                tags={
                    "mlflow.parentRunId": parent,
                    SWEEP_TAG + ".parent": parent,
                    TRIAL_TAG: d.name,
                    "trial_name": d.name,
                },
            ).info.run_id
        )
        if not old and (d / "config.yaml").is_file():
            cfg = yaml.safe_load((d / "config.yaml").read_text())
            _log_params(client, run_id, {k: v for k, v in flatten(cfg).items() if not k.startswith("sweep.")})
        from mlflow.entities import Metric

        m = json.loads((d / "metrics.json").read_text())
        now = int(time.time() * 1000)
        nums = [
            Metric(k, float(v), now, 0) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for i in range(0, len(nums), 500):
            client.log_batch(run_id, metrics=nums[i : i + 500])
        log_trial_files(client, run_id, d)
        client.set_terminated(run_id, status="FINISHED")
        logged += 1
    for name in ("frontier.csv", "frontier.png"):
        if (sweep_dir / name).is_file():
            client.log_artifact(parent, str(sweep_dir / name))
    client.set_terminated(parent)
    return parent, logged, skipped


def log_frontier(uri: str, parent_id: str, files: list[Path], summary: dict) -> None:
    """Frontier CSV / plot and the best trials' summary onto the parent run, then close it."""
    client = _client(uri)
    for f in files:
        client.log_artifact(parent_id, str(f))
    client.log_text(parent_id, json.dumps(summary, indent=2, default=str), "best_trials.json")
    for k, v in summary.get("metrics", {}).items():
        client.log_metric(parent_id, k, float(v))
    for k, v in summary.get("seconds", {}).items():
        client.log_metric(parent_id, f"seconds/{k}", float(v))
    client.set_terminated(parent_id)


def umbrella_run(uri: str, experiment: str, parents: list[str], files: list[Path]) -> str:
    """One run holding several studies: their parent runs become its children (``mlflow.parentRunId``), the
    combined figures its artifacts."""
    client = _client(uri)
    exp = _experiment_id(client, experiment)
    run = client.create_run(exp, run_name=f"studies-{len(parents)}", tags={SWEEP_TAG + ".studies": ",".join(parents)})
    rid = run.info.run_id
    for p in parents:
        client.set_tag(p, "mlflow.parentRunId", rid)
    for f in files:
        client.log_artifact(rid, str(f))
    client.set_terminated(rid)
    return rid


STUDY_TAG = "raysweep.study"


def log_study(uri: str, experiment: str, name: str, children: list[tuple[str, dict, dict]], files: list[Path]) -> str:
    """A study that is not a Tune sweep (one model scored on every task): a parent run ``name`` with one child run
    per ``(run name, params, metrics)`` and ``files`` (its table and figure) on the parent. Run again under the same
    name (the same model), it reuses the parent and skips children it already holds."""
    client = _client(uri)
    exp = _experiment_id(client, experiment)
    found = client.search_runs([exp], filter_string=f"tags.`{STUDY_TAG}` = '{name}'", max_results=1)
    if found:
        parent = found[0].info.run_id
    else:
        parent = client.create_run(exp, run_name=name, tags={STUDY_TAG: name}).info.run_id
    have = {
        r.info.run_name
        for r in client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)
    }
    for run_name, params, metrics in children:
        if run_name in have:
            continue
        rid = client.create_run(exp, run_name=run_name, tags={"mlflow.parentRunId": parent}).info.run_id
        _log_params(client, rid, params)
        log_finite_metrics(client, rid, metrics)
        client.set_terminated(rid)
    for f in files:
        client.log_artifact(parent, str(f))
    client.set_terminated(parent)
    return parent


def child_runs(uri: str, experiment: str, sweep: str | None = None) -> tuple[str, list[dict]]:
    """(parent run id, [{"trial", "params", "metrics"}]) of a sweep (the newest one when ``sweep`` is None)."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        # MLflow would create an empty store here; reading a sweep from it is a wrong results folder
        raise ConfigError(
            f"no MLflow store at {db}: run a sweep first, or point tracking.results_dir (or "
            "tracking.tracking_uri) at the one that holds it"
        )
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"no MLflow experiment {experiment!r} in {uri}")
    filt = f"tags.`{SWEEP_TAG}` = '{sweep}'" if sweep else f"tags.`{SWEEP_TAG}` != ''"
    parents = client.search_runs([exp.experiment_id], filter_string=filt, order_by=["start_time DESC"], max_results=1)
    if not parents:
        raise ConfigError(f"no sweep {'named ' + repr(sweep) if sweep else ''} in experiment {experiment!r}")
    pid = parents[0].info.run_id
    kids = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{pid}'", max_results=10000
    )
    return pid, [
        {
            "trial": r.data.tags.get("trial_name", r.info.run_name),
            "params": dict(r.data.params),
            "metrics": dict(r.data.metrics),
        }
        for r in kids
    ]


def serve_ui(uri: str, host: str = "127.0.0.1", port: int = 5000) -> int:
    """``mlflow ui`` on the sweep store, bound to 127.0.0.1 unless told otherwise."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    print(f"MLflow UI on http://{host}:{port}  (store: {uri})", flush=True)
    return subprocess.call(cmd)
