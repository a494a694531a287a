"""Evaluation: the model's completions of held-out forget / retain images, scored per group.

Keys are ``"<group>/<metric>"`` (``retain/fid``, ``forget/fid``, ``retain/is``, ``forget/is``); the extractor that
produced them is returned alongside and recorded with every number.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from raysweep.config import TaskConfig
from raysweep.data.masks import task_mask
from raysweep.metrics.extractors import INCEPTION, INDOMAIN, inception_weights_path
from raysweep.metrics.fidelity import Extractor, fid_is, to_uint8

log = logging.getLogger(__name__)

RETAIN_FID, FORGET_FID = "retain/fid", "forget/fid"
RETAIN_IS, FORGET_IS = "retain/is", "forget/is"
RETAIN_CLIP, FORGET_CLIP = "retain/clip", "forget/clip"
GROUPS = ("retain", "forget")


def check_inception(choice: str) -> None:
    """``eval.extractor=inception`` needs torch-fidelity's Inception weights on disk (raysweep never downloads):
    a :class:`~raysweep.config.ConfigError` naming the file and where it goes, before any compute."""
    if choice == "inception" and inception_weights_path() is None:
        from raysweep.config import ConfigError
        from raysweep.metrics.extractors import INCEPTION_FILE

        where = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        raise ConfigError(
            f"eval.extractor=inception but {where} does not exist; download {INCEPTION_FILE} from "
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE + " into that "
            "folder (or set $TORCH_HOME), or use eval.extractor=auto / indomain"
        )


def resolve_extractor(choice: str, indomain_weights: str | None, indomain_label: str) -> Extractor:
    """``auto``: Inception when its weights are on disk, else the in-domain classifier."""
    if choice == "inception" or (choice == "auto" and inception_weights_path() is not None):
        check_inception(choice)
        return Extractor(INCEPTION, None, INCEPTION)
    if not indomain_weights:
        raise FileNotFoundError("the in-domain extractor has not been trained; run `raysweep pretrain` first")
    return Extractor(INDOMAIN, indomain_weights, indomain_label)


@torch.no_grad()
def complete(
    family,
    model: nn.Module,
    images: torch.Tensor,
    task: TaskConfig,
    device: torch.device,
    batch_size: int = 250,
    desc: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's completions of ``images`` (float ``[N, 3, H, W]``) under ``task``; returns (outputs, masks).
    With ``desc``, a progress line per batch (a diffusion sampler takes minutes per thousand images on a CPU)."""
    outs, masks = [], []
    patch = family.patch_size(model)
    g = torch.Generator().manual_seed(0)  # fixed masks for random tasks: every model sees the same inputs
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        m = task_mask(task, x.shape[0], x.shape[-1], patch, g)
        outs.append(family.generate(model, x.to(device), m.to(device)).float().cpu())
        masks.append(m)
        if desc:
            log.info("%s: %d/%d images completed", desc, i + x.shape[0], len(images))
    return torch.cat(outs), torch.cat(masks)


@torch.no_grad()
def classifier_scores(
    classifier: nn.Module, outputs: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> dict[str, float]:
    """Proof of forgetting that FID cannot give: the in-domain classifier on the completions.

    ``accuracy``: the fraction of completions classified as their image's true class (forget-class accuracy on
    forget completions, retain-class accuracy on retain ones); ``indomain_cos``: the mean cosine between the
    classifier's features of each completion and of its own ground truth, both centred on the ground truths' mean
    feature (the paper's CLIP cosine, with the in-domain network standing in, under its own key)."""
    preds, fos, fxs = [], [], []
    for i in range(0, len(outputs), 500):
        fo = classifier.features(outputs[i : i + 500].to(device))
        fxs.append(classifier.features(images[i : i + 500].to(device)).cpu())
        preds.append(classifier.head(fo).argmax(1).cpu())
        fos.append(fo.cpu())
    fo, fx = torch.cat(fos), torch.cat(fxs)
    mu = fx.mean(dim=0, keepdim=True)  # post-ReLU features share a large common part: centre on the real images
    return {
        "accuracy": float((torch.cat(preds) == labels).float().mean()),
        "indomain_cos": float(torch.nn.functional.cosine_similarity(fo - mu, fx - mu, dim=1).mean()),
    }


def evaluate(
    family,
    model: nn.Module,
    groups: dict[str, torch.Tensor],
    task: TaskConfig,
    extractor: Extractor,
    device: torch.device,
    batch_size: int = 250,
    labels: dict[str, torch.Tensor] | None = None,
    classifier: nn.Module | None = None,
    clip: nn.Module | None = None,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """FID / IS of the completions of each group's images against those images; given the images' labels and the
    in-domain classifier, :func:`classifier_scores`; given a :class:`~raysweep.metrics.clip.ClipEmbedder`, the CLIP
    cosine (``<group>/clip``). Returns (metrics, outputs)."""
    model.eval()
    metrics, outputs = {}, {}
    for group, images in groups.items():
        out, _ = complete(family, model, images, task, device, batch_size, desc=f"evaluating {group}")
        scores = fid_is(to_uint8(out), to_uint8(images), extractor, batch_size, cuda=device.type == "cuda")
        if classifier is not None and labels is not None:
            # the completions as the evaluation scores them: uint8-quantised, like the FID inputs
            q = to_uint8(out).float() / 255.0
            scores.update(classifier_scores(classifier, q, images, labels[group], device))
        if clip is not None:
            from raysweep.metrics.clip import clip_cosine

            scores["clip"] = clip_cosine(clip, to_uint8(out).float() / 255.0, images, device)
        metrics.update({f"{group}/{k}": v for k, v in scores.items()})
        outputs[group] = out
    return metrics, outputs
