import pytest
import torch

from raysweep.unlearn.losses import METHODS, ours
from raysweep.unlearn.noise import NOISES, sample_noise


def test_eq10_l2_form_matches_hand_computation():
    s = torch.tensor([[3.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    t = torch.zeros(3, 2)
    f = torch.tensor([False, True, False])
    out = ours(s, t, f, alpha=0.5, form="l2")
    # retain rows 0, 2: L2 distances 5 and 0 -> mean 2.5; forget row 1: sqrt(2)
    assert out["retain"].item() == pytest.approx(2.5)
    assert out["forget"].item() == pytest.approx(2**0.5)
    assert out["loss"].item() == pytest.approx(2.5 + 0.5 * 2**0.5)


def test_official_mse_form_divides_by_full_batch():
    s = torch.tensor([[3.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    f = torch.tensor([False, True, False])
    out = ours(s, torch.zeros(3, 2), f, alpha=0.25, form="mse")
    # per-sample MSE: 12.5, 1, 0; retain = 2*(12.5+0)/3, forget = 2*1/3
    assert out["retain"].item() == pytest.approx(25 / 3)
    assert out["forget"].item() == pytest.approx(2 / 3)
    assert out["loss"].item() == pytest.approx(25 / 3 + 0.25 * 2 / 3)


def test_zero_at_target_and_gradient_flows_to_student_only():
    t = torch.randn(4, 5, 6)
    s = t.clone().requires_grad_(True)
    out = ours(s, t, torch.tensor([True, False, True, False]), 0.25)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-5)
    s2 = (t + 1).requires_grad_(True)
    ours(s2, t, torch.tensor([True, False, True, False]), 0.25)["loss"].backward()
    assert s2.grad is not None and s2.grad.abs().sum() > 0
    assert "ours" in METHODS


def test_all_retain_batch_has_zero_forget_term():
    out = ours(torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([False, False]), 1.0)
    assert out["forget"].item() == 0.0 and out["loss"].item() > 0


def test_noise_is_standard_in_the_normalised_space():
    x = torch.rand(64, 3, 16, 16)
    mean, std = torch.tensor([0.3, 0.4, 0.5]), torch.tensor([0.2, 0.3, 0.4])
    g = torch.Generator().manual_seed(0)
    n = (sample_noise("gaussian", x, mean, std, g) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert abs(n.mean().item()) < 0.02 and abs(n.std().item() - 1) < 0.02
    u = (sample_noise("uniform", x, mean, std, g) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert u.min() >= -1 and u.max() <= 1 and abs(u.mean().item()) < 0.02
    b = sample_noise("batch_stats", x, mean, std, g)
    assert b.min() >= 0 and b.max() <= 1
    assert set(NOISES) == {"gaussian", "uniform", "batch_stats", "lowrank"}  # lowrank: tests/test_noise.py
    with pytest.raises(ValueError, match="valid"):
        sample_noise("pink", x, mean, std, g)
