"""Where raysweep keeps files: the cache (pretrained originals, extractors, staged datasets) and run folders."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$RAYSWEEP_CACHE`` or ``~/.cache/raysweep``; created on first use."""
    p = Path(os.environ.get("RAYSWEEP_CACHE") or Path.home() / ".cache" / "raysweep").expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def results_dir(configured: str) -> Path:
    """The absolute results folder (Ray changes workers' working directories, so never pass relative paths on)."""
    p = Path(configured).expanduser().resolve()
    if p.exists() and not p.is_dir():
        from raysweep.config import ConfigError

        raise ConfigError(f"tracking.results_dir={configured!r} is a file, not a folder; give a folder")
    p.mkdir(parents=True, exist_ok=True)
    return p
