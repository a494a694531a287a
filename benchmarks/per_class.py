"""Per-class diagnosis of an unlearned run: which held-out classes forgot, and did Eq. 10 reach its target there?

For every retain and forget class of the run's split, on the held-out images of ``eval.part`` (``val`` unless told),
with the original and the unlearned model side by side:

- FID of the class's completions (the in-domain extractor, ``--images`` per class: biased at this size, read the
  ratio) and the in-domain classifier's accuracy on them;
- Eq. 10's distances on the evaluated hole, relative to how far the original puts the forget target:
  ``target`` = ||E_u(x) - E_o(n)||^2 / ||E_o(x) - E_o(n)||^2 (1: the encoder did not move towards the noise
  target, 0: it reached it) and ``moved`` = ||E_u(x) - E_o(x)||^2 / ||E_o(x) - E_o(n)||^2, where E_o(n) is the
  frozen original's embedding of the family's forget input (noise, Eq. 10; App. C.25 for Palette).

On the CPU. ``unlearn.noise=lowrank`` runs are measured against N(0, I) noise (its Sigma is not refitted here);
the output names the noise used. Run from a source checkout, on a run folder (``config.yaml``, ``unlearned.pt``):

    python benchmarks/per_class.py <results>/runs/<run> [--images 100] [--json out.json] [key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path

import torch

from raysweep.cli import parse_args
from raysweep.config import load_config
from raysweep.data.masks import task_mask
from raysweep.evaluate import MODEL_FILE, heldout_groups
from raysweep.jobs import load_original
from raysweep.metrics import classifier_scores, complete, resolve_extractor
from raysweep.metrics.extractors import load_classifier
from raysweep.metrics.fidelity import fid_is, to_uint8
from raysweep.models import get_family
from raysweep.models.checkpoints import read_state_dict
from raysweep.pretrain import ensure_extractor, ensure_original, extractor_label
from raysweep.unlearn.noise import sample_noise


@torch.no_grad()
def embedding_ratios(family, original, unlearned, images: torch.Tensor, task, noise: str, seed: int = 0) -> dict:
    """Eq. 10's forget-target distances of ``images`` on the task hole (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    mask = task_mask(task, len(images), images.shape[-1], family.patch_size(original), gen)
    mean, std = family.input_stats(original)
    n = sample_noise(noise, images, mean, std, gen)
    e_u, ctx = family.encode(unlearned, images, {"mask": mask.bool()}, gen)  # ctx: the same hole, t and eps for all
    e_o, _ = family.encode(original, images, ctx, gen)
    t_in, t_ctx = family.forget_input(images, n, torch.ones(len(images), dtype=torch.bool), ctx, noise)
    e_n, _ = family.encode(original, t_in, t_ctx, gen)
    span = float(((e_o - e_n) ** 2).sum())
    return {"target": float(((e_u - e_n) ** 2).sum()) / span, "moved": float(((e_u - e_o) ** 2).sum()) / span}


def measured_noise(cfg) -> str:
    """The run's forget noise, except lowrank (its Sigma is fitted on the run's forget set): N(0, I) instead."""
    return "gaussian" if cfg.unlearn.noise == "lowrank" else cfg.unlearn.noise


def per_class(run: Path, images: int, overrides: list[str]) -> dict[int, dict]:
    cfg = load_config(str(run / "config.yaml"), overrides)
    family = get_family(cfg.model.family)
    device = torch.device("cpu")
    original_path = ensure_original(cfg)
    original = load_original(cfg, str(original_path) if original_path else None).eval()
    unlearned = copy.deepcopy(original)
    unlearned.load_state_dict(read_state_dict(str(run / MODEL_FILE), key="model"))
    ext_path = ensure_extractor(cfg)
    ext = resolve_extractor(cfg.eval.extractor, str(ext_path), extractor_label(cfg))
    clf = load_classifier(str(ext_path)).eval()
    rows = {}
    for group, (x, y) in heldout_groups(cfg, cfg.eval.part).items():
        for c in sorted(set(y.tolist())):
            xc = x[y == c][:images]
            row: dict = {"group": group, "images": len(xc)}
            for name, model in (("original", original), ("unlearned", unlearned)):
                out, _ = complete(family, model, xc, cfg.eval.task, device, cfg.eval.batch_size)
                q = to_uint8(out)
                row[f"{name}/fid"] = fid_is(q, to_uint8(xc), ext, cfg.eval.batch_size)["fid"]
                labels = torch.full((len(xc),), c)
                row[f"{name}/accuracy"] = classifier_scores(clf, q.float() / 255.0, xc, labels, device)["accuracy"]
            row["fid_ratio"] = row["unlearned/fid"] / max(row["original/fid"], 1e-12)
            row.update(embedding_ratios(family, original, unlearned, xc, cfg.eval.task, measured_noise(cfg)))
            rows[c] = row
            logging.getLogger("per_class").info("class %d (%s) done", c, group)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder (config.yaml, unlearned.pt)")
    p.add_argument("--images", type=int, default=100, help="held-out images per class")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("overrides", nargs="*", help="key=value on the run's config (default: eval.part=val)")
    args = parse_args(p, argv)
    missing = [f for f in ("config.yaml", MODEL_FILE) if not (args.run / f).is_file()]
    if missing:
        p.error(f"{args.run} is not a finished run folder: {', '.join(missing)} missing")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    overrides = ["eval.part=val", *args.overrides]  # later overrides win
    rows = per_class(args.run, args.images, overrides)
    noise = measured_noise(load_config(str(args.run / "config.yaml"), overrides))
    print(f"{args.run.name}: per class, {args.images} held-out images each ({overrides}), forget noise {noise}")
    print("| class | group | FID orig → unlearned | FID × | accuracy orig → unlearned | Eq. 10 target | moved |")
    print("|---|---|---|---|---|---|---|")
    for c, r in rows.items():
        print(
            f"| {c} | {r['group']} | {r['original/fid']:.2f} → {r['unlearned/fid']:.2f} | {r['fid_ratio']:.2f} | "
            f"{r['original/accuracy']:.2f} → {r['unlearned/accuracy']:.2f} | {r['target']:.2f} | {r['moved']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"run": str(args.run), "overrides": overrides, "noise": noise, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
