"""The paper's image-to-image tasks T(x) as mask builders (paper §4, docs/protocol.md §4.1).

A mask is a bool tensor ``[B, H, W]``, True where pixels are removed (the model must generate them). Sizes are
ratios of the image side, so a task carries across resolutions: ``center`` 0.25 / 0.5 are the paper's 4x4 / 8x8
of 16x16 patches at 256 px; ``outpaint`` r masks four border strips of width int(side * r / 2) (official §4.1);
``extend_*`` r masks the r-fraction of the side at one edge (image extension); ``random`` r masks that fraction of
the patches at random (MAE pretraining, 75%).
"""

from __future__ import annotations

import torch

from raysweep.config import TASKS, TaskConfig


def _fixed_mask(name: str, ratio: float, size: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    if name == "center":
        side = max(1, round(size * ratio))
        a = (size - side) // 2
        m[a : a + side, a : a + side] = True
    elif name == "outpaint":
        w = max(1, int(size * ratio * 0.5))
        m[:w, :] = m[-w:, :] = m[:, :w] = m[:, -w:] = True
    else:
        w = max(1, round(size * ratio))
        edge = name.split("_", 1)[1]
        sl = {
            "up": (slice(0, w), slice(None)),
            "down": (slice(size - w, size), slice(None)),
            "left": (slice(None), slice(0, w)),
            "right": (slice(None), slice(size - w, size)),
        }[edge]
        m[sl] = True
    return m


def random_patch_mask(
    batch: int,
    size: int,
    patch: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Per-sample random masking of ``round(L * ratio)`` of the L patches, as a pixel mask ``[B, H, W]``."""
    g = size // patch
    n_mask = round(g * g * ratio)
    noise = torch.rand(batch, g * g, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    pm = (ranks < n_mask).view(batch, g, g)  # [B, g, g]
    return pm.repeat_interleave(patch, 1).repeat_interleave(patch, 2)


def task_mask(
    task: TaskConfig,
    batch: int,
    size: int,
    patch: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The pixel mask ``[B, H, W]`` (True = removed) of ``task`` for a batch of ``size`` x ``size`` images."""
    if task.name not in TASKS:
        raise ValueError(f"unknown task {task.name!r}; valid tasks: {TASKS}")
    if task.name == "random":
        return random_patch_mask(batch, size, patch, task.ratio, generator, device)
    return _fixed_mask(task.name, task.ratio, size).to(device).expand(batch, -1, -1).clone()


# ``train_masks: mixed`` (MAE, MAGE): about half the pretraining steps use one of the paper's I2I tasks at a size drawn
# uniformly in [lo, hi] instead of the family's own random masks, so the original has trained on every kind of
# context it is evaluated on (random 75 % keeps 16 of 64 MAE patches, a center hole of 1/2 keeps 48).
# ``train_masks: center``: about half the steps use the embedded default's evaluated hole itself (center, 1/2 of the
# side), as Palette's ``mixed`` puts that box in half its rows; random = the family's own masks only
PRETRAIN_MASKS = ("mixed", "center", "random")
CENTER_TASK = TaskConfig("center", 0.5)
PRETRAIN_TASKS = (
    ("center", 0.25, 0.625),
    ("outpaint", 0.25, 0.5),
    ("extend_up", 0.25, 0.5),
    ("extend_down", 0.25, 0.5),
    ("extend_left", 0.25, 0.5),
    ("extend_right", 0.25, 0.5),
)


def draw_pretrain_task(
    generator: torch.Generator | None = None, device: torch.device | str = "cpu", masks: str = "mixed"
) -> TaskConfig | None:
    """One ``train_masks`` draw (three uniforms, always, whatever ``masks`` is: one random stream for every
    setting): None (probability 1/2) = the family's own masks this step, else, for ``mixed``, a task of
    :data:`PRETRAIN_TASKS` and its size, for ``center`` :data:`CENTER_TASK`; the same for the whole batch."""
    u = torch.rand(3, generator=generator, device=device).tolist()
    if u[0] < 0.5:
        return None
    if masks == "center":
        return CENTER_TASK
    name, lo, hi = PRETRAIN_TASKS[min(int(u[1] * len(PRETRAIN_TASKS)), len(PRETRAIN_TASKS) - 1)]
    return TaskConfig(name, lo + (hi - lo) * u[2])


def check_pretrain_masks(value: str) -> None:
    """``model.options.train_masks`` of MAE and MAGE: one of :data:`PRETRAIN_MASKS`, else one clear error."""
    if value not in PRETRAIN_MASKS:
        raise ValueError(f"model.options.train_masks={value!r}; choose one of {list(PRETRAIN_MASKS)}")


def patch_mask(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """Pixel mask ``[B, H, W]`` -> patch mask ``[B, L]``: a patch is removed when any of its pixels is."""
    b, h, w = mask.shape
    m = mask.view(b, h // patch, patch, w // patch, patch).any(dim=4).any(dim=2)
    return m.flatten(1)


def kept_patches(task: TaskConfig, size: int, patch: int) -> int:
    """How many of the ``(size // patch) ** 2`` patches ``task`` leaves visible (the same for every image), computed
    on the host so that a device step needs no sync to size its kept-token tensors."""
    g = size // patch
    if task.name == "random":
        return g * g - round(g * g * task.ratio)
    return int((~patch_mask(_fixed_mask(task.name, task.ratio, size)[None], patch)).sum())


def apply_mask(images: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """The masked input T(x): removed pixels set to ``fill`` (for display and for pixel-space models)."""
    return images.masked_fill(mask.unsqueeze(1), fill)
