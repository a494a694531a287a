"""The VQ-GAN tokenizer of MAGE, laid out as the JAX "strongaug" port that the official code loads
(``vqgan_jax_strongaug.ckpt``, docs/protocol.md §5.1): taming-transformers' Encoder / Decoder without attention,
bias-free 3x3 convolutions in the residual blocks, average-pool downsampling, no quant_conv / post_quant_conv,
and a plain nearest-neighbour codebook ``quantize.embedding``. Images go in and come out in [0, 1].

For the embedded default raysweep trains a ``tiny`` tokenizer itself (MAGE pretraining stage 1, see
:func:`tokenizer_loss`): L1 + L2 reconstruction with the VQ-VAE codebook and commitment terms (beta 0.25, as
taming's VectorQuantizer2), the codebook initialised from encoder outputs and dead codes restarted on encoder
outputs so that the whole codebook stays in use. There is no perceptual (LPIPS) term: its VGG weights cannot be
downloaded here, and the in-domain classifier that could replace it is the FID feature extractor (training against
it would flatter the metric).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

PRESETS = {
    # 32 px -> 8x8 tokens (two 2x downsamplings), like the tiny MAE's 8x8 patch grid
    "tiny": dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, z_channels=64, n_embed=512),
    # official config/vqgan.yaml: 256 px -> 16x16 tokens
    "vit_base": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256, n_embed=1024),
}


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32 if c % 32 == 0 else 1, num_channels=c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """The JAX port's residual block: note that its 1x1 shortcut is applied to the block output ``h`` (not to
    the input), and that it exists only where the channel count changes."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(h) if self.nin_shortcut is not None else x) + h


class _Level(nn.Module):
    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            self.add_module(name, resample)


class _Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1, self.block_2 = ResnetBlock(c, c), ResnetBlock(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.block_1(x))


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple, num_res_blocks: int, z_channels: int, in_channels: int = 3):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1, bias=False)
        levels, cin = [], ch
        for i, m in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(cin, ch * m))
                cin = ch * m
            last = i == len(ch_mult) - 1
            levels.append(_Level(blocks, None if last else nn.AvgPool2d(2, 2), "downsample"))
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, z, H/f, W/f]
        h = self.conv_in(x)
        for level in self.down:
            for blk in level.block:
                h = blk(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple, num_res_blocks: int, z_channels: int, out_ch: int = 3):
        super().__init__()
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin)
        up = []
        for i in reversed(range(len(ch_mult))):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(cin, ch * ch_mult[i]))
                cin = ch * ch_mult[i]
            up.insert(0, _Level(blocks, _Upsample(cin) if i != 0 else None, "upsample"))
        self.up = nn.ModuleList(up)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [B, z, h, w] -> [B, 3, H, W]
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for blk in level.block:
                h = blk(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook (taming's VectorQuantizer2 without remapping): returns the straight-through
    quantised map, the codebook + beta * commitment loss, and the code ids ``[B, h, w]``.

    Training aids for the embedded default (no effect on inference or on the official weights): the first training
    call initialises the codebook from encoder outputs, and every ``restart_every`` training calls codes unused
    since the last restart are moved onto random encoder outputs. Under DDP rank 0 decides and broadcasts, so the
    replicas stay identical.
    """

    def __init__(self, n_embed: int, dim: int, beta: float = 0.25, restart_every: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)
        self.beta, self.restart_every = beta, restart_every
        # training state only: non-persistent, so the official key layout stays exact
        self.register_buffer("usage", torch.zeros(n_embed), persistent=False)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long), persistent=False)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Code ids ``[B, h, w]`` of encoder output ``z`` ``[B, D, h, w]``."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # [N, D]
        w = self.embedding.weight
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ w.t() + w.pow(2).sum(1)[None]
        return d.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids ``[B, h, w]`` -> quantised map ``[B, D, h, w]``."""
        return self.embedding(ids).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def _maintain(self, z: torch.Tensor, ids: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).detach()
        w = self.embedding.weight
        # initialise from data once: only while the codebook is still at its uniform init (a run resumed from a
        # checkpoint keeps its trained codebook; the call counter is not part of the state dict)
        first = int(self.calls) == 0 and bool(w.abs().max() <= 1.0 / w.shape[0])
        self.calls += 1
        self.usage += torch.bincount(ids.flatten(), minlength=w.shape[0]).to(self.usage)
        if not first and (not self.restart_every or int(self.calls) % self.restart_every):
            return
        dead = torch.ones_like(self.usage, dtype=torch.bool) if first else self.usage == 0
        if bool(dead.any()):
            pick = torch.randint(0, flat.shape[0], (int(dead.sum()),), device=flat.device)
            w.data[dead] = (flat[pick] + 1e-3 * torch.randn_like(flat[pick])).to(w.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(w.data, src=0)
        self.usage.zero_()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.codes(z)
        if self.training and self.restart_every:
            self._maintain(z, ids)
            ids = self.codes(z)
        zq = self.lookup(ids)
        loss = F.mse_loss(zq, z.detach()) + self.beta * F.mse_loss(z, zq.detach())
        return z + (zq - z).detach(), loss, ids


class VQGAN(nn.Module):
    """Encoder -> codebook -> decoder; ``downsample`` = image side / token grid side."""

    def __init__(
        self, ch: int, ch_mult: tuple, num_res_blocks: int, z_channels: int, n_embed: int, restart_every: int = 0
    ):
        super().__init__()
        self.encoder = Encoder(ch, tuple(ch_mult), num_res_blocks, z_channels)
        self.decoder = Decoder(ch, tuple(ch_mult), num_res_blocks, z_channels)
        self.quantize = VectorQuantizer(n_embed, z_channels, restart_every=restart_every)
        self.downsample = 2 ** (len(ch_mult) - 1)
        self.n_embed = n_embed

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> code ids ``[B, (H/f)*(W/f)]``."""
        return self.quantize.codes(self.encoder(images)).flatten(1)

    def decode_ids(self, ids: torch.Tensor, grid: int) -> torch.Tensor:
        """Code ids ``[B, grid*grid]`` -> images ``[B, 3, H, W]`` (unclamped)."""
        return self.decoder(self.quantize.lookup(ids.view(ids.shape[0], grid, grid)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and VQ loss (tokenizer training)."""
        zq, vq_loss, _ = self.quantize(self.encoder(images))
        return self.decoder(zq), vq_loss


def tokenizer_loss(recon: torch.Tensor, images: torch.Tensor, vq_loss: torch.Tensor) -> torch.Tensor:
    """Stage-1 objective: L1 + L2 reconstruction in [0, 1] pixels + the VQ codebook / commitment loss."""
    return F.l1_loss(recon, images) + F.mse_loss(recon, images) + vq_loss
