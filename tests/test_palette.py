"""Palette family: the 16_Network.pth layout (docs/protocol.md §5.2), the App. C.25 forget input, samplers."""

import copy

import pytest
import torch

from raysweep.config import ModelConfig, TaskConfig
from raysweep.data.masks import task_mask
from raysweep.models import get_family
from raysweep.models.checkpoints import CheckpointError
from tests.conftest import TINY_PALETTE

palette = get_family("palette")


def _res(sd: dict, b: str, cin: int, cout: int, emb: int = 256) -> None:
    sd.update(
        {
            b + "in_layers.0.weight": (cin,),
            b + "in_layers.0.bias": (cin,),
            b + "in_layers.2.weight": (cout, cin, 3, 3),
            b + "in_layers.2.bias": (cout,),
            b + "emb_layers.1.weight": (2 * cout, emb),
            b + "emb_layers.1.bias": (2 * cout,),
            b + "out_layers.0.weight": (cout,),
            b + "out_layers.0.bias": (cout,),
            b + "out_layers.3.weight": (cout, cout, 3, 3),
            b + "out_layers.3.bias": (cout,),
        }
    )
    if cin != cout:
        sd.update({b + "skip_connection.weight": (cout, cin, 1, 1), b + "skip_connection.bias": (cout,)})


def official_palette_state() -> dict[str, torch.Tensor]:
    """Keys / shapes of 16_Network.pth from the Places2 config (inner 64, mults 1,2,4,8, 2 res blocks, attention
    only in the middle block), written out from the guided-diffusion UNet's construction rules."""
    p = "denoise_fn."
    sd = {
        p + "cond_embed.0.weight": (256, 64),
        p + "cond_embed.0.bias": (256,),
        p + "cond_embed.2.weight": (256, 256),
        p + "cond_embed.2.bias": (256,),
        p + "input_blocks.0.0.weight": (64, 6, 3, 3),
        p + "input_blocks.0.0.bias": (64,),
    }
    ins = [
        (64, 64),
        (64, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 256),
        (256, 512),
        (512, 512),
    ]  # input blocks 1-11 (3, 6, 9 are the down-ResBlocks)
    for i, (a, b) in enumerate(ins, start=1):
        _res(sd, f"{p}input_blocks.{i}.0.", a, b)
    _res(sd, p + "middle_block.0.", 512, 512)
    _res(sd, p + "middle_block.2.", 512, 512)
    sd.update(
        {
            p + "middle_block.1.norm.weight": (512,),
            p + "middle_block.1.norm.bias": (512,),
            p + "middle_block.1.qkv.weight": (1536, 512, 1),
            p + "middle_block.1.qkv.bias": (1536,),
            p + "middle_block.1.proj_out.weight": (512, 512, 1),
            p + "middle_block.1.proj_out.bias": (512,),
        }
    )
    outs = [
        (1024, 512),
        (1024, 512),
        (768, 512),
        (768, 256),
        (512, 256),
        (384, 256),
        (384, 128),
        (256, 128),
        (192, 128),
        (192, 64),
        (128, 64),
        (128, 64),
    ]
    for i, (a, b) in enumerate(outs):
        _res(sd, f"{p}output_blocks.{i}.0.", a, b)
        if i in (2, 5, 8):  # the up-ResBlock closing levels 3, 2, 1
            _res(sd, f"{p}output_blocks.{i}.1.", b, b)
    sd.update(
        {p + "out.0.weight": (64,), p + "out.0.bias": (64,), p + "out.2.weight": (3, 64, 3, 3), p + "out.2.bias": (3,)}
    )
    g = torch.Generator().manual_seed(0)
    out = {k: torch.randn(s, generator=g) * 0.02 for k, s in sd.items()}
    for k in palette.BUFFERS:
        out[k] = torch.rand(2000, generator=g) * 0.5 + 0.25
    return out


def test_official_16_network_loads_strictly(tmp_path):
    state = official_palette_state()
    # as the official unlearning code saves it: DDP prefix and the teacher's copy included
    saved = {f"module.{k}": v for k, v in state.items()}
    saved.update({f"module.teacher_{k}": v for k, v in state.items() if k.startswith("denoise_fn.")})
    torch.save(saved, tmp_path / "16_Network.pth")
    model = palette.build(ModelConfig(family="palette", preset="vit_base", checkpoint=str(tmp_path / "16_Network.pth")))
    own = model.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in state)  # schedule buffers from the file (§4.2)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        palette.build(ModelConfig(family="palette", preset="tiny", checkpoint=str(tmp_path / "16_Network.pth")))
    with pytest.raises(CheckpointError, match="Google Drive"):
        palette.build(ModelConfig(family="palette", checkpoint=str(tmp_path / "x" / "16_Network.pth")))


def tiny(**opts):
    torch.manual_seed(0)
    return palette.build(ModelConfig(family="palette", options={**TINY_PALETTE, **opts}))


def test_forget_input_is_app_c25():
    """The teacher's forget rows: pure noise in place of x~ inside the hole, the real image elsewhere and in y_cond."""
    m = tiny()
    x = torch.rand(4, 3, 16, 16)
    mask = task_mask(TaskConfig("center", 0.5), 4, 16)
    _, ctx = palette.encode(m, x, {"mask": mask}, torch.Generator().manual_seed(0))
    noise = torch.rand(4, 3, 16, 16)
    is_forget = torch.tensor([True, False, True, False])
    t_in, t_ctx = palette.forget_input(x, noise, is_forget, ctx, "batch_stats")
    net = palette._net_input(t_in, t_ctx, t_ctx["pure_noise"])
    plain = palette._net_input(x, ctx)
    hole = mask[:, None].expand(-1, 3, -1, -1)
    assert torch.equal(net[:, :3], plain[:, :3])  # y_cond unchanged
    assert torch.equal(net[1::2], plain[1::2])  # retain rows unchanged
    assert torch.allclose(net[0::2, 3:][hole[0::2]], (noise * 2 - 1)[0::2][hole[0::2]])  # noise in the hole
    assert torch.equal(net[0::2, 3:][~hole[0::2]], plain[0::2, 3:][~hole[0::2]])  # real context kept


@pytest.mark.parametrize("sampler", palette.SAMPLERS)
def test_samplers_keep_known_pixels_and_are_seeded(sampler):
    m = tiny(sampler=sampler, timesteps=20).eval()
    x = torch.rand(2, 3, 16, 16)
    mask = task_mask(TaskConfig("center", 0.5), 2, 16)
    a, b = palette.generate(m, x, mask), palette.generate(m, x, mask)
    assert torch.equal(a, b) and torch.equal(a[:, :, ~mask[0]], x[:, :, ~mask[0]])
    assert palette.generation(m) == ("ddpm-20" if sampler == "ddpm" else f"{sampler}-3")


@pytest.mark.parametrize("frozen", [0, 2])
def test_unlearning_leaves_the_decoder_bit_identical(tiny_cfg, frozen):
    """Only the encoder trains; ``frozen_input_blocks: k`` also keeps cond_embed and the first k input blocks."""
    from raysweep.jobs import pretrain_job, unlearn_job
    from raysweep.train import LocalHooks, fit

    cfg = tiny_cfg.replace(**{"model.family": "palette", "model.options": TINY_PALETTE, "unlearn.lr": 1e-3})
    orig = str(tiny_cfg.tracking.results_dir) + "/orig.pt"
    fit(pretrain_job(cfg, output=orig), LocalHooks(), 0)
    cfg = cfg.replace(**{"model.options": {**TINY_PALETTE, "frozen_input_blocks": frozen}})
    job = unlearn_job(cfg, orig, finish=lambda m, d: None)
    before = copy.deepcopy(job.module.state_dict())
    fit(job, LocalHooks(), 0)
    after = job.module.state_dict()
    kept = ("denoise_fn.output_blocks", "denoise_fn.out.")
    if frozen:
        kept += ("denoise_fn.cond_embed",) + tuple(f"denoise_fn.input_blocks.{i}." for i in range(frozen))
    for k in before:
        if k.startswith(kept) or k == "gammas":
            assert torch.equal(before[k], after[k]), k
    for k in (
        f"denoise_fn.input_blocks.{frozen}.0.in_layers.2.weight" if frozen else "denoise_fn.input_blocks.0.0.weight",
        "denoise_fn.middle_block.0.in_layers.2.weight",
    ):
        assert not torch.equal(before[k], after[k]), k
    if not frozen:
        assert not torch.equal(before["denoise_fn.cond_embed.0.weight"], after["denoise_fn.cond_embed.0.weight"])


def test_mse_form_is_the_official_sum_of_per_map_mses():
    """official §1.2: the loss is one F.mse_loss per feature map, summed; the latent's mean of squares equals it."""
    from raysweep.unlearn.losses import ours

    m, t = tiny(), tiny()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.05 * torch.randn_like(p))
    za, ctx = palette.encode(m, x, None, torch.Generator().manual_seed(0))
    zb, _ = palette.encode(t, x, ctx)
    maps_a = m(palette._net_input(x, ctx), ctx["gamma"], encode_only=True)
    maps_b = t(palette._net_input(x, ctx), ctx["gamma"], encode_only=True)
    official = sum(torch.nn.functional.mse_loss(a, b) for a, b in zip(maps_a, maps_b))
    retain = ours(za, zb, torch.zeros(3, dtype=torch.bool), alpha=0.0, form="mse")["retain"]
    assert torch.allclose(retain, 2 * official, rtol=1e-4)  # retain weight 2 / full batch, as in the official code


def test_bad_palette_options():
    with pytest.raises(ValueError, match="valid options"):
        palette.build(ModelConfig(family="palette", options={"steps": 3}))
    with pytest.raises(ValueError, match="sampler"):
        palette.build(ModelConfig(family="palette", options={"sampler": "euler"}))
    with pytest.raises(ValueError, match=r"frozen_input_blocks=9 must be in \[0, 4\]"):
        tiny(frozen_input_blocks=9)


def test_mixed_training_masks_put_the_evaluated_hole_in_every_other_row():
    """train_masks: mixed puts the embedded default's evaluated hole (center, 1/2: data.masks.CENTER_TASK) in the even
    rows and keeps the boxes of 1/4 to 3/4 of the side, drawn from the same stream as ``boxes``, in the odd rows."""
    x = torch.rand(6, 3, 32, 32)
    mixed, boxes = tiny(), tiny(train_masks="boxes")
    m = palette.train_masks(mixed, x, torch.Generator().manual_seed(0))
    b = palette.train_masks(boxes, x, torch.Generator().manual_seed(0))
    hole = task_mask(TaskConfig("center", 0.5), 1, 32)[0]
    assert hole[8:24, 8:24].all() and hole.sum() == 16 * 16
    assert all(torch.equal(m[i], hole) for i in (0, 2, 4))
    assert torch.equal(m[1::2], b[1::2]) and not any(torch.equal(b[i], hole) for i in range(6))
    side = b.any(dim=2).sum(dim=1)  # each box's height in rows
    assert ((side >= 8) & (side <= 24)).all()


def test_unlearn_t_max_keeps_eq10_timesteps_below_it_and_leaves_pretraining_alone():
    """model.options.unlearn_t_max: Eq. 10's encode draws t < unlearn_t_max x T; 1.0 draws exactly the official
    stream; pretraining's noising never reads it."""
    x = torch.rand(64, 3, 16, 16)
    full, quarter = tiny(), tiny(unlearn_t_max=0.25)
    quarter.load_state_dict(full.state_dict())
    _, c1 = palette.encode(full, x, None, torch.Generator().manual_seed(0))
    _, c2 = palette.encode(quarter, x, None, torch.Generator().manual_seed(0))
    assert c1["t"].max() >= 25 and c2["t"].max() < 25 and c2["t"].min() >= 1  # T = 100 in the tiny test model
    gen = [torch.Generator().manual_seed(1) for _ in range(2)]
    assert torch.equal(palette.pretrain_loss(full, x, gen[0]), palette.pretrain_loss(quarter, x, gen[1]))
    with pytest.raises(ValueError, match="unlearn_t_max=0.01 must be in"):
        tiny(unlearn_t_max=0.01)
    assert "unlearn_t_max" in palette.UNLEARN_OPTIONS  # never part of the original's cache key


def test_forget_t_max_draws_only_the_forget_rows_below_it():
    """model.options.forget_t_max: through the unlearning step's ctx, forget rows draw t < forget_t_max x T and
    retain rows keep the full draw; 1.0 (the default) leaves the random stream the official one."""
    x = torch.rand(256, 3, 16, 16)
    is_forget = torch.arange(256) % 2 == 0
    full, half = tiny(), tiny(forget_t_max=0.25)  # the draws do not depend on the weights
    _, c1 = palette.encode(full, x, {"is_forget": is_forget}, torch.Generator().manual_seed(0))
    _, c0 = palette.encode(full, x, None, torch.Generator().manual_seed(0))
    assert torch.equal(c1["t"], c0["t"]) and torch.equal(c1["eps"], c0["eps"])  # default: the official stream
    _, c2 = palette.encode(half, x, {"is_forget": is_forget}, torch.Generator().manual_seed(0))
    assert c2["t"][is_forget].max() < 25 and c2["t"][is_forget].min() >= 1  # T = 100 in the tiny test model
    assert torch.equal(c2["t"][~is_forget], c1["t"][~is_forget]) and c2["t"][~is_forget].max() >= 25
    with pytest.raises(ValueError, match="forget_t_max=0.01 must be in"):
        tiny(forget_t_max=0.01)
    assert "forget_t_max" in palette.TRAINING_OPTIONS  # never part of the original's cache key nor its scores'


def test_unlearn_step_tells_palette_which_rows_forget(monkeypatch):
    """The step hands ``is_forget`` to encode: with forget_t_max the student's forget rows (and so the teacher's
    targets, which share its ctx) sit at the low-noise timesteps."""
    from raysweep.config import UnlearnConfig
    from raysweep.unlearn.losses import METHODS
    from raysweep.unlearn.step import UnlearnStep

    seen, real = [], palette.encode

    def spy(model, images, ctx=None, generator=None):
        z, c = real(model, images, ctx, generator)
        seen.append(c["t"].clone())
        return z, c

    monkeypatch.setattr(palette, "encode", spy)
    is_forget = torch.arange(64) % 2 == 0
    step = UnlearnStep(palette, METHODS["ours"], tiny(), UnlearnConfig(), TaskConfig())
    step(tiny(forget_t_max=0.25), (torch.rand(64, 3, 16, 16), is_forget), torch.Generator().manual_seed(0))
    assert seen[0][is_forget].max() < 25 and seen[0][~is_forget].max() >= 25


def test_gaussian_forget_noise_is_the_students_eps():
    """Official §1.2: the forget target's noise is the eps of the student's x~ (uniform: coupled to it)."""
    m = tiny()
    x = torch.rand(2, 3, 16, 16)
    _, ctx = palette.encode(m, x, None, torch.Generator().manual_seed(0))
    _, g = palette.forget_input(x, torch.zeros_like(x), torch.tensor([True, False]), ctx, "gaussian")
    _, u = palette.forget_input(x, torch.zeros_like(x), torch.tensor([True, False]), ctx, "uniform")
    assert torch.equal(g["forget_noise"], ctx["eps"])
    assert u["forget_noise"].abs().max() <= 1 and torch.equal(u["forget_noise"] > 0, ctx["eps"] > 0)


class _GaussianDenoiser(torch.nn.Module):
    """The exact eps-predictor for data y0 ~ N(0, s^2 I): E[eps | x_t] = sqrt(1 - g) x_t / (g s^2 + 1 - g)."""

    def __init__(self, s: float):
        super().__init__()
        self.s2 = s * s

    def forward(self, x: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
        y_t, g = x[:, 3:], gammas.view(-1, 1, 1, 1).double()
        return ((1 - g).sqrt() * y_t.double() / (g * self.s2 + 1 - g)).float()


def _ode_sample(sampler: str, steps: int, n: int = 4, seed: int = 3) -> torch.Tensor:
    fam = get_family("palette")
    opts = {**TINY_PALETTE, "timesteps": 1000, "sampler": sampler, "sample_steps": steps}
    m = fam.build(ModelConfig(family="palette", preset="tiny", options=opts)).eval()
    m.denoise_fn = _GaussianDenoiser(0.3)
    x = torch.rand(n, 3, 8, 8)
    hole = torch.ones(n, 8, 8, dtype=torch.bool)  # all pixels generated: the sampler alone decides them
    return fam.generate(m, x, hole, seed=seed) * 2 - 1


def test_stochastic_samplers_draw_the_data_distribution_with_few_steps():
    """With the exact denoiser of y0 ~ N(0, 0.3^2), the samples' spread is the data's: full DDPM (1000 steps) and
    SDE-DPM-Solver++(2M) with 25 calls get it within 3 %; strided ancestral sampling gets closer with more steps
    (it shrinks the spread at few steps). The stochastic samplers differ from the ODE's sample of the same start."""
    std = {k: _ode_sample(k, n, n=64).std().item() for k, n in [("ddpm", 1000), ("dpmpp2m_sde", 25)]}
    assert all(abs(v - 0.3) < 0.009 for v in std.values()), std  # measured 0.2986, 0.3056
    a25, a100 = (_ode_sample("ancestral", n, n=64).std().item() for n in (25, 100))
    assert abs(a100 - 0.3) < abs(a25 - 0.3) < 0.08, (a25, a100)  # measured 0.240, 0.279
    sde, ode = _ode_sample("dpmpp2m_sde", 25), _ode_sample("dpmpp2m", 25)
    assert (sde - ode).abs().mean() > 0.05
    assert not torch.equal(sde, _ode_sample("dpmpp2m_sde", 25, seed=4))


def test_dpm_solver_pp_2m_solves_the_diffusion_ode_with_few_steps():
    """With the exact denoiser of Gaussian data, 1000 DDIM steps give the probability-flow ODE's solution;
    DPM-Solver++(2M) gets close with 15 network calls, and closer than DDIM with the same 15 calls."""
    exact = _ode_sample("ddim", 1000)
    dpm, ddim = _ode_sample("dpmpp2m", 15), _ode_sample("ddim", 15)
    err_dpm, err_ddim = (dpm - exact).abs().max().item(), (ddim - exact).abs().max().item()
    assert err_dpm < 0.04, err_dpm  # measured 0.023 (DDIM-15: 0.19; DDIM-1000 vs DDIM-300: 0.007)
    assert err_dpm < err_ddim / 4, (err_dpm, err_ddim)


def test_forget_context_noise_makes_the_whole_forget_input_noise_and_keeps_retain_rows():
    """model.options.forget_context: real (App. C.25) keeps the forget image outside the hole; noise (Eq. 10's
    T(n)) gives the teacher the noise n everywhere for forget rows only; retain rows and pretraining are unchanged."""
    x = torch.rand(2, 3, 16, 16)
    is_forget = torch.tensor([True, False])
    real, noisy = tiny(), tiny(forget_context="noise")
    noisy.load_state_dict(real.state_dict())
    _, c_real = palette.encode(real, x, None, torch.Generator().manual_seed(0))
    _, c_noise = palette.encode(noisy, x, None, torch.Generator().manual_seed(0))
    assert torch.equal(c_real["eps"], c_noise["eps"]) and c_noise["forget_context"] == "noise"
    i_real, t_real = palette.forget_input(x, torch.zeros_like(x), is_forget, c_real, "gaussian")
    i_noise, t_noise = palette.forget_input(x, torch.zeros_like(x), is_forget, c_noise, "gaussian")
    assert torch.equal(i_real, x)  # App. C.25: the real image stays the context
    assert torch.equal(i_noise[1], x[1])  # retain rows untouched
    assert torch.allclose(i_noise[0] * 2 - 1, c_noise["eps"][0])  # the forget row is n = eps everywhere
    net_real = palette._net_input(i_real, t_real, t_real["pure_noise"])
    net_noise = palette._net_input(i_noise, t_noise, t_noise["pure_noise"])
    hole = c_noise["mask"][0]
    assert torch.equal(net_real[1], net_noise[1])
    assert torch.equal(net_real[0][:, hole], net_noise[0][:, hole])  # the hole: the same noise in both
    assert not torch.allclose(net_real[0][:, ~hole], net_noise[0][:, ~hole])  # the context: real vs noise
    gen = [torch.Generator().manual_seed(1) for _ in range(2)]
    assert torch.equal(palette.pretrain_loss(real, x, gen[0]), palette.pretrain_loss(noisy, x, gen[1]))
    with pytest.raises(ValueError, match=r"forget_context='blank'; choose one of \['real', 'noise'\]"):
        tiny(forget_context="blank")
    assert "forget_context" in palette.UNLEARN_OPTIONS  # never part of the original's cache key


def test_noise_context_below_gives_only_the_noisiest_forget_rows_the_noise_context():
    """model.options.noise_context_below = g: forget rows noised to gamma < g get Eq. 10's noise context, the other
    forget rows App. C.25's real one; retain rows never change; 0 (the default) is App. C.25 for every row."""
    x = torch.rand(4, 3, 16, 16)
    is_forget = torch.tensor([True, True, False, False])
    model = tiny(noise_context_below=0.5)
    _, ctx = palette.encode(model, x, None, torch.Generator().manual_seed(0))
    assert ctx["noise_context_below"] == 0.5
    ctx = {**ctx, "gamma": torch.tensor([0.2, 0.9, 0.2, 0.9])}  # one noisy and one clean row per group
    out, _ = palette.forget_input(x, torch.zeros_like(x), is_forget, ctx, "gaussian")
    assert torch.allclose(out[0] * 2 - 1, ctx["eps"][0], atol=1e-6)  # noisy forget row: n everywhere
    assert torch.equal(out[1:], x[1:])  # the clean forget row keeps its real context; retain rows untouched
    default, _ = palette.forget_input(x, torch.zeros_like(x), is_forget, {**ctx, "noise_context_below": 0.0})
    assert torch.equal(default, x)
    with pytest.raises(ValueError, match=r"noise_context_below=1.5 must be in \[0, 1\]"):
        tiny(noise_context_below=1.5)
    with pytest.raises(ValueError, match="applies to forget_context: real"):
        tiny(noise_context_below=0.1, forget_context="noise")
    assert "noise_context_below" in palette.TRAINING_OPTIONS  # never part of the original's cache key


def test_groupnorm32_normalises_half_precision_maps_in_their_own_dtype(monkeypatch):
    """Under autocast a bf16 map is normalised by the native kernel in bf16 (fp32 statistics inside), with the
    fp32 path's values to bf16 rounding, and is never copied up to fp32 (the copies the GPU profile found);
    fp32 maps keep the fp32 path exactly."""
    from raysweep.models.unet import GroupNorm32

    torch.manual_seed(0)
    g = GroupNorm32(32, 64)
    torch.nn.init.normal_(g.weight)
    torch.nn.init.normal_(g.bias)
    x = torch.randn(2, 64, 8, 8) * 3 + 1
    ref = torch.nn.functional.group_norm(x, 32, g.weight, g.bias, g.eps)
    assert torch.equal(g(x), ref)
    xb = x.bfloat16()
    seen = []
    real = torch.nn.functional.group_norm
    monkeypatch.setattr(
        torch.nn.functional, "group_norm", lambda inp, *a, **k: seen.append(inp.dtype) or real(inp, *a, **k)
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = g(xb)
    assert seen == [torch.bfloat16] and y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.1  # bf16 has 8 bits of mantissa; |ref| reaches ~10 here
