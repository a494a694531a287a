"""The paper's CLIP embedding cosine (§5, App. E; open_clip ViT-H-14 ``laion2b_s32b_b79k``): the mean cosine
between the CLIP image embedding of each completion and that of its own ground truth, per group.

Only with the weights on disk (no download): ``eval.clip_weights``, or ``$RAYSWEEP_WEIGHTS`` (default
``~/.cache/raysweep/weights``) ``/open_clip_<eval.clip_model>.bin`` — for ViT-H-14, the ``open_clip_pytorch_model.bin``
of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` saved under that name. Without them no ``*/clip`` key is written; the
in-domain cosine has its own key (``*/indomain_cos``), never the CLIP one. Loaded with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def clip_weights_path(model_name: str, explicit: str | None = None) -> Path | None:
    """The open_clip weights file to use, or None when there is none (an explicit path that is missing: a
    :class:`~raysweep.config.ConfigError` naming where to get the file)."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            from raysweep.config import ConfigError

            raise ConfigError(
                f"eval.clip_weights={explicit!r} does not exist; download the open_clip weights of "
                f"{model_name} (for ViT-H-14: open_clip_pytorch_model.bin of laion/CLIP-ViT-H-14-laion2B-s32B-b79K) "
                "or unset eval.clip_weights to skip the CLIP metric"
            )
        return p
    base = Path(os.environ.get("RAYSWEEP_WEIGHTS", "~/.cache/raysweep/weights")).expanduser()
    p = base / f"open_clip_{model_name}.bin"
    return p if p.is_file() else None


class ClipEmbedder(nn.Module):
    """open_clip's image tower with its own preprocessing (bicubic resize, its mean / std) for [0, 1] images."""

    def __init__(self, model_name: str, weights: str | Path):
        super().__init__()
        import open_clip

        self.model = open_clip.create_model(model_name, pretrained=str(weights), weights_only=True)
        self.model.eval().requires_grad_(False)
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        size = self.model.visual.image_size
        self.size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [0, 1] -> [B, D]
        x = F.interpolate(x.float(), size=self.size, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.model.encode_image((x - self.mean) / self.std).float()


def clip_label(model_name: str, explicit: str | None = None) -> str | None:
    """Identifies the CLIP weights in cache keys (model, file name and size); None without weights."""
    p = clip_weights_path(model_name, explicit)
    return f"{model_name}:{p.name}:{p.stat().st_size}" if p else None


def load_clip(model_name: str, explicit: str | None, device: torch.device) -> ClipEmbedder | None:
    p = clip_weights_path(model_name, explicit)
    return ClipEmbedder(model_name, p).to(device) if p else None


@torch.no_grad()
def clip_cosine(
    embedder: ClipEmbedder, outputs: torch.Tensor, images: torch.Tensor, device: torch.device, batch: int = 64
) -> float:
    """Mean cosine between the CLIP embeddings of each completion and its ground truth (1 = same content)."""
    cos = []
    for i in range(0, len(outputs), batch):
        a = embedder(outputs[i : i + batch].to(device))
        b = embedder(images[i : i + batch].to(device))
        cos.append(F.cosine_similarity(a, b, dim=1).cpu())
    return float(torch.cat(cos).mean())
