"""The family contract: what the loop, the losses, the sweep and the metrics may ask of a model family.

A family is a module that provides every member of :class:`ModelFamily` (``tests/test_models.py`` checks each
entry of ``FAMILIES`` against it). ``ctx`` carries the randomness of an ``encode`` call (token masks for MAE /
MAGE; timestep, noise and hole for Palette) so that the frozen teacher sees exactly what the student saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class ModelFamily(Protocol):
    OPTIONS: set[str]  # the family's model.options (besides architecture overrides of its presets)
    UNLEARN_OPTIONS: set[str]  # options that change unlearning / evaluation only, never the pretrained original

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
    def patch_size(self, model: nn.Module) -> int: ...  # pixels per token side (random-task masks); 1 = pixels
    def load_official(self, model: nn.Module, path: str) -> None: ...
    def own_loss(
        self,
        model: nn.Module,
        images: torch.Tensor,
        truth: torch.Tensor,
        ctx: dict | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict]: ...  # the family's objective per sample vs ``truth`` (full-model baselines)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under a DDP and / or ``torch.compile`` wrapper."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def check_options(family: str, options: dict, valid: Iterable[str]) -> None:
    """The one check of ``model.options`` keys: an unknown one names the family's valid options."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown model.options {unknown} for family {family}; valid options: {sorted(valid)}")
