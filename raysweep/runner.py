"""One unlearning run end to end: make sure the original and the extractor exist, pick the run folder, run the
unlearn job in Ray Train workers, return the metrics that rank 0 wrote."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from raysweep.config import Config
from raysweep.evaluate import METRICS_FILE
from raysweep.paths import cache_dir, results_dir
from raysweep.pretrain import ensure_extractor, ensure_original, extractor_label

log = logging.getLogger(__name__)


def run_dir_for(cfg: Config) -> Path:
    """``<results>/runs/<name>-<config digest>``; an unfinished run of the same config is resumed, a finished one
    is kept and the new run gets the next free ``-rN`` suffix (nothing already written is overwritten)."""
    base = results_dir(cfg.tracking.results_dir) / "runs"
    stem = f"{cfg.name}-{cfg.digest('model', 'data', 'unlearn', 'eval', 'seed')}"
    d, k = base / stem, 1
    while (d / METRICS_FILE).is_file():
        k += 1
        d = base / f"{stem}-r{k}"
    return d


def job_kwargs(cfg: Config, run_dir: Path) -> dict:
    """What an unlearn job needs besides the config (paths only: they cross process boundaries)."""
    original = ensure_original(cfg)
    ext = ensure_extractor(cfg)
    label = extractor_label(cfg)
    # the original's scores depend on the original, the eval data / task and the extractor's weights
    from raysweep.models.checkpoints import sha256
    orig_id = sha256(original)[:12] if original else Path(cfg.model.checkpoint).name
    key = f"{cfg.digest('model', 'data', 'eval')}-{orig_id}-{label}"
    return {"run_dir": str(run_dir), "original": str(original) if original else None, "extractor": str(ext),
            "extractor_label": label, "original_cache": str(cache_dir() / "original_metrics" / f"{key}.json")}


def preflight(cfg: Config) -> None:
    """Check the inputs in the driver, before any worker starts: dataset found, class ids in range, splits not
    empty, official checkpoint readable and of the right layout. Raises with a message naming the fix."""
    from raysweep.data.datasets import load_dataset
    from raysweep.data.splits import eval_split, unlearn_split
    from raysweep.models import get_family
    train = load_dataset(cfg.data, train=True)
    unlearn_split(train.labels, cfg.data, train.num_classes)
    eval_split(load_dataset(cfg.data, train=False).labels, cfg.data)
    if cfg.model.checkpoint:
        get_family(cfg.model.family).build(cfg.model)


def unlearn(cfg: Config) -> tuple[Path, dict]:
    """Unlearn ``cfg.data.forget_classes`` from the original; returns (run folder, metrics)."""
    from raysweep.train import run_job
    preflight(cfg)
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    kwargs = job_kwargs(cfg, run_dir)
    run_job(cfg, "unlearn", run_dir, "train", **kwargs)
    return run_dir, json.loads((run_dir / METRICS_FILE).read_text())
