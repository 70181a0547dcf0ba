"""Co-teaching (Han et al., "Co-teaching: Robust Training of Deep Neural Networks with
Extremely Noisy Labels", NeurIPS 2018; official code bhanML/Co-teaching).

Two networks f, g; for each mini-batch:
    1. per-sample losses l_f, l_g on the noisy labels;
    2. D_f = the (1 - forget(T))·|B| samples with the smallest l_f, D_g likewise with l_g;
    3. update f on D_g and g on D_f (cross update);
    4. forget(T) = tau·min((T/Tk)^c, 1), tau = the noise rate by default (``schedule`` group).

Follows the official code in: Adam lr 1e-3, batch 128, 200 epochs, lr decayed linearly to
0 from epoch 80 with beta1 switched 0.9 -> 0.1 there, Tk = 10, no augmentation or
normalisation (``ToTensor`` only), both networks evaluated separately (``test/acc`` is the
first, ``test/acc_net2`` the second), the mean test accuracy of the last 10 epochs.
Deviations, on purpose: the loss is the plain mean over the kept samples (the code divides
the mean again by the number kept); dropout is off at evaluation (the code leaves it on);
every epoch trains on the whole training set (the code caps MNIST epochs at 401 batches
and never trains epoch 0); forget(T) reaches tau at epoch Tk (code: Tk - 1).
"""

from __future__ import annotations

import torch.nn.functional as F

from noisylab.methods.base import TwoNetworkMethod
from noisylab.methods.selection import label_precision, small_loss_indices
from noisylab.schedules import build_schedule


def cross_update_losses(logits1, logits2, y, forget_rate: float):
    """Steps 1-3: each network's loss on the samples its *peer* ranks smallest."""
    kept_by_1 = small_loss_indices(F.cross_entropy(logits1, y, reduction="none"), forget_rate)
    kept_by_2 = small_loss_indices(F.cross_entropy(logits2, y, reduction="none"), forget_rate)
    loss1 = F.cross_entropy(logits1[kept_by_2], y[kept_by_2])  # f learns from g's choice
    loss2 = F.cross_entropy(logits2[kept_by_1], y[kept_by_1])  # g learns from f's choice
    return loss1, loss2, kept_by_1, kept_by_2


class CoTeaching(TwoNetworkMethod):
    def __init__(self, schedule, **settings):
        super().__init__(**settings)
        self.forget_rate = build_schedule(schedule, self.noise_rate, self.max_epochs)

    def training_step(self, batch, batch_idx: int):
        x, y = batch["x"], batch["y"]
        forget = self.forget_rate(self.current_epoch)
        logits1, logits2 = self.nets(x)
        loss1, loss2, kept_by_1, kept_by_2 = cross_update_losses(logits1, logits2, y, forget)
        self.step(loss1 + loss2)  # each network gets the gradient of its own loss only
        self.log_selection(batch, loss1, loss2, kept_by_1, kept_by_2, forget)
        return loss1

    def log_selection(self, batch, loss1, loss2, kept_by_1, kept_by_2, forget: float) -> None:
        size = len(batch["y"])
        self.log_epoch_mean({
            "train/loss": loss1, "train/loss_net2": loss2, "train/forget_rate": forget,
            "train/label_precision": label_precision(kept_by_1, batch["y"], batch["y_true"]),
            "train/label_precision_net2": label_precision(kept_by_2, batch["y"], batch["y_true"]),
        }, size)
