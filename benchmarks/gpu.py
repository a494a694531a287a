"""GPU benchmark at paper scale: MAE ViT-B/16 at 224 px and Palette's official-size UNet at 256 px (random weights,
synthetic uint8 images), fp32 and bf16 side by side in one run.

For every model and variant it runs the real loop, :func:`raysweep.train.fit` on the Eq. 10 ``unlearn`` job with
``LocalHooks(cuda)`` (DataLoader workers, pinned memory, uint8 batches converted on the device), and prints

- images/s of the unlearning step (steady state, after warm-up; the device is synced when timing starts and ends,
  never per step) and the share of that time the host waited for data;
- peak GPU memory;
- model FLOP utilisation: FLOPs of one step counted by ``torch.utils.flop_counter`` (student forward + backward,
  teacher forward; the mean of a random-mask and a task-mask step, as the ``mixed`` step alternates them) x step
  rate / the card's bf16 matrix-multiply rate measured in the same run (8192^3 products);
- images/s of evaluation sampling (``generate``; Palette: per network call, and for the default sampler).

Run: ``raysweep bench --device cuda [--steps N] [--models mae palette] [--variants ...]`` or
``python benchmarks/gpu.py``; ``--profile`` adds the top CUDA kernels of one variant's steps.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from raysweep.config import Config
from raysweep.data.masks import task_mask
from raysweep.jobs import FlaggedSubset, unlearn_job
from raysweep.models import get_family
from raysweep.models.checkpoints import save_atomic
from raysweep.train import LocalHooks, StepTimer, fit

MODELS = {
    # name: (family, preset, image side, batch per step)
    "mae": ("mae", "vit_base", 224, 256),
    "palette": ("palette", "vit_base", 256, 64),
}
DEVICE, LOADER_WORKERS = "cuda", 6  # tests/test_benchmarks.py runs this file's machinery on the CPU, tiny presets
VARIANTS = {
    # name: resources overrides
    "fp32": {"resources.precision": "fp32"},
    "bf16": {"resources.precision": "bf16"},
    "bf16+nhwc": {"resources.precision": "bf16", "resources.channels_last": True},
    "bf16+compile": {"resources.precision": "bf16", "resources.compile": True},
}


class SyntheticImages(Dataset):
    """``n`` random uint8 RGB images with labels 0..classes-1 (what an image folder's training view yields)."""

    def __init__(self, n: int, size: int, classes: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        self.labels = torch.arange(n) % classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def bench_config(family: str, preset: str, size: int, batch: int) -> Config:
    return Config.from_dict(
        {
            "name": f"gpu-bench-{family}",
            "model": {"family": family, "preset": preset, "options": {}},
            "data": {
                "dataset": "synthetic",
                "num_classes": 4,
                "image_size": 32,  # only the split's labels come from here; the images are SyntheticImages
                "forget_classes": [0, 1],
                "retain_classes": [2, 3],
                "images_per_class": 16,
                "test_images_per_class": 4,
                "val_images_per_class": 4,
            },
            "unlearn": {"epochs": 1000, "batch_size": batch, "log_every": 10_000, "train_mask": "mixed"},
            "eval": {"task": {"name": "center", "ratio": 0.5}},
            "resources": {"num_workers": 1, "use_gpu": "true", "loader_workers": LOADER_WORKERS},
        }
    )


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(n: int = 8192, reps: int = 10) -> float:
    """The card's bf16 matrix-multiply rate (TFLOP/s), the reference for MFU."""
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def step_flops(job, batch: tuple, bf16: bool) -> float:
    """FLOPs of one optimiser step (forward + backward + teacher), mean of the two mask kinds of a mixed step."""
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator(device=DEVICE).manual_seed(0)
    total = 0.0
    for _ in range(2):  # the step alternates random and task masks
        with FlopCounterMode(display=False) as fc:
            with torch.autocast(DEVICE, torch.bfloat16, enabled=bf16):
                out = job.step(job.module, batch, gen)
            out["loss"].backward()
        total += fc.get_total_flops()
    job.module.zero_grad(set_to_none=True)
    return total / 2


@dataclass
class Row:
    model: str
    variant: str
    batch: int
    img_s: float
    data_wait: float
    peak_gib: float
    tflops: float
    mfu: float


def run_variant(name: str, variant: str, steps: int, warmup: int, peak: float, original: str) -> Row:
    family, preset, size, batch = MODELS[name]
    cfg = bench_config(family, preset, size, batch).replace(**VARIANTS[variant])
    job = unlearn_job(cfg, original=original, finish=lambda m, d: None)
    n = batch * (steps + warmup + 4)
    job.dataset = FlaggedSubset(SyntheticImages(n, size), list(range(n)), [i % 2 == 0 for i in range(n)])
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer(warmup, batch)
    fit(job, LocalHooks(DEVICE), seed=0, on_step=timer, max_steps=warmup + steps)
    rate, wait = timer.rate(), timer.data_wait_share()
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else float("nan")
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=DEVICE).float() / 255
    flags = torch.arange(batch, device=DEVICE) % 2 == 0
    flops = step_flops(job, (x, flags), cfg.resources.precision == "bf16")
    tflops = flops * rate / batch / 1e12
    return Row(name, variant, batch, rate, wait, peak_gib, tflops, tflops / peak)


def sampling_rate(name: str, bf16: bool, original: str, reps: int = 3) -> dict:
    """Evaluation sampling: ``generate`` images/s at the bench batch (Palette: one network call, and the default
    sampler's full run)."""
    family, preset, size, batch = MODELS[name]
    cfg = bench_config(family, preset, size, batch)
    fam = get_family(family)
    from raysweep.jobs import load_original

    model = load_original(cfg, original).to(DEVICE).eval()
    x = torch.rand(batch, 3, size, size, device=DEVICE)
    m = task_mask(cfg.eval.task, batch, size, device=DEVICE)
    out = {}
    calls = {"mae": 1, "palette": getattr(model, "sample_steps", 1)}[name]

    def timed() -> float:
        with torch.autocast(DEVICE, torch.bfloat16, enabled=bf16):
            fam.generate(model, x, m)
            _sync()
            t = time.perf_counter()
            for _ in range(reps):
                fam.generate(model, x, m)
            _sync()
        return batch * reps / (time.perf_counter() - t)

    rate = timed()
    out[f"{fam.generation(model)} img/s"] = rate
    out["network calls per image"] = calls
    out["img/s per network call"] = rate * calls
    return out


def profile(name: str, variant: str, original: str, steps: int = 4, top: int = 20) -> str:
    """Top CUDA kernels of ``steps`` steps (where the time goes)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    family, preset, size, batch = MODELS[name]
    cfg = bench_config(family, preset, size, batch).replace(**VARIANTS[variant])
    job = unlearn_job(cfg, original=original, finish=lambda m, d: None)
    n = batch * (steps + 4)
    job.dataset = FlaggedSubset(SyntheticImages(n, size), list(range(n)), [i % 2 == 0 for i in range(n)])
    fit(job, LocalHooks(DEVICE), seed=0, max_steps=2)  # warm-up (cuDNN autotune, allocator)
    job = unlearn_job(cfg, original=original, finish=lambda m, d: None)
    job.dataset = FlaggedSubset(SyntheticImages(n, size), list(range(n)), [i % 2 == 0 for i in range(n)])
    with torch_profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        fit(job, LocalHooks(DEVICE), seed=0, max_steps=steps)
        _sync()
    key = "cuda_time_total" if DEVICE == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=70)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=6, help="untimed steps first (compile, cuDNN autotune)")
    p.add_argument("--profile", nargs=2, metavar=("MODEL", "VARIANT"), help="also print its top CUDA kernels")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA device; `raysweep bench` (no --device) measures the CPU loop")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here (the loop does not change it)
    peak = matmul_tflops()
    card = torch.cuda.get_device_name()
    print(f"{card}: bf16 matmul {peak:.0f} TFLOP/s (8192^3, measured now; MFU is relative to it)", flush=True)
    rows, sampling = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            family, preset, size, batch = MODELS[name]
            cfg = bench_config(family, preset, size, batch)
            torch.manual_seed(0)
            original = f"{tmp}/{name}.pt"
            save_atomic({"model": get_family(family).build(cfg.model).state_dict()}, original)
            for v in args.variants:
                if name == "mae" and v == "bf16+nhwc":
                    continue  # channels_last only concerns conv nets
                t0 = time.perf_counter()
                try:
                    r = run_variant(name, v, args.steps, args.warmup, peak, original)
                except Exception as e:  # one variant failing (e.g. compile) must not hide the others
                    print(f"{name} {v}: FAILED {type(e).__name__}: {e}", flush=True)
                    continue
                rows.append(r)
                print(
                    f"{name:8} {v:13} batch {r.batch:4}  {r.img_s:8.0f} img/s  data wait {r.data_wait:5.1%}  "
                    f"peak {r.peak_gib:5.1f} GiB  {r.tflops:6.1f} TFLOP/s  MFU {r.mfu:5.1%}  "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            for bf16 in (False, True):
                key = f"{name} {'bf16' if bf16 else 'fp32'}"
                try:
                    sampling[key] = sampling_rate(name, bf16, original)
                except Exception as e:  # reported, and the other measurements go on
                    print(f"sampling {key}: FAILED {type(e).__name__}: {e}", flush=True)
                    continue
                print(f"sampling {key}: {sampling[key]}", flush=True)
            if args.profile and args.profile[0] == name:
                print(profile(name, args.profile[1], original), flush=True)
    print("\n| model | variant | batch | img/s | data wait | peak GiB | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.model} | {r.variant} | {r.batch} | {r.img_s:.0f} | {r.data_wait:.1%} | {r.peak_gib:.1f} | "
            f"{r.tflops:.0f} | {r.mfu:.1%} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"card": card, "matmul_tflops": peak, "rows": [r.__dict__ for r in rows], "sampling": sampling}, f
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
