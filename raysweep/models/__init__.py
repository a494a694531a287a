"""Model families and the protocol through which the loop, losses, sweep and metrics use them (design.md §4).

A family is a module exposing the functions of :class:`ModelFamily`. ``ctx`` carries the randomness of an
``encode`` call (token masks for MAE/MAGE; timestep, noise and hole mask for Palette) so that the frozen teacher
sees exactly what the student saw.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Iterable, Protocol

import torch
from torch import nn

from raysweep.config import ModelConfig


class ModelFamily(Protocol):
    def build(self, cfg: ModelConfig) -> nn.Module: ...
    def encoder_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]: ...
    def encode(self, model: nn.Module, images: torch.Tensor, ctx: dict | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]: ...
    def generate(self, model: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...
    def pretrain_loss(self, model: nn.Module, images: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor: ...
    def input_stats(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]: ...
    def load_official(self, model: nn.Module, path: str) -> None: ...


def _families() -> dict[str, ModuleType]:
    from raysweep.models import mae
    return {"mae": mae}


FAMILIES: dict[str, Any] = _families()


def get_family(name: str) -> ModelFamily:
    """The family module called ``name``; raises naming the known families."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}") from None


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under a DDP wrapper."""
    return getattr(model, "module", model)
