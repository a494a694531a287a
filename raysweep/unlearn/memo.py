"""The teacher's outputs, shared between the trials of a sweep (content-addressed, on disk).

Eq. 10's target is the frozen original's embedding of the step's inputs: of x_r for retain rows, of the noise n for
forget rows, under the student's masks. A quarter of an MAE step's FLOPs is that teacher forward
(``benchmarks/step_flops.py``). The trials of a sweep that share the seed and the noise type feed the teacher the very
same inputs -- the data order, the masks and the noise come from the seeded stream of :func:`raysweep.train.fit`, not
from alpha, the lr or the epoch count -- so the first such trial computes each output and writes it, the later ones
read it.

The key of an output hashes everything that decides it: the teacher's weights and buffers, the model settings, the
code of the models (:func:`raysweep.cache.fingerprint`, so a code change is never served a stale output), the torch
build, the device, the thread count and the autocast state, and the bytes of every input tensor and context value.
A hit is therefore what the teacher would have computed, bit for bit (``tests/test_memo.py`` checks that a run with
the memo and one without end at the same weights). The memo stops writing at ``limit_bytes`` (it still reads).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raysweep.cache import fingerprint

log = logging.getLogger(__name__)
# the code a teacher's forward can run through (MAGE's goes through the VQ-GAN and the MAE layout, Palette's the UNet)
_CODE = tuple(f"raysweep.models.{m}" for m in ("mae", "mage", "vqgan", "palette", "unet")) + ("raysweep.unlearn.memo",)


def _update(h: Any, obj: Any) -> None:
    """Feed ``obj`` (tensors, numbers, strings, None, and lists / tuples / dicts of them) into ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous().cpu()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"D")
        for k in sorted(obj):
            h.update(repr(k).encode())
            _update(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _update(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(repr(obj).encode())
    else:
        raise TypeError(f"teacher memo: cannot hash a {type(obj).__name__} in the teacher's inputs")


@dataclass
class TeacherMemo:
    root: Path  # <sweep>/teacher-memo/<namespace>
    limit_bytes: int
    hits: int = 0
    misses: int = 0
    _full: bool = False  # the folder reached limit_bytes (or the disk refused a write): read-only from then on

    @classmethod
    def open(cls, root: str | Path, teacher: nn.Module, family: str, model_settings: dict, limit_gb: float):
        """The memo of this teacher (weights, settings, family code, torch build) under ``root``."""
        h = hashlib.sha256()
        h.update(
            json.dumps(
                {
                    "family": family,
                    "model": model_settings,
                    "code": fingerprint(_CODE),
                    "torch": torch.__version__,
                },
                sort_keys=True,
                default=str,
            ).encode()
        )
        _update(h, dict(teacher.state_dict()))
        return cls(Path(root) / h.hexdigest()[:16], int(limit_gb * 2**30))

    def _used(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*.pt"))

    def __call__(self, compute: Callable[[], Any], *inputs: Any) -> Any:
        """``compute()`` (the teacher's forward on ``inputs``), or its output stored by an earlier call."""
        dev = next((t.device for t in inputs if isinstance(t, torch.Tensor)), torch.device("cpu"))
        h = hashlib.sha256()
        _update(
            h,
            [
                str(dev),
                torch.get_num_threads(),
                torch.is_autocast_enabled(dev.type),
                str(torch.get_autocast_dtype(dev.type)),
            ],
        )
        _update(h, list(inputs))
        key = h.hexdigest()
        path = self.root / key[:2] / f"{key}.pt"
        if path.is_file():
            self.hits += 1
            return torch.load(path, map_location=dev, weights_only=True)
        out = compute()
        self.misses += 1
        if self.misses == 1 or self.misses % 256 == 0:  # re-count the folder now and then (other trials write too)
            self._full = self._used() >= self.limit_bytes
        if not self._full:
            self._write(out, path)
        return out

    def _write(self, out: Any, path: Path) -> None:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(fd)
            torch.save(out, tmp)
            os.replace(tmp, path)  # atomic: a reader never sees half a file
        except OSError as e:  # a full disk costs the sharing, not the trial
            self._full = True
            log.warning("teacher memo: stopped writing to %s (%s); this trial computes the rest itself", self.root, e)
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)
