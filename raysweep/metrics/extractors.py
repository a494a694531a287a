"""Feature extractors for FID / IS, registered with torch-fidelity.

Offline, Inception weights are usually absent, so raysweep trains an *in-domain* classifier on the embedded dataset
(cached by config hash) and uses its penultimate features for FID and its class logits for IS. The extractor's
name is recorded with every number: numbers from different extractors are not comparable.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INDOMAIN = "raysweep-indomain"
INCEPTION = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


class InDomainClassifier(nn.Module):
    """A small CNN classifier; ``features`` (128-d, FID) and ``logits`` (IS) of images in [0, 1]."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [0, 1] -> [B, 4w]
        return self.body((x - 0.5) / 0.5).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_classifier(path: str | os.PathLike) -> InDomainClassifier:
    """The in-domain classifier stored at ``path`` (weights_only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = InDomainClassifier(int(state["num_classes"]))
    net.load_state_dict(state["model"])
    return net


def inception_weights_path() -> Path | None:
    """Where torch-fidelity looks for its Inception weights; None if the file is not there."""
    p = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return p if p.is_file() else None


def _fidelity():
    import torch_fidelity
    from torch_fidelity import FeatureExtractorBase

    class FeatureExtractorInDomain(FeatureExtractorBase):
        """torch-fidelity wrapper: uint8 ``[B, 3, H, W]`` -> (features, logits)."""

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            path = kwargs.get("feature_extractor_weights_path")
            if not path or not os.path.isfile(path):
                raise FileNotFoundError(f"in-domain extractor weights {path!r} not found")
            self.net = load_classifier(path)
            self.size = int(torch.load(path, map_location="cpu", weights_only=True)["image_size"])

        def forward(self, x):
            x = x.float() / 255.0
            if x.shape[-1] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            f = self.net.features(x)
            out = {"features": f, "logits": self.net.head(f)}
            return tuple(out[k] for k in self.features_list)

        @staticmethod
        def get_provided_features_list():
            return "features", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return (torch.rand(1, 3, 32, 32) * 255).to(torch.uint8)

    if INDOMAIN not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(INDOMAIN, FeatureExtractorInDomain)
    return torch_fidelity
