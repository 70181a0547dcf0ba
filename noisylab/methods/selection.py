"""Small-loss selection, shared by the Co-teaching family (Co-teaching, self-paced,
Co-teaching+, JoCoR, S2E's inner loop)."""

from __future__ import annotations

import torch


def num_to_keep(batch_size: int, forget_rate: float) -> int:
    """floor((1 - forget_rate) * B) as in the official code, but never zero."""
    return max(1, int((1.0 - forget_rate) * batch_size))


def small_loss_indices(losses: torch.Tensor, forget_rate: float) -> torch.Tensor:
    """Indices of the ``num_to_keep`` smallest per-sample losses (ties: lower index first)."""
    order = torch.argsort(losses.detach(), stable=True)
    return order[: num_to_keep(len(losses), forget_rate)]


def label_precision(kept: torch.Tensor, y: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Fraction of kept samples whose observed label is the clean one (diagnostic only:
    samples with unknown clean label, ``y_true == -1``, are left out; NaN if none is known).
    No branch on tensor values, so no device synchronisation in the training step."""
    known = (y_true[kept] >= 0).float()
    clean = (y[kept] == y_true[kept]).float() * known
    return clean.sum() / known.sum()
