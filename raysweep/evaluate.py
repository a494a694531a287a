"""The end of an unlearning run (rank 0): evaluate the original and the unlearned model on the same held-out
images, write ``metrics.json``, the sample grid and the unlearned weights into the run folder."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from raysweep.config import Config
from raysweep.data.datasets import load_dataset
from raysweep.data.masks import apply_mask
from raysweep.data.splits import eval_split
from raysweep.jobs import RunSpec
from raysweep.metrics import complete, evaluate, resolve_extractor
from raysweep.metrics.clip import load_clip
from raysweep.models import get_family, unwrap
from raysweep.models.checkpoints import save_atomic
from raysweep.provenance import provenance

log = logging.getLogger(__name__)
METRICS_FILE, GRID_FILE, MODEL_FILE, TSNE_FILE = "metrics.json", "samples.png", "unlearned.pt", "tsne.png"
GRID_COLUMNS, GRID_PAD = 4, 2  # samples.png: input | masked | original | unlearned per row, 2 px between tiles
TSNE_IMAGES = 50  # per group, as the paper's T-SNE


def heldout_groups(cfg: Config, part: str = "test") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The held-out retain and forget images of ``part`` (test | val) as (float ``[N, 3, H, W]``, labels ``[N]``)."""
    held = load_dataset(cfg.data, train=False)
    split = eval_split(held.labels, cfg.data, part)
    out = {}
    for g, idx in (("retain", split.retain), ("forget", split.forget)):
        items = [held[i] for i in idx]
        out[g] = (torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items]))
    return out


def eval_groups(cfg: Config, part: str | None = None) -> dict[str, torch.Tensor]:
    """The held-out retain and forget images of ``part`` (default: the config's ``eval.part``; float
    ``[N, 3, H, W]``), fixed by the data config."""
    return {g: x for g, (x, _) in heldout_groups(cfg, part or cfg.eval.part).items()}


def original_metrics(
    cfg: Config,
    family,
    original: nn.Module,
    groups: dict[str, torch.Tensor],
    extractor,
    device: torch.device,
    cache: str | None,
    labels: dict[str, torch.Tensor] | None = None,
    classifier: nn.Module | None = None,
    clip: nn.Module | None = None,
) -> dict[str, float]:
    """The original model's scores, cached (they are the same for every trial of a sweep)."""
    if cache and Path(cache).is_file():
        return json.loads(Path(cache).read_text())
    m, _ = evaluate(
        family, original, groups, cfg.eval.task, extractor, device, cfg.eval.batch_size, labels, classifier, clip
    )
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(cache).with_suffix(".tmp")
        tmp.write_text(json.dumps(m))
        tmp.replace(cache)
    return m


def sample_grid(
    groups: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    original: dict[str, torch.Tensor],
    unlearned: dict[str, torch.Tensor],
    n: int,
    path: Path,
) -> None:
    """Rows of input | masked | original model | unlearned model, retain rows first, then forget rows."""
    from torchvision.utils import save_image

    tiles = []
    for g in ("retain", "forget"):
        for i in range(min(n, len(groups[g]))):
            x = groups[g][i]
            tiles += [x, apply_mask(x[None], masks[g][i][None], 0.5)[0], original[g][i], unlearned[g][i]]
    save_image(torch.stack(tiles), path, nrow=GRID_COLUMNS, padding=GRID_PAD, pad_value=1.0)


def score(cfg: Config, model: nn.Module, out_dir: Path, spec: RunSpec, device: torch.device) -> dict:
    """Score ``model`` and the original on the ``cfg.eval.part`` images (test or val) of ``cfg.eval.task``: write
    ``metrics.json`` and ``samples.png`` into ``out_dir`` and return the metrics. ``out_dir/unlearned.pt``, when it
    exists, is the scored model's file (its sha256 is recorded)."""
    from raysweep.jobs import load_original
    from raysweep.metrics.extractors import load_classifier
    from raysweep.models.checkpoints import sha256

    family = get_family(cfg.model.family)
    ext = resolve_extractor(cfg.eval.extractor, spec.extractor, spec.extractor_label)
    held = heldout_groups(cfg, cfg.eval.part)
    groups = {g: x for g, (x, _) in held.items()}
    labels = {g: y for g, (_, y) in held.items()}
    clf = load_classifier(spec.extractor).to(device).eval() if spec.extractor else None  # classifier-on-outputs
    clip = load_clip(cfg.eval.clip_model, cfg.eval.clip_weights, device)  # None without the weights on disk
    orig_model = load_original(cfg, spec.original).to(device).eval()
    orig = original_metrics(cfg, family, orig_model, groups, ext, device, spec.original_cache, labels, clf, clip)
    new, outputs = evaluate(family, model, groups, cfg.eval.task, ext, device, cfg.eval.batch_size, labels, clf, clip)
    n = cfg.eval.grid_images
    heads = {g: x[:n] for g, x in groups.items()}
    orig_out, masks = {}, {}
    for g, x in heads.items():
        orig_out[g], masks[g] = complete(family, orig_model, x, cfg.eval.task, device)
    sample_grid(heads, masks, orig_out, {g: o[:n] for g, o in outputs.items()}, n, out_dir / GRID_FILE)
    if clf is not None:  # App. Fig. 4: completions vs ground truths, both models, 50 images per group
        from raysweep.metrics.tsne import tsne_figure

        sets = {}
        for g, x in groups.items():
            k = min(TSNE_IMAGES, len(x))
            sets[f"{g} ground truth"] = x[:k]
            sets[f"{g}, original"] = complete(family, orig_model, x[:k], cfg.eval.task, device)[0]
            sets[f"{g}, unlearned"] = outputs[g][:k]
        tsne_figure(clf, sets, out_dir / TSNE_FILE)
    result = {**new, **{f"original/{k}": v for k, v in orig.items()}}
    if cfg.eval.cross_validate:  # App. E.2, for the model and, as the reference, for the original itself
        from raysweep.metrics.crossval import cross_validation

        args = (groups, cfg.eval.task, ext, device, cfg.eval.batch_size)
        result.update(cross_validation(family, model, orig_model, *args))
        result.update({f"original/{k}": v for k, v in cross_validation(family, orig_model, orig_model, *args).items()})
    result["forget/fid_ratio"] = new["forget/fid"] / max(orig["forget/fid"], 1e-12)
    result["retain/fid_ratio"] = new["retain/fid"] / max(orig["retain/fid"], 1e-12)
    payload = {
        **result,
        "extractor": ext.label,
        "task": f"{cfg.eval.task.name}:{cfg.eval.task.ratio}",
        "generation": family.generation(unwrap(model)),
        "eval_images_per_group": {g: len(x) for g, x in groups.items()},
        "eval_part": cfg.eval.part,
        "original_sha256": spec.original_sha256,
        "unlearned_sha256": sha256(out_dir / MODEL_FILE) if (out_dir / MODEL_FILE).is_file() else None,
        "extractor_sha256": sha256(spec.extractor) if spec.extractor else None,
        "seed": cfg.seed,
        "provenance": provenance(),  # package versions and the source commit
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(payload, indent=2))
    log.info("metrics written to %s", out_dir / METRICS_FILE)
    return payload


def all_cores_while(fn: Callable[[], dict], threads: int) -> dict:
    """Run ``fn`` with ``threads`` CPU threads (0 = every core this process may use), then restore the count: a
    0.5-CPU Ray worker runs with one thread, and evaluation happens while the other workers wait."""
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(threads or cores)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def run_finisher(cfg: Config, spec: RunSpec) -> Callable[[nn.Module, torch.device], dict | None]:
    """The unlearn job's ``finish`` (the loop calls it on rank 0 only): save the weights into ``spec.run_dir``,
    then :func:`score` them; adds the wall times."""
    started = time.perf_counter()  # made right before the job is built and trained

    def finish(model: nn.Module, device: torch.device) -> dict | None:
        t_train, t0 = time.perf_counter() - started, time.perf_counter()
        out = Path(spec.run_dir)
        out.mkdir(parents=True, exist_ok=True)
        # the trained weights first: an evaluation that dies must not lose the training
        save_atomic({"model": unwrap(model).state_dict(), "config": cfg.to_dict()}, out / MODEL_FILE)
        payload = all_cores_while(
            lambda: score(cfg, model, out, spec, device),
            cfg.eval.threads,
        )
        payload["seconds"] = {"train": round(t_train, 1), "evaluate": round(time.perf_counter() - t0, 1)}
        (out / METRICS_FILE).write_text(json.dumps(payload, indent=2))
        return payload

    return finish


def evaluate_checkpoint(cfg: Config, checkpoint: str | Path, out_dir: str | Path) -> dict:
    """``raysweep evaluate``: score a saved model of ``cfg``'s family (an unlearned run's ``unlearned.pt``, or any
    file holding its state dict under ``model``) against the original on ``cfg.eval.part`` / ``cfg.eval.task``, in
    this process; writes ``metrics.json`` and ``samples.png`` into ``out_dir``."""
    from raysweep.jobs import load_original
    from raysweep.models.checkpoints import read_state_dict, sha256
    from raysweep.pretrain import ensure_models
    from raysweep.runner import run_spec
    from raysweep.train import use_gpu

    models = ensure_models(cfg)
    spec = run_spec(cfg, Path(out_dir), models)
    model = load_original(cfg, spec.original)
    model.load_state_dict(read_state_dict(checkpoint, key="model"))
    device = torch.device("cuda" if use_gpu(cfg) else "cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = all_cores_while(
        lambda: score(cfg, model.to(device).eval(), out, spec, device),
        cfg.eval.threads,
    )
    payload["checkpoint"] = str(Path(checkpoint).resolve())
    payload["unlearned_sha256"] = sha256(checkpoint)
    (out / METRICS_FILE).write_text(json.dumps(payload, indent=2))
    return payload


def write_reconstructions(cfg: Config, original_path: Path, n: int = 8) -> Path:
    """Completions by the pretrained original of held-out images, for the eval task and MAE-style random masking:
    rows of input | masked | completion (saved next to the cached weights)."""
    from torchvision.utils import save_image

    from raysweep.config import TaskConfig
    from raysweep.jobs import load_original

    family = get_family(cfg.model.family)
    model = load_original(cfg, str(original_path)).eval()
    groups = eval_groups(cfg, "test")
    x = torch.cat([groups["retain"][: n // 2], groups["forget"][: n - n // 2]])
    tiles = []
    for task in (cfg.eval.task, TaskConfig("random", 0.75)):
        out, masks = complete(family, model, x, task, torch.device("cpu"))
        for i in range(len(x)):
            tiles += [x[i], apply_mask(x[i][None], masks[i][None], 0.5)[0], out[i]]
    path = Path(original_path).with_suffix(".png")
    save_image(torch.stack(tiles), path, nrow=3, padding=2, pad_value=1.0)
    return path
