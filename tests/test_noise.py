"""Eq. 10's forget noise, including the low-rank data-driven Sigma (App. C.4's future work, unlearn.noise=lowrank)."""

import pytest
import torch

from raysweep.unlearn.noise import LowRankSigma, sample_noise


def _images(n=4000, d=48, k=3, seed=0):
    """Images whose normalised pixels have 3 strong directions of known variance plus small isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, k, generator=g))
    coef = torch.randn(n, k, generator=g) * torch.tensor([3.0, 2.0, 1.5])
    x = coef @ basis.T + 0.05 * torch.randn(n, d, generator=g)
    return x.view(n, 3, 4, 4), basis


def test_lowrank_samples_have_the_requested_covariance():
    x, basis = _images()
    sigma = LowRankSigma.fit(x, k=3, floor=0.5)
    assert torch.allclose(sigma.var, torch.tensor([9.0, 4.0, 2.25]), rtol=0.1)
    overlap = sigma.basis.T @ basis  # the fitted directions span the true ones
    assert torch.allclose(torch.linalg.svdvals(overlap), torch.ones(3), atol=0.02)
    g = torch.Generator().manual_seed(1)
    n = sigma.sample(torch.Size((20000, 3, 4, 4)), g, "cpu", torch.float32).flatten(1)
    cov = torch.cov(n.T)
    want = sigma.basis @ torch.diag(sigma.var) @ sigma.basis.T
    want += 0.5 * (torch.eye(48) - sigma.basis @ sigma.basis.T)
    assert (cov - want).abs().max() < 0.2 and n.mean(0).abs().max() < 0.05


def test_rank_zero_is_sigma_identity_and_draws_like_gaussian():
    x, _ = _images(n=100)
    sigma = LowRankSigma.fit(x, k=0)
    images = torch.rand(6, 3, 4, 4)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    a = sample_noise("lowrank", images, mean, std, torch.Generator().manual_seed(3), sigma)
    b = sample_noise("gaussian", images, mean, std, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_lowrank_without_sigma_is_refused():
    with pytest.raises(ValueError, match="needs its Sigma"):
        sample_noise("lowrank", torch.rand(2, 3, 4, 4), torch.zeros(3), torch.ones(3))


def test_unlearning_with_lowrank_noise_runs(tiny_cfg, tmp_path):
    from raysweep.jobs import pretrain_job, unlearn_job
    from raysweep.train import LocalHooks, fit

    fit(pretrain_job(tiny_cfg, output=str(tmp_path / "o.pt")), LocalHooks())
    cfg = tiny_cfg.replace(**{"unlearn.noise": "lowrank", "unlearn.noise_rank": 4, "unlearn.epochs": 1})
    h = LocalHooks()
    fit(unlearn_job(cfg, original=str(tmp_path / "o.pt"), finish=lambda m, d: None), h)
    assert any("train/forget_epoch" in r for r in h.reports)
