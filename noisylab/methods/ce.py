"""Standard training: cross-entropy on the observed (noisy) labels. The baseline every
LNL paper compares against ("Standard" in Han et al. 2018)."""

from __future__ import annotations

import torch.nn.functional as F

from noisylab.methods.base import LNLMethod


class CrossEntropy(LNLMethod):
    reported = ("net",)

    def __init__(self, **settings):
        super().__init__(**settings)
        self.add_network("net", self.build_network)

    def training_step(self, batch, batch_idx: int):
        loss = F.cross_entropy(self.net(batch["x"]), batch["y"])
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss}, len(batch["y"]))
        return loss
