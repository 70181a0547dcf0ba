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


class SmallLossSelection:
    """Mixin of the small-loss methods (on an ``LNLMethod``): the forget-rate schedule, and
    per training sample how often it was offered to a selection and how often kept. Their
    clean score (``train/detection_auc``, ``per_sample.npz``) is the fraction kept."""

    def setup_selection(self, schedule, tau: float | None = None) -> None:
        """``tau``: the method's default forget rate where ``schedule.tau`` is null (else the
        noise rate); the ``linspace_schedule`` quirk selects the official code's form."""
        from noisylab.methods.base import plain
        from noisylab.schedules import build_schedule

        schedule = dict(plain(schedule))
        if schedule.get("tau") is None and tau is not None:
            schedule["tau"] = tau
        if "linspace_schedule" in self.quirks:
            schedule["form"] = "official"
            if "skip_first_epoch" in self.quirks:  # epoch t is then the code's epoch t
                schedule["official_index_shift"] = 0
        self.forget_rate = build_schedule(schedule, self.noise_rate, self.max_epochs)
        self.per_sample_state("times_offered")
        self.per_sample_state("times_kept")

    def record_selection(self, index: torch.Tensor, *kept_sets: torch.Tensor, offered: torch.Tensor | None = None):
        """``kept_sets``: batch positions kept by each selection (one per network);
        ``offered``: the positions the selections chose from (default: the whole batch)."""
        offered_index = index if offered is None else index[offered]
        self.times_offered.index_add_(0, offered_index, torch.full_like(offered_index, len(kept_sets),
                                                                          dtype=self.times_offered.dtype))
        for kept in kept_sets:
            self.times_kept.index_add_(0, index[kept], torch.ones(len(kept), device=index.device,
                                                                   dtype=self.times_kept.dtype))

    def clean_score(self) -> torch.Tensor:
        return self.times_kept / self.times_offered.clamp(min=1.0)
