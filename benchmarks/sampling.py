"""Palette sampling speed: the fast sampler (DDIM, ``model.options.sample_steps``) vs full ancestral DDPM (all T
steps, the paper / official test), on the same held-out images, the same hole and the same original model.

Prints seconds per image and the FID of each sampler's completions (retain and forget groups), measured side by
side in one run, and their ratios. Run from a source checkout:

    python benchmarks/sampling.py [--config experiments/configs/palette_fmnist.yaml] [--images 50]
                                  [--unlearned results/runs/<run>/unlearned.pt] [key=value ...]

``--images`` is per group (full DDPM costs T network calls per image: ~2000 on the default schedule).
``--unlearned`` also samples an unlearned model with both samplers and prints its FID ratios to the original's,
so the forgetting effect measured with the fast sampler can be checked against full DDPM on the same images.
"""

from __future__ import annotations

import argparse
import time

import torch

from raysweep.config import load_config
from raysweep.evaluate import eval_groups
from raysweep.jobs import load_original
from raysweep.metrics import complete, resolve_extractor
from raysweep.metrics.fidelity import fid_is, to_uint8
from raysweep.models import get_family
from raysweep.models.checkpoints import read_state_dict
from raysweep.pretrain import ensure_extractor, ensure_original, extractor_label


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/configs/palette_fmnist.yaml")
    p.add_argument("--images", type=int, default=50, help="images per group (retain, forget)")
    p.add_argument("--unlearned", help="unlearned.pt of a run (same config) to compare with the original")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    family = get_family(cfg.model.family)
    original, ext_path = ensure_original(cfg), ensure_extractor(cfg)
    ext = resolve_extractor(cfg.eval.extractor, str(ext_path), extractor_label(cfg))
    groups = {g: x[: args.images] for g, x in eval_groups(cfg).items()}

    def score(model: torch.nn.Module, task) -> tuple[float, dict[str, float]]:
        """Seconds per image and FID per group of ``model``'s completions."""
        t0, fids = time.perf_counter(), {}
        for g, x in groups.items():
            out, _ = complete(family, model, x, task, torch.device("cpu"), cfg.eval.batch_size)
            fids[g] = fid_is(to_uint8(out), to_uint8(x), ext, cfg.eval.batch_size, cuda=False)["fid"]
        return (time.perf_counter() - t0) / sum(len(x) for x in groups.values()), fids

    rows, unlearned = {}, {}
    for sampler in ("ddim", "ddpm"):
        c = cfg.replace(**{"model.options": {**cfg.model.options, "sampler": sampler}})
        model = load_original(c, str(original) if original else None).eval()
        s_per_image, fids = score(model, c.eval.task)
        rows[family.generation(model)] = {"s_per_image": s_per_image, **fids}
        if args.unlearned:
            model.load_state_dict(read_state_dict(args.unlearned, key="model"))
            unlearned[family.generation(model)] = score(model, c.eval.task)[1]
    print(
        f"Palette sampling, {cfg.model.preset}, task {cfg.eval.task.name}:{cfg.eval.task.ratio}, "
        f"{args.images} retain + {args.images} forget images, extractor {ext.label}"
    )
    for name, r in rows.items():
        print(
            f"  {name:>10}: {r['s_per_image']:8.3f} s/image   retain FID {r['retain']:7.2f}   "
            f"forget FID {r['forget']:7.2f}"
        )
    (a, ra), (b, rb) = rows.items()
    print(
        f"  speed-up {a} vs {b}: x{rb['s_per_image'] / ra['s_per_image']:.1f}   FID ratio {a}/{b}: "
        f"retain {ra['retain'] / rb['retain']:.2f}, forget {ra['forget'] / rb['forget']:.2f}"
    )
    for name, f in unlearned.items():
        o = rows[name]
        print(
            f"  unlearned, {name:>10}: retain FID {f['retain']:7.2f} (x{f['retain'] / o['retain']:.2f})   "
            f"forget FID {f['forget']:7.2f} (x{f['forget'] / o['forget']:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
