"""The loop itself, in one process (LocalHooks): what trains, what stays frozen, resume, failures, schedule."""

import math

import pytest
import torch

from raysweep.jobs import Hyper, extractor_job, pretrain_job, unlearn_job
from raysweep.models import get_family
from raysweep.models.checkpoints import read_state_dict
from raysweep.train import LocalHooks, fit, lr_at


@pytest.fixture
def original(tiny_cfg, tmp_path):
    path = tmp_path / "orig.pt"
    fit(pretrain_job(tiny_cfg, output=str(path)), LocalHooks(), 0)
    return str(path)


def _decoder_state(model, family):
    enc = {id(p) for p in family.encoder_parameters(model)}
    return {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in enc}


def test_unlearning_changes_encoder_only_decoder_bit_identical(tiny_cfg, original):
    fam = get_family("mae")
    job = unlearn_job(tiny_cfg, original=original, finish=lambda m, d: {"ok": 1})
    before = {n: p.detach().clone() for n, p in job.module.named_parameters()}
    dec_before = _decoder_state(job.module, fam)
    assert fit(job, LocalHooks(), 0) == {"ok": 1}
    dec_after = _decoder_state(job.module, fam)
    assert dec_before.keys() == dec_after.keys() and len(dec_before) > 0
    for n in dec_before:
        assert torch.equal(dec_before[n], dec_after[n]), f"decoder parameter {n} changed"
    enc_names = [n for n, _ in job.module.named_parameters() if n not in dec_before]
    assert any(not torch.equal(before[n], dict(job.module.named_parameters())[n]) for n in enc_names)
    # the frozen teacher is untouched too: it still equals the original on disk
    orig = read_state_dict(original)
    teacher = job.frozen[0].state_dict()
    assert all(torch.equal(teacher[k], orig[k]) for k in orig)


def test_forget_term_decreases(tiny_cfg, original):
    cfg = tiny_cfg.replace(**{"unlearn.epochs": 4, "unlearn.alpha": 1.0})
    job = unlearn_job(cfg, original=original, finish=lambda m, d: None)
    seen = []
    fit(job, LocalHooks(), 0, on_step=lambda s, v, w: seen.append(float(v["forget"])))
    k = max(1, len(seen) // 4)
    assert sum(seen[-k:]) / k < sum(seen[:k]) / k


def test_resume_continues_from_the_checkpointed_epoch(tiny_cfg, tmp_path):
    path = tmp_path / "o.pt"
    hooks = LocalHooks()
    job = pretrain_job(tiny_cfg, output=str(path))
    per_epoch = len(job.dataset) // tiny_cfg.pretrain.batch_size
    fit(job, hooks, 0, max_steps=per_epoch + 2)  # "dies" inside epoch 2
    state = hooks.state
    assert state is not None and state["epoch"] == 0
    steps = []
    resumed = pretrain_job(tiny_cfg, output=str(path))
    fit(resumed, LocalHooks(state=state), 0, on_step=lambda s, v, w: steps.append(s))
    assert steps[0] == per_epoch + 1 and len(steps) == per_epoch  # only epoch 2 ran
    assert path.is_file()


def test_non_finite_loss_raises_floating_point_error(tiny_cfg, tmp_path):
    job = extractor_job(tiny_cfg, output=str(tmp_path / "e.pt"))
    job.step = lambda m, b, g: {"loss": m(b[0]).sum() * float("nan")}
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        fit(job, LocalHooks(), 0)


def test_warmup_then_cosine():
    h = Hyper(epochs=10, batch_size=1, lr=1.0, weight_decay=0.0, warmup_epochs=2, min_lr=0.1)
    assert lr_at(h, 0) == 0 and lr_at(h, 1) == pytest.approx(0.5) and lr_at(h, 2) == pytest.approx(1.0)
    assert lr_at(h, 6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(h, 10) == pytest.approx(0.1)


def test_constant_schedule_after_the_warmup():
    h = Hyper(epochs=4, batch_size=1, lr=1.0, weight_decay=0.0, warmup_epochs=1, schedule="constant")
    assert lr_at(h, 0.5) == pytest.approx(0.5) and lr_at(h, 1) == lr_at(h, 3.9) == 1.0


@pytest.mark.parametrize(
    "family, over, want",
    [  # the config's default is the paper's optimiser for the family (App. B); the YAMLs' settings are options
        ("mae", {}, ("AdamW", (0.9, 0.95), 0.0, "constant", 0.0, 0.0)),
        ("mage", {}, ("AdamW", (0.9, 0.95), 0.0, "constant", 0.0, 0.0)),
        ("palette", {}, ("Adam", (0.9, 0.999), 0.0, "constant", 0.0, 0.0)),
        (
            "palette",
            {"optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 1.0, "grad_clip": 3.0},
            ("AdamW", (0.9, 0.95), 0.05, "cosine", 1.0, 3.0),
        ),
        (
            "mae",
            {"optimizer": "adam", "betas": [0.5, 0.9], "weight_decay": 0.01},
            ("Adam", (0.5, 0.9), 0.01, "constant", 0.0, 0.0),
        ),
    ],
)
def test_unlearning_optimiser_per_family(tmp_path, family, over, want):
    from raysweep.config import Config
    from raysweep.train import make_optimizer
    from tests.conftest import TINY_OPTIONS, tiny_dict

    d = tiny_dict(tmp_path)
    d["model"] = {"family": family, "preset": "tiny", "options": dict(TINY_OPTIONS[family])}
    d["unlearn"].pop("warmup_epochs")
    cfg = Config.from_dict(d).replace(**{f"unlearn.{k}": v for k, v in over.items()})
    original = tmp_path / "o.pt"
    torch.save({"model": get_family(family).build(cfg.model).state_dict()}, original)
    h = unlearn_job(cfg, original=str(original), finish=lambda m, dv: None).hyper
    opt = make_optimizer(h, [torch.nn.Parameter(torch.zeros(3, 3)), torch.nn.Parameter(torch.zeros(3))], fused=False)
    g = opt.param_groups[0]
    got = (type(opt).__name__, tuple(g["betas"]), g["weight_decay"], h.schedule, h.warmup_epochs)
    assert got + (h.grad_clip,) == want
    assert opt.param_groups[1]["weight_decay"] == 0.0  # never on 1-D parameters


def test_extractor_learns_synthetic_classes(tiny_cfg, tmp_path):
    out = fit(
        extractor_job(tiny_cfg.replace(**{"pretrain.extractor_epochs": 15}), output=str(tmp_path / "e.pt")),
        LocalHooks(),
        0,
    )
    assert out["test_accuracy"] > 0.5  # 6 classes: chance is 0.17


def test_pretraining_is_reproducible(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(**{"pretrain.epochs": 1})
    states = []
    for i in range(2):
        torch.manual_seed(1234 + i)  # whatever the global RNG did before, the result is the same
        fit(pretrain_job(cfg, output=str(tmp_path / f"o{i}.pt")), LocalHooks(), 0)
        states.append(read_state_dict(tmp_path / f"o{i}.pt"))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_bf16_autocast_runs_the_same_loop_on_the_cpu(tiny_cfg, tmp_path):
    """resources.precision=bf16 puts every step under bf16 autocast (auto = bf16 on CUDA only); the weights stay
    fp32 and training still reduces the loss."""
    cfg = tiny_cfg.replace(**{"resources.precision": "bf16", "pretrain.epochs": 2})
    h = LocalHooks()
    fit(pretrain_job(cfg, output=str(tmp_path / "b.pt")), h)
    fit(pretrain_job(tiny_cfg.replace(**{"pretrain.epochs": 2}), output=str(tmp_path / "f.pt")), LocalHooks())
    b, f = read_state_dict(tmp_path / "b.pt"), read_state_dict(tmp_path / "f.pt")
    assert all(v.dtype == torch.float32 for v in b.values())
    assert any(not torch.equal(b[k], f[k]) for k in b)  # autocast really changed the arithmetic
    epochs = [r["train/loss_epoch"] for r in h.reports if "train/loss_epoch" in r and "done" not in r]
    assert all(math.isfinite(x) for x in epochs) and epochs[-1] < epochs[0]


def test_fractional_gpus_per_worker_reach_the_scaling_config(tiny_cfg):
    from raysweep.train import trainer

    cfg = tiny_cfg.replace(**{"resources.use_gpu": True, "resources.gpus_per_worker": 0.25})
    t = trainer(cfg, "unlearn", "/tmp", "x")
    sc = t.scaling_config
    assert sc.use_gpu and sc.resources_per_worker == {"CPU": 0.5, "GPU": 0.25}


def test_uint8_training_views_give_the_same_batches_on_the_device(tiny_cfg):
    """The datasets' training views hand out uint8; the loop's conversion on the device equals the float items."""
    from raysweep.data.datasets import load_dataset
    from raysweep.train import _to

    ds = load_dataset(tiny_cfg.data, train=True)
    view = ds.training_view()
    raw = torch.stack([view[i][0] for i in range(8)])
    assert raw.dtype == torch.uint8 and raw.shape[1] == 3
    (converted, labels) = _to((raw, torch.arange(8)), torch.device("cpu"))
    assert torch.equal(converted, torch.stack([ds[i][0] for i in range(8)])) and labels.dtype == torch.long
    for make in (pretrain_job, extractor_job):
        job = make(tiny_cfg, output="unused.pt")
        assert job.dataset[0][0].dtype == torch.uint8


def test_the_loop_reports_its_data_wait_share_and_applies_channels_last_and_compile(tiny_cfg, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(kw) or m)
    cfg = tiny_cfg.replace(**{"resources.channels_last": True, "resources.compile": True, "pretrain.epochs": 1})
    cfg = cfg.replace(**{"model.family": "palette", "model.options": {"inner_channel": 32, "channel_mults": [1, 2]}})
    job = pretrain_job(cfg, output=str(tmp_path / "p.pt"))
    h = LocalHooks()
    fit(job, h)
    assert compiled == [{"dynamic": False}]
    conv = next(m for m in job.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    share = [r["train/data_wait_share"] for r in h.reports if "train/data_wait_share" in r]
    assert share and all(0.0 <= s <= 1.0 for s in share)


def test_local_runtime_trains_without_ray(tiny_cfg, tmp_path, monkeypatch):
    """resources.runtime=local: run_job trains in this process; Ray is never started."""
    import raysweep.train as train

    monkeypatch.setattr(train, "ensure_ray", lambda: pytest.fail("the local runtime must not start Ray"))
    cfg = tiny_cfg.replace(**{"resources.runtime": "local", "pretrain.epochs": 1})
    out = tmp_path / "o.pt"
    res = train.run_job(cfg, "pretrain", tmp_path / "ray", "x", output=str(out))
    assert res == {"path": str(out)} and read_state_dict(out)


def test_a_sweep_refuses_the_local_runtime(tiny_cfg):
    from raysweep.config import ConfigError
    from raysweep.tune import run_sweep

    with pytest.raises(ConfigError, match="resources.runtime=ray"):
        run_sweep(tiny_cfg.replace(**{"resources.runtime": "local"}))
