"""The family contract: what the loop, the losses, the sweep and the metrics may ask of a model family.

A family is a module that provides every member of :class:`ModelFamily` (``tests/test_models.py`` checks each
entry of ``FAMILIES`` against it). ``ctx`` carries the randomness of an ``encode`` call (token masks for MAE /
MAGE; timestep, noise and hole for Palette) so that the frozen teacher sees exactly what the student saw; the
unlearning step also puts ``is_forget`` (bool ``[B]``) in the ctx it hands ``encode``, which a family may read
(Palette's ``forget_t_max``) or ignore.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

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
    Options: type  # the family's ``model.options`` as a frozen dataclass (read with :func:`parse_options`)
    OPTIONS: set[str]  # its field names
    UNLEARN_OPTIONS: set[str]  # fields that change unlearning / evaluation only, never the pretrained original
    TRAINING_OPTIONS: set[str]  # those of them that change only how unlearning trains, never a model's completions
    PAPER_OPTIMIZER: str  # the unlearning optimiser App. B names for the family (``unlearn.optimizer=paper``)

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


Opts = TypeVar("Opts")
UNLEARN_ONLY = {"unlearn_only": True}  # ``field(metadata=UNLEARN_ONLY)``: the option never changes pretraining
# ``field(metadata=TRAINING_ONLY)``: an UNLEARN_ONLY option that changes only how unlearning trains, never how a
# model completes images, so neither the original nor its cached scores
TRAINING_ONLY = {"unlearn_only": True, "training_only": True}


def option_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def unlearn_only(cls: type) -> set[str]:
    """The fields of an options dataclass marked :data:`UNLEARN_ONLY`."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("unlearn_only")}


def training_only(cls: type) -> set[str]:
    """The fields of an options dataclass marked :data:`TRAINING_ONLY`."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("training_only")}


def _coerce(family: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` (as YAML or an override gave it) as the field's declared type: int, float, str, bool, a tuple of
    ints / floats, or ``X | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if typing.get_origin(hint) is tuple:
            (item, _) = typing.get_args(hint)
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise TypeError("not a list")
            return tuple(item(v) for v in value)
        if hint is bool:
            if not isinstance(value, bool):
                raise TypeError("not true / false")
            return value
        if hint in (int, float) and isinstance(value, (bool, str)):
            raise TypeError("not a number")
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise TypeError("not a whole number")
        return hint(value)
    except (TypeError, ValueError):
        want = getattr(hint, "__name__", str(hint)).replace("tuple", "list")
        raise ValueError(
            f"model.options.{name}={value!r} for family {family} must be {want}"
            + (f" of {typing.get_args(hint)[0].__name__}" if typing.get_origin(hint) is tuple else "")
        ) from None


def parse_options(family: str, cls: type[Opts], options: Mapping[str, Any]) -> Opts:
    """The one place ``model.options`` are checked: an unknown key names the family's valid options, every value is
    converted to its field's declared type, and the dataclass's ``__post_init__`` checks the ranges."""
    hints = typing.get_type_hints(cls)
    valid = option_names(cls)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown model.options {unknown} for family {family}; valid options: {sorted(valid)}")
    return cls(**{k: _coerce(family, k, v, hints[k]) for k, v in options.items()})
