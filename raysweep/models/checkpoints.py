"""Loading checkpoints safely: ``torch.load(weights_only=True)``, strict key and shape checks, and messages that
say where official files come from (docs/protocol.md §5)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

OFFICIAL_SOURCES = {
    "mae_visualize_vit_base.pth": "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_base.pth "
    "(facebookresearch/mae, full encoder + decoder under ckpt['model'])",
    "mage-vitb-1600.pth": "Google Drive id 1Q6tbt3v... linked from jpmorganchase/i2i_mage README",
    "vqgan_jax_strongaug.ckpt": "Google Drive id 13S_unB8... linked from jpmorganchase/i2i_mage README",
    "16_Network.pth": "Google Drive id 1lxkcyMc... linked from the README of "
    "jpmorganchase/i2i_Palette-Image-to-Image-Diffusion-Models",
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or of the wrong layout; the message says what to do."""


_SHA_MEMO: dict[tuple, str] = {}


def require_file(path: str | os.PathLike, flag: str = "--checkpoint") -> Path:
    """``path`` as a Path, or :class:`CheckpointError` naming ``flag`` when it is not a file (before any work)."""
    if not Path(path).is_file():
        raise CheckpointError(f"{flag} {str(path)!r} is not a file; give a saved model (e.g. a run's unlearned.pt)")
    return Path(path)


def sha256(path: str | os.PathLike) -> str:
    """Content hash of a file (memoised per path, size and modification time: official files are large)."""
    st = os.stat(path)
    memo = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_MEMO[memo] = h.hexdigest()
    return _SHA_MEMO[memo]


def read_state_dict(path: str | os.PathLike, key: str | None = "model") -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``; ``key`` selects the entry of a wrapping dict when present."""
    p = Path(path).expanduser()
    if not p.is_file():
        src = OFFICIAL_SOURCES.get(p.name)
        hint = (
            f"download it from {src}"
            if src
            else "pass the path of an existing file (model.checkpoint=...) or leave model.checkpoint unset to use the "
            "raysweep-pretrained original"
        )
        raise CheckpointError(f"checkpoint {str(p)!r} not found; {hint}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"checkpoint {str(p)!r} was refused: it holds pickled Python objects besides tensors, which could "
                "run code when loaded (unsafe), and raysweep loads weights only. Use a file that holds only a state "
                "dict (re-save it with torch.save(model.state_dict(), path) where you trust its source)"
            ) from None
        raise CheckpointError(
            f"checkpoint {str(p)!r} could not be read ({type(e).__name__}: {e}); the file is "
            "corrupt, truncated or not a PyTorch state dict - download it again"
        ) from e
    except Exception as e:  # noqa: BLE001 - re-raised with the cause attached
        raise CheckpointError(
            f"checkpoint {str(p)!r} could not be read ({type(e).__name__}: {e}); the file is "
            "corrupt, truncated or not a PyTorch state dict - download it again"
        ) from e
    if isinstance(obj, Mapping) and key and key in obj and isinstance(obj[key], Mapping):
        obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {str(p)!r} does not hold a state dict of tensors"
            + (f" (nor one under {key!r})" if key else "")
        )
    return dict(obj)


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, layout: str) -> None:
    """Load ``state`` into ``model`` requiring identical keys and shapes; the error lists what differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:

        def few(xs: list[str]) -> str:
            return ", ".join(xs[:6]) + (f" ... (+{len(xs) - 6})" if len(xs) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(
                "shape mismatches: " + few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes])
            )
        raise CheckpointError(
            f"{source} does not match the {layout} layout ({'; '.join(parts)}); check that "
            "model.family and model.preset match the checkpoint"
        )
    model.load_state_dict(state, strict=True)


def save_atomic(obj: object, path: str | os.PathLike) -> None:
    """torch.save through a temporary file, so that a crash never leaves a half-written cache entry.

    The bytes depend only on ``obj``: torch.save names the archive after the file it writes to, so it writes to a
    buffer (archive name "archive") first; equal weights then give equal sha256 whatever the file or process."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(p)
