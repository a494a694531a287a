"""raysweep: Ray-distributed sweeps for machine unlearning of image-to-image generative models
(Li, Hsu, Chen & Marculescu, "Machine Unlearning for Image-to-Image Generative Models", ICLR 2024)."""
from raysweep.config import Config, ConfigError, load_config
from raysweep.models import FAMILIES, get_family

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "load_config", "FAMILIES", "get_family", "unlearn", "run_sweep", "__version__"]


def unlearn(cfg: Config):
    """One unlearning run (see :func:`raysweep.runner.unlearn`); returns (run folder, metrics)."""
    from raysweep.runner import unlearn as _unlearn
    return _unlearn(cfg)


def run_sweep(cfg: Config, resume: bool = False):
    """A Ray Tune + Optuna sweep of ``cfg.sweep`` (see :func:`raysweep.tune.run_sweep`)."""
    from raysweep.tune import run_sweep as _run
    return _run(cfg, resume=resume)
