"""raysweep: Ray-distributed sweeps for machine unlearning of image-to-image generative models
(Li, Hsu, Chen & Marculescu, "Machine Unlearning for Image-to-Image Generative Models", ICLR 2024).

The public API is imported lazily (``import raysweep`` or ``import raysweep.config`` loads neither torch nor Ray):

- ``load_config(path, overrides)`` / ``Config`` / ``ConfigError``: typed configuration;
- ``run_unlearning(cfg)``: one unlearning run end to end, returns (run folder, metrics);
- ``run_sweep(cfg, resume=False)``: a Ray Tune + Optuna sweep with MLflow tracking;
- ``FAMILIES`` / ``get_family(name)``: the model families.

(``raysweep.unlearn`` is the subpackage holding Eq. 10 and the noise, not a function.)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "FAMILIES",
    "get_family",
    "run_unlearning",
    "run_sweep",
    "__version__",
]

_LAZY = {
    "Config": "raysweep.config",
    "ConfigError": "raysweep.config",
    "load_config": "raysweep.config",
    "FAMILIES": "raysweep.models",
    "get_family": "raysweep.models",
}


def run_unlearning(cfg: Any):
    """One unlearning run (see :func:`raysweep.runner.unlearn`); returns (run folder, metrics)."""
    from raysweep.runner import unlearn as _unlearn

    return _unlearn(cfg)


def run_sweep(cfg: Any, resume: bool = False):
    """A Ray Tune + Optuna sweep of ``cfg.sweep`` (see :func:`raysweep.tune.run_sweep`)."""
    from raysweep.tune import run_sweep as _run

    return _run(cfg, resume=resume)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raysweep' has no attribute {name!r}")
