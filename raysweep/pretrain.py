"""The original models of the embedded default, trained by raysweep and cached by config hash.

``raysweep pretrain`` (or the first ``unlearn``) trains, through the same Ray Train loop, (1) the original model on
all classes with the family's own objective and (2) the in-domain classifier used as FID / IS feature extractor.
Files live under ``$RAYSWEEP_CACHE`` (default ``~/.cache/raysweep``); a run interrupted half-way resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from raysweep import cache
from raysweep.config import Config
from raysweep.metrics.extractors import INDOMAIN
from raysweep.paths import cache_dir

log = logging.getLogger(__name__)

_DATA_KEYS = ("dataset", "root", "class_names", "num_classes", "image_size", "pretrain_images_per_class", "seed")


def _data(cfg: Config) -> dict:
    from raysweep.data.datasets import dataset_fingerprint

    d = cfg.to_dict()["data"]
    return {**{k: d[k] for k in _DATA_KEYS}, "content": dataset_fingerprint(cfg.data)}


def _workers(cfg: Config) -> int:
    """DDP processes that train a cached model (``resources.runtime=local``: one)."""
    return cfg.resources.num_workers if cfg.resources.runtime == "ray" else 1


def original_settings(cfg: Config) -> dict:
    """What decides the pretrained original: its architecture and pretraining options, the data it sees (settings
    and file content), the schedule, the seed, and the number of DDP workers (the global batch). Hashed into its
    cache key with the family's pretraining code (``cache.PRODUCERS``), and the only settings written into its
    file, so that the same weights always make the same file (and the same ``original_sha256``)."""
    from raysweep.models import get_family, pretrain_options

    model = {
        "family": cfg.model.family,
        "preset": cfg.model.preset,
        "options": pretrain_options(get_family(cfg.model.family), cfg.model.options),
    }
    p = cfg.to_dict()["pretrain"]
    return {
        "model": model,
        "data": _data(cfg),
        "workers": _workers(cfg),
        "pretrain": {k: v for k, v in p.items() if k not in ("extractor_epochs", "quality_gate")},
    }


def original_key(cfg: Config) -> str:
    return cache.key(f"original:{cfg.model.family}", original_settings(cfg))


def extractor_key(cfg: Config) -> str:
    return cache.key(
        "extractor", {"data": _data(cfg), "epochs": cfg.pretrain.extractor_epochs, "workers": _workers(cfg)}
    )


def original_path(cfg: Config) -> Path:
    return cache_dir() / "originals" / f"{cfg.model.family}-{cfg.model.preset}-{original_key(cfg)}.pt"


def extractor_path(cfg: Config) -> Path:
    return cache_dir() / "extractors" / f"indomain-{cfg.data.dataset}-{extractor_key(cfg)}.pt"


def extractor_label(cfg: Config) -> str:
    """Names the exact weights (content hash), so that numbers and feature caches of two different extractor
    files can never be mixed up (two caches may train different weights for the same config)."""
    from raysweep.models.checkpoints import sha256

    return f"{INDOMAIN}-{cfg.data.dataset}-{sha256(extractor_path(cfg))[:12]}"


def ensure_extractor(cfg: Config) -> Path:
    """The in-domain classifier's weights, trained now if not cached."""
    from raysweep.train import run_job

    p = extractor_path(cfg)
    if not p.is_file():
        log.info("training the in-domain feature extractor -> %s", p)
        run_job(cfg, "extractor", cache_dir() / "ray", f"extractor-{extractor_key(cfg)}", output=str(p))
    return p


def ensure_original(cfg: Config) -> Path | None:
    """The original model's weights: None when ``model.checkpoint`` (official weights) is set, else the cached
    raysweep-pretrained file, trained now if absent."""
    from raysweep.train import run_job

    if cfg.model.checkpoint:
        return None
    from raysweep.models import get_family

    p = original_path(cfg)
    if not p.is_file():
        stages = get_family(cfg.model.family).pretrain_stages(cfg)
        init = None
        for i, st in enumerate(stages):  # every stage but the last is cached on its own (resumable)
            out = p if i == len(stages) - 1 else p.with_name(f"{p.stem}.{st.name}.pt")
            if not out.is_file():
                log.info(
                    "pretraining the original %s (%s), stage %s, on all classes -> %s",
                    cfg.model.family,
                    cfg.model.preset,
                    st.name,
                    out,
                )
                run_job(
                    cfg,
                    "pretrain",
                    cache_dir() / "ray",
                    f"pretrain-{original_key(cfg)}-{st.name}",
                    output=str(out),
                    stage=st.name,
                    init=str(init) if init else None,
                    settings=original_settings(cfg),
                )
            init = out
        from raysweep.evaluate import write_reconstructions

        log.info("the original's completions of held-out images: %s", write_reconstructions(cfg, p))
    return p


@dataclass(frozen=True)
class Models:
    """What every unlearning run starts from, made sure of once in the driver."""

    original: Path | None  # None: the official checkpoint ``model.checkpoint``
    extractor: Path
    extractor_label: str
    quality: dict | None  # the quality gate's report on a raysweep-pretrained original
    seconds: dict  # wall time of each step that ran now (pretrain, extractor, quality gate)


def ensure_models(cfg: Config) -> Models:
    """The original (pretrained now if not cached), the in-domain extractor (likewise), and the quality gate on
    the original (:mod:`raysweep.quality`), which stops here, before any unlearning, if the original is too weak."""
    import time

    from raysweep.quality import gate

    secs = {}
    t = time.perf_counter()
    original = ensure_original(cfg)
    secs["pretrain"] = time.perf_counter() - t
    t = time.perf_counter()
    ext = ensure_extractor(cfg)
    secs["extractor"] = time.perf_counter() - t
    label = extractor_label(cfg)
    report = None
    if original is not None:
        t = time.perf_counter()
        report = gate(cfg, original, ext, label)
        secs["quality_gate"] = time.perf_counter() - t
    return Models(original, ext, label, report, secs)
