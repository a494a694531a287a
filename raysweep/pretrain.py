"""The original models of the embedded default, trained by raysweep and cached by config hash.

``raysweep pretrain`` (or the first ``unlearn``) trains, through the same Ray Train loop, (1) the original model on
all classes with the family's own objective and (2) the in-domain classifier used as FID / IS feature extractor.
Files live under ``$RAYSWEEP_CACHE`` (default ``~/.cache/raysweep``); a run interrupted half-way resumes.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from raysweep.config import Config
from raysweep.metrics.extractors import INDOMAIN
from raysweep.paths import cache_dir

log = logging.getLogger(__name__)

_DATA_KEYS = ("dataset", "root", "class_names", "num_classes", "image_size", "pretrain_images_per_class", "seed")


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def original_key(cfg: Config) -> str:
    from raysweep.models import get_family, pretrain_options
    d = cfg.to_dict()
    model = {"family": cfg.model.family, "preset": cfg.model.preset,
             "options": pretrain_options(get_family(cfg.model.family), cfg.model.options)}
    return _key({"model": model,
                 "data": {k: d["data"][k] for k in _DATA_KEYS},
                 "pretrain": {k: v for k, v in d["pretrain"].items() if k != "extractor_epochs"}})


def extractor_key(cfg: Config) -> str:
    d = cfg.to_dict()
    return _key({"data": {k: d["data"][k] for k in _DATA_KEYS}, "epochs": d["pretrain"]["extractor_epochs"]})


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
        for i, st in enumerate(stages):     # every stage but the last is cached on its own (resumable)
            out = p if i == len(stages) - 1 else p.with_name(f"{p.stem}.{st.name}.pt")
            if not out.is_file():
                log.info("pretraining the original %s (%s), stage %s, on all classes -> %s", cfg.model.family,
                         cfg.model.preset, st.name, out)
                run_job(cfg, "pretrain", cache_dir() / "ray", f"pretrain-{original_key(cfg)}-{st.name}",
                        output=str(out), stage=st.name, init=str(init) if init else None)
            init = out
        from raysweep.evaluate import write_reconstructions
        log.info("the original's completions of held-out images: %s", write_reconstructions(cfg, p))
    return p
