"""One trial's evaluation with and without the reference-statistics cache, side by side in one run.

A trial scores its completions of the held-out retain and forget images (FID / IS / classifier-on-outputs); the
real images' extractor statistics are the same for every trial of a sweep, so torch-fidelity caches them under a
name holding the images' and the extractor's content hashes (``$RAYSWEEP_CACHE/fidelity``). This measures the
scoring of one model (the original, as a trial would score its unlearned model) first with an empty statistics
cache, then with the cache filled by that first call, and prints both times and their ratio.

    python benchmarks/eval_cache.py [--config mae_fmnist] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from raysweep.cli import parse_args
from raysweep.config import load_config
from raysweep.evaluate import heldout_groups
from raysweep.jobs import load_original
from raysweep.metrics import evaluate, resolve_extractor
from raysweep.metrics.extractors import load_classifier
from raysweep.models import get_family
from raysweep.pretrain import ensure_models


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="mae_fmnist")
    p.add_argument("overrides", nargs="*")
    args = parse_args(p, argv)
    cfg = load_config(args.config, args.overrides)
    models = ensure_models(cfg)
    family = get_family(cfg.model.family)
    ext = resolve_extractor(cfg.eval.extractor, str(models.extractor), models.extractor_label)
    held = heldout_groups(cfg, cfg.eval.part)
    groups = {g: x for g, (x, _) in held.items()}
    labels = {g: y for g, (_, y) in held.items()}
    dev = torch.device("cpu")
    model = load_original(cfg, str(models.original) if models.original else None).eval()
    clf = load_classifier(models.extractor).eval()
    saved = os.environ.get("RAYSWEEP_CACHE")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RAYSWEEP_CACHE"] = tmp  # an empty statistics cache (the models are already loaded)
        try:
            for _ in ("empty", "filled"):
                t = time.perf_counter()
                m, _ = evaluate(family, model, groups, cfg.eval.task, ext, dev, cfg.eval.batch_size, labels, clf)
                times.append(time.perf_counter() - t)
        finally:
            if saved is None:
                os.environ.pop("RAYSWEEP_CACHE", None)
            else:
                os.environ["RAYSWEEP_CACHE"] = saved
    n = sum(len(x) for x in groups.values())
    print(f"one trial's evaluation, {cfg.name}, {n} {cfg.eval.part} images, extractor {ext.label}")
    print(f"  empty reference cache : {times[0]:7.1f} s")
    print(f"  filled reference cache: {times[1]:7.1f} s")
    print(f"  ratio filled / empty  : {times[1] / times[0]:.3f}  (retain FID {m['retain/fid']:.3f} both times)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
