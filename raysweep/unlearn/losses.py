"""Unlearning losses as pure tensor functions returning ``{"loss", "retain", "forget"}``.

``ours`` is Eq. 10: retain embeddings stay those of the frozen original, forget embeddings move to the original's
embedding of noise. Baselines (App. C.26-C.36) enter as further entries of :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _per_sample_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).pow(2)  # [B, N]


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
        retain = (dist * r).sum() / r.sum().clamp_min(1.0)
        forget = (dist * f).sum() / f.sum().clamp_min(1.0)
    elif form == "mse":
        per = sq.mean(dim=1)
        retain = (2 * r * per).mean()
        forget = (2 * f * per).mean()
    else:
        raise ValueError(f"unknown loss form {form!r}; valid: l2, mse")
    return {"loss": retain + alpha * forget, "retain": retain.detach(), "forget": forget.detach()}


METHODS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {"ours": ours}
