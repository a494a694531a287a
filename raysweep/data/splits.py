"""Which images each stage sees: pretraining, unlearning (forget / retain / proxy), validation and test.

- The original is pretrained on ``pretrain_images_per_class`` training images of every class.
- Unlearning draws its forget, retain and proxy images from those same pretraining images (the paper unlearns data
  the original was trained on), for any class lists in any order.
- Validation and test images come from the held-out file, disjoint from each other and never trained on.

Training items carry a group flag (True = forget). Sizes follow the official MAGE rules:
forget = ``images_per_class`` per forget class; real retain = ceil(images_per_class * retain_ratio) per retain class;
proxy retain ("support", classes in neither list) = ceil(proxy_ratio * |forget classes| * images_per_class /
|proxy classes|) per proxy class; then, with ``oversample``, the real-retain list is tiled or truncated to
max(|proxy|, |forget|) and the forget list tiled to max(|proxy| + |retain|, |forget classes| * images_per_class).
One deviation: where the real-retain list is cut, raysweep cuts it evenly over the retain classes
(:func:`_cut_balanced`); the official code cuts the class-ordered list and so drops the last classes.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import torch

from raysweep.config import DataConfig

log = logging.getLogger(__name__)


class EmptySplitError(ValueError):
    """A split came out empty; the message names the group and the setting to change."""


@dataclass(frozen=True)
class UnlearnSplit:
    indices: list[int]  # dataset indices, oversampled and shuffled
    is_forget: list[bool]  # group of each item
    n_forget: int  # distinct images per group before oversampling
    n_retain: int
    n_proxy: int

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class EvalSplit:
    forget: list[int]
    retain: list[int]


def _class_order(labels: torch.Tensor, c: int, seed: int, salt: int) -> torch.Tensor:
    """All items of class ``c`` in a fixed random order that depends only on (seed, salt, c): never on which other
    classes are listed or in which order, so every split below picks the same images for a class whatever the
    class lists are."""
    idx = torch.nonzero(labels == c).flatten()
    g = torch.Generator().manual_seed(seed * 1_000_003 + salt * 10_007 + c)
    return idx[torch.randperm(len(idx), generator=g)]


_TRAIN, _HELDOUT = 0, 1  # salts: the training file and the held-out (test) file


def _pretrain_pool(labels: torch.Tensor, c: int, per_class: int, seed: int) -> torch.Tensor:
    """The training images of class ``c`` the original is pretrained on (``per_class`` 0 = all of them)."""
    order = _class_order(labels, c, seed, _TRAIN)
    return order if per_class <= 0 else order[:per_class]


def _per_class(labels: torch.Tensor, classes: list[int], n: int, cfg: DataConfig, group: str) -> list[int]:
    """``n`` training images of each class, always among the images the original was pretrained on (the paper
    unlearns data the original saw): the first ``n`` of the class's pretraining pool."""
    out: list[int] = []
    for c in classes:
        pool = _pretrain_pool(labels, c, cfg.pretrain_images_per_class, cfg.seed)
        if len(pool) == 0:
            raise EmptySplitError(
                f"class {c} ({group}) has no images in this dataset split; remove it from the "
                f"{group} list or add images"
            )
        if n > len(pool):  # the official code takes what there is ([:n]); say so
            log.warning(
                "class %d (%s) has %d pretraining images, fewer than the %d asked for: using all of them",
                c,
                group,
                len(pool),
                n,
            )
        out += pool[:n].tolist()
    return out


def _cut_balanced(items: list[int], labels: torch.Tensor, n: int) -> list[int]:
    """``n`` of ``items`` taken round-robin over their classes, each class's images in their list order. The official
    rule cuts the class-ordered list (``[:n]``), which drops whole classes at the end of the list whenever the real
    retain set outnumbers the forget set (``retain_ratio`` > 1, or more retain than forget classes)."""
    by_class: dict[int, list[int]] = {}
    for i in items:
        by_class.setdefault(int(labels[i]), []).append(i)
    rounds = itertools.zip_longest(*by_class.values())
    return [i for r in rounds for i in r if i is not None][:n]


def _tile(items: list[int], n: int) -> list[int]:
    if not items:
        return []
    reps = math.ceil(n / len(items))
    return (items * reps)[:n]


def proxy_classes(cfg: DataConfig, num_classes: int) -> list[int]:
    used = set(cfg.forget_classes) | set(cfg.retain_classes)
    return [c for c in range(num_classes) if c not in used]


def unlearn_split(labels: torch.Tensor, cfg: DataConfig, num_classes: int) -> UnlearnSplit:
    """The unlearning training set (docs/protocol.md §3.1)."""
    g = torch.Generator().manual_seed(cfg.seed)
    ipc = cfg.images_per_class
    forget = _per_class(labels, cfg.forget_classes, ipc, cfg, "forget")
    retain = []
    if cfg.retain_ratio > 0:
        if not cfg.retain_classes:
            raise EmptySplitError(
                "data.retain_ratio>0 but data.retain_classes is empty; list retain classes or set "
                "data.retain_ratio=0 with data.proxy_ratio>0 (proxy retain)"
            )
        retain = _per_class(labels, cfg.retain_classes, math.ceil(ipc * cfg.retain_ratio), cfg, "retain")
    proxy = []
    if cfg.proxy_ratio > 0:
        pcs = proxy_classes(cfg, num_classes)
        if not pcs:
            raise EmptySplitError(
                "data.proxy_ratio>0 but every class is in data.forget_classes or "
                "data.retain_classes, so there is no proxy class; set data.proxy_ratio=0"
            )
        per = math.ceil(cfg.proxy_ratio * len(cfg.forget_classes) * ipc / len(pcs))
        proxy = _per_class(labels, pcs, per, cfg, "proxy")
    if not retain and not proxy:
        raise EmptySplitError("the retain set is empty; set data.retain_ratio>0 or data.proxy_ratio>0")
    n_f, n_r, n_p = len(forget), len(retain), len(proxy)
    if cfg.oversample:
        if retain:
            n = max(n_p, n_f)
            if len(retain) > n:  # cut evenly over the retain classes (official: the class-ordered list)
                retain = _cut_balanced(retain, labels, n)
                log.warning(
                    "data.oversample: the %d real retain images are cut to %d (max(|proxy|, |forget|)), the same "
                    "number from every retain class; set data.oversample=false to train on all of them",
                    n_r,
                    n,
                )
            retain = _tile(retain, n)
        forget = _tile(forget, max(n_p + len(retain), len(cfg.forget_classes) * ipc))
    idx = forget + retain + proxy
    flag = [True] * len(forget) + [False] * (len(retain) + len(proxy))
    perm = torch.randperm(len(idx), generator=g).tolist()
    return UnlearnSplit([idx[i] for i in perm], [flag[i] for i in perm], n_f, n_r, n_p)


HELDOUT_PARTS = ("test", "val")


def eval_split(labels: torch.Tensor, cfg: DataConfig, part: str = "test") -> EvalSplit:
    """Forget and retain evaluation sets from the held-out file (Fashion-MNIST t10k, an image folder's val/), which
    neither pretraining nor unlearning ever reads. Per class, in a fixed random order: the first
    ``test_images_per_class`` images are the **test** set (results are reported on it), the next
    ``val_images_per_class`` the **validation** set (sweeps, ablations, defaults and the quality gate use it)."""
    if part not in HELDOUT_PARTS:
        raise ValueError(f"unknown held-out part {part!r}; choose one of {list(HELDOUT_PARTS)}")
    if not cfg.retain_classes:
        raise EmptySplitError("data.retain_classes is empty: there is nothing to evaluate retain quality on")
    t, v = cfg.test_images_per_class, cfg.val_images_per_class
    lo, hi = (0, t) if part == "test" else (t, t + v)
    groups = []
    for group, classes in (("forget", cfg.forget_classes), ("retain", cfg.retain_classes)):
        out: list[int] = []
        for c in classes:
            order = _class_order(labels, c, cfg.seed, _HELDOUT)
            if len(order) < t + v:
                raise EmptySplitError(
                    f"class {c} ({group}) has {len(order)} held-out images, fewer than data.test_images_per_class "
                    f"({t}) + data.val_images_per_class ({v}); lower one of them"
                )
            out += order[lo:hi].tolist()
        groups.append(sorted(out))
    return EvalSplit(*groups)


def pretrain_indices(labels: torch.Tensor, cfg: DataConfig, num_classes: int) -> list[int]:
    """The original's training images: ``pretrain_images_per_class`` of every class (0 = all), the same images
    whatever the forget / retain lists (see :func:`_class_order`)."""
    out: list[int] = []
    for c in range(num_classes):
        out += _pretrain_pool(labels, c, cfg.pretrain_images_per_class, cfg.seed).tolist()
    return sorted(out)
