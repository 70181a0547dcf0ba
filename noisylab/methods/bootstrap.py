"""Bootstrapping (Reed et al., "Training Deep Neural Networks on Noisy Labels with
Bootstrapping", ICLR workshop 2015).

One network, q = softmax f(x), t = one-hot observed label; per sample:
    soft: L = -sum_k [beta·t_k + (1 - beta)·q_k]·log q_k        (beta = 0.95)
    hard: L = -sum_k [beta·t_k + (1 - beta)·z_k]·log q_k,  z = onehot(argmax q)   (beta = 0.8)
The loss is the batch mean. As in every reference implementation (Reed's, the Keras code of
Patrini et al. and of SCE), the q inside the soft target is not detached, so soft
bootstrapping also minimises the entropy of q; ``detach_target=true`` stops that gradient, as
Arazo et al.'s re-use does.

Protocol: the Co-teaching table's (``coteaching``: Adam 1e-3, 200 epochs; the 9-layer CNN),
where Bootstrap is a baseline. Deviations: log q is computed as log_softmax (the Keras code
re-normalises q and clips it to [1e-7, 1 - 1e-7] first: identical away from the clip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.base import LNLMethod


def bootstrap_loss(logits: torch.Tensor, y: torch.Tensor, beta: float, hard: bool,
                   detach_target: bool = False) -> torch.Tensor:
    """The mean bootstrapping loss of a batch (soft, or hard with ``hard=True``)."""
    log_q = F.log_softmax(logits, dim=1)
    q = log_q.exp()
    if detach_target:
        q = q.detach()
    own = F.one_hot(q.argmax(dim=1), logits.shape[1]).to(q.dtype) if hard else q
    target = beta * F.one_hot(y, logits.shape[1]).to(q.dtype) + (1.0 - beta) * own
    return -(target * log_q).sum(dim=1).mean()


class Bootstrap(LNLMethod):
    def __init__(self, variant: str, beta: float, detach_target: bool, **settings):
        super().__init__(**settings)
        if variant not in ("soft", "hard"):
            raise ConfigError(f"method.variant must be soft or hard, got {variant!r}.")
        if not 0.0 <= float(beta) <= 1.0:
            raise ConfigError(f"method.beta must lie in [0, 1], got {beta}.")
        self.hard, self.beta, self.detach_target = variant == "hard", float(beta), bool(detach_target)
        self.add_network("net", self.build_network)

    def training_step(self, batch, batch_idx: int):
        loss = bootstrap_loss(self.net(batch["x"]), batch["y"], self.beta, self.hard, self.detach_target)
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss}, len(batch["y"]))
        return loss
