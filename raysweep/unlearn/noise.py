"""The forget target's input n in Eq. 10: what the frozen original encodes in place of a forget image.

Noise is drawn in the model's *normalised* input space (the paper's n ~ N(0, Sigma) with zero mean "since images
are normalized by subtracting the mean inside neural networks", §3.3) and returned in pixel space, i.e.
``mean + std * n``, so that the network's own normalisation turns it back into exactly n.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raysweep.config import NOISE_NAMES

NOISES = list(NOISE_NAMES)


@dataclass(frozen=True)
class LowRankSigma:
    """Sigma = U diag(var) U^T + floor * (I - U U^T): the top-k principal directions ``U`` ``[D, k]`` of a set of
    normalised images with their variances ``var`` ``[k]``, and an isotropic ``floor`` elsewhere. The paper names a
    data-driven Sigma as future work (App. C.4); k = 0 with floor 1 is Sigma = I."""

    basis: torch.Tensor  # [D, k], orthonormal columns
    var: torch.Tensor  # [k]
    floor: float = 1.0

    @classmethod
    def fit(cls, normalised: torch.Tensor, k: int, floor: float = 1.0, seed: int = 0) -> LowRankSigma:
        """Principal directions of ``normalised`` images ``[N, C, H, W]`` (randomised PCA, seeded)."""
        x = normalised.flatten(1).double()
        if k == 0:
            return cls(torch.zeros(x.shape[1], 0), torch.zeros(0), floor)
        torch.manual_seed(seed)
        _, s, v = torch.pca_lowrank(x, q=min(k + 8, *x.shape), center=True, niter=4)
        var = s[:k] ** 2 / max(len(x) - 1, 1)
        return cls(v[:, :k].float().contiguous(), var.float(), floor)

    def sample(self, shape: torch.Size, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
        eps = torch.randn(shape, generator=generator, device=device, dtype=dtype).flatten(1)  # [B, D]
        u = self.basis.to(device=device, dtype=dtype)
        if u.shape[1] == 0:
            return (self.floor**0.5 * eps).view(shape)
        z = torch.randn((shape[0], u.shape[1]), generator=generator, device=device, dtype=dtype)
        along = (z * self.var.to(device=device, dtype=dtype).sqrt()) @ u.T
        across = eps - (eps @ u) @ u.T  # the part of eps orthogonal to the principal directions
        return (along + self.floor**0.5 * across).view(shape)


def sample_noise(
    kind: str,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    generator: torch.Generator | None = None,
    sigma: LowRankSigma | None = None,
) -> torch.Tensor:
    """A noise image batch shaped like ``images`` ``[B, 3, H, W]`` (pixel space).

    gaussian: n ~ N(0, I) (Eq. 10, Sigma = I; the paper's default); uniform: n ~ U[-1, 1] (App. E, Fig. E.20);
    lowrank: n ~ N(0, Sigma) with ``sigma`` a :class:`LowRankSigma` (App. C.4's future work);
    batch_stats: the official MAGE code's clamp(randn * std(x) + mean(x), 0, 1) with scalar batch statistics of the
    [0, 1] pixels (docs/protocol.md §1.1) - already in pixel space.
    """
    if kind == "gaussian":
        n = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    elif kind == "lowrank":
        if sigma is None:
            raise ValueError("noise 'lowrank' needs its Sigma (LowRankSigma.fit on the forget images)")
        n = sigma.sample(images.shape, generator, images.device, images.dtype)
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
