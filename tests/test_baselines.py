"""The four baselines of App. C.6 as ``unlearn.method`` values in the one loop, for every family: each one's forget
term is nonzero and moves the forget images' completions; embedding methods leave the decoder bit-identical,
objective methods train the full model; the pure pieces (bounded max-loss, retain-label truth, random targets)."""

import pytest
import torch

from raysweep.config import Config, TaskConfig
from raysweep.data.masks import task_mask
from raysweep.jobs import load_original, pretrain_job, unlearn_job
from raysweep.models import get_family
from raysweep.train import LocalHooks, fit
from raysweep.unlearn.losses import METHODS, objective, random_embedding_target, retain_truth
from tests.conftest import TINY_OPTIONS, tiny_dict

BASELINES = ["random_encoder", "max_loss", "retain_label", "noisy_label"]


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One tiny original per family, pretrained once for the module."""
    tmp = tmp_path_factory.mktemp("originals")
    out = {}
    for family in TINY_OPTIONS:
        cfg = _cfg(tmp, family)
        path = str(tmp / f"{family}.pt")
        init = None
        for st in get_family(family).pretrain_stages(cfg):
            fit(pretrain_job(cfg, output=path, stage=st.name, init=init), LocalHooks(), 0)
            init = path
        out[family] = path
    return out


def _cfg(tmp, family: str, **over) -> Config:
    d = tiny_dict(tmp)
    d["model"] = {"family": family, "preset": "tiny", "options": dict(TINY_OPTIONS[family])}
    return Config.from_dict(d).replace(**over)


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("family", sorted(TINY_OPTIONS))
def test_baseline_forget_term_is_nonzero_and_moves_forget_outputs(family, method, originals, tmp_path):
    cfg = _cfg(
        tmp_path, family, **{"unlearn.method": method, "unlearn.epochs": 2, "unlearn.alpha": 1.0, "unlearn.lr": 5e-3}
    )
    fam = get_family(family)
    job = unlearn_job(cfg, original=originals[family], finish=lambda m, d: None)
    enc = {id(q) for q in fam.encoder_parameters(job.module)}
    trained = {id(q) for q in job.params}
    if METHODS[method].trains == "encoder":
        assert trained == enc
    else:
        assert enc < trained  # the full model: the encoder and the decoder
    decoder_before = {n: q.detach().clone() for n, q in job.module.named_parameters() if id(q) not in enc}
    forget = []
    fit(job, LocalHooks(), 0, on_step=lambda s, v, w: forget.append(float(v["forget"])))
    assert forget and all(f > 0 for f in forget), forget
    after = {n: q for n, q in job.module.named_parameters() if n in decoder_before}
    same = all(torch.equal(decoder_before[n], after[n]) for n in after)
    assert same == (METHODS[method].trains == "encoder")
    # the forget images' completions moved
    ds = job.dataset
    x = torch.stack([ds[i][0] for i in range(len(ds)) if ds[i][1]][:8]).float() / 255
    mask = task_mask(TaskConfig("center", 0.5), len(x), x.shape[-1])
    orig = load_original(cfg, originals[family]).eval()
    with torch.no_grad():
        a, b = fam.generate(orig, x, mask), fam.generate(job.module.eval(), x, mask)
    assert not torch.allclose(a, b)


def test_max_loss_is_bounded_by_its_cap():
    """Eq. C.26 / C.28 maximise the forget loss; past the cap a forget row gives no gradient, so the loss cannot
    run away."""
    per = torch.tensor([1.0, 2.0, 50.0, 3.0], requires_grad=True)
    is_forget = torch.tensor([False, True, True, False])
    cap = torch.tensor([10.0, 10.0, 10.0, 10.0])
    out = objective(per, is_forget, alpha=1.0, sign=-1.0, cap=cap)
    assert out["retain"] == 2.0 and out["forget"] == 6.0  # (2 + min(50, 10)) / 2
    out["loss"].backward()
    assert per.grad[2] == 0 and per.grad[1] < 0 and per.grad[0] > 0


@pytest.mark.parametrize("cap", [0.0, 5.0])
def test_max_loss_cap_zero_is_the_unbounded_eq_c26(cap, originals, tmp_path, monkeypatch):
    """``unlearn.max_loss_cap=0`` runs App. C.6.1's max loss as written (no cap: free to diverge); any other value
    caps each forget row at that multiple of the original's loss on it; values in (0, 1) are refused."""
    import raysweep.unlearn.step as step_mod
    from raysweep.config import ConfigError

    cfg = _cfg(tmp_path, "mae", **{"unlearn.method": "max_loss", "unlearn.max_loss_cap": cap})
    job = unlearn_job(cfg, original=originals["mae"], finish=lambda m, d: None)
    seen = []
    real = step_mod.objective
    monkeypatch.setattr(step_mod, "objective", lambda *a: seen.append(a[4]) or real(*a))
    items = [job.dataset[i] for i in range(4)]
    batch = (torch.stack([x for x, _ in items]).float() / 255, torch.tensor([bool(f) for _, f in items]))
    out = job.step(job.module, batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and len(seen) == 1
    assert (seen[0] is None) == (cap == 0)
    if cap:
        assert seen[0].shape == (4,) and (seen[0] > 0).all()
    with pytest.raises(ConfigError, match=r"unlearn\.max_loss_cap=0\.5 is out of range"):
        _cfg(tmp_path, "mae", **{"unlearn.max_loss_cap": 0.5})


def test_retain_label_truth_takes_retain_images_and_random_targets_keep_retain_rows():
    images = torch.arange(5).float().view(5, 1, 1, 1).expand(5, 3, 2, 2)
    is_forget = torch.tensor([True, False, True, True, False])
    t = retain_truth(images, is_forget, fallback=torch.full_like(images, -1))
    assert [float(v) for v in t[:, 0, 0, 0]] == [1, 1, 4, 1, 4]  # forget rows cycle through retain rows 1, 4
    none = retain_truth(images, torch.ones(5, dtype=torch.bool), fallback=torch.full_like(images, -1))
    assert (none == -1).all()
    teacher = torch.randn(6, 4, 8) * 3 + 2
    f = torch.tensor([True, False] * 3)
    r = random_embedding_target(teacher, f, torch.Generator().manual_seed(0))
    assert torch.equal(r[~f], teacher[~f]) and not torch.equal(r[f], teacher[f])
