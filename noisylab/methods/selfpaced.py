"""Self-paced small-loss training of one network: the "MentorNet" baseline of Co-teaching
(Han et al., NeurIPS 2018, Table 3: self-paced MentorNet, i.e. MentorNet-PD with a
predefined curriculum; Jiang et al., "MentorNet: Learning Data-Driven Curriculum for Very
Deep Neural Networks on Corrupted Labels", ICML 2018; official TF code google/mentornet).

One network f; for each mini-batch:
    1. per-sample losses l_f on the noisy labels;
    2. D_f = the (1 - forget(T))·|B| samples with the smallest l_f;
    3. update f on D_f (its own choice: no peer, so selection errors feed back into f);
    4. forget(T) = tau·min((T/Tk)^c, 1), tau = the noise rate by default (``schedule`` group),
       the same schedule, optimizer and epochs as Co-teaching.

This is the single-network ablation users of the Co-teaching code measured
(bhanML/Co-teaching#6). Deviations from the MentorNet code: the selection threshold is the
Co-teaching schedule of a kept *fraction*, not MentorNet-PD's EMA of a loss percentile
(``ema <- d·ema + (1-d)·percentile(loss, 100p)``, weights 1[l_i < ema]); no burn-in epochs
and no example dropout; the StudentNet is Co-teaching's 9-layer CNN trained with Adam as in
Co-teaching rather than a ResNet with SGD. As for Co-teaching: the loss is the plain mean over
the kept samples, dropout is off at evaluation, every epoch covers the whole training set.
Clean score: the fraction of selections that kept a sample. ``quirks=official`` changes
nothing here (no official code of this baseline ran as Co-teaching's table did).
"""

from __future__ import annotations

import torch.nn.functional as F

from noisylab.methods.base import LNLMethod
from noisylab.methods.selection import SmallLossSelection, label_precision, small_loss_indices


def self_paced_loss(logits, y, forget_rate: float):
    """Steps 1-3: the mean CE over the samples the network itself ranks smallest."""
    kept = small_loss_indices(F.cross_entropy(logits, y, reduction="none"), forget_rate)
    return F.cross_entropy(logits[kept], y[kept]), kept


class SelfPaced(SmallLossSelection, LNLMethod):
    reported = ("net",)

    def __init__(self, schedule, **settings):
        super().__init__(**settings)
        self.add_network("net", self.build_network)
        self.setup_selection(schedule)

    def training_step(self, batch, batch_idx: int):
        x, y = batch["x"], batch["y"]
        forget = self.forget_rate(self.current_epoch)
        loss, kept = self_paced_loss(self.net(x), y, forget)
        self.step(loss)
        self.record_selection(batch["index"], kept)
        self.log_epoch_mean({
            "train/loss": loss, "train/forget_rate": forget,
            "train/label_precision": label_precision(kept, y, batch["y_true"]),
        }, len(y))
        return loss
