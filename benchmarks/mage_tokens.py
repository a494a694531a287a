"""How different is the context MAGE's transformer reads at evaluation from the one it pretrained on?

At evaluation (official §4.1) the hole is filled with ``pixel_mean`` and the *filled* image is tokenized; the tokens
touching the hole plus a 1-token margin are masked. The VQ-GAN's receptive field reaches further than that margin,
so visible tokens near the hole differ from the whole image's tokens, which is all MAGE's own pretraining masks
ever show the transformer. For each task this prints the masked tokens per image and the share of *visible* tokens
whose id changes between the two tokenizations, on held-out images of ``eval.part``, with a cached original:

    python benchmarks/mage_tokens.py --config mage_fmnist [--original FILE] [--images 512] [--json out.json] \
        [key=value ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from raysweep.cli import parse_args
from raysweep.config import TaskConfig, load_config
from raysweep.data.masks import task_mask
from raysweep.evaluate import heldout_groups
from raysweep.jobs import load_original
from raysweep.models import mage
from raysweep.pretrain import original_path

TASKS = (
    TaskConfig("center", 0.5),
    TaskConfig("center", 0.25),
    TaskConfig("outpaint", 0.25),
    TaskConfig("extend_right", 0.5),
)


@torch.no_grad()
def context_mismatch(model: mage.MaskedGenerativeEncoderViT, images: torch.Tensor, task: TaskConfig) -> dict:
    """Masked tokens per image, and the share of visible tokens whose id differs between the whole image's and the
    hole-filled image's tokenization (0 = the transformer reads at evaluation what pretraining showed it)."""
    mask = task_mask(task, len(images), images.shape[-1], model.vqgan.downsample)
    ctx = mage.task_token_masks(model, mask)
    visible = ~ctx["masked"][:, 1:]
    whole = model.vqgan.tokenize(images)
    filled = model.vqgan.tokenize(mage.filled_images(images, ctx, model.pixel_mean))
    changed = (whole != filled) & visible
    return {
        "task": f"{task.name} {task.ratio:g}",
        "masked_tokens": float((~visible).sum(1).float().mean()),
        "tokens": int(visible.shape[1]),
        "visible_changed": float(changed.sum()) / max(int(visible.sum()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="mage_fmnist")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--original", default=None, help="an original's file (default: the config's cached original)")
    ap.add_argument("overrides", nargs="*")
    args = parse_args(ap, argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.model.family != "mage":
        ap.error(f"{args.config} is a {cfg.model.family} config; this diagnostic is for MAGE")
    path = Path(args.original) if args.original else original_path(cfg)
    if not path.is_file():
        ap.error(f"no cached original {path}: run `raysweep pretrain --config {args.config}` (same overrides) first")
    model = load_original(cfg, str(path)).eval()
    groups = heldout_groups(cfg, cfg.eval.part)
    images = torch.cat([x[: args.images // 2] for x, _ in groups.values()])  # half retain, half forget images
    rows = [context_mismatch(model, images, t) for t in TASKS]
    print(f"original {path.name}, {len(images)} {cfg.eval.part} images")
    print("| task | masked tokens / image (of L) | visible tokens that differ (whole vs filled image) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['masked_tokens']:.1f} of {r['tokens']} | {r['visible_changed']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"original": path.name, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
