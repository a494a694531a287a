"""One unlearning step, what the loop calls with ``(model, batch, generator)``: Eq. 10 (``ours``) or one of the
App. C.6 baselines, on a batch of ``(images, is_forget)``.

``train_mask`` decides the hole of the step (the family's own training masks, the evaluation task's, both
alternating, or the pretraining mixture of :func:`~raysweep.data.masks.draw_pretrain_task`: own masks or one I2I task
at a random size, so the encoder is constrained on every kind of context without training on the evaluated hole
alone); the noise n of Eq. 10 is drawn in the model's normalised input space
(:func:`~raysweep.unlearn.noise.sample_noise`); the frozen teacher (the original) sees the student's masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from raysweep.config import TaskConfig, UnlearnConfig
from raysweep.data.masks import draw_pretrain_task, kept_patches, task_mask
from raysweep.unlearn.losses import Method, objective, ours, random_embedding_target, retain_truth
from raysweep.unlearn.memo import TeacherMemo
from raysweep.unlearn.noise import LowRankSigma, sample_noise


@dataclass
class UnlearnStep:
    family: Any  # a raysweep.models family module (the ModelFamily protocol)
    method: Method
    teacher: nn.Module  # the frozen original
    settings: UnlearnConfig
    task: TaskConfig  # the evaluation task: the hole of task-mask steps
    sigma: LowRankSigma | None = None  # unlearn.noise=lowrank
    memo: TeacherMemo | None = None  # the teacher's outputs shared between a sweep's trials (bit-identical)
    steps: int = field(default=0, init=False)

    def _teacher(self, images: torch.Tensor, ctx: dict | None) -> torch.Tensor:
        """The frozen original's embedding of ``images`` under ``ctx`` (read from the memo when it has it)."""
        if self.memo is None:
            return self.family.encode(self.teacher, images, ctx)[0]
        return self.memo(lambda: self.family.encode(self.teacher, images, ctx)[0], images, ctx)

    def _ctx(self, m: nn.Module, images: torch.Tensor, gen: torch.Generator) -> dict | None:
        """The step's hole: None = the family's own training masks, else a task's mask (the evaluation task, or for
        ``tasks`` one drawn as in pretraining)."""
        self.steps += 1
        mode = self.settings.train_mask
        if mode == "tasks":
            task = draw_pretrain_task(gen, images.device)
        else:
            task = self.task if mode == "task" or (mode == "mixed" and self.steps % 2 == 0) else None
        if task is None:
            return None
        size, patch = images.shape[-1], self.family.patch_size(m)
        mask = task_mask(task, images.shape[0], size, patch, gen, images.device)
        return {"mask": mask, "n_keep": kept_patches(task, size, patch)}

    def __call__(self, m: nn.Module, batch: Any, gen: torch.Generator) -> dict[str, torch.Tensor]:
        images, is_forget = batch
        fam, u = self.family, self.settings
        ctx = self._ctx(m, images, gen)
        mean, std = fam.input_stats(self.teacher)
        if self.method.kind == "objective":  # App. C.6.1-C.6.3: the full model on its own objective
            with torch.no_grad():
                noise = sample_noise(u.noise, images, mean, std, gen, self.sigma)
                truth = {
                    "images": images,
                    "noise": torch.where(is_forget.view(-1, 1, 1, 1), noise, images),
                    "retain": retain_truth(images, is_forget, noise),
                }[self.method.truth]
            per_sample, ctx = fam.own_loss(m, images, truth, ctx, gen)
            cap = None
            if self.method.sign < 0 and u.max_loss_cap > 0:  # max_loss: bounded by the original's own loss
                with torch.no_grad():
                    cap = u.max_loss_cap * fam.own_loss(self.teacher, images, truth, ctx)[0]
            return objective(per_sample, is_forget, u.alpha, self.method.sign, cap)
        # the student's embedding; ctx tells the family which rows are forget rows (Palette's forget_t_max)
        z, ctx = fam.encode(m, images, {**(ctx or {}), "is_forget": is_forget}, gen)
        hits = self.memo.hits if self.memo is not None else 0
        with torch.no_grad():
            if self.method.name == "random_encoder":  # App. C.6.4: forget rows -> random embeddings
                target = random_embedding_target(self._teacher(images, ctx), is_forget, gen)
            else:  # Eq. 10: the original's embedding of x_r, or of the noise n for forget rows
                noise = sample_noise(u.noise, images, mean, std, gen, self.sigma)
                t_in, t_ctx = fam.forget_input(images, noise, is_forget, ctx, u.noise)
                target = self._teacher(t_in, t_ctx)  # the teacher shares the masks
        out = ours(z, target, is_forget, u.alpha, u.loss_form)
        if self.memo is not None:  # share of steps served from the memo (train/teacher_memo_hit_epoch)
            out["teacher_memo_hit"] = torch.tensor(float(self.memo.hits > hits), device=z.device)
        return out
