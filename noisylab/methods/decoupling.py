"""Decoupling, "update by disagreement" (Malach & Shalev-Shwartz, "Decoupling 'when to
update' from 'how to update'", NeurIPS 2017; official TF code emalach/UpdateByDisagreement).

Two networks f, g; for each mini-batch of size B:
    1. predictions p_f = argmax f(x), p_g = argmax g(x);
    2. update set u_i = 1[p_f(i) != p_g(i)]  (every sample while global_step < warmup_steps);
    3. each network's loss: sum_i u_i CE_i / max(min_batch_fraction * B, sum_i u_i), the
       same update set for both networks (no cross exchange, no small-loss selection);
    4. both networks step on their own loss; nothing is updated when they agree everywhere.

As compared in Co-teaching (Han et al. 2018, Table 3): the 9-layer CNN, Adam 1e-3, batch 128,
200 epochs, lr decayed linearly from epoch 80 with beta1 0.9 -> 0.1, no augmentation.
Deviations from the official code: the class-balancing weights w_i of its binary gender
task are left out (all w_i = 1); the mode that buffers disagreement samples until a full
batch is collected (``min_batch_size=-1``) is not implemented; when the update set is empty
no optimizer step is taken (the TF code still runs its train op on a zero loss, so momentum
keeps moving the weights); ``global_step`` counts optimizer steps (equal to the number of
batches for as long as the warm-up lasts); dropout is off at evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.methods.base import TwoNetworkMethod
from noisylab.methods.selection import label_precision


def disagreement_mask(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the samples on which the two networks' argmax predictions differ."""
    return logits1.detach().argmax(dim=1) != logits2.detach().argmax(dim=1)


def decoupling_losses(logits1, logits2, y, update: torch.Tensor, min_batch_fraction: float):
    """Step 3: each network's summed CE over the update set, divided by
    max(min_batch_fraction * B, |update set|). Samples outside the set get no gradient."""
    chosen = update.nonzero().flatten()
    denominator = max(float(min_batch_fraction) * len(y), float(len(chosen)), 1e-12)
    loss1 = F.cross_entropy(logits1[chosen], y[chosen], reduction="sum") / denominator
    loss2 = F.cross_entropy(logits2[chosen], y[chosen], reduction="sum") / denominator
    return loss1, loss2, chosen


class Decoupling(TwoNetworkMethod):
    def __init__(self, min_batch_fraction: float, warmup_steps: int, **settings):
        super().__init__(**settings)
        self.min_batch_fraction, self.warmup_steps = float(min_batch_fraction), int(warmup_steps)

    def training_step(self, batch, batch_idx: int):
        x, y = batch["x"], batch["y"]
        logits1, logits2 = self.nets(x)
        if self.global_step < self.warmup_steps:
            update = torch.ones_like(y, dtype=torch.bool)
        else:
            update = disagreement_mask(logits1, logits2)
        loss1, loss2, chosen = decoupling_losses(logits1, logits2, y, update, self.min_batch_fraction)
        size = len(y)
        logs = {"train/loss": loss1, "train/loss_net2": loss2, "train/update_fraction": len(chosen) / size}
        if len(chosen) > 0:
            self.step(loss1 + loss2)  # each network gets the gradient of its own loss only
            precision = label_precision(chosen, y, batch["y_true"])  # one set for both networks
            logs.update({"train/label_precision": precision, "train/label_precision_net2": precision})
        self.log_epoch_mean(logs, size)
        return loss1
