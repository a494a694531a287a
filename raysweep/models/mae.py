"""MAE family (He et al., 2022), laid out exactly as facebookresearch/mae ``models_mae.py`` so that the official
``mae_visualize_vit_base.pth`` loads strictly (docs/protocol.md §5.3), built on timm's ViT blocks.

Encoder (what unlearning trains, docs/protocol.md §1.3): patch_embed, cls_token, blocks, norm; ``pos_embed`` is a
fixed sin-cos table. Decoder (frozen): decoder_embed, mask_token, decoder_blocks, decoder_norm, decoder_pred.
The latent compared by Eq. 10 is the ``norm`` output over [cls + kept patches]; ``ctx`` holds the kept-patch ids so
the teacher encodes the same patches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from raysweep.config import Config, ModelConfig
from raysweep.data.masks import check_pretrain_masks, draw_pretrain_task, patch_mask, random_patch_mask, task_mask
from raysweep.models.checkpoints import load_strict, read_state_dict
from raysweep.models.family import Stage, option_names, parse_options, training_only, unlearn_only, unwrap

PRESETS = {
    # 32 px, patch 4: the embedded default (8x8 patch grid, like MAE's 14x14 / MAGE's 16x16 grid)
    "tiny": dict(
        img_size=32,
        patch_size=4,
        embed_dim=192,
        depth=6,
        num_heads=3,
        decoder_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=4,
    ),
    # mae_vit_base_patch16_dec512d8b (official)
    "vit_base": dict(
        img_size=224,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
    ),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTOverrides:
    """Architecture options of the ViT families (MAE, MAGE): each overrides its preset's value when set (small
    models in tests)."""

    img_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    decoder_embed_dim: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None


@dataclass(frozen=True)
class Options(ViTOverrides):
    """MAE's ``model.options`` (every one changes the pretrained original)."""

    pixel_mean: tuple[float, ...] = IMAGENET_MEAN  # normalisation inside the network
    pixel_std: tuple[float, ...] = IMAGENET_STD
    mask_ratio: float = 0.75  # MAE random masking while pretraining
    train_masks: str = "mixed"  # half the steps an I2I task mask (data.masks.PRETRAIN_TASKS) | center | random
    patch_size: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"model.options.mask_ratio={self.mask_ratio} must be in [0, 1)")
        check_pretrain_masks(self.train_masks)
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            raise ValueError("model.options.pixel_mean / pixel_std must be 3 numbers each (std > 0)")


OPTIONS = option_names(Options)
UNLEARN_OPTIONS = unlearn_only(Options)  # none: every MAE option changes the pretrained original
TRAINING_OPTIONS = training_only(Options)
PAPER_OPTIMIZER = "adamw"  # App. B, "VQ-GAN & MAE": AdamW, betas (0.9, 0.95), no weight decay


def _sincos_2d(dim: int, grid: int, cls_token: bool) -> np.ndarray:
    """2-D sin-cos position table ``[grid*grid (+1), dim]`` (MAE's get_2d_sincos_pos_embed)."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh, gw = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    emb = np.concatenate([one_d(dim // 2, gh), one_d(dim // 2, gw)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return emb


def init_vit_layout(model: nn.Module, modules: Iterable[nn.Module]) -> None:
    """The facebookresearch/mae initialisation, shared by MAE and MAGE: fixed sin-cos ``pos_embed`` /
    ``decoder_pos_embed``, ``patch_embed`` like a Linear, N(0, 0.02) tokens, and (JAX ViT) xavier-uniform Linear
    weights, zero biases, unit LayerNorms over ``modules``."""
    for name in ("pos_embed", "decoder_pos_embed"):
        p = getattr(model, name)
        p.data.copy_(torch.from_numpy(_sincos_2d(p.shape[-1], model.grid, True)).float()[None])
    w = model.patch_embed.proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    for name in ("cls_token", "mask_token", "decoder_pos_embed_learned"):
        if hasattr(model, name):
            nn.init.normal_(getattr(model, name), std=0.02)
    for m in modules:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MaskedAutoencoderViT(nn.Module):
    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        decoder_embed_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        pixel_mean=IMAGENET_MEAN,
        pixel_std=IMAGENET_STD,
    ):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
        )
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        # normalisation inside the network (non-persistent: not part of the official state dict)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.patch_size, self.grid = patch_size, img_size // patch_size
        self.mask_ratio = 0.75  # MAE random masking (pretraining, and the default masks while unlearning)
        self.train_masks = "mixed"
        self._init_weights()

    def _init_weights(self) -> None:
        init_vit_layout(self, self.modules())

    # ---- pieces -----------------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, L, p*p*3]
        p, g = self.patch_size, self.grid
        x = x.reshape(x.shape[0], 3, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(x.shape[0], g * g, p * p * 3)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, p*p*3] -> [B, 3, H, W]
        p, g = self.patch_size, self.grid
        x = x.reshape(x.shape[0], g, g, p, p, 3)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], 3, g * p, g * p)

    def forward_encoder(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[B, 3, H, W]`` and kept patch ids ``[B, K]`` -> latent ``[B, 1+K, D]``."""
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]  # [B, L, D]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # [B, K, D]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, 1+K, D]`` -> per-patch predictions ``[B, L, p*p*3]`` (normalised pixel space)."""
        x = self.decoder_embed(latent)
        b, k1, d = x.shape
        mask_tokens = self.mask_token.expand(b, ids_restore.shape[1] + 1 - k1, -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    def forward(
        self, images: torch.Tensor, ids_keep: torch.Tensor, ids_restore: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latent ``[B, 1+K, D]``; with ``ids_restore`` also decoded, ``[B, L, p*p*3]`` (so DDP sees one forward)."""
        latent = self.forward_encoder(self.normalize(images), ids_keep)
        return latent if ids_restore is None else self.forward_decoder(latent, ids_restore)


# ---- masks as ids ---------------------------------------------------------------------------------
def ids_from_patch_mask(pmask: torch.Tensor, n_keep: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch mask ``[B, L]`` (True = removed, same count per row) -> (ids_keep ``[B, K]``, ids_restore ``[B, L]``).

    ``n_keep`` (K) when the caller knows it (random masking, a task mask): no host sync, so a CUDA step keeps the
    GPU queue full and ``torch.compile`` sees no data-dependent size; None counts (and checks) it on the host."""
    if n_keep is None:
        counts = (~pmask).sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise ValueError("every image of a batch must keep the same number of patches")
        n_keep = int(counts[0])
    ids_shuffle = torch.argsort(pmask.to(torch.int8), dim=1, stable=True)  # kept patches first
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle[:, :n_keep], ids_restore


def _ctx(
    model: MaskedAutoencoderViT, images: torch.Tensor, ctx: dict | None, generator: torch.Generator | None, ratio: float
) -> dict:
    if ctx is not None and "ids_keep" in ctx:
        return ctx
    size = images.shape[-1]
    if ctx is not None and "mask" in ctx:
        pixel_mask, n_keep = ctx["mask"], ctx.get("n_keep")  # n_keep: kept patches, when the caller knows them
    else:  # the family's own training masks: MAE random masking
        pixel_mask = random_patch_mask(images.shape[0], size, model.patch_size, ratio, generator, images.device)
        g = size // model.patch_size
        n_keep = g * g - round(g * g * ratio)
    ids_keep, ids_restore = ids_from_patch_mask(patch_mask(pixel_mask, model.patch_size), n_keep)
    return {"mask": pixel_mask, "ids_keep": ids_keep, "ids_restore": ids_restore}


# ---- the family protocol --------------------------------------------------------------------------
def build(cfg: ModelConfig) -> MaskedAutoencoderViT:
    """A randomly initialised MAE of ``cfg.preset``; ``cfg.checkpoint`` (official layout) is loaded when given."""
    o = parse_options("mae", Options, cfg.options)
    kw = {k: v if getattr(o, k) is None else getattr(o, k) for k, v in PRESETS[cfg.preset].items()}
    model = MaskedAutoencoderViT(**kw, pixel_mean=o.pixel_mean, pixel_std=o.pixel_std)
    model.mask_ratio, model.train_masks = o.mask_ratio, o.train_masks
    if cfg.checkpoint:
        load_official(model, cfg.checkpoint)
    return model


def load_official(model: nn.Module, path: str) -> None:
    """Load ``mae_visualize_vit_base.pth`` (or any file in the facebookresearch/mae layout), strictly."""
    load_strict(
        model,
        read_state_dict(path, key="model"),
        source=f"checkpoint {path!r}",
        layout="facebookresearch/mae MaskedAutoencoderViT",
    )


def encoder_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    """patch_embed, cls_token, blocks, norm (pos_embed is fixed); the decoder stays frozen."""
    m = unwrap(model)
    yield from m.patch_embed.parameters()
    yield m.cls_token
    yield from m.blocks.parameters()
    yield from m.norm.parameters()


def patch_size(model: nn.Module) -> int:
    return unwrap(model).patch_size


def input_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    m = unwrap(model)
    return m.pixel_mean.view(3), m.pixel_std.view(3)


def encode(
    model: nn.Module, images: torch.Tensor, ctx: dict | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict]:
    """Latent ``[B, 1+K, D]`` of images in [0, 1]. ``ctx`` None = random masking; ``{"mask": [B,H,W]}`` = that
    task mask; a ctx returned by an earlier call = the very same kept patches (teacher == student masks)."""
    m = unwrap(model)
    ctx = _ctx(m, images, ctx, generator, m.mask_ratio)
    return model(images, ctx["ids_keep"]), ctx


def forget_input(
    images: torch.Tensor, noise: torch.Tensor, is_forget: torch.Tensor, ctx: dict, kind: str = "gaussian"
) -> tuple[torch.Tensor, dict]:
    """Eq. 10: the teacher encodes T(n) for forget rows (the noise image under the same masks) and T(x_r) else."""
    return torch.where(is_forget.view(-1, 1, 1, 1), noise, images), ctx


def generation(model: nn.Module) -> str:
    """The MAE decoder's one-pass prediction of the removed patches."""
    return "mae-decoder"


@torch.no_grad()
def generate(model: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Complete the removed pixels (``mask`` ``[B, H, W]``): decoder output inside the hole, input elsewhere."""
    m = unwrap(model)
    ctx = _ctx(m, images, {"mask": mask}, None, 0.0)
    latent = m.forward_encoder(m.normalize(images), ctx["ids_keep"])
    pred = m.unpatchify(m.forward_decoder(latent, ctx["ids_restore"])) * m.pixel_std + m.pixel_mean
    return torch.where(mask.unsqueeze(1), pred, images).clamp(0.0, 1.0)


def own_loss(
    model: nn.Module,
    images: torch.Tensor,
    truth: torch.Tensor,
    ctx: dict | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """MAE's own objective per sample, for the full-model baselines (App. C.6, Eqs. C.28 / C.31 / C.34 "with the
    original loss function"): the decoder completes T(``images``) and its removed patches are scored against
    ``truth`` (normalised pixels): MSE averaged over each image's removed patches -> ``[B]``."""
    m = unwrap(model)
    ctx = _ctx(m, images, ctx, generator, m.mask_ratio)
    pred = model(images, ctx["ids_keep"], ctx["ids_restore"])  # [B, L, p*p*3]
    target = m.patchify(m.normalize(truth))
    removed = patch_mask(ctx["mask"], m.patch_size).to(pred.dtype)  # [B, L]
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
    return (per_patch * removed).sum(dim=1) / removed.sum(dim=1).clamp_min(1.0), ctx


def pretrain_stages(cfg: Config) -> list:
    """One stage: the whole MAE."""

    def params(m: nn.Module) -> Iterable[nn.Parameter]:
        return [p for p in unwrap(m).parameters() if p.requires_grad]  # pos_embed stays fixed

    return [Stage("model", params, cfg.pretrain.epochs, cfg.pretrain.lr)]


def pretrain_mask(
    model: MaskedAutoencoderViT, images: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The pixel mask of one pretraining step: MAE's random masking, or (every other step on average) with
    ``train_masks: mixed`` one I2I task of ``data.masks.PRETRAIN_TASKS`` with a uniformly drawn size, with ``center``
    the center hole of 1/2; the same for the whole batch."""
    b, size, dev = images.shape[0], images.shape[-1], images.device
    task = draw_pretrain_task(generator, dev, model.train_masks)  # drawn with random masks too: one random stream
    if model.train_masks == "random" or task is None:
        return random_patch_mask(b, size, model.patch_size, model.mask_ratio, generator, dev)
    return task_mask(task, b, size, model.patch_size, generator, dev)


def pretrain_loss(
    model: nn.Module, images: torch.Tensor, generator: torch.Generator | None = None, stage: str = "model"
) -> torch.Tensor:
    """MAE's own objective: per-patch MSE in normalised pixel space, averaged over the removed patches (on the
    masks of :func:`pretrain_mask`)."""
    m = unwrap(model)
    ctx = _ctx(m, images, {"mask": pretrain_mask(m, images, generator)}, generator, m.mask_ratio)
    pred = model(images, ctx["ids_keep"], ctx["ids_restore"])  # [B, L, p*p*3]
    target = m.patchify(m.normalize(images))
    removed = patch_mask(ctx["mask"], m.patch_size).float()  # [B, L]
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * removed).sum() / removed.sum()
