"""Forget / retain / proxy splits from explicit class lists (official-protocol §3).

Training items carry a group flag (True = forget). Sizes follow the official MAGE rules:
forget = ``images_per_class`` per forget class; real retain = ceil(images_per_class * retain_ratio) per retain class;
proxy retain ("support", classes in neither list) = ceil(proxy_ratio * |forget classes| * images_per_class /
|proxy classes|) per proxy class; then, with ``oversample``, the real-retain list is tiled or truncated to
max(|proxy|, |forget|) and the forget list tiled to max(|proxy| + |retain|, |forget classes| * images_per_class).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from raysweep.config import DataConfig


class EmptySplitError(ValueError):
    """A split came out empty; the message names the group and the setting to change."""


@dataclass(frozen=True)
class UnlearnSplit:
    indices: list[int]        # dataset indices, oversampled and shuffled
    is_forget: list[bool]     # group of each item
    n_forget: int             # distinct images per group before oversampling
    n_retain: int
    n_proxy: int

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class EvalSplit:
    forget: list[int]
    retain: list[int]


def _per_class(labels: torch.Tensor, classes: list[int], n: int, g: torch.Generator, group: str) -> list[int]:
    out: list[int] = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) == 0:
            raise EmptySplitError(f"class {c} ({group}) has no images in this dataset split; remove it from the "
                                  f"{group} list or add images")
        out += idx[torch.randperm(len(idx), generator=g)[:n]].tolist()
    return out


def _tile(items: list[int], n: int) -> list[int]:
    if not items:
        return []
    reps = math.ceil(n / len(items))
    return (items * reps)[:n]


def proxy_classes(cfg: DataConfig, num_classes: int) -> list[int]:
    used = set(cfg.forget_classes) | set(cfg.retain_classes)
    return [c for c in range(num_classes) if c not in used]


def unlearn_split(labels: torch.Tensor, cfg: DataConfig, num_classes: int) -> UnlearnSplit:
    """The unlearning training set (official-protocol §3.1)."""
    g = torch.Generator().manual_seed(cfg.seed)
    ipc = cfg.images_per_class
    forget = _per_class(labels, cfg.forget_classes, ipc, g, "forget")
    retain = []
    if cfg.retain_ratio > 0:
        if not cfg.retain_classes:
            raise EmptySplitError("data.retain_ratio>0 but data.retain_classes is empty; list retain classes or set "
                                  "data.retain_ratio=0 with data.proxy_ratio>0 (proxy retain)")
        retain = _per_class(labels, cfg.retain_classes, math.ceil(ipc * cfg.retain_ratio), g, "retain")
    proxy = []
    if cfg.proxy_ratio > 0:
        pcs = proxy_classes(cfg, num_classes)
        if not pcs:
            raise EmptySplitError("data.proxy_ratio>0 but every class is in data.forget_classes or "
                                  "data.retain_classes, so there is no proxy class; set data.proxy_ratio=0")
        per = math.ceil(cfg.proxy_ratio * len(cfg.forget_classes) * ipc / len(pcs))
        proxy = _per_class(labels, pcs, per, g, "proxy")
    if not retain and not proxy:
        raise EmptySplitError("the retain set is empty; set data.retain_ratio>0 or data.proxy_ratio>0")
    n_f, n_r, n_p = len(forget), len(retain), len(proxy)
    if cfg.oversample:
        if retain:
            retain = _tile(retain, max(n_p, n_f))
        forget = _tile(forget, max(n_p + len(retain), len(cfg.forget_classes) * ipc))
    idx = forget + retain + proxy
    flag = [True] * len(forget) + [False] * (len(retain) + len(proxy))
    perm = torch.randperm(len(idx), generator=g).tolist()
    return UnlearnSplit([idx[i] for i in perm], [flag[i] for i in perm], n_f, n_r, n_p)


def eval_split(labels: torch.Tensor, cfg: DataConfig) -> EvalSplit:
    """Separate forget and retain evaluation sets from the test split (``test_images_per_class`` per class)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    forget = _per_class(labels, cfg.forget_classes, cfg.test_images_per_class, g, "forget")
    if not cfg.retain_classes:
        raise EmptySplitError("data.retain_classes is empty: there is nothing to evaluate retain quality on")
    retain = _per_class(labels, cfg.retain_classes, cfg.test_images_per_class, g, "retain")
    return EvalSplit(sorted(forget), sorted(retain))


def pretrain_indices(labels: torch.Tensor, per_class: int, num_classes: int, seed: int) -> list[int]:
    """All classes (the original is trained on everything); ``per_class`` 0 = all images."""
    if per_class <= 0:
        return list(range(len(labels)))
    g = torch.Generator().manual_seed(seed)
    return sorted(_per_class(labels, list(range(num_classes)), per_class, g, "pretrain"))
