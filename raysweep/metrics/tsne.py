"""T-SNE of completions vs ground truths (paper App. Fig. 4), with scikit-learn's TSNE on in-domain features.

The paper embeds 50 images per group with CLIP and shows, for the unlearned model, its retain completions landing
on the retain ground truths while its forget completions leave the forget ground truths. Here the features are the
in-domain classifier's (CLIP weights cannot be had offline); the picture is saved next to ``metrics.json`` and
logged to MLflow with the run.
"""

from __future__ import annotations

from pathlib import Path

import torch

# (label, colour, marker) per point set
_STYLE = {
    "retain ground truth": ("tab:blue", "o"),
    "forget ground truth": ("tab:red", "o"),
    "retain, original": ("tab:cyan", "^"),
    "forget, original": ("tab:orange", "^"),
    "retain, unlearned": ("tab:green", "x"),
    "forget, unlearned": ("tab:purple", "x"),
}


@torch.no_grad()
def tsne_figure(classifier: torch.nn.Module, sets: dict[str, torch.Tensor], path: Path, seed: int = 0) -> Path:
    """Embed every image set of ``sets`` (name -> float images ``[N, 3, H, W]``) with the classifier's features,
    run one joint 2-D T-SNE (perplexity 20, as the paper) and save a scatter plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    device = next(classifier.parameters()).device
    feats, names = [], []
    for name, x in sets.items():
        feats.append(classifier.features(x.to(device)).cpu())
        names += [name] * len(x)
    f = torch.cat(feats).numpy()
    xy = TSNE(
        n_components=2, perplexity=min(20.0, max(2.0, (len(f) - 1) / 3)), random_state=seed, init="pca"
    ).fit_transform(f)
    fig, ax = plt.subplots(figsize=(6, 5))
    for name in sets:
        sel = [i for i, n in enumerate(names) if n == name]
        colour, marker = _STYLE.get(name, (None, "."))
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, c=colour, marker=marker, label=name, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("T-SNE of in-domain features: completions vs ground truths")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
