"""One unlearning run end to end: make sure the original and the extractor exist, pick the run folder, run the
unlearn job in Ray Train workers, return the metrics that rank 0 wrote."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import yaml

from raysweep.config import Config
from raysweep.evaluate import METRICS_FILE
from raysweep.jobs import RunSpec
from raysweep.paths import cache_dir, results_dir
from raysweep.pretrain import Models, ensure_models

log = logging.getLogger(__name__)


def run_stem(cfg: Config) -> Path:
    """``<results>/runs/<name>-<config digest>``: the first run folder of this exact config."""
    return results_dir(cfg.tracking.results_dir) / "runs" / f"{cfg.name}-{cfg.digest(*RUN_KEYS)}"


RUN_KEYS = ("model", "data", "pretrain", "unlearn", "eval", "seed")  # what decides a run's result


def run_dir_for(cfg: Config) -> Path:
    """:func:`run_stem`; an unfinished run of the same config is resumed, a finished one is kept and the new run
    gets the next free ``-rN`` suffix (nothing already written is overwritten)."""
    stem = run_stem(cfg)
    d, k = stem, 1
    while (d / METRICS_FILE).is_file():
        k += 1
        d = stem.with_name(f"{stem.name}-r{k}")
    return d


# data settings that pick only training images (the unlearning sets; the original's pretraining pool, which its
# weights' hash covers): the held-out images the original is scored on (raysweep.data.splits.eval_split) do not
# depend on them
UNLEARN_SET_FIELDS = ("images_per_class", "retain_ratio", "proxy_ratio", "oversample", "pretrain_images_per_class")


def run_spec(cfg: Config, run_dir: Path, models: Models | None = None) -> RunSpec:
    """What an unlearn job needs besides the config: its folder, the original and the extractor (their paths and
    content hashes) and where the original's scores are cached."""
    from raysweep import cache
    from raysweep.data.datasets import dataset_fingerprint
    from raysweep.metrics.clip import clip_label
    from raysweep.models import completion_settings
    from raysweep.models.checkpoints import sha256
    from raysweep.train import use_gpu

    models = models or ensure_models(cfg)
    original = models.original
    orig_sha = sha256(original if original else cfg.model.checkpoint)
    # the original's scores depend on its weights (content), the eval data (settings and files), task and sampler
    # settings, the extractor's weights, the device its sampler runs on and the code that scores (cache.PRODUCERS);
    # options that change only how unlearning trains (e.g. Palette's frozen_input_blocks) or which training images
    # are read (UNLEARN_SET_FIELDS) do not
    settings = cfg.to_dict()
    data = {k: v for k, v in settings["data"].items() if k not in UNLEARN_SET_FIELDS}
    data["content"] = dataset_fingerprint(cfg.data)  # the held-out files themselves (an edited image folder)
    key = cache.key(
        "scores",
        {
            "config": {"model": completion_settings(cfg), "data": data, "eval": settings["eval"]},
            "original": orig_sha,
            "extractor": models.extractor_label,
            "device": "cuda" if use_gpu(cfg) else "cpu",
            "reference": cache.version("reference"),
            "clip": clip_label(cfg.eval.clip_model, cfg.eval.clip_weights),
        },
    )
    return RunSpec(
        run_dir=str(run_dir),
        original=str(original) if original else None,
        original_sha256=orig_sha,
        extractor=str(models.extractor),
        extractor_label=models.extractor_label,
        original_cache=str(cache_dir() / "original_metrics" / f"{key}.json"),
    )


def preflight(cfg: Config) -> None:
    """Check the inputs in the driver, before any worker starts: dataset found, class ids in range, splits (test
    and validation) not empty, the model buildable with its ``model.options`` (and the official checkpoint
    readable and of the right layout when one is set). Raises with a message naming the fix."""
    from raysweep.data.datasets import load_dataset
    from raysweep.data.splits import eval_split, unlearn_split
    from raysweep.models import get_family

    train = load_dataset(cfg.data, train=True)
    unlearn_split(train.labels, cfg.data, train.num_classes)
    held_ds = load_dataset(cfg.data, train=False)
    for ds in (train, held_ds):
        if hasattr(ds, "check_sample"):  # image folders: a non-image file is found here, not in a worker
            ds.check_sample()
    held = held_ds.labels
    eval_split(held, cfg.data, "test")
    eval_split(held, cfg.data, "val")
    family = get_family(cfg.model.family)
    model = family.build(cfg.model)  # unknown or out-of-range model.options fail here
    check_input_size(cfg, family, model)
    from raysweep.metrics.clip import clip_weights_path

    clip_weights_path(cfg.eval.clip_model, cfg.eval.clip_weights)  # an explicit CLIP weights file must exist
    from raysweep.metrics import check_inception

    check_inception(cfg.eval.extractor)  # eval.extractor=inception: its weights must be on disk


def check_input_size(cfg: Config, family, model) -> None:
    """One forward of two blank images at ``data.image_size`` through the model's encoder, here in the driver: an
    image size the model cannot take (MAE / MAGE: their ``img_size``) fails now, not in a worker after Ray and
    pretraining have started."""
    import torch

    from raysweep.config import ConfigError

    s = cfg.data.image_size
    try:
        with torch.no_grad():
            family.encode(model.eval(), torch.zeros(2, 3, s, s), generator=torch.Generator().manual_seed(0))
    except (AssertionError, RuntimeError, ValueError) as e:
        raise ConfigError(
            f"data.image_size={s} does not fit the {cfg.model.family} model ({cfg.model.preset}): {e}. Set "
            "data.image_size to the model's input size, or the model's size to the images "
            "(model.options.img_size for MAE / MAGE)"
        ) from None


def unlearn(cfg: Config) -> tuple[Path, dict]:
    """Unlearn ``cfg.data.forget_classes`` from the original; returns (run folder, metrics)."""
    from raysweep.train import run_job

    preflight(cfg)
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    models = ensure_models(cfg)
    spec = run_spec(cfg, run_dir, models)
    t = time.perf_counter()
    run_job(cfg, "unlearn", run_dir, "train", spec=spec)
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    # wall times of this command's steps (pretraining and the extractor are 0 when they came from the cache)
    metrics["seconds"] = {
        **{k: round(v, 1) for k, v in models.seconds.items()},
        "unlearn_job": round(time.perf_counter() - t, 1),
        **metrics.get("seconds", {}),
    }
    if models.quality is not None:
        metrics["quality_gate"] = {
            g: {k: m[k] for k in ("fid_vs_flat", "hole_mse_vs_flat", "accuracy_kept")}
            for g, m in models.quality["groups"].items()
        }
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return run_dir, metrics
