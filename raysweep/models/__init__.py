"""The model families (MAE, MAGE, Palette), each a module that satisfies :class:`raysweep.models.family.ModelFamily`."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from raysweep.models.family import ModelFamily, Stage, parse_options, unwrap

__all__ = ["FAMILIES", "ModelFamily", "Stage", "get_family", "parse_options", "pretrain_options", "unwrap"]


def _families() -> dict[str, ModuleType]:
    from raysweep.models import mae, mage, palette

    return {"mae": mae, "mage": mage, "palette": palette}


FAMILIES: dict[str, Any] = _families()


def get_family(name: str) -> ModelFamily:
    """The family module called ``name``; raises naming the known families."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}") from None


def pretrain_options(family: Any, options: dict) -> dict:
    """``options`` without those that only change unlearning / evaluation (``UNLEARN_OPTIONS`` of the family):
    they must not change which pretrained original is used."""
    return {k: v for k, v in options.items() if k not in family.UNLEARN_OPTIONS}


def completion_settings(cfg: Any) -> dict:
    """The ``model`` section of ``cfg`` as far as it decides how a model completes images: without the options
    that change only how unlearning trains (``TRAINING_OPTIONS`` of the family). The keys of what is cached about
    the original's completions (its scores, its quality report) use this, so such options reuse them."""
    d = cfg.to_dict()["model"]
    family = get_family(cfg.model.family)
    d["options"] = {k: v for k, v in d["options"].items() if k not in family.TRAINING_OPTIONS}
    return d
