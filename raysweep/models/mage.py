"""MAGE family (Li et al., 2023): a frozen VQ-GAN tokenizer, a masked-token ViT encoder and decoder whose output
layer is tied to the encoder's word embeddings, laid out as ``models_mage.py`` of LTH14/mage and
jpmorganchase/i2i_mage so that ``mage-vitb-1600.pth`` loads strictly (docs/protocol.md §5.1).

- **Encoder** (what unlearning trains, docs/protocol.md §1.1): ``token_emb`` (BERT embeddings: word + position +
  LayerNorm), ``blocks``, ``norm``. The latent compared by Eq. 10 is the ``norm`` output over the kept (not
  dropped) tokens, ``[B, 1+K, D]``; ``ctx`` holds the drop / mask positions so that the teacher uses the same ones,
  and the teacher tokenizes its own input (the noise image for forget rows) with the same frozen VQ-GAN.
- **Decoder** (frozen): decoder_embed, decoder_pos_embed_learned, decoder_blocks, decoder_norm, mlm_layer. As in
  the official code, the MLM output layer multiplies by the *encoder's* word embeddings, so training the encoder
  also moves the decoder's logits. ``model.options.untie_decoder: true`` pins the decoder to a frozen copy of the
  original's word embeddings instead, which keeps the decoder bit-identical (an option; the default is the
  official tied behaviour).
- **generate** = MaskGIT iterative decoding (cosine schedule, Gumbel-noised confidence with temperature
  ``choice_temperature * (1 - r)``, tokens sampled from the logits, seed fixed) on the full sequence, then the
  VQ-GAN decoder, then compositing: known pixels are kept, the hole gets the generated pixels (official §4.1).
- ``patch_embed``, ``cls_token``, ``pos_embed``, ``decoder_pos_embed``, ``mask_token`` and ``decoder_pred`` exist
  only because the official state dict has them; the forward pass never uses them (as in the official code).

Pretraining of the embedded default has two stages (:func:`pretrain_stages`): the tokenizer (reconstruction, see
:mod:`raysweep.models.vqgan`), then the transformer on its tokens with MAGE's variable masking ratio (truncated
normal mu 0.55, std 0.25 on [0.5, 1]), 50% token dropping and label-smoothed (0.1) cross-entropy on masked tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from raysweep.config import Config, ModelConfig
from raysweep.data.masks import check_pretrain_masks, draw_pretrain_task, task_mask
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
from raysweep.models.mae import IMAGENET_MEAN, IMAGENET_STD, ViTOverrides, init_vit_layout
from raysweep.models.mae import forget_input as _mae_forget_input
from raysweep.models.vqgan import PRESETS as VQ_PRESETS
from raysweep.models.vqgan import VQGAN, tokenizer_loss

PRESETS = {
    # 32 px, 8x8 tokens (tokenizer downsamples by 4)
    "tiny": dict(
        img_size=32, embed_dim=192, depth=6, num_heads=3, decoder_embed_dim=192, decoder_depth=2, decoder_num_heads=3
    ),
    # mage_vit_base_patch16 (official)
    "vit_base": dict(
        img_size=256,
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=768,
        decoder_depth=8,
        decoder_num_heads=16,
    ),
}


@dataclass(frozen=True)
class Options(ViTOverrides):
    """MAGE's ``model.options``. Fields marked ``UNLEARN_ONLY`` change only how the original is unlearned or
    evaluated, never how it is pretrained; the architecture (:class:`ViTOverrides`) and ``tok_*`` (tokenizer) fields
    override the preset's value when set."""

    mask_ratio_min: float = 0.5  # MAGE's truncated-Gaussian masking ratio while pretraining
    mask_ratio_max: float = 1.0
    mask_ratio_mu: float = 0.55
    mask_ratio_std: float = 0.25
    # transformer pretraining masks: random = MAGE's own only (official); mixed = about half the steps one of the
    # paper's I2I tasks instead (data.masks.PRETRAIN_TASKS, token masks as the evaluation builds them), as MAE and
    # Palette pretrain (docs/results.md, stop 39: without them the original never trains on the evaluated task);
    # center = about half the steps the center hole of 1/2 itself, as Palette's mixed puts it in half its rows
    train_masks: str = "random"
    emb_dropout: float = field(default=0.0, metadata=TRAINING_ONLY)  # off in eval()
    decode_steps: int = field(default=20, metadata=UNLEARN_ONLY)  # MaskGIT iterations
    choice_temperature: float = field(default=6.0, metadata=UNLEARN_ONLY)
    token_margin: int = field(default=1, metadata=UNLEARN_ONLY)  # tokens of margin around the hole
    pixel_mean: tuple[float, ...] = field(default=IMAGENET_MEAN, metadata=UNLEARN_ONLY)
    pixel_std: tuple[float, ...] = field(default=IMAGENET_STD, metadata=UNLEARN_ONLY)
    untie_decoder: bool = field(default=False, metadata=UNLEARN_ONLY)
    tokenizer_checkpoint: str | None = None  # vqgan_jax_strongaug.ckpt, when the MAGE file lacks the tokenizer
    tokenizer_epochs: int | None = None  # pretraining's tokenizer stage (default: pretrain.epochs)
    tokenizer_lr: float | None = None  # (default: pretrain.lr)
    restart_every: int = 100  # dead-code restarts of the codebook, every N steps
    tok_ch: int | None = None
    tok_ch_mult: tuple[int, ...] | None = None
    tok_num_res_blocks: int | None = None
    tok_z_channels: int | None = None
    tok_n_embed: int | None = None

    def __post_init__(self):
        lo, hi, std = self.mask_ratio_min, self.mask_ratio_max, self.mask_ratio_std
        if not (0.0 < lo <= hi <= 1.0 and std > 0):
            raise ValueError(
                f"model.options mask ratios min={lo}, max={hi}, std={std} must satisfy 0 < min <= max <= 1 and std > 0"
            )
        check_pretrain_masks(self.train_masks)
        if self.decode_steps < 1 or self.token_margin < 0:
            raise ValueError("model.options.decode_steps must be >= 1 and token_margin >= 0")


OPTIONS = option_names(Options)
UNLEARN_OPTIONS = unlearn_only(Options)
TRAINING_OPTIONS = training_only(Options)
PAPER_OPTIMIZER = "adamw"  # App. B, "VQ-GAN & MAE": AdamW, betas (0.9, 0.95), no weight decay
NUM_CLASS_TOKENS = 1000  # the official vocabulary: codebook + 1000 class ids + [MASK]


class BertEmbeddings(nn.Module):
    """Word + position embeddings, LayerNorm, dropout (official ``BertEmbeddings``)."""

    def __init__(self, vocab_size: int, dim: int, max_positions: int, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(max_positions, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("position_ids", torch.arange(max_positions).expand((1, -1)))
        nn.init.normal_(self.word_embeddings.weight, std=0.02)
        nn.init.normal_(self.position_embeddings.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, D]
        pos = self.position_embeddings(self.position_ids[:, : ids.shape[1]])
        return self.dropout(self.LayerNorm(self.word_embeddings(ids) + pos))


class MlmLayer(nn.Module):
    """Decoder features -> logits over the vocabulary through the (tied) word embeddings."""

    def __init__(self, feat_dim: int, word_dim: int, vocab_size: int):
        super().__init__()
        self.fc = nn.Linear(feat_dim, word_dim)
        self.ln = nn.LayerNorm(word_dim)
        self.bias = nn.Parameter(torch.zeros(1, 1, vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return self.ln(F.gelu(self.fc(x))) @ word_embeddings.t() + self.bias


class MaskedGenerativeEncoderViT(nn.Module):
    def __init__(
        self,
        vqgan: VQGAN,
        img_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        decoder_embed_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
        mlp_ratio: float = 4.0,
        emb_dropout: float = 0.0,
        untie_decoder: bool = False,
    ):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.vqgan = vqgan.requires_grad_(False)
        self.grid = img_size // vqgan.downsample
        n = self.grid**2
        self.codebook_size = vqgan.n_embed
        vocab = self.codebook_size + NUM_CLASS_TOKENS + 1
        self.fake_class_label = self.codebook_size + 1100 - 1024  # official: 1100 with a 1024 codebook
        self.mask_token_label = vocab - 1
        self.token_emb = BertEmbeddings(vocab, embed_dim, n + 1, emb_dropout)
        # present in the official state dict, unused by the forward pass
        self.patch_embed = PatchEmbed(img_size, vqgan.downsample, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]
        )
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            [
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, vqgan.downsample**2 * 3)
        self.mlm_layer = MlmLayer(decoder_embed_dim, embed_dim, vocab)
        self._init_weights()
        self.untied = untie_decoder
        if untie_decoder:  # the decoder's own frozen copy of the original's word embeddings
            self.register_buffer("decoder_word_embeddings", self.token_emb.word_embeddings.weight.detach().clone())
            self._register_load_state_dict_pre_hook(_fill_untied, with_module=True)
        # settings (not weights)
        self.mask_ratio = dict(min=0.5, max=1.0, mu=0.55, std=0.25)
        self.train_masks = "random"
        self.decode_steps, self.choice_temperature, self.token_margin = 20, 6.0, 1
        self.pixel_mean, self.pixel_std = IMAGENET_MEAN, IMAGENET_STD

    @property
    def patch_size(self) -> int:
        """Pixels per token side (random-task masks are drawn per token)."""
        return self.vqgan.downsample

    def _init_weights(self) -> None:
        init_vit_layout(self, (m for name, m in self.named_modules() if not name.startswith("vqgan")))

    # ---- pieces -------------------------------------------------------------------------------------
    def with_class_token(self, ids: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, 1+L]
        cls = torch.full((ids.shape[0], 1), self.fake_class_label, dtype=torch.long, device=ids.device)
        return torch.cat([cls, ids], dim=1)

    def forward_encoder(self, ids: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, 1+L]`` ([MASK] already in place) and drop mask ``[B, 1+L]`` (same count per row)
        -> latent ``[B, 1+K, D]`` over the kept tokens."""
        x = self.token_emb(ids)  # [B, 1+L, D]
        keep = (~drop).nonzero(as_tuple=True)
        x = x[keep].view(ids.shape[0], -1, x.shape[-1])  # [B, 1+K, D]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, latent: torch.Tensor, drop: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, 1+K, D]`` -> logits ``[B, 1+L, vocab]``; dropped and masked positions are padded with the
        class token's features (official ``pad_with_cls_token``)."""
        x = self.decoder_embed(latent)
        pad = x[:, :1].expand(-1, drop.shape[1], -1)
        full = pad.clone()
        full[(~drop).nonzero(as_tuple=True)] = x.reshape(-1, x.shape[-1])
        full = torch.where(masked.unsqueeze(-1), pad, full)
        x = full + self.decoder_pos_embed_learned
        for blk in self.decoder_blocks:
            x = blk(x)
        words = self.decoder_word_embeddings if self.untied else self.token_emb.word_embeddings.weight.detach()
        return self.mlm_layer(self.decoder_norm(x), words)

    def forward(self, images: torch.Tensor, ctx: dict, decode: bool = False):
        """Through DDP's forward: ``ctx["stage"] == "tokenizer"`` trains the VQ-GAN; otherwise images are tokenized
        (frozen), masked by ``ctx`` and encoded; ``decode=True`` also returns the logits."""
        if ctx.get("stage") == "tokenizer":
            return self.vqgan(images)
        ids = ctx["ids"] if "ids" in ctx else self.vqgan.tokenize(filled_images(images, ctx, self.pixel_mean))  # [B, L]
        ids = self.with_class_token(ids.masked_fill(ctx["masked"][:, 1:], self.mask_token_label))
        latent = self.forward_encoder(ids, ctx["drop"])
        return (latent, self.forward_decoder(latent, ctx["drop"], ctx["masked"])) if decode else latent


def _fill_untied(module, state, prefix, *args) -> None:
    """A file without the untied copy (an original, official or raysweep-pretrained): the decoder keeps the
    original's word embeddings."""
    key = prefix + "decoder_word_embeddings"
    if key not in state and prefix + "token_emb.word_embeddings.weight" in state:
        state[key] = state[prefix + "token_emb.word_embeddings.weight"].clone()


def filled_images(images: torch.Tensor, ctx: dict, fill: tuple) -> torch.Tensor:
    """Task masks: the hole is filled with ``pixel_mean`` (ImageNet mean by default) before tokenization
    (official §4.1)."""
    if "mask" not in ctx or not ctx.get("fill_hole", False):
        return images
    value = torch.tensor(fill, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return torch.where(ctx["mask"].unsqueeze(1), value, images)


def _check_size(model: MaskedGenerativeEncoderViT, images: torch.Tensor) -> None:
    side = model.grid * model.vqgan.downsample
    if images.shape[-1] != side or images.shape[-2] != side:
        raise ValueError(
            f"images are {tuple(images.shape[-2:])} but this MAGE takes {side}x{side}; set "
            f"data.image_size={side} or model.options.img_size={images.shape[-1]}"
        )


# ---- masks ----------------------------------------------------------------------------------------
def _truncnorm(m: dict, generator: torch.Generator | None, device: torch.device) -> float:
    """One draw of the MAGE masking ratio: N(mu, std) truncated to [min, max] (inverse CDF)."""
    nd = torch.distributions.Normal(0.0, 1.0)
    lo, hi = (
        nd.cdf(torch.tensor((m["min"] - m["mu"]) / m["std"])),
        nd.cdf(torch.tensor((m["max"] - m["mu"]) / m["std"])),
    )
    u = torch.rand((), generator=generator, device=device).cpu()
    return float(m["mu"] + m["std"] * nd.icdf(lo + u * (hi - lo)).clamp(-30, 30))


def training_masks(
    model: MaskedGenerativeEncoderViT, batch: int, generator: torch.Generator | None, device: torch.device
) -> dict:
    """MAGE pretraining masks (official §1.1): ceil(L * min_ratio) tokens dropped, ceil(L * r) tokens masked with
    r ~ truncated normal; dropped tokens are a subset of the masked ones. Position 0 (class token) is never masked."""
    n = model.grid**2
    rate = _truncnorm(model.mask_ratio, generator, device)
    n_drop, n_mask = math.ceil(n * model.mask_ratio["min"]), math.ceil(n * rate)
    ranks = torch.rand(batch, n, generator=generator, device=device).argsort(1).argsort(1)  # [B, L]
    zero = torch.zeros(batch, 1, dtype=torch.bool, device=device)
    return {"drop": torch.cat([zero, ranks < n_drop], 1), "masked": torch.cat([zero, ranks < n_mask], 1)}


def pretrain_masks(model: MaskedGenerativeEncoderViT, images: torch.Tensor, generator: torch.Generator | None) -> dict:
    """The token masks of one transformer pretraining step: MAGE's own (:func:`training_masks`) or, with
    ``train_masks: mixed``, in about half the steps an I2I task's (:func:`task_token_masks` of a
    ``data.masks.PRETRAIN_TASKS`` draw, nothing dropped; ``center``: the center hole of 1/2), the same for the whole
    batch."""
    b, dev = images.shape[0], images.device
    if model.train_masks != "random":
        task = draw_pretrain_task(generator, dev, model.train_masks)
        if task is not None:
            return task_token_masks(model, task_mask(task, b, images.shape[-1], model.vqgan.downsample, generator, dev))
    return training_masks(model, b, generator, dev)


def task_token_masks(model: MaskedGenerativeEncoderViT, mask: torch.Tensor) -> dict:
    """A pixel mask ``[B, H, W]`` -> masked tokens: every token touching the hole plus ``token_margin`` tokens
    around it (official §4.1: 1-token margin, because the VQ-GAN's receptive field sees the fill); nothing dropped."""
    f, g = model.vqgan.downsample, model.grid
    tok = mask.view(mask.shape[0], g, f, g, f).any(4).any(2).float()  # [B, g, g]
    if model.token_margin:
        k = 2 * model.token_margin + 1
        tok = F.max_pool2d(tok[:, None], k, stride=1, padding=model.token_margin)[:, 0]
    masked = tok.flatten(1).bool()
    zero = torch.zeros(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
    masked = torch.cat([zero, masked], 1)
    return {"mask": mask, "fill_hole": True, "masked": masked, "drop": torch.zeros_like(masked)}


def _ctx(
    model: MaskedGenerativeEncoderViT, images: torch.Tensor, ctx: dict | None, generator: torch.Generator | None
) -> dict:
    _check_size(model, images)
    if ctx is not None and "masked" in ctx:
        return ctx  # the student's masks, shared with the teacher
    if ctx is not None and "mask" in ctx:
        mask = ctx["mask"]
        if mask.shape[-1] != images.shape[-1]:
            raise ValueError(f"mask side {mask.shape[-1]} != image side {images.shape[-1]}")
        return task_token_masks(model, mask)
    return training_masks(model, images.shape[0], generator, images.device)


# ---- the family protocol --------------------------------------------------------------------------
def _tokenizer_kwargs(preset: str, o: Options) -> dict:
    kw = dict(VQ_PRESETS[preset])
    return {k: v if getattr(o, f"tok_{k}") is None else getattr(o, f"tok_{k}") for k, v in kw.items()}


def build(cfg: ModelConfig) -> MaskedGenerativeEncoderViT:
    """A randomly initialised MAGE of ``cfg.preset`` (tokenizer included); ``cfg.checkpoint`` (official layout,
    e.g. mage-vitb-1600.pth) is loaded when given, ``options.tokenizer_checkpoint`` (vqgan_jax_strongaug.ckpt)
    provides the tokenizer when the MAGE file does not hold it."""
    o = parse_options("mage", Options, cfg.options)
    vq = VQGAN(**_tokenizer_kwargs(cfg.preset, o), restart_every=o.restart_every)
    kw = {k: v if getattr(o, k) is None else getattr(o, k) for k, v in PRESETS[cfg.preset].items()}
    if kw["img_size"] % vq.downsample:
        raise ValueError(
            f"model.options.img_size={kw['img_size']} must be a multiple of the tokenizer's "
            f"downsampling factor {vq.downsample}"
        )
    model = MaskedGenerativeEncoderViT(vq, **kw, emb_dropout=o.emb_dropout, untie_decoder=o.untie_decoder)
    model.mask_ratio = dict(min=o.mask_ratio_min, max=o.mask_ratio_max, mu=o.mask_ratio_mu, std=o.mask_ratio_std)
    model.train_masks = o.train_masks
    model.decode_steps, model.choice_temperature, model.token_margin = (
        o.decode_steps,
        o.choice_temperature,
        o.token_margin,
    )
    model.pixel_mean, model.pixel_std = o.pixel_mean, o.pixel_std
    if cfg.checkpoint:
        load_official(model, cfg.checkpoint, o.tokenizer_checkpoint)
    return model


def load_official(model: nn.Module, path: str, tokenizer: str | None = None) -> None:
    """Load ``mage-vitb-1600.pth`` (key ``model``, official §5.1), strictly. Its tokenizer weights (``vqgan.*``)
    come from the same file, or from ``tokenizer`` = ``vqgan_jax_strongaug.ckpt`` (key ``state_dict``)."""
    state = read_state_dict(path, key="model")
    if tokenizer:
        vq = read_state_dict(tokenizer, key="state_dict")
        load_strict(model.vqgan, vq, source=f"tokenizer checkpoint {tokenizer!r}", layout="VQGAN (JAX strongaug port)")
        state = {**{f"vqgan.{k}": v for k, v in vq.items()}, **state}
    if model.untied:
        _fill_untied(model, state, "")
    load_strict(model, state, source=f"checkpoint {path!r}", layout="MAGE MaskedGenerativeEncoderViT")


def encoder_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    """token_emb, blocks, norm (the official choice, §1.1); tokenizer and decoder stay frozen."""
    m = unwrap(model)
    yield from m.token_emb.parameters()
    yield from m.blocks.parameters()
    yield from m.norm.parameters()


def patch_size(model: nn.Module) -> int:
    return unwrap(model).patch_size


def input_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The VQ-GAN reads [0, 1] pixels without normalisation; the Gaussian / uniform noise of Eq. 10 is drawn in
    the space normalised by the data statistics (``pixel_mean`` / ``pixel_std``, ImageNet's by default; the mean
    is also the hole fill) and clamped to [0, 1] by :func:`encode` before tokenization."""
    m = unwrap(model)
    return torch.tensor(m.pixel_mean), torch.tensor(m.pixel_std)


def encode(
    model: nn.Module, images: torch.Tensor, ctx: dict | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict]:
    """Latent ``[B, 1+K, D]`` of images in [0, 1] (``norm`` output over kept tokens). ``ctx`` None = MAGE training
    masks; ``{"mask": [B,H,W]}`` = that task's token masks; an earlier call's ctx = the very same masks."""
    m = unwrap(model)
    ctx = _ctx(m, images, ctx, generator)
    return model(images.clamp(0.0, 1.0), ctx), ctx


# Eq. 10's teacher input: the noise image T(n) for forget rows under the student's token masks, as for MAE
forget_input = _mae_forget_input


def generation(model: nn.Module) -> str:
    """MaskGIT settings, recorded with every metric."""
    m = unwrap(model)
    return f"maskgit-{m.decode_steps}-ct{m.choice_temperature:g}-margin{m.token_margin}"


@torch.no_grad()
def generate(model: nn.Module, images: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """MaskGIT iterative decoding of the masked tokens (official §4.1), VQ-GAN decoding, then compositing."""
    m = unwrap(model)
    _check_size(m, images)
    ctx = task_token_masks(m, mask)
    masked = ctx["masked"][:, 1:]  # [B, L]
    n = masked.shape[1]
    gen = torch.Generator(device=images.device).manual_seed(seed)
    ids = m.vqgan.tokenize(filled_images(images, ctx, m.pixel_mean)).masked_fill(masked, m.mask_token_label)
    rate = masked.float().mean(1)  # [B] masked fraction
    no_drop = torch.zeros(ids.shape[0], n + 1, dtype=torch.bool, device=ids.device)
    for step in range(m.decode_steps):
        r = (step + 1) / m.decode_steps
        ratio = math.cos(math.pi / 2 * r)  # fraction of all tokens still masked after this step
        unknown = ids == m.mask_token_label  # [B, L]
        if not bool(unknown.any()):
            break
        if step < m.decode_steps - 1 and bool((rate <= ratio).all()):
            continue  # official: steps above the masked fraction are skipped
        full = m.with_class_token(ids)
        logits = m.forward_decoder(m.forward_encoder(full, no_drop), no_drop, full == m.mask_token_label)
        logits = logits[:, 1:, : m.codebook_size].float()  # [B, L, K]
        probs = logits.softmax(-1)
        sampled = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=gen).view(ids.shape)
        sampled = torch.where(unknown, sampled, ids)
        conf = torch.gather(probs, -1, sampled[..., None])[..., 0].clamp_min(1e-30).log()
        u = torch.rand(conf.shape, generator=gen, device=conf.device).clamp(1e-20, 1 - 1e-7)
        conf = conf + m.choice_temperature * (1 - r) * -torch.log(-torch.log(u))  # Gumbel noise
        conf = torch.where(unknown, conf, torch.full_like(conf, float("inf")))
        # tokens left masked: floor(L * cos schedule) over all L tokens (official), at least one fewer than now,
        # none after the last step; rows whose masked fraction is below the schedule keep theirs (skipped step)
        n_unknown = unknown.sum(1)  # [B]
        if step == m.decode_steps - 1:
            keep_masked = torch.zeros_like(n_unknown)
        else:
            keep_masked = (n_unknown - 1).clamp(min=0, max=math.floor(n * ratio))
            keep_masked = torch.where(rate <= ratio, n_unknown, keep_masked)
        remask = conf.argsort(1).argsort(1) < keep_masked[:, None]  # least confident first
        ids = torch.where(remask, torch.full_like(ids, m.mask_token_label), sampled)
    out = m.vqgan.decode_ids(ids, m.grid).clamp(0.0, 1.0)
    return torch.where(mask.unsqueeze(1), out, images).clamp(0.0, 1.0)


def pretrain_loss(
    model: nn.Module, images: torch.Tensor, generator: torch.Generator | None = None, stage: str = "transformer"
) -> torch.Tensor:
    """Stage ``tokenizer``: VQ-GAN reconstruction; stage ``transformer``: MAGE's masked-token prediction
    (label-smoothed CE 0.1 over the codebook, averaged over masked tokens).

    The input tokens are what :func:`generate` will see: MAGE's own masks hide tokens of the whole image; an I2I
    task's masks (``train_masks`` mixed / center) hide the tokens of the image whose hole is filled with
    ``pixel_mean``, as at evaluation. The VQ-GAN's receptive field reaches past the 1-token margin, so at 32 px about
    two thirds of the visible tokens around a center hole of 1/2 differ between the two tokenizations (stop 50,
    docs/results.md); the targets are always the whole image's tokens."""
    m = unwrap(model)
    if stage == "tokenizer":
        recon, vq_loss = model(images, {"stage": "tokenizer"})
        return tokenizer_loss(recon, images, vq_loss)
    target = m.vqgan.tokenize(images)  # [B, L]
    masks = pretrain_masks(m, images, generator)
    ctx = masks if masks.get("fill_hole", False) else {**masks, "ids": target}  # forward tokenizes the filled image
    _, logits = model(images, ctx, decode=True)
    logits = logits[:, 1:, : m.codebook_size]
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none", label_smoothing=0.1
    ).view(target.shape)
    w = ctx["masked"][:, 1:].float()
    return (ce * w).sum() / w.sum()


def own_loss(
    model: nn.Module,
    images: torch.Tensor,
    truth: torch.Tensor,
    ctx: dict | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """MAGE's own objective per sample, for the full-model baselines (App. C.6; the official baselines train MAGE's
    token prediction, docs/protocol.md): tokens of T(``images``) in, the masked positions scored against the
    VQ-GAN tokens of ``truth`` (label-smoothed CE 0.1), averaged over each image's masked tokens -> ``[B]``."""
    m = unwrap(model)
    ctx = _ctx(m, images, ctx, generator)
    target = m.vqgan.tokenize(truth.clamp(0.0, 1.0))  # [B, L], frozen tokenizer
    _, logits = model(images.clamp(0.0, 1.0), ctx, decode=True)
    logits = logits[:, 1:, : m.codebook_size].float()
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none", label_smoothing=0.1
    ).view(target.shape)
    w = ctx["masked"][:, 1:].float()
    return (ce * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0), ctx


def pretrain_stages(cfg: Config) -> list[Stage]:
    """Tokenizer first (its own epochs / lr from the options), then the transformer with the tokenizer frozen."""
    o = parse_options("mage", Options, cfg.model.options)

    def tokenizer_params(model: nn.Module) -> Iterable[nn.Parameter]:
        return unwrap(model).vqgan.parameters()

    def transformer_params(model: nn.Module) -> Iterable[nn.Parameter]:
        m = unwrap(model)
        used = (m.token_emb, m.blocks, m.norm, m.decoder_embed, m.decoder_blocks, m.decoder_norm, m.mlm_layer)
        for mod in used:
            yield from mod.parameters()
        yield m.decoder_pos_embed_learned

    return [
        Stage(
            "tokenizer",
            tokenizer_params,
            cfg.pretrain.epochs if o.tokenizer_epochs is None else o.tokenizer_epochs,
            cfg.pretrain.lr if o.tokenizer_lr is None else o.tokenizer_lr,
        ),
        Stage("transformer", transformer_params, cfg.pretrain.epochs, cfg.pretrain.lr),
    ]
