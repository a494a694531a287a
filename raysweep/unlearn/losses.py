"""Unlearning methods: Eq. 10 (``ours``) and the paper's four baselines (App. C.6), as pure tensor functions
returning ``{"loss", "retain", "forget"}`` plus a :class:`Method` record saying what each one trains and compares.

Two kinds share the one loop (:func:`raysweep.jobs.unlearn_job` builds the step from the record):

- ``embedding`` methods train the **encoder** and compare embeddings with the frozen original's (``ours``: Eq. 10;
  ``random_encoder``: App. C.6.4, Eq. C.35);
- ``objective`` methods train the **full model** (MAGE's VQ-GAN tokenizer stays frozen) on the family's own
  objective (:meth:`ModelFamily.own_loss`) against a per-row ground truth (``max_loss``: C.6.1, Eqs. C.26-C.28;
  ``retain_label``: C.6.2, C.29-C.31; ``noisy_label``: C.6.3, C.32-C.34).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _per_sample_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).float().pow(2)  # [B, N]


def _group_means(per: torch.Tensor, is_forget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = is_forget.to(per.dtype)
    r = 1.0 - f
    return (per * r).sum() / r.sum().clamp_min(1.0), (per * f).sum() / f.sum().clamp_min(1.0)


def ours(
    student: torch.Tensor, target: torch.Tensor, is_forget: torch.Tensor, alpha: float, form: str = "l2"
) -> dict[str, torch.Tensor]:
    """Eq. 10. ``student`` = E_theta(T(x)) ``[B, ...]``; ``target`` = E_theta0(T(x)) for retain rows and
    E_theta0(T(n)) for forget rows; ``is_forget`` ``[B]`` bool.

    form="l2" (paper, default): mean over the group's samples of the L2 distance ||E - E0||_2, so each term is
    independent of the batch's group mix (Algorithm 1 samples retain and forget in equal numbers).
    form="mse" (official code, docs/protocol.md §1.1/§6.1): per-sample mean of squares, weighted 2 for its own
    group and divided by the full batch size.
    """
    sq = _per_sample_sq(student, target)
    f = is_forget.to(sq.dtype)
    r = 1.0 - f
    if form == "l2":
        dist = sq.sum(dim=1).clamp_min(1e-12).sqrt()  # [B]
        retain, forget = _group_means(dist, is_forget)
    elif form == "mse":
        per = sq.mean(dim=1)
        retain = (2 * r * per).mean()
        forget = (2 * f * per).mean()
    else:
        raise ValueError(f"unknown loss form {form!r}; valid: l2, mse")
    return {"loss": retain + alpha * forget, "retain": retain.detach(), "forget": forget.detach()}


def random_embedding_target(
    teacher: torch.Tensor, is_forget: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """App. C.6.4 (Eq. C.35): forget rows of the target become Gaussian noise; retain rows stay the original's
    embedding. The noise has the scalar mean and std of the teacher's embeddings in the batch (the official code's
    randn * std + mean), so it lives at the embeddings' scale whatever the family's latent space."""
    noise = torch.randn(teacher.shape, generator=generator, device=teacher.device, dtype=teacher.dtype)
    noise = noise * teacher.std() + teacher.mean()
    return torch.where(is_forget.view(-1, *[1] * (teacher.ndim - 1)), noise, teacher)


def retain_truth(images: torch.Tensor, is_forget: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """App. C.6.2: each forget row's ground truth is a retain image of the batch (cycled in batch order); a batch
    without retain rows uses ``fallback`` (the noise image; the official code falls back to randn)."""
    retain_idx = (~is_forget).nonzero().flatten()
    if retain_idx.numel() == 0:
        return torch.where(is_forget.view(-1, 1, 1, 1), fallback, images)
    pos = torch.cumsum(is_forget.long(), 0) - 1  # 0, 1, ... over the forget rows
    donor = images[retain_idx[pos.clamp_min(0) % retain_idx.numel()]]
    return torch.where(is_forget.view(-1, 1, 1, 1), donor, images)


def objective(
    per_sample: torch.Tensor,
    is_forget: torch.Tensor,
    alpha: float,
    sign: float = 1.0,
    cap: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The full-model baselines' loss from the family's per-sample objective ``[B]``: mean over retain rows
    + ``sign`` x ``alpha`` x mean over forget rows. ``max_loss`` uses sign -1 (Eq. C.26 / C.28: maximise the
    forget loss); its forget term is bounded by ``cap`` ``[B]`` (each forget row's loss counts up to its cap and
    gives no gradient past it), so the objective cannot run away to -inf."""
    forget_rows = per_sample if cap is None else torch.minimum(per_sample, cap)
    retain, _ = _group_means(per_sample, is_forget)
    _, forget = _group_means(forget_rows, is_forget)
    return {"loss": retain + sign * alpha * forget, "retain": retain.detach(), "forget": forget.detach()}


@dataclass(frozen=True)
class Method:
    """One ``unlearn.method``: which parameters train, what is compared, and where the paper defines it."""

    name: str
    section: str  # the paper's equation / appendix section
    kind: str  # "embedding" (encoder vs the original's embeddings) | "objective" (full model, own objective)
    truth: str = "images"  # objective methods: the forget rows' ground truth (images | noise | retain)
    sign: float = 1.0  # objective methods: -1 maximises the forget loss (max_loss)

    @property
    def trains(self) -> str:
        return "encoder" if self.kind == "embedding" else "model"


METHODS: dict[str, Method] = {
    "ours": Method("ours", "Eq. 10", "embedding"),
    "random_encoder": Method("random_encoder", "App. C.6.4, Eq. C.35", "embedding"),
    "max_loss": Method("max_loss", "App. C.6.1, Eqs. C.26-C.28", "objective", truth="images", sign=-1.0),
    "retain_label": Method("retain_label", "App. C.6.2, Eqs. C.29-C.31", "objective", truth="retain"),
    "noisy_label": Method("noisy_label", "App. C.6.3, Eqs. C.32-C.34", "objective", truth="noise"),
}
