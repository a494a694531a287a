"""FID and IS through torch-fidelity (Heusel et al. 2017; Salimans et al. 2016), on in-memory uint8 images."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from raysweep.metrics.extractors import INCEPTION, INDOMAIN, _fidelity


@dataclass(frozen=True)
class Extractor:
    """Which network gives the features; ``label`` is recorded with every number."""

    name: str  # torch-fidelity registry name
    weights: str | None = None  # our in-domain classifier's weights file
    label: str = ""

    @property
    def fid_layer(self) -> str:
        return "features" if self.name == INDOMAIN else "2048"

    @property
    def isc_layer(self) -> str:
        return "logits" if self.name == INDOMAIN else "logits_unbiased"


class _U8(Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float ``[B, 3, H, W]`` in [0, 1] -> uint8 (what torch-fidelity extractors take)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def fid_is(
    generated: torch.Tensor, reference: torch.Tensor, extractor: Extractor, batch_size: int = 250, cuda: bool = False
) -> dict[str, float]:
    """FID(generated, reference) and IS(generated) for uint8 ``[N, 3, H, W]`` image tensors."""
    from raysweep.paths import cache_dir

    tf = _fidelity()
    # only the fixed reference set is cached, under a name with the images' and the extractor's content hashes
    # (a reused cache name silently returns stale statistics)
    ref_hash = hashlib.sha256(reference.numpy().tobytes()).hexdigest()[:16]
    safe_label = "".join(c if c.isalnum() or c in "-_." else "-" for c in extractor.label)
    kwargs = dict(
        input1=_U8(generated),
        input2=_U8(reference),
        fid=True,
        isc=True,
        cuda=cuda,
        batch_size=batch_size,
        save_cpu_ram=True,
        verbose=False,
        feature_extractor=extractor.name,
        feature_layer_fid=extractor.fid_layer,
        feature_layer_isc=extractor.isc_layer,
        isc_splits=10,
        cache_root=str(cache_dir() / "fidelity"),
        input2_cache_name=f"raysweep-ref-{ref_hash}-{safe_label}",
    )
    if extractor.name == INDOMAIN:
        kwargs["feature_extractor_weights_path"] = extractor.weights
    m = tf.calculate_metrics(**kwargs)
    return {"fid": float(m[tf.KEY_METRIC_FID]), "is": float(m[tf.KEY_METRIC_ISC_MEAN])}


__all__ = ["Extractor", "fid_is", "to_uint8", "INDOMAIN", "INCEPTION"]
