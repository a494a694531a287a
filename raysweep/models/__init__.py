"""Model families and the protocol through which the loop, losses, sweep and metrics use them .

A family is a module exposing the functions of :class:`ModelFamily`. ``ctx`` carries the randomness of an
``encode`` call (token masks for MAE/MAGE; timestep, noise and hole mask for Palette) so that the frozen teacher
sees exactly what the student saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import torch
from torch import nn

from raysweep.config import Config, ModelConfig


@dataclass(frozen=True)
class Stage:
    """One stage of pretraining the original (MAGE: tokenizer, then transformer; MAE: one stage).
    ``parameters(model)`` is what the stage trains; everything else stays frozen during it."""

    name: str
    parameters: Callable[[nn.Module], Iterable[nn.Parameter]]
    epochs: int
    lr: float


class ModelFamily(Protocol):
    def build(self, cfg: ModelConfig) -> nn.Module: ...
    def encoder_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]: ...
    def encode(
        self, model: nn.Module, images: torch.Tensor, ctx: dict | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict]: ...
    def generate(self, model: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...
    def pretrain_loss(
        self, model: nn.Module, images: torch.Tensor, generator: torch.Generator | None = None, stage: str = ...
    ) -> torch.Tensor: ...
    def pretrain_stages(self, cfg: Config) -> list[Stage]: ...
    def forget_input(
        self, images: torch.Tensor, noise: torch.Tensor, is_forget: torch.Tensor, ctx: dict, kind: str = ...
    ) -> tuple[torch.Tensor, dict]: ...  # the teacher's input for Eq. 10's target
    def generation(self, model: nn.Module) -> str: ...  # how generate() samples (recorded with metrics)
    def input_stats(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]: ...
    def load_official(self, model: nn.Module, path: str) -> None: ...


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


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under a DDP wrapper."""
    return getattr(model, "module", model)
