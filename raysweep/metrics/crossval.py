"""Cross-validation of generated images (paper App. E.2, Table E.4): does a completion still carry the forget
class, as judged by the *original* model?

First reconstructions: the model under test inpaints the task's hole (center 1/2 by default). Second
reconstructions: only the generated hole is kept, and the original (before unlearning) regenerates everything
around it (the complement of the hole). FID / IS of the second reconstructions against the real images, per group:
after unlearning, forget-class centres are noise, so the original's outpainting of them drifts from the real
forget images (higher FID), while retain centres still lead it back (FID close to the original's own).
"""

from __future__ import annotations

import torch
from torch import nn

from raysweep.config import TaskConfig
from raysweep.data.masks import task_mask
from raysweep.metrics.fidelity import Extractor, fid_is, to_uint8


@torch.no_grad()
def second_reconstructions(
    family, model: nn.Module, original: nn.Module, images: torch.Tensor, task: TaskConfig, device, batch: int = 250
) -> torch.Tensor:
    """``model`` inpaints ``task``'s hole; ``original`` regenerates the complement of the hole around that."""
    outs = []
    patch = family.patch_size(model)
    g = torch.Generator().manual_seed(0)
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        hole = task_mask(task, x.shape[0], x.shape[-1], patch, g).to(device)
        first = family.generate(model, x.to(device), hole)
        outs.append(family.generate(original, first, ~hole).float().cpu())
    return torch.cat(outs)


def cross_validation(
    family,
    model: nn.Module,
    original: nn.Module,
    groups: dict[str, torch.Tensor],
    task: TaskConfig,
    extractor: Extractor,
    device,
    batch: int = 250,
) -> dict[str, float]:
    """``{"<group>/e2_fid", "<group>/e2_is"}`` of ``model``'s second reconstructions (App. E.2)."""
    out = {}
    for g, x in groups.items():
        second = second_reconstructions(family, model, original, x, task, device, batch)
        s = fid_is(to_uint8(second), to_uint8(x), extractor, batch, cuda=torch.device(device).type == "cuda")
        out[f"{g}/e2_fid"], out[f"{g}/e2_is"] = s["fid"], s["is"]
    return out
