"""Symmetric cross entropy (Wang et al., "Symmetric Cross Entropy for Robust Learning with
Noisy Labels", ICCV 2019; official Keras code YisenWang/symmetric_cross_entropy_for_noisy_labels).

One network, p = softmax f(x), observed label y; the batch mean of
    L = alpha·CE(p, y) + beta·RCE(p, y),   RCE = -sum_k p_k·log y_k = -A·(1 - p_y),
where log 0 is replaced by A (the paper: A = -4). CIFAR-10: alpha 0.1, beta 1.0 (the default
here); MNIST 0.01 / 1.0 and CIFAR-100 6.0 / 0.1 come from conf/method_data/.

Protocol: the Co-teaching table's (``coteaching``) with the 9-layer CNN, so SCE is compared on
the same recipe as the other baselines. Deviations: the paper's own networks and Keras SGD
recipes (8-layer CNN, lr 0.01 with steps at 40 and 80, 120 epochs on CIFAR-10) are not offered
as a protocol yet. ``quirks=official`` (``rce_clamp``): the code's clamp of the one-hot label
to [1e-4, 1] makes A = ln(1e-4) = -9.21, not -4, and it clips p to [1e-7, 1] inside the CE.
The paper trains on the whole training set (all 50,000 CIFAR images); noisylab holds out
``data.val_fraction`` (10% by default) as a noisy validation split: ``data.val_fraction=0``
for the paper's setting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import require

CODE_A = math.log(1e-4)  # the official code's effective log 0


def sce_loss(logits: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, log_zero: float = -4.0,
             clip_probabilities: bool = False) -> torch.Tensor:
    """alpha·CE + beta·RCE, batch means; RCE = -log_zero·(1 - p_y) for one-hot labels."""
    p = logits.softmax(dim=1)
    if clip_probabilities:  # the code's CE: -log clip(p, 1e-7, 1)
        ce = -p.gather(1, y[:, None]).squeeze(1).clamp(min=1e-7).log().mean()
    else:
        ce = F.cross_entropy(logits, y)
    rce = (-log_zero * (1.0 - p.gather(1, y[:, None]).squeeze(1))).mean()
    return alpha * ce + beta * rce


class SymmetricCrossEntropy(LNLMethod):
    official_quirks = ("rce_clamp",)

    def __init__(self, alpha: float, beta: float, log_zero: float, **settings):
        super().__init__(**settings)
        require(float(alpha) >= 0, "alpha", alpha, "be >= 0 (the weight of CE)")
        require(float(beta) >= 0, "beta", beta, "be >= 0 (the weight of RCE)")
        require(float(alpha) + float(beta) > 0, "alpha + method.beta", float(alpha) + float(beta),
                "be > 0 (with both 0 the loss is 0)")
        require(float(log_zero) < 0, "log_zero", log_zero, "be < 0 (A, the value that replaces log 0; the paper's -4)")
        self.alpha, self.beta = float(alpha), float(beta)
        self.log_zero = CODE_A if "rce_clamp" in self.quirks else float(log_zero)
        self.add_network("net", self.build_network)

    def training_step(self, batch, batch_idx: int):
        loss = sce_loss(self.net(batch["x"]), batch["y"], self.alpha, self.beta, self.log_zero,
                        clip_probabilities="rce_clamp" in self.quirks)
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss}, len(batch["y"]))
        return loss
