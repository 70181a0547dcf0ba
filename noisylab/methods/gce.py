"""Generalized cross entropy (Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training
Deep Neural Networks with Noisy Labels", NeurIPS 2018; no official code).

One network, p_y = softmax f(x) at the observed label:
    L_q = (1 - p_y^q) / q,  q = 0.7   (q -> 0: cross-entropy; q = 1: MAE);
truncated variant (``truncated=true``): samples whose p_y <= k (k = 0.5) contribute the
constant L_q(k), i.e. no gradient. It is optimised by alternating: at the start of 0-based
epoch ``start_prune`` (39: the paper's "40th epoch", when the reference AlanChou/Truncated-Loss
first prunes, ``(epoch + 1) >= 40 and (epoch + 1) % 10 == 0``) and every ``prune_every`` (10)
epochs after, w_i = 1[p_y(x_i) > k] over the whole training set (one pass in eval mode over
the *augmented* training images, as the reference's pass over its training loader); in
between the loss is the batch mean of w_i·L_q(x_i).

Protocol: the Co-teaching table's (``coteaching``) with the 9-layer CNN, as the other baselines.
The paper trains on the whole training set; noisylab holds out ``data.val_fraction`` (10% by
default) as a noisy validation split: ``data.val_fraction=0`` for the paper's setting.
Clean score (truncated only): the current w_i. Deviations: the weights are computed from the
current model, where the paper uses the model of the best validation epoch (its reference
re-implementation uses the best *test* epoch); the constant -L_q(k) shift of the truncated
loss is left out (no gradient; logged values are L_q, not the truncated objective); the
paper's ResNet-34 and SGD recipe (lr 0.01, steps at 40 and 80 of 120 epochs, start_prune 40 on
CIFAR-10 and 80 on CIFAR-100) are not offered as a protocol yet.
"""

from __future__ import annotations

import logging

import torch

from noisylab.errors import ConfigError
from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import require

log = logging.getLogger("noisylab")


def lq_loss(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample L_q = (1 - p_y^q) / q."""
    p_y = logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)
    return (1.0 - p_y.pow(q)) / q


def truncation_weights(cross_entropy: torch.Tensor, k: float) -> torch.Tensor:
    """w_i = 1[p_y(x_i) > k], from the per-sample cross-entropy -log p_y: the samples the
    truncated loss still learns from."""
    return (torch.exp(-cross_entropy) > k).float()


class GeneralizedCrossEntropy(LNLMethod):
    def __init__(self, q: float, truncated: bool, k: float, start_prune: int, prune_every: int, **settings):
        super().__init__(**settings)
        if not 0.0 < float(q) <= 1.0:
            raise ConfigError(f"method.q must lie in (0, 1], got {q}.")
        if int(prune_every) < 1:
            raise ConfigError(f"method.prune_every must be >= 1, got {prune_every}.")
        require(0.0 < float(k) < 1.0, "k", k, "lie in (0, 1) (samples with p_y <= k are pruned)")
        require(int(start_prune) >= 0, "start_prune", start_prune, "be >= 0 (the first pruning epoch, 0-based)")
        self.q, self.truncated, self.k = float(q), bool(truncated), float(k)
        self.start_prune, self.prune_every = int(start_prune), int(prune_every)
        self.add_network("net", self.build_network)
        if self.truncated:
            self.per_sample_state("weight", fill=1.0)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        epoch = self.current_epoch
        if self.truncated and epoch >= self.start_prune and (epoch - self.start_prune) % self.prune_every == 0:
            _, cross_entropy = self.training_set_pass(self.net, augment=True)  # as the reference's loader
            self.weight.copy_(truncation_weights(cross_entropy, self.k))
            if not bool(self.weight.any()):  # once per pruning, not per step: say it rather than train on zero
                log.warning("truncated GCE pruned every training sample at epoch %d (p_y <= k=%g for all): the loss is "
                            "zero until the next pruning; lower method.k or raise method.start_prune.", epoch, self.k)

    def training_step(self, batch, batch_idx: int):
        losses = lq_loss(self.net(batch["x"]), batch["y"], self.q)
        if self.truncated:
            losses = losses * self.weight[batch["index"]]
        loss = losses.mean()
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss}, len(batch["y"]))
        return loss

    def clean_score(self) -> torch.Tensor | None:
        return self.weight if self.truncated else None
