"""Palette family (Saharia et al., 2022): conditional diffusion for inpainting with the guided-diffusion UNet,
laid out as Palette's ``Network`` (``denoise_fn`` + the noise-schedule buffers) so that ``16_Network.pth`` loads
strictly (docs/protocol.md §5.2).

- Training (pretraining the original, Palette's objective): t ~ U{1..T-1}, a continuous noise level
  gamma ~ U(gamma_{t-1}, gamma_t), x~ = sqrt(gamma) y0 + sqrt(1-gamma) eps; the UNet sees
  cat[y_cond, x~ * mask + y0 * (1 - mask)] (known pixels re-imposed) with y_cond = the image with N(0, I) in the hole,
  and predicts eps; loss = MSE(mask * eps, mask * eps_hat). Images live in [-1, 1].
- **encode** (App. C.25, official §1.2) = cond_embed + input blocks + middle block; the latent is the 13 (tiny: fewer)
  feature maps (tiny: 7), each scaled by sqrt(N / its size) and concatenated, so each map weighs the same in Eq. 10
  and ``loss_form: mse`` is exactly the official loss, one MSE per map summed (:func:`_flat`). ``ctx`` holds t,
  gamma, eps and the hole mask, shared with the teacher. ``frozen_input_blocks`` (raysweep option, default 0 =
  official) keeps the class-blind first blocks and cond_embed at the original's weights.
- **Forget target** (App. C.25): the teacher sees pure noise in place of x~ inside the hole (real context, real
  y_cond) - :func:`forget_input`. ``forget_context: noise`` (raysweep option) reads Eq. 10 literally instead, as
  for MAE and VQ-GAN: the teacher encodes the transform of a whole noise image, T(n), so the context and y_cond
  outside the hole are noise too.
- **generate**: full ancestral DDPM over all T steps (``sampler: ddpm``, the paper / official test), deterministic
  DDIM with ``sample_steps`` steps (``sampler: ddim``), ancestral DDPM on ``sample_steps`` strided steps
  (``sampler: ancestral``, DDIM with eta = 1), DPM-Solver++(2M) with ``sample_steps`` network calls (``sampler:
  dpmpp2m``, the ODE) or its stochastic form SDE-DPM-Solver++(2M) (``sampler: dpmpp2m_sde``, the default:
  docs/benchmarks.md); known pixels are re-imposed after every step, the start is y_cond (official), the seed is
  fixed. :func:`generation` names the sampler for the metrics.
- Decoder (frozen, bit-identical after unlearning): output_blocks and out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raysweep.config import Config, ModelConfig
from raysweep.data.masks import CENTER_TASK, task_mask
from raysweep.models.checkpoints import load_strict, read_state_dict
from raysweep.models.family import (
    TRAINING_ONLY,
    UNLEARN_ONLY,
    Stage,
    option_names,
    parse_options,
    training_only,
    unlearn_only,
    unwrap,
)
from raysweep.models.unet import UNet

PRESETS = {
    # 32 px: 32/64 channels at 32/16 px, 2 res blocks per level, attention in the middle block only
    "tiny": dict(inner_channel=32, channel_mults=(1, 2), res_blocks=2, attn_res=(), num_head_channels=32),
    # the official Places2 inpainting config (inpainting_places2.json)
    "vit_base": dict(inner_channel=64, channel_mults=(1, 2, 4, 8), res_blocks=2, attn_res=(16,), num_head_channels=32),
}
SAMPLERS = ("ddim", "ddpm", "ancestral", "dpmpp2m", "dpmpp2m_sde")
TRAIN_MASKS = ("mixed", "boxes")
FORGET_CONTEXTS = ("real", "noise")  # the forget target's context: App. C.25 (real) or Eq. 10's T(n) (noise)


@dataclass(frozen=True)
class Options:
    """Palette's ``model.options``. Fields marked ``UNLEARN_ONLY`` change only how the original is unlearned or
    evaluated, never how it is pretrained; the UNet fields override the preset's value when set."""

    inner_channel: int | None = None
    channel_mults: tuple[int, ...] | None = None
    res_blocks: int | None = None
    attn_res: tuple[int, ...] | None = None
    num_head_channels: int | None = None
    dropout: float = field(default=0.0, metadata=UNLEARN_ONLY)
    timesteps: int = 2000  # the official linear schedule
    linear_start: float = 1e-6
    linear_end: float = 1e-2
    sampler: str = field(default="dpmpp2m_sde", metadata=UNLEARN_ONLY)  # evaluation sampler (SAMPLERS)
    sample_steps: int = field(default=25, metadata=UNLEARN_ONLY)
    train_masks: str = "mixed"  # pretraining holes: mixed (boxes + the center box in half the rows) | boxes
    frozen_input_blocks: int = field(default=0, metadata=TRAINING_ONLY)  # Eq. 10 trains the UNet blocks after these
    # Eq. 10's timesteps while unlearning: t ~ U{1 .. unlearn_t_max * T - 1} (raysweep option; 1 = all, official)
    unlearn_t_max: float = field(default=1.0, metadata=TRAINING_ONLY)
    # the forget rows' timesteps only: t ~ U{1 .. forget_t_max * T - 1}, retain rows keep unlearn_t_max (raysweep
    # option; 1 = all, official). Above ~0.48 x T gamma < 0.1, where App. C.25's target is almost the student's input
    forget_t_max: float = field(default=1.0, metadata=TRAINING_ONLY)
    # the forget target's context outside the hole: real (App. C.25, official) | noise (Eq. 10's T(n), raysweep)
    forget_context: str = field(default="real", metadata=TRAINING_ONLY)
    # with forget_context real: forget rows noised to gamma below this get the noise context all the same (raysweep
    # option; 0 = never). Below gamma ~ 0.1 App. C.25's target is almost the student's own input (docs/results.md)
    noise_context_below: float = field(default=0.0, metadata=TRAINING_ONLY)

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"model.options.sampler={self.sampler!r}; choose one of {list(SAMPLERS)}")
        if not 1 <= self.sample_steps <= self.timesteps:
            raise ValueError(f"model.options.sample_steps={self.sample_steps} must be in [1, {self.timesteps}]")
        if self.train_masks not in TRAIN_MASKS:
            raise ValueError(f"model.options.train_masks={self.train_masks!r}; choose one of {list(TRAIN_MASKS)}")
        if self.forget_context not in FORGET_CONTEXTS:
            raise ValueError(
                f"model.options.forget_context={self.forget_context!r}; choose one of {list(FORGET_CONTEXTS)}"
            )
        if not 0.0 <= self.noise_context_below <= 1.0:
            raise ValueError(f"model.options.noise_context_below={self.noise_context_below} must be in [0, 1]")
        if self.noise_context_below > 0 and self.forget_context == "noise":
            raise ValueError(
                "model.options.noise_context_below applies to forget_context: real (forget_context: noise already "
                "gives every forget row the noise context); set one of them"
            )
        for name in ("unlearn_t_max", "forget_t_max"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0 or value * self.timesteps < 2:
                raise ValueError(
                    f"model.options.{name}={value} must be in (0, 1] and leave at least 2 of the "
                    f"{self.timesteps} timesteps"
                )


OPTIONS = option_names(Options)
UNLEARN_OPTIONS = unlearn_only(Options)
TRAINING_OPTIONS = training_only(Options)  # never part of the original scores' cache key either
PAPER_OPTIMIZER = "adam"  # App. B, "Diffusion Models": Adam, no weight decay
BUFFERS = (
    "gammas",
    "sqrt_recip_gammas",
    "sqrt_recipm1_gammas",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


class PaletteNetwork(nn.Module):
    """``denoise_fn`` (the UNet) and the noise schedule as persistent buffers (official Network layout)."""

    def __init__(self, unet: UNet, timesteps: int = 2000, linear_start: float = 1e-6, linear_end: float = 1e-2):
        super().__init__()
        self.denoise_fn = unet
        betas = np.linspace(linear_start, linear_end, timesteps, dtype=np.float64)  # official train schedule
        alphas = 1.0 - betas
        gammas = np.cumprod(alphas)
        prev = np.append(1.0, gammas[:-1])
        post_var = betas * (1.0 - prev) / (1.0 - gammas)

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.tensor(a, dtype=torch.float32)

        self.register_buffer("gammas", f32(gammas))
        self.register_buffer("sqrt_recip_gammas", f32(np.sqrt(1.0 / gammas)))
        self.register_buffer("sqrt_recipm1_gammas", f32(np.sqrt(1.0 / gammas - 1)))
        self.register_buffer("posterior_log_variance_clipped", f32(np.log(np.maximum(post_var, 1e-20))))
        self.register_buffer("posterior_mean_coef1", f32(betas * np.sqrt(prev) / (1.0 - gammas)))
        self.register_buffer("posterior_mean_coef2", f32((1.0 - prev) * np.sqrt(alphas) / (1.0 - gammas)))
        self.sampler, self.sample_steps, self.train_masks = "ddim", 25, "mixed"
        self.frozen_input_blocks, self.unlearn_t_max, self.forget_context = 0, 1.0, "real"
        self.noise_context_below, self.forget_t_max = 0.0, 1.0

    @property
    def timesteps(self) -> int:
        return int(self.gammas.shape[0])

    def forward(self, x: torch.Tensor, gammas: torch.Tensor, encode_only: bool = False):
        """Through DDP's forward: the encoder's maps (``encode_only``) or the predicted noise."""
        hs, emb = self.denoise_fn.encode(x, gammas)
        return hs if encode_only else self.denoise_fn.decode(hs, emb)


# ---- noising and masks ------------------------------------------------------------------------------
def _to_model(images: torch.Tensor) -> torch.Tensor:
    return images * 2.0 - 1.0  # [0, 1] -> [-1, 1]


def train_masks(model: PaletteNetwork, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The family's own training holes ``[B, H, W]``: random rectangles of 1/4 to 3/4 of the side (Palette trains
    on box + free-form masks; ``train_masks: mixed`` also puts the center box of the eval task in half the rows)."""
    b, s = images.shape[0], images.shape[-1]
    dev = images.device
    r = torch.rand(b, 4, generator=generator, device=dev)
    hs = (s * (0.25 + 0.5 * r[:, 0])).long().clamp(1, s)
    ws = (s * (0.25 + 0.5 * r[:, 1])).long().clamp(1, s)
    ys = ((s - hs) * r[:, 2]).long()
    xs = ((s - ws) * r[:, 3]).long()
    ar = torch.arange(s, device=dev)
    rows = (ar[None] >= ys[:, None]) & (ar[None] < (ys + hs)[:, None])
    cols = (ar[None] >= xs[:, None]) & (ar[None] < (xs + ws)[:, None])
    mask = rows[:, :, None] & cols[:, None, :]
    if model.train_masks == "mixed":
        mask[::2] = task_mask(CENTER_TASK, 1, s, device=dev)[0]
    return mask


def _noising(
    model: PaletteNetwork,
    images: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None,
    t_max: float = 1.0,
    forget_rows: torch.Tensor | None = None,
    forget_t_max: float = 1.0,
) -> dict:
    """t, continuous gamma, eps and y_cond for a batch (Palette's forward); t below ``t_max`` x T, and below
    ``forget_t_max`` x T on ``forget_rows`` (bool ``[B]``) when that is < 1 (drawn after the others: with 1 the
    random stream is the official one)."""
    b, dev = images.shape[0], images.device
    t = torch.randint(1, max(2, round(t_max * model.timesteps)), (b,), generator=generator, device=dev)
    if forget_rows is not None and forget_t_max < 1.0:
        top = max(2, round(forget_t_max * model.timesteps))
        t_forget = torch.randint(1, top, (b,), generator=generator, device=dev)
        t = torch.where(forget_rows.to(dev), t_forget, t)
    g0, g1 = model.gammas[t - 1], model.gammas[t]
    gamma = g0 + (g1 - g0) * torch.rand(b, generator=generator, device=dev)
    eps = torch.randn(images.shape, generator=generator, device=dev)
    cond_noise = torch.randn(images.shape, generator=generator, device=dev)
    return {"mask": mask, "t": t, "gamma": gamma, "eps": eps, "cond_noise": cond_noise}


def _net_input(
    images: torch.Tensor, ctx: dict, pure_noise: torch.Tensor | None = None, truth: torch.Tensor | None = None
) -> torch.Tensor:
    """cat[y_cond, x~ * mask + y0 * (1 - mask)]; rows in ``pure_noise`` (App. C.25 forget target) get the noise
    ``ctx["forget_noise"]`` in place of x~ inside the hole. ``truth`` (the baselines' ground truth, [0, 1]) is
    what x~ noises inside the hole instead of ``images`` (whose pixels stay the context)."""
    y0 = _to_model(images)
    m = ctx["mask"].unsqueeze(1).to(y0.dtype)
    g = ctx["gamma"].view(-1, 1, 1, 1)
    x_t = g.sqrt() * (y0 if truth is None else _to_model(truth)) + (1 - g).sqrt() * ctx["eps"]
    if pure_noise is not None:
        x_t = torch.where(pure_noise.view(-1, 1, 1, 1), ctx["forget_noise"], x_t)
    y_cond = y0 * (1 - m) + m * ctx["cond_noise"]
    return torch.cat([y_cond, x_t * m + y0 * (1 - m)], dim=1)


# ---- the family protocol --------------------------------------------------------------------------
def build(cfg: ModelConfig) -> PaletteNetwork:
    """A randomly initialised Palette of ``cfg.preset``; ``cfg.checkpoint`` (16_Network.pth layout) when given."""
    o = parse_options("palette", Options, cfg.options)
    kw = {k: v if getattr(o, k) is None else getattr(o, k) for k, v in PRESETS[cfg.preset].items()}
    if kw["inner_channel"] % 32:
        raise ValueError(f"model.options.inner_channel={kw['inner_channel']} must be a multiple of 32 (GroupNorm(32))")
    unet = UNet(in_channel=6, out_channel=3, dropout=o.dropout, **kw)
    model = PaletteNetwork(unet, o.timesteps, o.linear_start, o.linear_end)
    model.sampler, model.sample_steps = o.sampler, o.sample_steps
    model.train_masks, model.frozen_input_blocks = o.train_masks, o.frozen_input_blocks
    model.unlearn_t_max, model.forget_context = o.unlearn_t_max, o.forget_context
    model.noise_context_below, model.forget_t_max = o.noise_context_below, o.forget_t_max
    n_in = len(unet.input_blocks)
    if not 0 <= model.frozen_input_blocks <= n_in:
        raise ValueError(
            f"model.options.frozen_input_blocks={model.frozen_input_blocks} must be in [0, {n_in}] "
            f"(this UNet has {n_in} input blocks)"
        )
    if cfg.checkpoint:
        load_official(model, cfg.checkpoint)
    return model


def load_official(model: nn.Module, path: str) -> None:
    """Load ``16_Network.pth`` strictly: a DDP ``module.`` prefix is stripped and ``teacher_denoise_fn.*`` (saved
    by the official unlearning code) dropped. The schedule buffers come from the file, as in the official test
    (official §4.2: the stored *train* schedule is the one used for sampling); their length must match
    ``model.options.timesteps`` (2000)."""
    state = read_state_dict(path, key=None)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("teacher_denoise_fn.")}
    load_strict(model, state, source=f"checkpoint {path!r}", layout="Palette Network (guided-diffusion UNet)")


def encoder_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    """cond_embed, input blocks, middle block (official §1.2); output blocks and out stay frozen.

    ``frozen_input_blocks: k`` (k > 0, a raysweep option; official = 0) also keeps ``cond_embed`` and the first k
    input blocks at the original's weights: they cannot tell a forget image from a retain one (a 3x3 conv and
    full-resolution res blocks; cond_embed sees only the noise level), so Eq. 10 can only move them for both
    groups at once, and their maps feed the frozen decoder's last layers through the skips."""
    m = unwrap(model)
    u, k = m.denoise_fn, m.frozen_input_blocks
    if k == 0:
        yield from u.cond_embed.parameters()
    for block in list(u.input_blocks)[k:]:
        yield from block.parameters()
    yield from u.middle_block.parameters()


def patch_size(model: nn.Module) -> int:
    """Pixel-space model: random-task masks are drawn per pixel."""
    return 1


def input_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet reads (x - 0.5) / 0.5, i.e. [-1, 1]."""
    return torch.full((3,), 0.5), torch.full((3,), 0.5)


def _ctx(model: PaletteNetwork, images: torch.Tensor, ctx: dict | None, generator: torch.Generator | None) -> dict:
    if ctx is not None and "gamma" in ctx:
        return ctx
    mask = ctx["mask"] if ctx is not None and "mask" in ctx else train_masks(model, images, generator)
    forget_rows = ctx.get("is_forget") if ctx is not None else None
    return {
        **_noising(model, images, mask, generator, model.unlearn_t_max, forget_rows, model.forget_t_max),
        "forget_context": model.forget_context,
        "noise_context_below": model.noise_context_below,
    }


def _flat(maps: list[torch.Tensor]) -> torch.Tensor:
    """Feature maps -> ``[B, N]``, map j (n_j values per sample) scaled by sqrt(N / n_j), N = sum of the n_j.

    Then the latent's per-sample mean of squares is the official loss, the *sum over maps of each map's MSE*
    (official §1.2), so ``unlearn.loss_form=mse`` reproduces it, and every map weighs the same in both forms. (A
    plain mean over the concatenation would be that sum divided by N ~ 1.6e5 for the tiny UNet: gradients ~1e-10,
    below Adam's eps, i.e. almost no update.)"""
    sizes = [h[0].numel() for h in maps]
    total = float(sum(sizes))
    return torch.cat([h.flatten(1) * (total / n) ** 0.5 for h, n in zip(maps, sizes)], dim=1)


def encode(
    model: nn.Module, images: torch.Tensor, ctx: dict | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict]:
    """Encoder maps of images in [0, 1] as ``[B, N]``. ``ctx`` None = a training hole and fresh noising;
    ``{"mask": ...}`` = that hole; an earlier ctx = the same t, gamma, eps and hole. ``ctx["is_forget"]`` (bool
    ``[B]``, set by the unlearning step) draws those rows' t below ``forget_t_max`` x T. ``ctx["pure_noise"]`` (bool
    ``[B]``, set by :func:`forget_input`) gives those rows the App. C.25 forget input."""
    m = unwrap(model)
    ctx = _ctx(m, images, ctx, generator)
    x = _net_input(images, ctx, ctx.get("pure_noise"))
    return _flat(model(x, ctx["gamma"], encode_only=True)), ctx


def forget_input(
    images: torch.Tensor, noise: torch.Tensor, is_forget: torch.Tensor, ctx: dict, kind: str = "gaussian"
) -> tuple[torch.Tensor, dict]:
    """App. C.25: the teacher keeps the real image (context and y_cond) and sees noise n in place of x~ inside the
    hole for forget rows. ``gaussian``: n = the very eps that made the student's x~ (official §1.2: q_sample returns
    ``noise`` itself) - a fresh draw would add a target the student cannot predict (measured: the forget term did not
    move in 3 epochs); ``uniform`` (App. E): n = 2 Phi(eps) - 1, U[-1, 1] coupled to the same draw; ``batch_stats``:
    the given pixel-space noise in the UNet's [-1, 1] space.

    ``ctx["forget_context"] == "noise"`` (``model.options.forget_context``): Eq. 10 read literally, E_0(T(n)): the
    forget rows' whole image becomes that same n, so the context and y_cond outside the hole are noise as well.
    ``ctx["noise_context_below"]`` = g > 0 (``model.options.noise_context_below``) does so only for the forget rows
    noised to gamma < g: there x~ is almost n, App. C.25's target almost the student's own input, and the rows would
    otherwise anchor the forget images to the original."""
    eps = ctx["eps"]
    if kind == "gaussian":
        n = eps
    elif kind == "uniform":
        n = torch.special.erf(eps / 2**0.5)  # 2 * Phi(eps) - 1
    else:
        n = noise * 2.0 - 1.0
    noise_rows = is_forget
    if ctx.get("forget_context", "real") != "noise":
        noise_rows = is_forget & (ctx["gamma"] < ctx.get("noise_context_below", 0.0))
    images = torch.where(noise_rows.view(-1, 1, 1, 1), (n + 1.0) / 2.0, images)  # [0, 1] space: _to_model -> n
    return images, {**ctx, "pure_noise": is_forget, "forget_noise": n}


@torch.no_grad()
def generate(model: nn.Module, images: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Inpaint the hole: start from y_cond, denoise with the configured sampler (full DDPM, DDIM, strided ancestral,
    DPM-Solver++(2M) as ODE or SDE), re-impose the known pixels after every step; returns [0, 1] images equal to the
    input outside the hole. The stochastic samplers draw their noise from a generator seeded with ``seed``."""
    m = unwrap(model)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    y0 = _to_model(images)
    hole = mask.unsqueeze(1).to(y0.dtype)
    y_cond = y0 * (1 - hole) + hole * torch.randn(y0.shape, generator=gen, device=y0.device)
    y_t = y_cond.clone()
    b = images.shape[0]
    T = m.timesteps
    if m.sampler == "ddpm":
        for i in reversed(range(T)):
            t = torch.full((b,), i, device=y0.device, dtype=torch.long)
            eps = m.denoise_fn(torch.cat([y_cond, y_t], 1), m.gammas[t])
            x0 = (
                m.sqrt_recip_gammas[t].view(-1, 1, 1, 1) * y_t - m.sqrt_recipm1_gammas[t].view(-1, 1, 1, 1) * eps
            ).clamp(-1, 1)
            mean = m.posterior_mean_coef1[t].view(-1, 1, 1, 1) * x0 + m.posterior_mean_coef2[t].view(-1, 1, 1, 1) * y_t
            z = torch.randn(y_t.shape, generator=gen, device=y0.device) if i > 0 else torch.zeros_like(y_t)
            y_t = mean + z * (0.5 * m.posterior_log_variance_clipped[t].view(-1, 1, 1, 1)).exp()
            y_t = y0 * (1 - hole) + hole * y_t
    elif m.sampler in ("dpmpp2m", "dpmpp2m_sde"):
        y_t = _dpm_solver_pp_2m(m, y_cond, y_t, y0, hole, gen if m.sampler == "dpmpp2m_sde" else None)
    else:
        y_t = _ddim(m, y_cond, y_t, y0, hole, gen if m.sampler == "ancestral" else None)
    out = ((y_t + 1) / 2).clamp(0.0, 1.0)
    return torch.where(mask.unsqueeze(1), out, images)


def _ddim(
    m: PaletteNetwork,
    y_cond: torch.Tensor,
    y_t: torch.Tensor,
    y0: torch.Tensor,
    hole: torch.Tensor,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """DDIM (Song et al., 2021, Eq. 12) on ``sample_steps`` schedule entries evenly strided from T-1 to 0, x0
    clamped to [-1, 1], known pixels re-imposed after every step. ``gen`` None: eta = 0, the deterministic sampler
    (the ODE). With ``gen``: eta = 1, sigma_s^2 = (1 - g_s) / (1 - g_t) * (1 - g_t / g_s), i.e. ancestral DDPM
    sampling on the strided chain, fresh noise drawn from ``gen`` at every step but the last."""
    b, T = y_t.shape[0], m.timesteps
    ts = np.linspace(T - 1, 0, m.sample_steps).round().astype(int)
    for k, i in enumerate(ts):
        g = m.gammas[int(i)]
        eps = m.denoise_fn(torch.cat([y_cond, y_t], 1), g.expand(b))
        x0 = ((y_t - (1 - g).sqrt() * eps) / g.sqrt()).clamp(-1, 1)
        g_next = m.gammas[int(ts[k + 1])] if k + 1 < len(ts) else torch.ones((), device=y_t.device)
        if gen is None or k + 1 == len(ts):
            y_t = g_next.sqrt() * x0 + (1 - g_next).sqrt() * eps  # eta = 0
        else:
            var = (1 - g_next) / (1 - g) * (1 - g / g_next)
            z = torch.randn(y_t.shape, generator=gen, device=y_t.device)
            y_t = g_next.sqrt() * x0 + (1 - g_next - var).clamp_min(0).sqrt() * eps + var.sqrt() * z
        y_t = y0 * (1 - hole) + hole * y_t
    return y_t


def _logsnr_gammas(m: PaletteNetwork, n: int) -> torch.Tensor:
    """``n + 1`` noise levels gamma (float64, decreasing noise) from the schedule's noisiest to its cleanest, evenly
    spaced in log-SNR lambda = 0.5 log(gamma / (1 - gamma)) (DPM-Solver's spacing for few steps). Palette's UNet is
    trained on continuous gamma (drawn between two schedule entries), so the levels need not be schedule entries."""
    g = m.gammas.detach().double().cpu()
    lam = 0.5 * (g / (1 - g)).log()
    return torch.sigmoid(2 * torch.linspace(float(lam[-1]), float(lam[0]), n + 1, dtype=torch.float64))


def _dpm_solver_pp_2m(
    m: PaletteNetwork,
    y_cond: torch.Tensor,
    y_t: torch.Tensor,
    y0: torch.Tensor,
    hole: torch.Tensor,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al., 2022, Alg. 2): the multistep second-order solver of the diffusion ODE in the
    data-prediction form, ``sample_steps`` network calls at log-SNR-spaced noise levels (:func:`_logsnr_gammas`),
    first order on the first and the last step (``lower_order_final``), x0 clamped to [-1, 1] as in Palette's
    sampler, known pixels re-imposed after every step. With ``gen``: SDE-DPM-Solver++(2M) (same paper, the
    diffusion SDE; k-diffusion's ``sample_dpmpp_2m_sde`` with eta = 1, midpoint form), h = lambda_t - lambda_s:
    y_t = (sigma_t / sigma_s) e^-h y_s + alpha_t (1 - e^-2h) D + sigma_t sqrt(1 - e^-2h) z."""
    gam = _logsnr_gammas(m, m.sample_steps)
    alpha, sigma = gam.sqrt(), (1 - gam).sqrt()
    lam = (alpha / sigma).log()
    b, prev_x0, prev_h = y_t.shape[0], None, None
    for k in range(len(gam) - 1):
        s, t = k, k + 1
        level = torch.full((b,), float(gam[s]), device=y_t.device)
        eps = m.denoise_fn(torch.cat([y_cond, y_t], 1), level)
        x0 = ((y_t - float(sigma[s]) * eps) / float(alpha[s])).clamp(-1, 1)
        h = float(lam[t] - lam[s])
        first_order = prev_x0 is None or k == len(gam) - 2
        if gen is None:
            if first_order:
                d = x0
            else:
                r = prev_h / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
            y_t = float(sigma[t] / sigma[s]) * y_t - float(alpha[t] * np.expm1(-h)) * d
        else:
            d = x0 if first_order else x0 + (h / (2 * prev_h)) * (x0 - prev_x0)
            z = torch.randn(y_t.shape, generator=gen, device=y_t.device)
            y_t = (
                float(sigma[t] / sigma[s] * np.exp(-h)) * y_t
                - float(alpha[t] * np.expm1(-2 * h)) * d
                + float(sigma[t] * np.sqrt(-np.expm1(-2 * h))) * z
            )
        y_t = y0 * (1 - hole) + hole * y_t
        prev_x0, prev_h = x0, h
    return y_t


def generation(model: nn.Module) -> str:
    """The sampler recorded with every metric."""
    m = unwrap(model)
    return f"ddpm-{m.timesteps}" if m.sampler == "ddpm" else f"{m.sampler}-{m.sample_steps}"


def pretrain_loss(
    model: nn.Module, images: torch.Tensor, generator: torch.Generator | None = None, stage: str = "model"
) -> torch.Tensor:
    """Palette's objective: MSE(mask * eps, mask * eps_hat) (official network.py forward)."""
    m = unwrap(model)
    ctx = _noising(m, images, train_masks(m, images, generator), generator)
    eps_hat = model(_net_input(images, ctx), ctx["gamma"])
    hole = ctx["mask"].unsqueeze(1).to(eps_hat.dtype)
    return F.mse_loss(hole * ctx["eps"], hole * eps_hat)


def own_loss(
    model: nn.Module,
    images: torch.Tensor,
    truth: torch.Tensor,
    ctx: dict | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Palette's own objective per sample, for the full-model baselines (App. C.6, Eqs. C.26 / C.29 / C.32): the
    UNet sees the context of ``images``, x~ = sqrt(gamma) ``truth`` + sqrt(1 - gamma) eps in the hole, and is
    scored on predicting eps there: MSE(mask * eps, mask * eps_hat) per sample -> ``[B]``."""
    m = unwrap(model)
    ctx = _ctx(m, images, ctx, generator)
    eps_hat = model(_net_input(images, ctx, truth=truth), ctx["gamma"])
    hole = ctx["mask"].unsqueeze(1).to(torch.float32)
    return ((hole * (ctx["eps"] - eps_hat.float())) ** 2).flatten(1).mean(dim=1), ctx


def pretrain_stages(cfg: Config) -> list[Stage]:
    return [Stage("model", lambda mdl: unwrap(mdl).parameters(), cfg.pretrain.epochs, cfg.pretrain.lr)]
