"""Where one unlearning step's arithmetic goes: FLOPs of the student's forward, the frozen teacher's forward and the
rest (the student's backward, the loss), per mask kind of the step, counted by ``torch.utils.flop_counter``.

A sweep's trials spend most of their time in this step (docs/results.md), so its split says what a change could
save: e.g. the teacher's share is the most that sharing its outputs between trials could remove.

    python benchmarks/step_flops.py [--config mae_fmnist] [--batch 64] [key=value ...]

Random weights (FLOPs do not depend on them), random images, half of the batch forget rows, the config's
``unlearn`` settings; CPU, one thread. Prints one line per mask kind and returns 0.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from raysweep.cli import parse_args
from raysweep.config import Config, load_config
from raysweep.models import get_family
from raysweep.unlearn.losses import METHODS
from raysweep.unlearn.step import UnlearnStep


@dataclass
class Split:
    kind: str  # "random" (the family's own masks) or "task" (the evaluation task's hole)
    total: float  # FLOPs of the whole step: forward, teacher, backward
    student: float  # the student's forward
    teacher: float  # the teacher's forward


class _CountingFamily:
    """The family module with ``encode`` wrapped so that each call's FLOPs are attributed to student or teacher."""

    def __init__(self, family, teacher: torch.nn.Module):
        self._family, self._teacher, self.counts = family, teacher, {}

    def __getattr__(self, name):
        return getattr(self._family, name)

    def encode(self, model, *args, **kwargs):
        with FlopCounterMode(display=False) as fc:
            out = self._family.encode(model, *args, **kwargs)
        self.counts["teacher" if model is self._teacher else "student"] += fc.get_total_flops()
        return out


def measure(cfg: Config, batch: int) -> list[Split]:
    """One step of each mask kind (a ``mixed`` step alternates them) of ``cfg.unlearn.method`` on ``batch`` rows."""
    torch.set_num_threads(1)
    family = get_family(cfg.model.family)
    torch.manual_seed(cfg.seed)
    student, teacher = family.build(cfg.model), family.build(cfg.model).eval()
    teacher.requires_grad_(False)
    size = cfg.data.image_size
    images = torch.rand(batch, 3, size, size)
    is_forget = torch.arange(batch) % 2 == 0
    gen = torch.Generator().manual_seed(cfg.seed)
    counting = _CountingFamily(family, teacher)
    mode = cfg.unlearn.train_mask
    rows = []
    for kind in ["random", "task"] if mode == "mixed" else [mode]:
        u = replace(cfg.unlearn, train_mask=kind)
        step = UnlearnStep(counting, METHODS[cfg.unlearn.method], teacher, u, cfg.eval.task)
        counting.counts = {"student": 0.0, "teacher": 0.0}
        with FlopCounterMode(display=False) as fc:
            step(student, (images, is_forget), gen)["loss"].backward()
        student.zero_grad(set_to_none=True)
        rows.append(Split(kind, fc.get_total_flops(), counting.counts["student"], counting.counts["teacher"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="mae_fmnist")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("overrides", nargs="*")
    args = parse_args(p, argv)
    cfg = load_config(args.config, args.overrides)
    m, u = cfg.model, cfg.unlearn
    print(f"unlearning step FLOPs, {m.family}/{m.preset}, method {u.method}, batch {args.batch}")
    for r in measure(cfg, args.batch):
        line = f"  {r.kind:6s} masks: {r.total / args.batch / 1e6:8.1f} MFLOP/image"
        if r.student:  # the embedding methods; the App. C.6.1-C.6.3 baselines run the whole model in one loss
            rest = r.total - r.student - r.teacher
            line += (
                f"   student forward {r.student / r.total:5.1%}   teacher forward {r.teacher / r.total:5.1%}"
                f"   backward + loss {rest / r.total:5.1%}"
            )
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
