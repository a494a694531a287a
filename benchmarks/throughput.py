"""Throughput of the unlearning step: the plain PyTorch DDP loop vs the same loop in Ray Train, equal workers.

Both run ``raysweep.train.fit`` on the same job (Eq. 10 on the configured model and data) with the same number of
worker processes and threads per worker (Ray gives a 0.5-CPU worker OMP_NUM_THREADS=1; the plain processes use 1
thread too), measure steady-state images/s after a warm-up inside the loop, and print the ratio from one run.
Run: ``raysweep bench [--config PATH] [--steps N] [key=value ...]``.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysweep.config import Config
from raysweep.jobs import unlearn_job
from raysweep.models import get_family
from raysweep.models.checkpoints import save_atomic
from raysweep.train import StepTimer, ensure_ray, fit, trainer

WARMUP = 10


class PlainHooks:
    """torch.distributed (gloo) runtime for ``fit``: no checkpoints, no reports."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.device = rank, world, torch.device("cpu")

    def wrap(self, module):
        return torch.nn.parallel.DistributedDataParallel(module) if self.world > 1 else module

    def report(self, metrics, state=None):
        pass

    def restore(self):
        return None


def _plain_worker(rank: int, world: int, port: int, cfg_dict: dict, original: str, steps: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = Config.from_dict(cfg_dict)
    job = unlearn_job(cfg, original=original, finish=lambda m, d: None)
    timer = StepTimer(WARMUP, job.hyper.batch_size * world)
    fit(job, PlainHooks(rank, world), cfg.seed, on_step=timer, max_steps=WARMUP + steps)
    if rank == 0:
        out["img_per_s"] = timer.rate()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain(cfg: Config, original: str, steps: int) -> float:
    with mp.Manager() as m:
        out = m.dict()
        mp.spawn(
            _plain_worker,
            args=(cfg.resources.num_workers, _free_port(), cfg.to_dict(), original, steps, out),
            nprocs=cfg.resources.num_workers,
            join=True,
        )
        return float(out["img_per_s"])


def bench_loop(config: dict) -> dict | None:
    """The benchmark's Ray Train entry point: the same unlearn job and loop as a run, timed after a warm-up."""
    from raysweep.train import RayHooks

    hooks = RayHooks()
    cfg, args = Config.from_dict(config["cfg"]), config["args"]
    job = unlearn_job(cfg, original=args["original"], finish=lambda m, d: None)
    timer = StepTimer(warmup=WARMUP, images_per_step=job.hyper.batch_size * hooks.world)
    fit(job, hooks, on_step=timer, max_steps=WARMUP + args["steps"])
    return {"img_per_s": timer.rate()} if hooks.rank == 0 else None


def ray_train(cfg: Config, original: str, steps: int, storage: str) -> float:
    import sys

    import ray.cloudpickle

    # the workers get bench_loop by value: this file is not importable where they run
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ensure_ray()
    res = trainer(cfg, "unlearn", storage, "bench", loop=bench_loop, original=original, steps=steps).fit()
    if res.error:
        raise res.error
    return float(res.return_value["img_per_s"])


def main(cfg: Config, steps: int = 60) -> int:
    cfg = cfg.replace(**{"resources.use_gpu": "false", "unlearn.epochs": 100})  # epochs: never the limit
    with tempfile.TemporaryDirectory() as tmp:
        original = os.path.join(tmp, "original.pt")  # throughput does not depend on the weights
        save_atomic({"model": get_family(cfg.model.family).build(cfg.model).state_dict()}, original)
        t = time.perf_counter()
        p = plain(cfg, original, steps)
        t_plain = time.perf_counter() - t
        t = time.perf_counter()
        r = ray_train(cfg, original, steps, tmp)
        t_ray = time.perf_counter() - t
    w = cfg.resources.num_workers
    print(
        f"unlearning step, {cfg.model.family}/{cfg.model.preset}, {w} workers x batch {cfg.unlearn.batch_size}, "
        f"{steps} timed steps after {WARMUP} warm-up"
    )
    print(f"  plain PyTorch DDP : {p:8.1f} img/s   (wall incl. start-up {t_plain:5.1f} s)")
    print(f"  Ray Train         : {r:8.1f} img/s   (wall incl. start-up {t_ray:5.1f} s)")
    print(f"  ratio Ray/plain   : {r / p:8.3f}     (overhead {100 * (1 - r / p):+.1f}%, target <= 10%)")
    return 0
