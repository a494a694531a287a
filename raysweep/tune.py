"""The sweep: Ray Tune + Optuna (multi-objective) over the YAML ``sweep.space``, one MLflow child run per trial.

Ray 2.60 runs Train V2, so ``Tuner(TorchTrainer)`` no longer works (docs/ray.md §1): the Tune function trainable
*is* the Train driver. It builds a ``TorchTrainer`` for the trial's config and calls ``.fit()``; a
``TuneReportCallback`` forwards rank 0's reports to Tune (ASHA sees them), and a last ``ray.tune.report`` carries the
final metrics (Optuna is told the trial's last result). One study per model family: each family has its own YAML
(its options differ) and its own FID scale, which a shared TPE model would mix up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raysweep.config import Config, ConfigError, flatten
from raysweep.evaluate import METRICS_FILE
from raysweep.frontier import Point, hypervolume, pareto_front, plot, write_csv

log = logging.getLogger(__name__)
KINDS = ("loguniform", "uniform", "int", "choice", "grid")
TUNE_DIR = "tune"
MEMO_DIR = "teacher-memo"  # the teacher's outputs shared between the trials (raysweep.unlearn.memo)
NON_FINITE_FILE = "non_finite.txt"  # in a trial's folder: it diverged (Tune's retries then fail at once)


def search_space(space: dict, base: Config) -> dict[str, Any]:
    """``{"unlearn.alpha": {"loguniform": [0.05, 2]}, ...}`` -> Ray Tune domains, keyed by the dotted path."""
    from ray import tune

    valid = flatten(base.to_dict())
    out: dict[str, Any] = {}
    for key, spec in space.items():
        if key not in valid and not key.startswith("model.options."):
            raise ConfigError(
                f"sweep.space key {key!r} is not a config key; valid keys: "
                + ", ".join(k for k in valid if not k.startswith("sweep."))
            )
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ConfigError(
                f"sweep.space.{key} must be one of {{kind: args}} with kind in {list(KINDS)}, got {spec!r}"
            )
        kind, args = next(iter(spec.items()))
        if kind in ("loguniform", "uniform", "int"):
            if not (isinstance(args, list) and len(args) == 2 and args[0] < args[1]):
                raise ConfigError(f"sweep.space.{key}.{kind} needs [low, high] with low < high, got {args!r}")
            if kind == "loguniform" and args[0] <= 0:
                raise ConfigError(f"sweep.space.{key}.loguniform needs low > 0, got {args!r}")
            out[key] = {
                "loguniform": tune.loguniform,
                "uniform": tune.uniform,
                "int": lambda lo, hi: tune.randint(lo, hi + 1),
            }[kind](*args)
        else:
            if not isinstance(args, list) or not args:
                raise ConfigError(f"sweep.space.{key}.{kind} needs a non-empty list, got {args!r}")
            out[key] = tune.choice(args) if kind == "choice" else tune.grid_search(args)
        # every value must give a valid config (range / enum checks), before any trial starts
        probe = args if kind in ("choice", "grid") else [args[0], args[1]]
        for v in probe:
            base.replace(**{key: int(v) if kind == "int" else v})
    return out


def _numeric(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _wait_for_forwarded_reports(timeout: float = 600.0, quiet_checks: int = 3, every: float = 0.5) -> bool:
    """Wait until the trial's main thread has taken every Train report that Ray's ``TuneReportCallback`` forwarded.

    Ray 2.60 hands each worker report to the Tune trial through a one-slot actor queue; the trial's main thread moves
    it into a one-slot thread queue, which the trial function's own ``tune.report`` -- and the report Ray makes when
    the function returns -- also fill. If the function reports while a forwarded item still waits (the Tune driver
    was slow to ask for results: seen with an MLflow server that stopped answering), both threads block on the full
    queue for ever and the sweep hangs (docs/reliability.md). So after ``fit()`` the function waits until both queues
    have stayed empty for ``quiet_checks`` looks in a row. Returns False (and warns) if they did not within
    ``timeout`` or if this Ray has no such queues (nothing to wait for)."""
    from ray.train._internal.session import get_session

    session = get_session()
    forwarded = getattr(session, "_inter_actor_queue", None)
    results = getattr(session, "result_queue", None)
    if forwarded is None or results is None:
        return False
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < quiet_checks:
        quiet = quiet + 1 if forwarded.empty() and results.empty() else 0
        if time.monotonic() > deadline:
            log.warning("Tune did not take the trial's last Train report within %.0f s; reporting anyway", timeout)
            return False
        time.sleep(every)
    return True


def trial(params: dict, base: dict, storage: str) -> None:
    """Tune function trainable = Train driver for one trial (docs/ray.md §1)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raysweep.runner import run_spec
    from raysweep.train import trainer, use_gpu

    cfg = Config.from_dict(base).replace(**params)
    trial_id = ray.tune.get_context().get_trial_id()
    run_dir = Path(storage) / "trials" / trial_id
    if (run_dir / NON_FINITE_FILE).is_file():  # the same config and seed diverge again: no retry spends compute on it
        raise FloatingPointError((run_dir / NON_FINITE_FILE).read_text())
    if not (run_dir / METRICS_FILE).is_file():  # finished before an interruption: report, do not rerun
        spec = run_spec(cfg, run_dir)
        if cfg.resources.teacher_memo_gb > 0 and not use_gpu(cfg):  # on a GPU the forward is cheaper than the disk
            spec = dataclasses.replace(
                spec, teacher_memo=str(Path(storage) / MEMO_DIR), teacher_memo_gb=cfg.resources.teacher_memo_gb
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        try:  # Train V2 raises the run's error from fit(); older Trains return it in result.error
            result = trainer(
                cfg,
                "unlearn",
                Path(storage) / "train",
                f"train-{trial_id}",
                callbacks=[TuneReportCallback()],
                spec=spec,
            ).fit()
            if result.error:
                raise result.error
            _wait_for_forwarded_reports()
        except Exception as e:
            text = f"{e!r} {e}"  # Train wraps the worker's error; its message survives
            if "FloatingPointError" in text or "non-finite loss" in text:  # deterministic: no retry can help
                (run_dir / NON_FINITE_FILE).write_text(f"trial {trial_id}: non-finite loss: {e}"[:4000])
            raise
    final = json.loads((run_dir / METRICS_FILE).read_text())  # written by rank 0, also after a resume
    ray.tune.report(_numeric(final))  # numbers only (Tune drops strings); the folder is trials/<trial_id>


@dataclass
class SweepResult:
    name: str
    storage: Path
    tracking_uri: str
    parent_run: str
    points: list[Point]
    front: list[Point]
    files: list[Path]
    seconds: dict[str, float]  # where the sweep's wall time went (:func:`time_breakdown`)
    tracking_error: str | None = None  # the MLflow store failed at the end; the results are files (`raysweep relog`)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)  # errored trial -> the reason (last line)


def sweep_name(cfg: Config) -> str:
    return f"{cfg.name}-sweep-{cfg.digest('model', 'data', 'unlearn', 'eval', 'sweep', 'seed')}"


def _storage(cfg: Config, resume: bool) -> tuple[str, Path]:
    """A fresh sweep never reuses the folder of a finished one (Train would silently 'resume' its runs)."""
    from raysweep.paths import results_dir

    base, name = results_dir(cfg.tracking.results_dir) / "sweeps", sweep_name(cfg)
    d, k = base / name, 1
    if not resume:
        while (d / TUNE_DIR).exists():
            k += 1
            d = base / f"{name}-r{k}"
    return d.name, d


def _searcher(cfg: Config):
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    s = cfg.sweep
    if any("grid" in spec for spec in s.space.values()):
        # Optuna takes no grid_search; Tune ignores max_concurrent_trials for a given BasicVariantGenerator, so it
        # gets the limit itself (else every grid point starts at once and their Train workers starve on 2 cores)
        return BasicVariantGenerator(random_state=s.seed, max_concurrent=cfg.resources.max_concurrent_trials)
    if len(s.metrics) == 1:
        return OptunaSearch(metric=s.metrics[0], mode=s.modes[0], seed=s.seed)
    return OptunaSearch(metric=list(s.metrics), mode=list(s.modes), seed=s.seed)  # multi-objective TPE


def _scheduler(cfg: Config):
    if cfg.sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # ASHA takes one metric (docs/ray.md §2): an intermediate one that the loop reports after every epoch. Trials it
    # stops are told to Optuna with their last values, which biases the front toward early-stopped trials.
    s = cfg.sweep
    max_epochs = max([cfg.unlearn.epochs] + [int(v) for v in _values(s.space.get("unlearn.epochs"))])
    return ASHAScheduler(
        metric=s.asha_metric,
        mode=s.asha_mode,
        time_attr="epochs_done",
        max_t=max_epochs,
        grace_period=s.asha_grace_epochs,
        reduction_factor=2,
    )


def _values(spec: dict | None) -> list:
    if not spec:
        return []
    kind, args = next(iter(spec.items()))
    return list(args)


def run_sweep(cfg: Config, resume: bool = False) -> SweepResult:
    """Run (or ``resume``) the sweep of ``cfg.sweep``; returns the trials, the front and the files written."""
    import ray
    from ray import tune

    from raysweep.pretrain import ensure_models
    from raysweep.runner import preflight
    from raysweep.tracking import (
        TrialCallback,
        check_reachable,
        log_frontier,
        mark_interrupted,
        parent_run,
        tracking_uri,
    )
    from raysweep.train import ensure_ray

    if cfg.resources.runtime != "ray":
        raise ConfigError(
            f"resources.runtime={cfg.resources.runtime}: a sweep runs its trials as Ray Tune trials; "
            "use resources.runtime=ray (the default) for `raysweep sweep`"
        )
    space = search_space(cfg.sweep.space, cfg)
    preflight(cfg)  # bad input fails here, in the driver, before any Ray work
    # intermediate reports (per log_every steps / per epoch) carry training metrics only; FIDs come with the final
    # report, which is the one Optuna is told
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # a tracking server that goes down mid-sweep: MLflow's client gives up within about a minute instead of
    # retrying for many (the callback then goes on without tracking; `raysweep relog` logs the trials later)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    ensure_ray()
    uri = tracking_uri(cfg, multi_node=len([n for n in ray.nodes() if n.get("Alive")]) > 1)
    check_reachable(uri)  # an unreachable server fails now, not after the original is pretrained
    name, storage = _storage(cfg, resume)
    storage.mkdir(parents=True, exist_ok=True)
    models = ensure_models(cfg)  # before any trial: trials find the originals cached (and gated)
    parent = parent_run(uri, cfg.tracking.experiment, name, cfg)
    # trials are scored on sweep.tune_on (validation images by default); only the front is scored on test
    base = cfg.replace(**{"eval.part": cfg.sweep.tune_on})
    trainable = tune.with_parameters(trial, base=base.to_dict(), storage=str(storage))
    path = storage / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(path)):
        log.info("resuming sweep %s from %s", name, path)
        n = mark_interrupted(uri, parent)  # child runs a killed driver left RUNNING; a resumed trial reopens its own
        if n:
            log.info("%d child run(s) of the interrupted sweep marked KILLED", n)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        if resume:
            log.warning("nothing to resume at %s; starting the sweep", path)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                search_alg=_searcher(cfg),
                scheduler=_scheduler(cfg),
                num_samples=cfg.sweep.num_samples,
                max_concurrent_trials=cfg.resources.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=str(storage),
                callbacks=[TrialCallback(uri, cfg.tracking.experiment, parent, cfg, str(storage / "trials"))],
                failure_config=tune.FailureConfig(max_failures=2),
            ),
        )
    t_fit = time.perf_counter()
    grid = tuner.fit()
    t_fit = time.perf_counter() - t_fit
    if (storage / MEMO_DIR).exists():  # gigabytes, useless once the trials are done (a resume re-creates it)
        shutil.rmtree(storage / MEMO_DIR)
    points, trial_walls, errors = [], {}, {}
    for r in grid:
        m = r.metrics or {}
        if r.error is not None:  # errored after its retries (FailureConfig): the sweep goes on without it
            tid = Path(r.path).name if r.path else "?"
            errors[tid] = (str(r.error).strip().splitlines() or [repr(r.error)])[-1][:300]
            log.warning("trial %s errored: %s", tid, errors[tid])
        if "retain/fid" not in m:
            continue
        trial_walls[str(m.get("trial_id", r.path))] = float(m.get("time_total_s", math.nan))
        points.append(
            Point(
                trial=m.get("trial_id", r.path),
                retain_fid=float(m["retain/fid"]),
                forget_fid=float(m["forget/fid"]),
                params={"model.family": cfg.model.family, "unlearn.noise": cfg.unlearn.noise, **r.config},
                extra={k: m[k] for k in m if k.startswith(("original/", "forget/", "retain/"))},
            )
        )
    t_rescore = time.perf_counter()
    if cfg.sweep.tune_on != "test":
        rescore_on_test(cfg, storage, points if cfg.sweep.rescore == "all" else pareto_front(points))
    t_rescore = time.perf_counter() - t_rescore
    seconds = time_breakdown(models.seconds, storage, trial_walls, t_fit, t_rescore)
    res = _finish(cfg, name, storage, uri, parent, points, log_frontier, seconds)
    res.errors.update(errors)
    return res


def time_breakdown(
    prepared: dict[str, float], storage: Path, trial_walls: dict[str, float], t_fit: float, t_rescore: float
) -> dict[str, float]:
    """Where a sweep's wall time went: the driver's pretraining / extractor / quality gate (0 when cached), the
    trials (``tuner.fit``), per trial on average its unlearning (``train``), its evaluation and its start-up (the
    trial's wall time in Tune minus both: Ray Train's worker group, loading the original, the MLflow callback), and
    re-scoring on the test images."""
    per = {"train": [], "evaluate": [], "startup": []}
    for trial, wall in trial_walls.items():
        f = storage / "trials" / trial / METRICS_FILE
        s = json.loads(f.read_text()).get("seconds", {}) if f.is_file() else {}
        if "train" in s and "evaluate" in s and math.isfinite(wall):
            per["train"].append(s["train"])
            per["evaluate"].append(s["evaluate"])
            per["startup"].append(wall - s["train"] - s["evaluate"])
    mean = {f"trial_{k}": sum(v) / len(v) for k, v in per.items() if v}
    return {
        **{k: round(prepared.get(k, 0.0), 1) for k in ("pretrain", "extractor", "quality_gate")},
        "trials": round(t_fit, 1),
        "n_trials": float(len(per["train"])),
        **{k: round(v, 1) for k, v in mean.items()},
        "rescore_test": round(t_rescore, 1),
    }


def rescore_on_test(cfg: Config, storage: Path, front: list[Point]) -> None:
    """Trials are scored on validation images (``sweep.tune_on``); the front's models are scored again on the test
    images, in the driver, into ``trials/<id>/test/`` and ``Point.extra["test/..."]`` (reported, never tuned on)."""
    from raysweep.evaluate import evaluate_checkpoint

    for p in front:
        run_dir = storage / "trials" / str(p.trial)
        ckpt = run_dir / "unlearned.pt"
        if not ckpt.is_file():
            log.warning("trial %s has no unlearned.pt; not re-scored on the test images", p.trial)
            continue
        trial_cfg = Config.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        trial_cfg = trial_cfg.replace(**{"eval.part": "test"})
        m = evaluate_checkpoint(trial_cfg, ckpt, run_dir / "test")
        for k in ("retain/fid", "forget/fid", "retain/fid_ratio", "forget/fid_ratio", "retain/is", "forget/is"):
            p.extra[f"test/{k}"] = m[k]
        log.info(
            "trial %s on the test images: retain FID x%.2f, forget FID x%.2f",
            p.trial,
            m["retain/fid_ratio"],
            m["forget/fid_ratio"],
        )


def _finish(
    cfg: Config,
    name: str,
    storage: Path,
    uri: str,
    parent: str,
    points: list[Point],
    log_frontier,
    seconds: dict[str, float],
) -> SweepResult:
    front = pareto_front(points)
    files = [write_csv(points, storage / "frontier.csv")]
    orig = None
    if points and "original/retain/fid" in points[0].extra:
        orig = (points[0].extra["original/retain/fid"], points[0].extra["original/forget/fid"])
    files.append(plot(points, storage / "frontier.png", original=orig, title=f"{name}: retain vs forget FID"))
    summary: dict[str, Any] = {
        "scored_on": cfg.sweep.tune_on,
        "front": [
            {
                "trial": p.trial,
                "retain/fid": p.retain_fid,
                "forget/fid": p.forget_fid,
                **{k: v for k, v in p.extra.items() if k.startswith("test/")},
                **p.params,
            }
            for p in front
        ],
        "metrics": {},
        "seconds": seconds,
    }
    if orig and front:
        worst_retain = max(p.retain_fid for p in points if p.valid)
        hv = hypervolume(front, ref_retain=max(worst_retain, orig[0]) * 1.05, ref_forget=orig[1])
        best = max(front, key=lambda p: p.forget_fid / orig[1] if p.retain_fid <= 1.15 * orig[0] else -math.inf)
        summary["metrics"] = {
            "frontier/hypervolume": hv,
            "frontier/size": len(front),
            "best/forget_fid_ratio": best.forget_fid / orig[1],
            "best/retain_fid_ratio": best.retain_fid / orig[0],
            **{f"best/{k}": v for k, v in best.extra.items() if k.startswith("test/") and k.endswith("_ratio")},
        }
    try:
        log_frontier(uri, parent, files, summary)
        tracking_error = None
    except Exception as e:  # the store went down: the sweep's results are files; say how to log them later
        tracking_error = f"{type(e).__name__}: {str(e)[:300]}"
        log.error(
            "could not log the frontier to MLflow at %s (%s); the sweep's results are in %s; once the store is "
            "back: raysweep relog %s",
            uri,
            tracking_error,
            storage,
            storage,
        )
    return SweepResult(name, storage, uri, parent, points, front, files, seconds, tracking_error)
