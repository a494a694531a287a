"""The forget target's input n in Eq. 10: what the frozen original encodes in place of a forget image.

Noise is drawn in the model's *normalised* input space (the paper's n ~ N(0, Sigma) with zero mean "since images
are normalized by subtracting the mean inside neural networks", §3.3) and returned in pixel space, i.e.
``mean + std * n``, so that the network's own normalisation turns it back into exactly n.
"""

from __future__ import annotations

import torch

from raysweep.config import NOISE_NAMES

NOISES = list(NOISE_NAMES)


def sample_noise(
    kind: str, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A noise image batch shaped like ``images`` ``[B, 3, H, W]`` (pixel space).

    gaussian: n ~ N(0, I) (Eq. 10, Sigma = I; the paper's default); uniform: n ~ U[-1, 1] (App. E, Fig. E.20);
    batch_stats: the official MAGE code's clamp(randn * std(x) + mean(x), 0, 1) with scalar batch statistics of the
    [0, 1] pixels (docs/protocol.md §1.1) - already in pixel space.
    """
    if kind == "gaussian":
        n = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    elif kind == "uniform":
        n = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype) * 2 - 1
    elif kind == "batch_stats":
        n = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return (n * images.std() + images.mean()).clamp(0.0, 1.0)
    else:
        raise ValueError(f"unknown noise {kind!r}; valid: {NOISES}")
    # the family's statistics may live on another device / dtype than the batch (CPU constants, CUDA batch)
    mean, std = (t.to(device=images.device, dtype=images.dtype).view(1, -1, 1, 1) for t in (mean, std))
    return mean + std * n
