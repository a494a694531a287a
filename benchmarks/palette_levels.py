"""Where along the noise schedule does an unlearned Palette model forget, and which encoder maps carry it?

Two measurements on the held-out images of ``eval.part`` (``val`` unless told), the original and the unlearned
model of a run folder side by side:

1. **Maps x noise levels** (forget images, the evaluated hole, t drawn as Eq. 10 draws it): for every encoder map
   (cond_embed's blocks: the input blocks, then the middle block) and bin of the noise level gamma, the map's share
   of Eq. 10's forget distance ||E_o(x) - E_o(n)||^2 and how far the unlearned encoder got on it, ``target`` =
   ||E_u(x) - E_o(n)||^2 / ||E_o(x) - E_o(n)||^2 (1: not moved towards the forget target, 0: reached it; the maps of
   ``frozen_input_blocks`` stay at 1), E_o(n) being the original's embedding of the run's forget input
   (App. C.25, or the noise context of ``forget_context`` / ``noise_context_below``).
2. **Sampling split by noise level**: retain and forget FID when the sampler calls the unlearned UNet only at noise
   levels gamma below a threshold (the noisy steps, where a completion's coarse layout is decided) and the original
   at the others, and the reverse. Which half moves the forget FID is where the run forgets.

On the CPU, from a source checkout:

    python benchmarks/palette_levels.py <results>/runs/<palette run> [--images 250] [--levels 0.1,0.5]
        [--json out.json] [key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path

import torch
from torch import nn

from raysweep.cli import parse_args
from raysweep.config import load_config
from raysweep.data.masks import task_mask
from raysweep.evaluate import MODEL_FILE, heldout_groups
from raysweep.jobs import load_original
from raysweep.metrics import complete, resolve_extractor
from raysweep.metrics.fidelity import fid_is, to_uint8
from raysweep.models import palette, unwrap
from raysweep.models.checkpoints import read_state_dict
from raysweep.pretrain import ensure_extractor, ensure_original, extractor_label

BINS = ((0.0, 0.1), (0.1, 0.5), (0.5, 0.9), (0.9, 1.01))  # gamma: noisy -> clean


class LevelSplit(nn.Module):
    """A denoiser that calls ``noisy`` at noise levels gamma < ``level`` and ``clean`` at the others (a sampler's
    step has one level for the whole batch)."""

    def __init__(self, noisy: nn.Module, clean: nn.Module, level: float):
        super().__init__()
        self.noisy, self.clean, self.level = noisy, clean, level

    def forward(self, x: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
        return self.noisy(x, gammas) if float(gammas.flatten()[0]) < self.level else self.clean(x, gammas)


def _maps(model: nn.Module, images: torch.Tensor, ctx: dict) -> list[torch.Tensor]:
    x = palette._net_input(images, ctx, ctx.get("pure_noise"))
    hs, _ = unwrap(model).denoise_fn.encode(x, ctx["gamma"])
    return [h.flatten(1) for h in hs]  # [B, n_j] per map


@torch.no_grad()
def map_levels(
    original: nn.Module, unlearned: nn.Module, forget: torch.Tensor, task, noise: str = "gaussian", seed: int = 0
) -> list[dict]:
    """Measurement 1 (module docstring): one row per gamma bin with each map's span share and target ratio.
    ``noise``: the run's ``unlearn.noise`` (gaussian or uniform; the others are measured as gaussian)."""
    gen = torch.Generator().manual_seed(seed)
    mask = task_mask(task, len(forget), forget.shape[-1], 1, gen).bool()
    _, ctx = palette.encode(original, forget, {"mask": mask}, gen)  # t, gamma, eps as Eq. 10 draws them
    kind = noise if noise in ("gaussian", "uniform") else "gaussian"
    t_in, t_ctx = palette.forget_input(forget, None, torch.ones(len(forget), dtype=torch.bool), ctx, kind)
    e_u, e_o, e_n = _maps(unlearned, forget, ctx), _maps(original, forget, ctx), _maps(original, t_in, t_ctx)
    rows = []
    for lo, hi in BINS:
        sel = (ctx["gamma"] >= lo) & (ctx["gamma"] < hi)
        if not bool(sel.any()):
            continue
        spans = [float(((o[sel] - n[sel]) ** 2).mean()) for o, n in zip(e_o, e_n)]
        left = [float(((u[sel] - n[sel]) ** 2).mean()) for u, n in zip(e_u, e_n)]
        total = max(sum(spans), 1e-12)
        rows.append(
            {
                "gamma": [lo, min(hi, 1.0)],
                "rows": int(sel.sum()),
                "share": [s / total for s in spans],
                "target": [v / max(s, 1e-12) for v, s in zip(left, spans)],
                "target_all": sum(left) / total,
            }
        )
    return rows


def split_sampling(original, unlearned, groups, task, ext, levels, batch_size: int) -> dict[str, dict[str, float]]:
    """Measurement 2: FID per group for both models and for each level split, on the same images and seeds."""
    device = torch.device("cpu")
    variants = {"original": (original, original, 0.5), "unlearned": (unlearned, unlearned, 0.5)}
    for g in levels:
        variants[f"unlearned below {g}"] = (unlearned, original, g)
        variants[f"unlearned from {g}"] = (original, unlearned, g)
    out = {}
    for name, (noisy, clean, g) in variants.items():
        m = copy.deepcopy(original)
        m.denoise_fn = LevelSplit(unwrap(noisy).denoise_fn, unwrap(clean).denoise_fn, g)
        out[name] = {}
        for group, x in groups.items():
            done, _ = complete(palette, m.eval(), x, task, device, batch_size)
            out[name][group] = fid_is(to_uint8(done), to_uint8(x), ext, batch_size)["fid"]
        logging.getLogger("palette_levels").info("%s: %s", name, out[name])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a Palette run folder (config.yaml, unlearned.pt)")
    p.add_argument("--images", type=int, default=250, help="held-out images per group")
    p.add_argument("--levels", default="0.1,0.5", help="noise levels gamma at which the sampler switches models")
    p.add_argument("--json", help="write both measurements here")
    p.add_argument("overrides", nargs="*", help="key=value on the run's config (default: eval.part=val)")
    args = parse_args(p, argv)
    missing = [f for f in ("config.yaml", MODEL_FILE) if not (args.run / f).is_file()]
    if missing:
        p.error(f"{args.run} is not a finished run folder: {', '.join(missing)} missing")
    overrides = ["eval.part=val", *args.overrides]
    cfg = load_config(str(args.run / "config.yaml"), overrides)
    if cfg.model.family != "palette":
        p.error(f"{args.run} is a {cfg.model.family} run; this diagnosis is for Palette (per_class.py fits any family)")
    try:
        levels = [float(v) for v in args.levels.split(",")]
    except ValueError:
        p.error(f"--levels {args.levels!r}: give noise levels in (0, 1) separated by commas, e.g. 0.1,0.5")
    if not all(0.0 < v < 1.0 for v in levels):
        p.error(f"--levels {args.levels!r}: every level must lie in (0, 1)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    original_path = ensure_original(cfg)
    original = load_original(cfg, str(original_path) if original_path else None).eval()
    unlearned = copy.deepcopy(original)
    unlearned.load_state_dict(read_state_dict(str(args.run / MODEL_FILE), key="model"))
    groups = {g: x[: args.images] for g, (x, _) in heldout_groups(cfg, cfg.eval.part).items()}
    ext_path = ensure_extractor(cfg)
    ext = resolve_extractor(cfg.eval.extractor, str(ext_path), extractor_label(cfg))
    maps = map_levels(original, unlearned, groups["forget"], cfg.eval.task, cfg.unlearn.noise, cfg.seed)
    fids = split_sampling(original, unlearned, groups, cfg.eval.task, ext, levels, cfg.eval.batch_size)
    n_maps = len(maps[0]["share"])
    print(f"{args.run.name}: {args.images} held-out images per group ({overrides})")
    print(f"\nEq. 10 on forget images, per encoder map 0..{n_maps - 1} (input blocks, then the middle block):")
    print("| gamma | rows | share of the forget distance per map | target per map | target, all maps |")
    print("|---|---|---|---|---|")
    for r in maps:
        share = " ".join(f"{v:.2f}" for v in r["share"])
        target = " ".join(f"{v:.2f}" for v in r["target"])
        print(f"| {r['gamma'][0]}–{r['gamma'][1]} | {r['rows']} | {share} | {target} | {r['target_all']:.2f} |")
    print("\nSampling with the unlearned UNet at some noise levels only (the original at the others):")
    print("| denoiser | retain FID | forget FID | retain × | forget × |")
    print("|---|---|---|---|---|")
    base = fids["original"]
    for name, f in fids.items():
        print(
            f"| {name} | {f['retain']:.2f} | {f['forget']:.2f} | {f['retain'] / base['retain']:.2f} | "
            f"{f['forget'] / base['forget']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"run": str(args.run), "overrides": overrides, "maps": maps, "fid": fids})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
