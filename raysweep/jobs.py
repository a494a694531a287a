"""What a training run optimises. The single loop in :mod:`raysweep.train` runs any of these jobs:

- ``pretrain``: the original model on all classes with the family's own objective (embedded default);
- ``extractor``: the in-domain classifier whose features give FID / IS offline;
- ``unlearn``: Eq. 10 (or another ``unlearn.method``) on the encoder, decoder frozen.

A job names its trainable module, the parameters to optimise, its dataset and a ``step`` returning
``{"loss", ...}``; ``finish`` runs on rank 0 after the last epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from raysweep.config import Config
from raysweep.data.datasets import load_dataset
from raysweep.data.splits import pretrain_indices, unlearn_split
from raysweep.metrics.extractors import InDomainClassifier
from raysweep.models import get_family, pretrain_options, unwrap
from raysweep.models.checkpoints import read_state_dict, save_atomic
from raysweep.unlearn.losses import METHODS
from raysweep.unlearn.noise import LowRankSigma

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hyper:
    """Optimiser and schedule settings of one job (AdamW or Adam, linear warmup then cosine or constant, grad clip)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    betas: tuple[float, float] | None = (0.9, 0.95)  # None = the optimiser's default (train.OPTIMIZERS)
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    grad_clip: float | None = None
    log_every: int = 50
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 autocast on CUDA)
    loader_workers: int = 0  # DataLoader worker processes; -1 = auto (4 on CUDA, 0 on the CPU)
    channels_last: bool = False  # NHWC memory format for the module and its frozen copies
    compile: bool = False  # torch.compile the (wrapped) module
    optimizer: str = "adamw"  # adamw | adam
    schedule: str = "cosine"  # after the warmup: cosine (down to min_lr) | constant


@dataclass
class Job:
    name: str
    module: nn.Module  # what gets wrapped in DDP
    params: list[nn.Parameter]  # what the optimiser updates
    dataset: Dataset
    hyper: Hyper
    step: Callable[[nn.Module, Any, torch.Generator], dict[str, torch.Tensor]]
    finish: Callable[[nn.Module, torch.device], dict | None]
    frozen: list[nn.Module] = dataclasses.field(default_factory=list)  # moved to the device, never trained
    seed: int = 0  # data order and the step's random draws (``fit``)


class FlaggedSubset(Dataset):
    """Items of ``base`` at ``indices`` as ``(image, is_forget)``."""

    def __init__(self, base: Dataset, indices: list[int], flags: list[bool]):
        self.base, self.indices, self.flags = base, indices, flags

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        return self.base[self.indices[i]][0], self.flags[i]


def _runtime(cfg: Config) -> dict:
    """How the loop runs a job on its device (not what it optimises)."""
    r = cfg.resources
    return {
        "precision": r.precision,
        "loader_workers": r.loader_workers,
        "channels_last": r.channels_last,
        "compile": r.compile,
    }


def _lowrank_sigma(cfg: Config, family, teacher: nn.Module, ds: Dataset, split) -> LowRankSigma:
    """``unlearn.noise=lowrank``: Sigma fitted on up to 2000 distinct forget (or retain) training images, in the
    model's normalised input space (the space Eq. 10's noise is drawn in)."""
    u = cfg.unlearn
    want = u.noise_source == "forget"
    idx = list(dict.fromkeys(i for i, f in zip(split.indices, split.is_forget) if f == want))[:2000]
    x = torch.stack([ds[i][0] for i in idx])
    mean, std = family.input_stats(teacher)
    normalised = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return LowRankSigma.fit(normalised, u.noise_rank, u.noise_floor, seed=cfg.seed)


def load_original(cfg: Config, original_path: str | None) -> nn.Module:
    """The model before unlearning: an official checkpoint (``model.checkpoint``) or the raysweep-pretrained one."""
    family = get_family(cfg.model.family)
    model = family.build(cfg.model)
    if not cfg.model.checkpoint:
        if not original_path:
            raise FileNotFoundError("no original model: set model.checkpoint or run `raysweep pretrain` first")
        model.load_state_dict(read_state_dict(original_path, key="model"))
    return model


def pretrain_job(
    cfg: Config,
    output: str,
    stage: str | None = None,
    init: str | None = None,
    settings: dict | None = None,
    **_: Any,
) -> Job:
    """One pretraining stage of the original (``stage`` None = the family's only / last stage), starting from the
    previous stage's weights ``init``; only the stage's parameters train. The file records ``settings`` (what
    decides the original: ``pretrain.original_settings``; None = the whole config)."""
    family = get_family(cfg.model.family)
    torch.manual_seed(cfg.pretrain.seed)  # reproducible initialisation (DDP then broadcasts rank 0's)
    model = family.build(
        dataclasses.replace(cfg.model, checkpoint=None, options=pretrain_options(family, cfg.model.options))
    )
    if init:
        model.load_state_dict(read_state_dict(init, key="model"))
    stages = {s.name: s for s in family.pretrain_stages(cfg)}
    st = stages[stage] if stage else list(stages.values())[-1]
    params = list(st.parameters(model))
    model.requires_grad_(False)
    for q in params:
        q.requires_grad_(True)
    ds = load_dataset(cfg.data, train=True)
    idx = pretrain_indices(ds.labels, cfg.data, ds.num_classes)
    p = cfg.pretrain
    hyper = Hyper(
        st.epochs,
        p.batch_size,
        st.lr,
        p.weight_decay,
        (0.9, 0.95),
        p.warmup_epochs,
        0.0,
        3.0,
        50,
        **_runtime(cfg),
    )

    def step(m: nn.Module, batch: Any, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"loss": family.pretrain_loss(m, batch[0], gen, stage=st.name)}

    def finish(m: nn.Module, device: torch.device) -> dict:
        meta = cfg.to_dict() if settings is None else settings
        save_atomic({"model": unwrap(m).state_dict(), "config": meta, "stage": st.name}, output)
        return {"path": output}

    train = Subset(ds.training_view(), idx)
    return Job(f"pretrain-{st.name}", model, params, train, hyper, step, finish, seed=cfg.pretrain.seed)


def extractor_job(cfg: Config, output: str, **_: Any) -> Job:
    ds = load_dataset(cfg.data, train=True)
    torch.manual_seed(cfg.data.seed)  # the extractor depends on the data only (its cache key)
    net = InDomainClassifier(ds.num_classes)
    hyper = Hyper(cfg.pretrain.extractor_epochs, 128, 2e-3, 1e-4, (0.9, 0.999), 0.2, 0.0, None, 100, **_runtime(cfg))

    def step(m: nn.Module, batch: Any, gen: torch.Generator) -> dict[str, torch.Tensor]:
        x, y = batch
        # light augmentation: random shifts of up to 2 px, so features do not hinge on exact pixels
        dx, dy = torch.randint(-2, 3, (2,), generator=gen, device=gen.device).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        logits = m(x)
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean()}

    def finish(m: nn.Module, device: torch.device) -> dict:
        test = load_dataset(cfg.data, train=False)
        net_ = unwrap(m).eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test), 500):
                xs, ys = zip(*(test[j] for j in range(i, min(i + 500, len(test)))))
                correct += int((net_(torch.stack(xs).to(device)).argmax(1).cpu() == torch.tensor(ys)).sum())
        acc = correct / len(test)
        save_atomic(
            {
                "model": net_.state_dict(),
                "num_classes": ds.num_classes,
                "image_size": cfg.data.image_size,
                "test_accuracy": acc,
            },
            output,
        )
        log.info("in-domain extractor: test accuracy %.4f", acc)
        return {"path": output, "test_accuracy": acc}

    return Job("extractor", net, list(net.parameters()), ds.training_view(), hyper, step, finish, seed=cfg.data.seed)


@dataclass(frozen=True)
class RunSpec:
    """What an unlearning run needs besides its config: where it writes and what it starts from. Paths and content
    hashes only (it crosses process boundaries as a dict: :meth:`to_dict` / :meth:`from_dict`)."""

    run_dir: str
    original: str | None  # the raysweep-pretrained original; None: the official checkpoint ``model.checkpoint``
    original_sha256: str
    extractor: str | None  # the in-domain extractor's weights
    extractor_label: str
    original_cache: str | None = None  # where the original's scores are cached
    teacher_memo: str | None = None  # a sweep's folder of shared teacher outputs (raysweep.unlearn.memo)
    teacher_memo_gb: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        return cls(**d)


Finish = Callable[[nn.Module, torch.device], "dict | None"]


def unlearn_job(
    cfg: Config, original: str | None = None, finish: Finish | None = None, spec: RunSpec | None = None
) -> Job:
    """``unlearn.method`` on the original (``spec.original`` when a spec is given): Eq. 10 (``ours``) or a baseline
    (App. C.6), one :class:`~raysweep.unlearn.step.UnlearnStep` per batch. The student starts as the original, the
    teacher is a frozen copy of it. Embedding methods train the encoder only (the decoder stays bit-identical);
    objective methods train the full model (MAGE: the tokenizer stays frozen). The job owns its finish: with a
    ``spec``, save the weights into ``spec.run_dir`` and score them (:func:`raysweep.evaluate.run_finisher`);
    ``finish`` replaces that (tests, benchmarks)."""
    from raysweep.unlearn.memo import TeacherMemo
    from raysweep.unlearn.step import UnlearnStep

    if spec is not None:
        original = spec.original
    if finish is None:
        if spec is None:
            raise ValueError("unlearn_job needs a RunSpec (where to write and score) or an explicit finish")
        from raysweep.evaluate import run_finisher

        finish = run_finisher(cfg, spec)
    family = get_family(cfg.model.family)
    method = METHODS[cfg.unlearn.method]
    student = load_original(cfg, original)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    if method.trains == "encoder":
        params = list(family.encoder_parameters(student))
    else:  # the last pretraining stage's parameters: the whole generative model (read before freezing)
        params = list(family.pretrain_stages(cfg)[-1].parameters(student))
    student.requires_grad_(False)
    for q in params:
        q.requires_grad_(True)  # DDP ignores the frozen parameters
    ds = load_dataset(cfg.data, train=True)
    split = unlearn_split(ds.labels, cfg.data, ds.num_classes)
    u = cfg.unlearn
    optimizer = family.PAPER_OPTIMIZER if u.optimizer == "paper" else u.optimizer
    hyper = Hyper(
        u.epochs,
        u.batch_size,
        u.lr,
        u.weight_decay,
        None if u.betas is None else tuple(u.betas),
        u.warmup_epochs,
        u.min_lr,
        u.grad_clip,
        u.log_every,
        **_runtime(cfg),
        optimizer=optimizer,
        schedule=u.schedule,
    )
    sigma = _lowrank_sigma(cfg, family, teacher, ds, split) if u.noise == "lowrank" else None
    memo = None
    if spec is not None and spec.teacher_memo and method.trains == "encoder":
        settings = cfg.to_dict()["model"]
        memo = TeacherMemo.open(spec.teacher_memo, teacher, cfg.model.family, settings, spec.teacher_memo_gb)
    return Job(
        "unlearn",
        student,
        params,
        FlaggedSubset(ds.training_view(), split.indices, split.is_forget),
        hyper,
        UnlearnStep(family, method, teacher, u, cfg.eval.task, sigma, memo),
        finish,
        frozen=[teacher],
        seed=cfg.seed,
    )


JOBS = {"pretrain": pretrain_job, "extractor": extractor_job, "unlearn": unlearn_job}


def output_path(p: str | Path) -> str:
    return str(Path(p).expanduser().resolve())
