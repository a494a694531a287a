"""THE training loop (the only one): Ray Train ``TorchTrainer`` workers doing DDP over a :class:`raysweep.jobs.Job`.

``fit`` is the loop itself, independent of Ray (the throughput benchmark runs it under plain torch DDP too);
``train_loop_per_worker`` is the Ray Train entry point; ``run_job`` launches a TorchTrainer for one job.
AdamW or Adam, linear warmup then a half-cycle cosine per iteration (docs/protocol.md §1.1) or a constant rate, grad
clipping, a checkpoint every epoch and resume from it, ``FloatingPointError`` on a non-finite loss.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from raysweep.config import Config
from raysweep.jobs import Hyper, Job

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"


class Hooks(Protocol):
    """What the loop needs from its runtime (Ray Train workers, plain DDP processes, or a single process)."""

    rank: int
    world: int
    device: torch.device

    def wrap(self, module: nn.Module) -> nn.Module: ...
    def report(self, metrics: dict, state: dict | None = None) -> None: ...
    def restore(self) -> dict | None: ...


def param_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """No weight decay on biases and 1-D parameters (timm's add_weight_decay, as the official code)."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# optimiser class and its betas when ``Hyper.betas`` is None: AdamW's are App. B's (0.9, 0.95), Adam's torch's
OPTIMIZERS = {"adamw": (torch.optim.AdamW, (0.9, 0.95)), "adam": (torch.optim.Adam, (0.9, 0.999))}


def make_optimizer(h: Hyper, params: list[nn.Parameter], fused: bool) -> torch.optim.Optimizer:
    """``h.optimizer`` over ``params``: decoupled weight decay (AdamW) or L2 (Adam), none on 1-D parameters."""
    cls, betas = OPTIMIZERS[h.optimizer]
    betas = betas if h.betas is None else tuple(h.betas)
    return cls(param_groups(params, h.weight_decay), lr=h.lr, betas=betas, **({"fused": True} if fused else {}))


def lr_at(h: Hyper, progress_epochs: float) -> float:
    """Linear warmup for ``warmup_epochs``, then half-cycle cosine down to ``min_lr`` (per iteration) or, with
    ``schedule`` constant, ``lr`` throughout."""
    if progress_epochs < h.warmup_epochs:
        return h.lr * progress_epochs / h.warmup_epochs
    if h.schedule == "constant":
        return h.lr
    span = max(h.epochs - h.warmup_epochs, 1e-8)
    t = min(1.0, (progress_epochs - h.warmup_epochs) / span)
    return h.min_lr + (h.lr - h.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def _to(batch: Any, device: torch.device) -> Any:
    """Move a batch to ``device``; uint8 image batches (the datasets' training view) become float [0, 1] there,
    exactly as ``float() / 255`` on the host would make them (4x less to copy and to collate)."""
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if not torch.is_tensor(batch):
        return batch
    batch = batch.to(device, non_blocking=True)
    return batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch


def _check_finite(name: str, loss: torch.Tensor, epoch: int, i: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{name}: non-finite loss {loss.item()} at epoch {epoch} step {i}; lower the learning rate or alpha"
        )


def fit(
    job: Job,
    hooks: Hooks,
    seed: int | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    max_steps: int | None = None,
) -> dict | None:
    """Train ``job`` for its epochs; returns ``job.finish(...)`` on rank 0 (None elsewhere).

    ``seed`` (default ``job.seed``) fixes the data order and the step's draws; ``max_steps`` stops early
    (benchmarks); ``on_step(step, metrics, data_wait_s)`` sees every step's detached metric tensors (reading one
    syncs the device) and the host seconds spent waiting for that step's batch.
    """
    h, dev = job.hyper, hooks.device
    seed = job.seed if seed is None else seed
    cuda = dev.type == "cuda"
    # bf16 autocast: resources.precision=bf16, or auto on CUDA; fp32 on the CPU unless asked
    bf16 = h.precision == "bf16" or (h.precision == "auto" and cuda)
    torch.manual_seed(seed + hooks.rank)
    # resources.channels_last: NHWC (cuDNN's layout for tensor cores; the math is unchanged). Off by default: on
    # an H200 Palette's UNet step ran at 149 img/s with it and 197 without (GroupNorm / pooling in NHWC)
    layout = {"memory_format": torch.channels_last} if h.channels_last else {}
    module = job.module.to(dev, **layout)
    for fz in job.frozen:
        fz.to(dev, **layout)
    opt = make_optimizer(h, job.params, fused=cuda)
    start_epoch = 0
    state = hooks.restore()
    if state is not None:  # resume: a worker restart or a re-launched run
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        log.info("resuming %s from epoch %d", job.name, start_epoch)
    model = hooks.wrap(module)
    if h.compile:  # resources.compile: the wrapped module's forward (DDP's optimizer splits the graph at buckets)
        model = torch.compile(model, dynamic=False)  # one graph per mask size (random / task), no guards
    sampler = DistributedSampler(
        job.dataset, num_replicas=hooks.world, rank=hooks.rank, shuffle=True, seed=seed, drop_last=True
    )
    workers = h.loader_workers if h.loader_workers >= 0 else (4 if cuda else 0)  # -1 = auto
    loader = DataLoader(
        job.dataset,
        batch_size=h.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"{job.name}: {len(job.dataset)} training items are fewer than one batch of "
            f"{h.batch_size} x {hooks.world} workers; lower the batch size or add images"
        )
    gen = torch.Generator(device=dev)
    step = start_epoch * steps_per_epoch
    total = h.epochs * steps_per_epoch
    t0, step0 = time.perf_counter(), step
    last: dict[str, float] = {}
    for epoch in range(start_epoch, h.epochs):
        sampler.set_epoch(epoch)
        gen.manual_seed(seed * 1_000_003 + hooks.rank * 7919 + epoch)
        model.train()
        sums: dict[str, torch.Tensor] = {}  # on the device: no host sync inside the step (read every log_every)
        n, waited, t_epoch = 0, 0.0, time.perf_counter()
        batches = iter(loader)
        for i in range(steps_per_epoch):
            t_wait = time.perf_counter()
            batch = next(batches)
            wait = time.perf_counter() - t_wait
            waited += wait
            lr = lr_at(h, epoch + i / steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
                out = job.step(model, _to(batch, dev), gen)
            loss = out["loss"]
            if not cuda:  # free on the CPU; on CUDA checked at every log_every step and at the epoch's end
                _check_finite(job.name, loss, epoch, i)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if h.grad_clip:
                torch.nn.utils.clip_grad_norm_(job.params, h.grad_clip)
            opt.step()
            step += 1
            for k, v in out.items():
                sums[k] = sums.get(k, 0) + v.detach().double()
            n += 1
            if on_step:
                on_step(step, {k: v.detach() for k, v in out.items()}, wait)
            if step % h.log_every == 0:
                _check_finite(job.name, loss, epoch, i)
                vals = {k: float(v.detach()) for k, v in out.items()}
                if hooks.rank == 0:  # progress: one line per log_every steps, rank 0 only
                    rate = (step - step0) * h.batch_size * hooks.world / (time.perf_counter() - t0)
                    eta = (total - step) * h.batch_size * hooks.world / max(rate, 1e-9)
                    log.info(
                        "%s step %d/%d (epoch %d) loss %.4g | %.0f img/s | ETA %.0f s",
                        job.name,
                        step,
                        total,
                        epoch + 1,
                        vals["loss"],
                        rate,
                        eta,
                    )
                hooks.report(
                    {**{f"train/{k}": v for k, v in vals.items()}, "train/lr": lr, "epoch": epoch, "step": step}
                )
            if max_steps is not None and step >= max_steps:
                return None
        last = {f"train/{k}_epoch": float(v) / max(n, 1) for k, v in sums.items()}
        # host time blocked on the loader / the epoch's wall time: > ~0.05 means data-bound (more loader_workers)
        last["train/data_wait_share"] = waited / max(time.perf_counter() - t_epoch, 1e-9)
        if not math.isfinite(last.get("train/loss_epoch", 0.0)):
            raise FloatingPointError(f"{job.name}: non-finite loss in epoch {epoch}; lower the learning rate or alpha")
        ckpt = (
            {"model": module.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch} if hooks.rank == 0 else None
        )
        hooks.report({**last, "epoch": epoch, "epochs_done": epoch + 1, "step": step}, ckpt)
        if hooks.rank == 0:
            log.info(
                "%s epoch %d/%d %s", job.name, epoch + 1, h.epochs, " ".join(f"{k}={v:.4g}" for k, v in last.items())
            )
    result = None
    if hooks.rank == 0:
        model.eval()
        result = job.finish(module, dev)
    hooks.report(
        {
            **last,
            **{k: v for k, v in (result or {}).items() if isinstance(v, (int, float))},
            "epoch": h.epochs - 1,
            "step": step,
            "done": 1,
        }
    )
    return result


class StepTimer:
    """``on_step`` callback measuring steady-state images/s after ``warmup`` steps, and the share of that time the
    host waited for data. It syncs the device twice (when timing starts, and in :meth:`rate` after ``fit``
    returns), never per step, so CUDA keeps queueing steps ahead as in a real run."""

    def __init__(self, warmup: int, images_per_step: int):
        self.warmup, self.images_per_step = warmup, images_per_step
        self.t0: float | None = None
        self.t1, self.n, self.waited = 0.0, 0, 0.0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def __call__(self, step: int, _: dict, wait: float = 0.0) -> None:
        if self.t0 is None:
            if step >= self.warmup:
                self._sync()
                self.t0 = time.perf_counter()
            return
        self.n, self.waited = self.n + 1, self.waited + wait

    def seconds(self) -> float:
        if self.t0 is not None and not self.t1:
            self._sync()
            self.t1 = time.perf_counter()
        return max(self.t1 - (self.t0 or 0.0), 1e-9)

    def rate(self) -> float:
        return self.n * self.images_per_step / self.seconds()

    def data_wait_share(self) -> float:
        return self.waited / self.seconds()


# ---- Ray Train --------------------------------------------------------------------------------------
class RayHooks:
    """Runtime for ``fit`` inside a Ray Train worker."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self._train = ray.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def wrap(self, module: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(module, move_to_device=False)

    def report(self, metrics: dict, state: dict | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if state is not None:
                torch.save(state, os.path.join(tmp, STATE_FILE))
                ckpt = self._train.Checkpoint.from_directory(tmp)
            self._train.report(metrics, checkpoint=ckpt)

    def restore(self) -> dict | None:
        ck = self._train.get_checkpoint()
        if ck is None:
            return None
        with ck.as_directory() as d:
            return torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)


def _quiet_reports() -> None:
    """Ray Train logs one INFO line per report and rank, under a logger named by its file path; our own
    progress line (rank 0, every ``log_every`` steps) replaces it."""
    try:
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray layout: keep Ray's lines
        pass


def build_job(config: dict) -> tuple[Config, Job]:
    """The job a Ray Train config names: ``{"job": name, "cfg": Config.to_dict(), "args": {...}}`` (an unlearn
    job's ``spec`` travels as a dict)."""
    from raysweep import jobs

    cfg = Config.from_dict(config["cfg"])
    args = dict(config.get("args", {}))
    if "spec" in args:
        args["spec"] = jobs.RunSpec.from_dict(args["spec"])
    return cfg, jobs.JOBS[config["job"]](cfg, **args)


def train_loop_per_worker(config: dict) -> dict | None:
    """Ray Train entry point: build the job, run the loop."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _quiet_reports()
    hooks = RayHooks()
    _, job = build_job(config)
    return fit(job, hooks)


def use_gpu(cfg: Config) -> bool:
    return cfg.resources.use_gpu == "true" or (cfg.resources.use_gpu == "auto" and torch.cuda.is_available())


# Ray settings of a local cluster that raysweep starts itself (not of one it joins): on the 2-core machine
# `raysweep bench` measured Ray/plain 0.83 / 0.88 with Ray's defaults and 0.92 / 0.92 with these off
LEAN_RAY_SYSTEM_CONFIG = {"enable_metrics_collection": False, "prestart_worker_first_driver": False}


def ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        # Train's default 60 s for a worker group to start is too short on a loaded 2-core machine (spawning a worker
        # and importing torch took longer beside another job): the trial failed with WorkerGroupStartupTimeoutError
        os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
        # workers must see the same cache / data folders as the driver, the MLflow server's credentials and the Train
        # settings (a sweep trial is itself a Train driver inside a Ray worker)
        extra: dict[str, Any] = {}
        env = {k: v for k, v in os.environ.items() if k.startswith(("RAYSWEEP_", "MLFLOW_TRACKING_", "RAY_TRAIN_"))}
        if not os.environ.get("RAY_ADDRESS") and not os.environ.get("RAY_API_SERVER_ADDRESS"):
            # a new local cluster: Train's controller and placement-group cleaner query Ray's state API, which finds
            # "its" cluster by scanning the machine and fails ("Found multiple active Ray instances") when another
            # Ray runs beside this one; a finished trial's placement group then leaked and the next trial waited
            # for CPUs forever. Pin the state API to this cluster's own dashboard in every Ray worker (the runtime
            # env only: this process's environment, which subprocesses inherit, stays as it was).
            port = _free_port()
            env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
            extra = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}
            # a small machine feels Ray's background work: every process exporting metrics, and idle workers
            # prestarted for the driver (docs/benchmarks.md); a user's own RAY_<key> setting wins
            lean = {k: v for k, v in LEAN_RAY_SYSTEM_CONFIG.items() if f"RAY_{k}" not in os.environ}
            if lean:
                extra["_system_config"] = lean
        ray.init(
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=False,
            runtime_env={"env_vars": env} if env else None,
            **extra,
        )


# Ray's fixed default ports (GCS, dashboard, client server, dashboard agent's HTTP server): ray.init refuses a
# dashboard_port equal to one of them, and the OS's ephemeral range holds 52365 (it once handed it out here)
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365})


def _free_port(attempts: int = 64) -> int:
    import socket

    for _ in range(attempts):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS:
            return port
    raise RuntimeError(f"the OS gave only Ray's own default ports {sorted(RAY_DEFAULT_PORTS)} in {attempts} tries")


def trainer(
    cfg: Config,
    job: str,
    storage: str | Path,
    name: str,
    callbacks: list | None = None,
    max_failures: int = 1,
    loop: Callable[[dict], dict | None] | None = None,
    **job_args: Any,
):
    """A TorchTrainer for ``job`` with the configured workers (DDP; gloo on CPU, NCCL on GPU)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    gpu = use_gpu(cfg)
    res = {"CPU": cfg.resources.cpus_per_worker}
    if gpu:
        res["GPU"] = cfg.resources.gpus_per_worker
    return TorchTrainer(
        loop or train_loop_per_worker,
        train_loop_config=_loop_config(cfg, job, job_args),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.resources.num_workers, use_gpu=gpu, resources_per_worker=res
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            callbacks=callbacks or [],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )


def _loop_config(cfg: Config, job: str, job_args: dict) -> dict:
    args = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in job_args.items()}
    return {"job": job, "cfg": cfg.to_dict(), "args": args}


def run_local(cfg: Config, job: str, **job_args: Any) -> dict | None:
    """``resources.runtime=local``: ``job`` in this process as one worker (the GPU when ``use_gpu``), without Ray:
    for debugging, and for a GPU machine without Ray. Same loop, same job; no resume after a crash."""
    _, built = build_job(_loop_config(cfg, job, job_args))
    return fit(built, LocalHooks("cuda" if use_gpu(cfg) else "cpu"))


def run_job(cfg: Config, job: str, storage: str | Path, name: str, **job_args: Any) -> dict | None:
    """Run ``job`` (its :data:`raysweep.jobs.JOBS` builder's arguments in ``job_args``) in Ray Train workers and
    return rank 0's result (resumes a run of the same name); ``resources.runtime=local`` runs it in this process
    instead (:func:`run_local`)."""
    if cfg.resources.runtime == "local":
        return run_local(cfg, job, **job_args)
    ensure_ray()
    result = trainer(cfg, job, storage, name, **job_args).fit()
    if result.error:
        raise result.error
    return result.return_value


class LocalHooks:
    """Runtime for ``fit`` in one process (tests, debugging): keeps the last checkpoint in memory."""

    def __init__(self, device: str | torch.device = "cpu", state: dict | None = None):
        self.rank, self.world, self.device = 0, 1, torch.device(device)
        self.state, self.reports = state, []

    def wrap(self, module: nn.Module) -> nn.Module:
        return module

    def report(self, metrics: dict, state: dict | None = None) -> None:
        self.reports.append(metrics)
        if state is not None:
            self.state = state

    def restore(self) -> dict | None:
        return self.state
