"""Palette sampling: few-step samplers vs full ancestral DDPM (all T steps, the paper / official test), on the same
held-out images, the same hole and the same original model.

Prints seconds per image and the FID of each sampler's completions (retain and forget groups), measured side by
side in one run, with each sampler's speed-up and FID ratio to DDPM. Run from a source checkout:

    python benchmarks/sampling.py [--config experiments/configs/palette_fmnist.yaml] [--images 200]
        [--samplers ddpm ddim:25 dpmpp2m_sde:25 ancestral:50] [--device cuda] [--unlearned <run>/unlearned.pt]
        [--json out.json] [key=value ...]

``--images`` is per group (full DDPM costs T network calls per image: 2000 on the default schedule, minutes per
image batch on a CPU). ``--unlearned`` also samples an unlearned model with every sampler and prints its FID ratios
to the original's, so the forgetting effect measured with a fast sampler can be checked against full DDPM.
On a machine without Ray, add ``resources.runtime=local`` to train a missing original / extractor in-process.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from raysweep.cli import parse_args
from raysweep.config import load_config
from raysweep.evaluate import eval_groups
from raysweep.jobs import load_original
from raysweep.metrics import complete, resolve_extractor
from raysweep.metrics.fidelity import fid_is, to_uint8
from raysweep.models import get_family
from raysweep.models.checkpoints import read_state_dict
from raysweep.models.palette import SAMPLERS
from raysweep.pretrain import ensure_extractor, ensure_original, extractor_label


def _spec(spec: str) -> str:
    """A ``--samplers`` value, checked before anything is computed: ``NAME`` or ``NAME:STEPS``."""
    name, _, steps = spec.partition(":")
    if name not in SAMPLERS or (steps and not steps.isdigit()):
        raise argparse.ArgumentTypeError(f"{spec!r}: give NAME or NAME:STEPS with NAME one of {', '.join(SAMPLERS)}")
    return spec


def _sampler(spec: str) -> dict:
    """``ddpm`` | ``ddim:25`` | ``dpmpp2m_sde:25`` -> model options."""
    name, _, steps = spec.partition(":")
    return {"sampler": name, **({"sample_steps": int(steps)} if steps else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/configs/palette_fmnist.yaml")
    p.add_argument("--images", type=int, default=200, help="images per group (retain, forget)")
    p.add_argument("--samplers", nargs="+", type=_spec, default=["ddpm", "ddim:25", "dpmpp2m_sde:25", "ancestral:50"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--unlearned", help="unlearned.pt of a run (same config) to compare with the original")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("overrides", nargs="*")
    args = parse_args(p, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(args.config, args.overrides)
    family = get_family(cfg.model.family)
    device = torch.device(args.device)
    original, ext_path = ensure_original(cfg), ensure_extractor(cfg)
    ext = resolve_extractor(cfg.eval.extractor, str(ext_path), extractor_label(cfg))
    groups = {g: x[: args.images] for g, x in eval_groups(cfg).items()}

    def score(model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        """Seconds per image and FID per group of ``model``'s completions."""
        fids, seconds = {}, 0.0
        for g, x in groups.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out, _ = complete(family, model, x, cfg.eval.task, device, cfg.eval.batch_size)
            seconds += time.perf_counter() - t0
            fids[g] = fid_is(to_uint8(out), to_uint8(x), ext, cfg.eval.batch_size, cuda=device.type == "cuda")["fid"]
        return seconds / sum(len(x) for x in groups.values()), fids

    rows, unlearned = {}, {}
    for spec in args.samplers:
        c = cfg.replace(**{"model.options": {**cfg.model.options, **_sampler(spec)}})
        model = load_original(c, str(original) if original else None).to(device).eval()
        s_per_image, fids = score(model)
        name = family.generation(model)
        rows[name] = {"s_per_image": s_per_image, **fids}
        print(
            f"  {name:>12}: {s_per_image:8.4f} s/image   retain FID {fids['retain']:7.2f}   "
            f"forget FID {fids['forget']:7.2f}",
            flush=True,
        )
        if args.unlearned:
            model.load_state_dict(read_state_dict(args.unlearned, key="model"))
            unlearned[name] = score(model)[1]
    print(
        f"Palette sampling, {cfg.model.preset}, task {cfg.eval.task.name}:{cfg.eval.task.ratio}, "
        f"{args.images} retain + {args.images} forget {cfg.eval.part} images, extractor {ext.label}, device {device}"
    )
    ref_name = next((n for n in rows if n.startswith("ddpm")), next(iter(rows)))
    ref = rows[ref_name]
    print(f"| sampler | s/image | speed-up vs {ref_name} | retain FID | x {ref_name} | forget FID | x {ref_name} |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['s_per_image']:.4f} | x{ref['s_per_image'] / r['s_per_image']:.1f} | "
            f"{r['retain']:.2f} | {r['retain'] / ref['retain']:.2f} | {r['forget']:.2f} | "
            f"{r['forget'] / ref['forget']:.2f} |"
        )
    for name, f in unlearned.items():
        o = rows[name]
        print(
            f"  unlearned, {name:>12}: retain FID {f['retain']:7.2f} (x{f['retain'] / o['retain']:.2f})   "
            f"forget FID {f['forget']:7.2f} (x{f['forget'] / o['forget']:.2f})"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"rows": rows, "unlearned": unlearned, "images_per_group": args.images, "eval_part": cfg.eval.part}, fh
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
