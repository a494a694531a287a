"""The guided-diffusion UNet of Palette (``models/guided_diffusion_modules/unet.py`` of Janspiry/Palette and
jpmorganchase/i2i_Palette), with the same module names so that ``16_Network.pth`` loads strictly
(docs/protocol.md §5.2): ``cond_embed`` (MLP on the sinusoidal embedding of the noise level gamma),
``input_blocks`` (first conv, ResBlocks, down-ResBlocks), ``middle_block`` (ResBlock, attention, ResBlock),
``output_blocks``, ``out``. Scale-shift norm and resblock up/down as in the Places2 config; attention only where
``attn_res`` says (the official config ends up with attention in the middle block only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gamma_embedding(gammas: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Sinusoidal embedding ``[N, dim]`` of the (continuous) noise levels ``[N]`` (Palette's gamma_embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=gammas.device) / half)
    args = gammas[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) with statistics in fp32 (the official GroupNorm32), also for bf16 / fp16 activations.

    Under autocast, a half-precision map is normalised by the native kernel in its own dtype (it accumulates the
    statistics in fp32) instead of being copied up to fp32 and back: those two full-resolution copies per norm were
    21 % of a 256 px Palette bf16 step on the GPU (profiled, docs/benchmarks.md). fp32 inputs take the old path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.bfloat16, torch.float16):
            with torch.autocast(x.device.type, enabled=False):
                w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
                return F.group_norm(x, self.num_groups, w, b, self.eps)
        return super().forward(x.float()).type(x.dtype)


def _norm(c: int) -> nn.GroupNorm:
    return GroupNorm32(32, c)


def _zero(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """Residual block with the noise-level embedding applied as scale and shift of the second norm."""

    def __init__(
        self, cin: int, emb: int, dropout: float, cout: int | None = None, up: bool = False, down: bool = False
    ):
        super().__init__()
        cout = cout or cin
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.up, self.down = up, down
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * cout))
        self.out_layers = nn.Sequential(
            _norm(cout), nn.SiLU(), nn.Dropout(dropout), _zero(nn.Conv2d(cout, cout, 3, padding=1))
        )
        self.skip_connection = nn.Identity() if cout == cin else nn.Conv2d(cin, cout, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if not self.down:
            return x
        # 2x2 mean as a reshape + mean (avg_pool2d's CUDA backward took 5 % of a 256 px Palette step, profiled)
        b, c, h, w = x.shape
        return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.up or self.down:
            h = self.in_layers[2](self._resample(self.in_layers[1](self.in_layers[0](x))))
            x = self._resample(x)
        else:
            h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).type(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over positions (QKVAttentionLegacy), ``num_head_channels`` channels per head."""

    def __init__(self, c: int, head_channels: int):
        super().__init__()
        self.heads = max(1, c // head_channels)
        self.norm = _norm(c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj_out = _zero(nn.Conv1d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *sp = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # [B, 3C, T]
        ch = c // self.heads
        # the legacy layout: per head, q, k and v are consecutive blocks of ch channels
        # [B, heads, T, 3ch] made contiguous: the fused kernels need unit stride along ch (else: the slow math path)
        q, k, v = qkv.reshape(b, self.heads, 3 * ch, -1).transpose(2, 3).contiguous().split(ch, dim=-1)
        # softmax(q k^T / sqrt(ch)) v, as QKVAttentionLegacy, through PyTorch's fused (flash / memory-efficient)
        # kernel: the T x T weights (T = 1024 at 256 px) are never materialised
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, T, ch]
        h = h.transpose(2, 3).reshape(b, c, -1)
        return (x + self.proj_out(h)).reshape(b, c, *sp)


class EmbedSequential(nn.Sequential):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    def __init__(
        self,
        in_channel: int,
        inner_channel: int,
        out_channel: int,
        res_blocks: int,
        attn_res: tuple = (),
        dropout: float = 0.0,
        channel_mults: tuple = (1, 2, 4, 8),
        num_head_channels: int = 32,
    ):
        super().__init__()
        self.inner_channel = inner_channel
        emb = inner_channel * 4
        self.cond_embed = nn.Sequential(nn.Linear(inner_channel, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = int(channel_mults[0] * inner_channel)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channel, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, mult in enumerate(channel_mults):
            for _ in range(res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, dropout, int(mult * inner_channel))]
                ch = int(mult * inner_channel)
                if ds in attn_res:
                    layers.append(AttentionBlock(ch, num_head_channels))
                self.input_blocks.append(EmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mults) - 1:
                self.input_blocks.append(EmbedSequential(ResBlock(ch, emb, dropout, ch, down=True)))
                chans.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(
            ResBlock(ch, emb, dropout), AttentionBlock(ch, num_head_channels), ResBlock(ch, emb, dropout)
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mults))[::-1]:
            for i in range(res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, dropout, int(inner_channel * mult))]
                ch = int(inner_channel * mult)
                if ds in attn_res:
                    layers.append(AttentionBlock(ch, num_head_channels))
                if level and i == res_blocks:
                    layers.append(ResBlock(ch, emb, dropout, ch, up=True))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channel, 3, padding=1)))

    def encode(self, x: torch.Tensor, gammas: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The encoder (official §1.2): every input block's output and the middle block's, plus the embedding."""
        emb = self.cond_embed(gamma_embedding(gammas.view(-1), self.inner_channel))
        hs, h = [], x.float()
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        hs.append(self.middle_block(h, emb))
        return hs, emb

    def decode(self, hs: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """The decoder: output blocks with the skip connections, then ``out``."""
        skips, h = hs[:-1], hs[-1]
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    def forward(self, x: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
        hs, emb = self.encode(x, gammas)
        return self.decode(hs, emb)
