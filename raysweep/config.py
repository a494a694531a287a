"""Typed configuration: YAML -> frozen dataclasses, with ``key=value`` dotted overrides.

A setting has the same dotted name everywhere: in YAML (``unlearn.alpha``), on the command line
(``unlearn.alpha=0.1``), in Ray's ``param_space`` and in MLflow params. ``Config.from_dict`` rejects unknown
keys (listing the valid ones) and checks ranges and enums, once; workers rebuild a ``Config`` from
``cfg.to_dict()`` and never index raw dicts after that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

# The valid names of the enum-like settings live here, with the config, so that validating a config imports no
# model, data or loss module (and no torch). Each owning module checks it implements exactly these
# (tests/test_config.py::test_config_names_match_their_implementations).
FAMILY_NAMES = ("mae", "mage", "palette")  # raysweep.models.FAMILIES
TASKS = ("center", "outpaint", "extend_up", "extend_down", "extend_left", "extend_right", "random")  # data.masks
METHOD_NAMES = ("ours", "random_encoder", "max_loss", "retain_label", "noisy_label")  # unlearn.losses.METHODS
NOISE_NAMES = ("gaussian", "uniform", "batch_stats", "lowrank")  # raysweep.unlearn.noise


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and the fix."""


def _check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(choices)}")


def _check_range(
    key: str, value: float, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> None:
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        lo_s = "-inf" if lo is None else f"{lo}"
        hi_s = "inf" if hi is None else f"{hi}"
        raise ConfigError(f"{key}={value!r} is out of range; expected {'(' if lo_open else '['}{lo_s}, {hi_s}]")


@dataclass(frozen=True)
class ModelConfig:
    family: str = "mae"  # one of raysweep.models.FAMILIES
    preset: str = "tiny"  # tiny (32 px, patch 4) | vit_base (official ViT-B/16 layout)
    checkpoint: str | None = None  # official checkpoint file; None = raysweep-pretrained original (cached)
    options: dict = field(default_factory=dict)  # family-only settings, read only inside that family

    def validate(self) -> None:
        _check_choice("model.family", self.family, sorted(FAMILY_NAMES))
        _check_choice("model.preset", self.preset, ["tiny", "vit_base"])


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion_mnist"  # fashion_mnist | image_folder | synthetic
    root: str | None = None  # image_folder: folder with train/ and val/ class folders
    class_names: list = field(default_factory=list)  # image_folder: folder name of each class id (id = position)
    num_classes: int = 10  # synthetic only; others take it from the dataset
    image_size: int = 32
    forget_classes: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    retain_classes: list = field(default_factory=lambda: [5, 6, 7, 8, 9])
    images_per_class: int = 1000  # forget training images per forget class (official: 120 on ImageNet)
    retain_ratio: float = 1.0  # real retain images per retain class = ceil(images_per_class * ratio)
    proxy_ratio: float = 0.0  # proxy retain (classes in neither list), official `opendata_to_forget_ratio`
    oversample: bool = True  # official rule (docs/protocol.md §3.1): tile lists to balance the groups
    test_images_per_class: int = 200  # test images per class (reporting), forget and retain groups kept separate
    val_images_per_class: int = 100  # validation images per class (tuning, quality gate), disjoint from test
    pretrain_images_per_class: int = 0  # images per class used to pretrain the original; 0 = all
    seed: int = 0

    def validate(self) -> None:
        _check_choice("data.dataset", self.dataset, ["fashion_mnist", "image_folder", "synthetic"])
        _check_range("data.image_size", self.image_size, 8, 1024)
        _check_range("data.images_per_class", self.images_per_class, 1)
        _check_range("data.retain_ratio", self.retain_ratio, 0.0)
        _check_range("data.proxy_ratio", self.proxy_ratio, 0.0)
        _check_range("data.test_images_per_class", self.test_images_per_class, 1)
        _check_range("data.val_images_per_class", self.val_images_per_class, 1)
        _check_range("data.pretrain_images_per_class", self.pretrain_images_per_class, 0)
        if not self.forget_classes:
            raise ConfigError("data.forget_classes is empty; list at least one class id to forget")
        for key in ("forget_classes", "retain_classes"):
            ids = getattr(self, key)
            if any(not isinstance(c, int) or isinstance(c, bool) for c in ids):
                raise ConfigError(f"data.{key} must be a list of integer class ids, got {ids!r}")
            if len(set(ids)) != len(ids):
                raise ConfigError(f"data.{key} lists a class twice: {ids!r}")
        overlap = sorted(set(self.forget_classes) & set(self.retain_classes))
        if overlap:
            raise ConfigError(
                f"classes {overlap} are in both data.forget_classes and data.retain_classes; "
                "a class is either forgotten or retained, remove it from one list"
            )
        if self.retain_ratio == 0 and self.proxy_ratio == 0:
            raise ConfigError(
                "data.retain_ratio and data.proxy_ratio are both 0: the retain set would be empty; "
                "set data.retain_ratio>0 (real retain) or data.proxy_ratio>0 (proxy retain)"
            )
        if self.dataset == "image_folder" and not self.root:
            raise ConfigError("data.dataset=image_folder needs data.root (a folder holding train/ and val/)")


@dataclass(frozen=True)
class TaskConfig:
    """An image-to-image task (the paper's T(x)); sized by ratio so it carries across resolutions."""

    name: str = "center"  # center | outpaint | extend_up | extend_down | extend_left | extend_right | random
    ratio: float = 0.5  # center: hole side / image side (0.25, 0.5 = paper's 4x4, 8x8 of 16x16 patches);
    #                        outpaint / extend: masked fraction of the side; random: fraction of patches masked

    def validate(self, prefix: str) -> None:
        _check_choice(f"{prefix}.name", self.name, TASKS)
        _check_range(f"{prefix}.ratio", self.ratio, 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class PretrainConfig:
    """Training of the original model on all classes with the family's own objective (embedded default)."""

    epochs: int = 4
    batch_size: int = 128  # per worker
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    extractor_epochs: int = 2  # the in-domain classifier used as FID/IS feature extractor
    seed: int = 0  # initialisation and data order of the original (part of its cache key)
    quality_gate: bool = True  # score the original on validation images before any unlearning (raysweep.quality)

    def validate(self) -> None:
        _check_range("pretrain.epochs", self.epochs, 1)
        _check_range("pretrain.batch_size", self.batch_size, 1)
        _check_range("pretrain.lr", self.lr, 0.0, lo_open=True)
        _check_range("pretrain.extractor_epochs", self.extractor_epochs, 1)


@dataclass(frozen=True)
class UnlearnConfig:
    method: str = "ours"  # ours = Eq. 10 | the App. C.6 baselines: random_encoder, max_loss, retain_label, noisy_label
    max_loss_cap: float = 5.0  # max_loss: a forget image's loss counts up to this x the original's; 0 = unbounded
    alpha: float = 0.25  # weight of the forget term (Eq. 10)
    noise: str = "gaussian"  # gaussian N(0, I) | uniform U[-1, 1] (App. E) | batch_stats (official) | lowrank
    noise_rank: int = 8  # lowrank: top-k principal directions of the forget images (0 = Sigma I)
    noise_floor: float = 1.0  # lowrank: the variance outside those directions
    noise_source: str = "forget"  # lowrank: which training images Sigma is fitted on (forget | retain)
    loss_form: str = "l2"  # l2 = the paper's L2 distance | mse = official per-sample MSE (official §1.1)
    # masks while unlearning: random (family's own) | task (eval task) | mixed (alternate) | tasks (own or an I2I
    # task at a random size, as model.options.train_masks=mixed pretrains)
    train_mask: str = "mixed"
    epochs: int = 5
    batch_size: int = 64  # per worker
    lr: float = 1e-4
    # The optimiser: by default the paper's (App. B): AdamW, betas (0.9, 0.95), no weight decay for MAE / VQ-GAN;
    # Adam, no weight decay for diffusion; no schedule or clipping named. The official MAGE code's settings are
    # options: weight_decay 0.05, schedule cosine, warmup_epochs 1, grad_clip 3 (docs/deviations.md).
    optimizer: str = "paper"  # paper (the family's, above) | adamw | adam
    weight_decay: float = 0.0  # decoupled (AdamW) or L2 (Adam); never on biases and 1-D parameters
    betas: list | None = None  # None = (0.9, 0.95) for AdamW (App. B), torch's (0.9, 0.999) for Adam
    schedule: str = "constant"  # constant | cosine (half-cycle, per iteration, down to min_lr); after the warmup
    warmup_epochs: float = 0.0  # linear warmup from 0, with either schedule
    min_lr: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    log_every: int = 20  # steps between ray.train.report calls

    def validate(self) -> None:
        _check_choice("unlearn.method", self.method, sorted(METHOD_NAMES))
        if self.max_loss_cap != 0:  # 0 = Eq. C.26 as written (unbounded: free to diverge)
            _check_range("unlearn.max_loss_cap", self.max_loss_cap, 1.0)
        _check_choice("unlearn.noise", self.noise, NOISE_NAMES)
        _check_range("unlearn.noise_rank", self.noise_rank, 0, 4096)
        _check_range("unlearn.noise_floor", self.noise_floor, 0.0)
        _check_choice("unlearn.noise_source", self.noise_source, ["forget", "retain"])
        _check_choice("unlearn.loss_form", self.loss_form, ["l2", "mse"])
        _check_choice("unlearn.train_mask", self.train_mask, ["random", "task", "mixed", "tasks"])
        _check_range("unlearn.alpha", self.alpha, 0.0)
        _check_range("unlearn.epochs", self.epochs, 1)
        _check_range("unlearn.batch_size", self.batch_size, 2)
        _check_range("unlearn.lr", self.lr, 0.0, lo_open=True)
        _check_range("unlearn.weight_decay", self.weight_decay, 0.0)
        _check_range("unlearn.grad_clip", self.grad_clip, 0.0)
        _check_range("unlearn.warmup_epochs", self.warmup_epochs, 0.0)
        _check_range("unlearn.log_every", self.log_every, 1)
        _check_choice("unlearn.optimizer", self.optimizer, ["paper", "adamw", "adam"])
        _check_choice("unlearn.schedule", self.schedule, ["constant", "cosine"])
        if self.betas is not None and (len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas)):
            raise ConfigError(f"unlearn.betas={self.betas!r}; expected two numbers in [0, 1), or null for the default")


@dataclass(frozen=True)
class EvalConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    extractor: str = "auto"  # auto (inception if its weights exist, else in-domain) | indomain | inception
    batch_size: int = 250
    grid_images: int = 8  # rows per group in the sample grid
    part: str = "test"  # which held-out images are scored: test (reporting) | val (tuning; sweeps use it)
    threads: int = 0  # CPU threads for rank 0's evaluation (the other workers idle meanwhile); 0 = all cores
    cross_validate: bool = False  # also App. E.2: the original outpaints around each completion (e2_fid / e2_is)
    clip_model: str = "ViT-H-14"  # open_clip model of the CLIP cosine (the paper's); any open_clip name
    clip_weights: str | None = None  # its weights file; None = $RAYSWEEP_WEIGHTS/open_clip_<model>.bin if present

    def validate(self) -> None:
        self.task.validate("eval.task")
        _check_range("eval.threads", self.threads, 0)
        _check_choice("eval.part", self.part, ["test", "val"])
        _check_choice("eval.extractor", self.extractor, ["auto", "indomain", "inception"])
        _check_range("eval.batch_size", self.batch_size, 1)
        _check_range("eval.grid_images", self.grid_images, 1)


@dataclass(frozen=True)
class ResourcesConfig:
    num_workers: int = 2  # Ray Train DDP workers per trial
    cpus_per_worker: float = 0.5  # 0.5 lets 2 workers + the trial driver fit on 2 cores
    use_gpu: str = "auto"  # auto | true | false
    gpus_per_worker: float = 1.0  # fractional (e.g. 0.25) to put several workers / trials on one GPU
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on the CPU) | fp32 | bf16
    loader_workers: int = -1  # DataLoader processes per worker; -1 = auto (4 with a GPU, 0 on the CPU)
    channels_last: bool = False  # NHWC weights / activations (measured slower for Palette's UNet on an H200)
    compile: bool = False  # torch.compile the trained module (first steps compile; pays off on long GPU runs)
    runtime: str = "ray"  # ray (Ray Train workers, DDP) | local (this process, one worker, no Ray: debugging)
    max_concurrent_trials: int = 1
    # disk a CPU sweep may fill with the teacher's outputs, shared between trials of the same seed and noise type
    # (bit-identical results; raysweep.unlearn.memo); 0 = off. Deleted when the sweep ends
    teacher_memo_gb: float = 4.0

    def validate(self) -> None:
        _check_range("resources.teacher_memo_gb", self.teacher_memo_gb, 0.0)
        _check_range("resources.gpus_per_worker", self.gpus_per_worker, 0.0, 8.0, lo_open=True)
        _check_choice("resources.precision", self.precision, ["auto", "fp32", "bf16"])
        _check_range("resources.loader_workers", self.loader_workers, -1)
        _check_choice("resources.runtime", self.runtime, ["ray", "local"])
        _check_range("resources.num_workers", self.num_workers, 1)
        _check_range("resources.cpus_per_worker", self.cpus_per_worker, 0.0, lo_open=True)
        _check_choice("resources.use_gpu", self.use_gpu, ["auto", "true", "false"])
        _check_range("resources.max_concurrent_trials", self.max_concurrent_trials, 1)


@dataclass(frozen=True)
class TrackingConfig:
    results_dir: str = "results"  # runs, Ray storage and the default MLflow store go here
    experiment: str = "raysweep"
    tracking_uri: str | None = None  # None = sqlite:///<absolute results_dir>/mlflow.db

    def validate(self) -> None:
        if not self.experiment:
            raise ConfigError("tracking.experiment must not be empty")


@dataclass(frozen=True)
class SweepConfig:
    """The search space, keyed by dotted config paths (consumed by raysweep.tune)."""

    metrics: list = field(default_factory=lambda: ["retain/fid", "forget/fid"])
    modes: list = field(default_factory=lambda: ["min", "max"])
    num_samples: int = 8
    seed: int = 0
    scheduler: str = "none"  # none | asha (early stopping on one intermediate metric, below)
    asha_metric: str = "train/retain_epoch"  # reported by the loop after every epoch
    asha_mode: str = "min"
    asha_grace_epochs: int = 1
    tune_on: str = "val"  # the images trials are scored on (val); the front is then re-scored on test
    rescore: str = "front"  # which trials are re-scored on the test images: front | all (ablations)
    space: dict = field(default_factory=dict)

    def validate(self) -> None:
        if len(self.metrics) != len(self.modes) or not self.metrics:
            raise ConfigError(
                f"sweep.metrics {self.metrics} and sweep.modes {self.modes} must be non-empty lists of equal length"
            )
        for m in self.modes:
            _check_choice("sweep.modes[]", m, ["min", "max"])
        _check_range("sweep.num_samples", self.num_samples, 1)
        _check_choice("sweep.scheduler", self.scheduler, ["none", "asha"])
        _check_choice("sweep.asha_mode", self.asha_mode, ["min", "max"])
        _check_range("sweep.asha_grace_epochs", self.asha_grace_epochs, 1)
        _check_choice("sweep.tune_on", self.tune_on, ["val", "test"])
        _check_choice("sweep.rescore", self.rescore, ["front", "all"])


@dataclass(frozen=True)
class Config:
    name: str = "run"
    seed: int = 0
    smoke_test: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Config:
        cfg = _build(cls, dict(d or {}), prefix="")
        if not cfg.name or not all(c.isalnum() or c in "-_." for c in cfg.name) or cfg.name.startswith("."):
            raise ConfigError(
                f"name={cfg.name!r}: a run name must be a plain folder name (letters, digits, '-', '_', '.'; not "
                "starting with '.'), so that run folders stay inside tracking.results_dir"
            )
        for f in dataclasses.fields(cfg):
            sub = getattr(cfg, f.name)
            if dataclasses.is_dataclass(sub):
                sub.validate()
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> Config:
        """A new validated Config with dotted-key overrides, e.g. ``cfg.replace(**{"unlearn.alpha": 0.5})``."""
        d = self.to_dict()
        for k, v in overrides.items():
            _set_dotted(d, k, v)
        return Config.from_dict(d)

    def digest(self, *sections: str) -> str:
        """Stable short hash of the given top-level sections (cache keys)."""
        d = self.to_dict()
        payload = json.dumps({s: d[s] for s in sections}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


# ``--smoke-test``: the same pipeline and caches at tiny sizes (checks that everything runs, in minutes)
SMOKE_TEST: dict[str, Any] = {
    "data.images_per_class": 200,
    "data.test_images_per_class": 50,
    "unlearn.epochs": 1,
    "unlearn.warmup_epochs": 0.2,
    "sweep.num_samples": 2,
}


# string settings that also take a YAML boolean (true / false) besides "auto"
_BOOL_OR_AUTO = {"resources.use_gpu"}


def _is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build(cls: type, d: dict, prefix: str) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        valid = ", ".join(f"{prefix}{n}" for n in names)
        raise ConfigError(f"unknown config key(s) {[prefix + u for u in unknown]} in {where}; valid keys: {valid}")
    kwargs = {}
    for name in names:
        if name not in d:
            continue
        value, tp = d[name], hints[name]
        key = prefix + name
        if _is_config_class(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} must be a mapping of its sub-keys, got {value!r}")
            kwargs[name] = _build(tp, dict(value), prefix=key + ".")
        else:
            kwargs[name] = _coerce(key, value, tp)
    return cls(**kwargs)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{key} must not be null")
    if args and type(None) in args:  # Optional[X]
        tp = next(a for a in args if a is not type(None))
        origin = get_origin(tp)
    base = origin or tp
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if base is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} is not a finite number; give a finite value")
        return float(value)
    if base is str:
        if isinstance(value, bool) and key in _BOOL_OR_AUTO:  # `use_gpu: true` in YAML / on the command line
            return "true" if value else "false"
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if base is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return list(value)
    if base is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = d
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None and p == "options":
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            valid = ", ".join(sorted(node)) if isinstance(node, dict) else ""
            raise ConfigError(
                f"unknown config key {'.'.join(parts[: i + 1])!r} in override {dotted!r}; valid keys here: {valid}"
            )
        node = nxt
    node[parts[-1]] = value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["unlearn.alpha=0.5", "data.forget_classes=[1,2]"]`` -> dotted dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. unlearn.alpha=0.5)")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]}); "
                "quote lists and mappings, e.g. data.forget_classes=[0,1]"
            ) from None
    return out


PACKAGED = Path(__file__).resolve().parent / "configs"  # the shipped configs (experiments/configs links here)
DEFAULT_CONFIG = "mae_fmnist"  # the embedded default


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file path, or the name of a packaged config (``mae_fmnist``, ``mage_fmnist.yaml``, ...)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    named = PACKAGED / (p.name if p.suffix == ".yaml" else f"{p.name}.yaml")
    if p.parent == Path(".") and named.is_file():
        return named
    raise ConfigError(
        f"config file {str(p)!r} not found; give a YAML path or one of the packaged configs: "
        f"{packaged_configs()} (the embedded default is {DEFAULT_CONFIG})"
    )


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """Load a YAML config (a path or a packaged config's name), apply dotted ``key=value`` overrides, validate.
    ``path=None`` = all defaults."""
    d: dict = {}
    if path is not None:
        p = resolve_config_path(path)
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{p} must hold a YAML mapping at the top level")
    ov = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    base = Config.from_dict(d).to_dict()  # validates the file's own keys first (clear messages)
    for k, v in ov.items():
        _set_dotted(base, k, v)
    return Config.from_dict(base)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys (MLflow params, Ray param_space)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and k != "space":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
