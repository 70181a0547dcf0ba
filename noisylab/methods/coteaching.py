"""Co-teaching (Han et al., "Co-teaching: Robust Training of Deep Neural Networks with
Extremely Noisy Labels", NeurIPS 2018; official code bhanML/Co-teaching).

Two networks f, g; for each mini-batch:
    1. per-sample losses l_f, l_g on the noisy labels;
    2. D_f = the (1 - forget(T))·|B| samples with the smallest l_f, D_g likewise with l_g;
    3. update f on D_g and g on D_f (cross update);
    4. forget(T) = tau·min((T/Tk)^c, 1), tau = the noise rate by default (``schedule`` group).

Protocol ``coteaching`` (the official code's): Adam lr 1e-3, batch 128, 200 epochs, lr
decayed linearly to 0 from epoch 80 with beta1 switched 0.9 -> 0.1 there, Tk = 10, no
augmentation or normalisation (``ToTensor`` only), both networks evaluated separately
(``test/acc`` is the first, ``test/acc_net2`` the second), the mean test accuracy of the last
10 epochs. Clean score: the fraction of epochs' selections that kept a sample.

Deviations from the official code, each turned back on by ``quirks=official``:
``double_normalisation`` (the code divides the mean loss again by the number kept);
``dropout_at_eval`` (the code leaves dropout on when evaluating); ``skip_first_epoch`` (the
code's loop starts at epoch 1: epoch 0 is only evaluated); ``drop_last`` (the code drops the
last partial batch); ``linspace_schedule`` (the code's forget rates are linspace(0, tau^c, Tk)
indexed by epoch, reaching tau at epoch Tk - 1, where the paper's reaches it at Tk).
Not reproduced even then: the cap of MNIST epochs at 401 batches, and the test loader's
drop_last (9,984 of 10,000 test images).
"""

from __future__ import annotations

import torch.nn.functional as F

from noisylab.methods.base import TwoNetworkMethod
from noisylab.methods.selection import SmallLossSelection, label_precision, small_loss_indices

COTEACHING_QUIRKS = ("skip_first_epoch", "drop_last", "double_normalisation", "linspace_schedule", "dropout_at_eval")


def cross_update_losses(logits1, logits2, y, forget_rate: float, double_normalisation: bool = False,
                        softmax_input: bool = False):
    """Steps 1-3: each network's loss on the samples its *peer* ranks smallest.
    ``double_normalisation`` and ``softmax_input`` are the official codes' quirks (the mean
    divided again by the number kept; softmax probabilities fed to the cross-entropy)."""
    if softmax_input:
        logits1, logits2 = logits1.softmax(dim=1), logits2.softmax(dim=1)
    kept_by_1 = small_loss_indices(F.cross_entropy(logits1, y, reduction="none"), forget_rate)
    kept_by_2 = small_loss_indices(F.cross_entropy(logits2, y, reduction="none"), forget_rate)
    loss1 = F.cross_entropy(logits1[kept_by_2], y[kept_by_2])  # f learns from g's choice
    loss2 = F.cross_entropy(logits2[kept_by_1], y[kept_by_1])  # g learns from f's choice
    if double_normalisation:
        loss1, loss2 = loss1 / len(kept_by_2), loss2 / len(kept_by_1)
    return loss1, loss2, kept_by_1, kept_by_2


class CoTeaching(SmallLossSelection, TwoNetworkMethod):
    official_quirks = COTEACHING_QUIRKS

    def __init__(self, schedule, **settings):
        super().__init__(**settings)
        self.setup_selection(schedule)

    def training_step(self, batch, batch_idx: int):
        x, y = batch["x"], batch["y"]
        forget = self.forget_rate(self.current_epoch)
        logits1, logits2 = self.nets(x)
        loss1, loss2, kept_by_1, kept_by_2 = cross_update_losses(
            logits1, logits2, y, forget, "double_normalisation" in self.quirks)
        self.step(loss1 + loss2)  # each network gets the gradient of its own loss only
        self.log_selection(batch, loss1, loss2, kept_by_1, kept_by_2, forget)
        return loss1

    def log_selection(self, batch, loss1, loss2, kept_by_1, kept_by_2, forget: float, offered=None) -> None:
        self.record_selection(batch["index"], kept_by_1, kept_by_2, offered=offered)
        self.log_epoch_mean({
            "train/loss": loss1, "train/loss_net2": loss2, "train/forget_rate": forget,
            "train/label_precision": label_precision(kept_by_1, batch["y"], batch["y_true"]),
            "train/label_precision_net2": label_precision(kept_by_2, batch["y"], batch["y_true"]),
        }, len(batch["y"]))
