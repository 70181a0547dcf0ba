"""Active Passive Losses (Ma et al., "Normalized Loss Functions for Deep Learning with Noisy
Labels", ICML 2020; official code HanxunH/Active-Passive-Losses, ``loss.py``).

One network, p = softmax f(x), observed label y. Any loss L normalised over the labels,
L_norm(x, y) = L(f(x), y) / sum_k L(f(x), k), is robust to symmetric noise but underfits, so
an *active* normalised loss (pushes p_y up) is paired with a *passive* one (pushes the other
p_k down):

    APL = alpha · active + beta · passive,  batch means, with
    NCE = log p_y / sum_k log p_k,
    NFL = (1-p_y)^gamma·log p_y / sum_k (1-p_k)^gamma·log p_k    (gamma 0.5),
    RCE = -A·(1 - p_y)   (log 0 replaced by A),
    MAE = 1 - p_y        (the code's; the paper writes sum_k |p_k - y_k| = 2(1 - p_y)).

``method.loss`` picks ``nce+rce`` (default), ``nce+mae``, ``nfl+rce``, ``nfl+mae``, or one loss
alone (``nce``, ``nfl``, ``rce``, ``mae``; scaled by alpha if active, beta if passive).
alpha/beta: CIFAR-10 1/1 (here), MNIST 1/10 (the code's MNIST configs, wd 1e-2), CIFAR-100
10/0.1 (NCE+RCE, NFL+RCE; 10/1 for NCE+MAE) from conf/method_data/.

Protocol ``apl`` (the code's CIFAR-10 config): SGD 0.01, momentum 0.9, wd 1e-4, batch 128, 120
epochs, cosine to 0, the gradient norm clipped at ``grad_bound`` 5 (the code's trainer), the
8-layer CNN (``cnn8`` = the code's ``ToyModel``). Deviations: the code's CIFAR-10 augmentation
adds a random rotation of ±20° to crop + flip (not offered here); CIFAR-100 runs on this
protocol with the paper's ResNet-34 replaced by the configured model. Each deviation of the
official loss code, turned on by ``quirks=official``:
``rce_clamp`` — the code clamps p to [1e-7, 1] and the one-hot label to [1e-4, 1], so its
A = ln 1e-4 = -9.21 (here A = ``log_zero``, -4 as in SCE, from which the paper takes RCE);
``focal_detached_weights`` — the code's NFL treats the focal weights (1-p_k)^gamma as constants
(``.data``) in numerator and normaliser; the paper differentiates them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import require

ACTIVE = ("nce", "nfl")
PASSIVE = ("rce", "mae")
LOSSES = (*ACTIVE, *PASSIVE, *(f"{a}+{p}" for a in ACTIVE for p in PASSIVE))
CODE_A = math.log(1e-4)  # the official code's effective log 0


def normalized_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample: -log p_y / sum_k -log p_k."""
    log_p = logits.log_softmax(dim=1)
    return log_p.gather(1, y[:, None]).squeeze(1) / log_p.sum(dim=1)


def normalized_focal(logits: torch.Tensor, y: torch.Tensor, gamma: float, detached_weights: bool = False) -> torch.Tensor:
    """Per sample: FL(p, y) / sum_k FL(p, k), FL(p, k) = -(1-p_k)^gamma·log p_k."""
    log_p = logits.log_softmax(dim=1)
    weights = (1.0 - log_p.exp()).pow(gamma)
    if detached_weights:
        weights = weights.detach()
    focal = -weights * log_p
    return focal.gather(1, y[:, None]).squeeze(1) / focal.sum(dim=1)


def reverse_cross_entropy(logits: torch.Tensor, y: torch.Tensor, log_zero: float = -4.0,
                          clamp: bool = False) -> torch.Tensor:
    """Per sample: -sum_k p_k·log q_k with the one-hot q, log 0 := A: -A·(1 - p_y).
    ``clamp``: the code's p clamped to [1e-7, 1] first (-A·sum_{k != y} max(p_k, 1e-7))."""
    p = logits.softmax(dim=1)
    if clamp:
        p = p.clamp(min=1e-7)
    return -log_zero * (p.sum(dim=1) - p.gather(1, y[:, None]).squeeze(1))


def mean_absolute_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample, as the code: 1 - p_y."""
    return 1.0 - logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)


def apl_loss(logits: torch.Tensor, y: torch.Tensor, loss: str, alpha: float, beta: float, gamma: float = 0.5,
             log_zero: float = -4.0, official: frozenset[str] = frozenset()) -> torch.Tensor:
    """alpha·active + beta·passive (batch means) for ``loss`` = ``active+passive`` or one name."""
    terms = {
        "nce": lambda: normalized_cross_entropy(logits, y),
        "nfl": lambda: normalized_focal(logits, y, gamma, "focal_detached_weights" in official),
        "rce": lambda: reverse_cross_entropy(logits, y, CODE_A if "rce_clamp" in official else log_zero,
                                             "rce_clamp" in official),
        "mae": lambda: mean_absolute_error(logits, y),
    }
    total = logits.new_zeros(())
    for name in loss.split("+"):
        total = total + (alpha if name in ACTIVE else beta) * terms[name]().mean()
    return total


class ActivePassiveLoss(LNLMethod):
    official_quirks = ("rce_clamp", "focal_detached_weights")

    def __init__(self, loss: str, alpha: float, beta: float, gamma: float, log_zero: float,
                 grad_bound: float | None, **settings):
        super().__init__(**settings)
        require(loss in LOSSES, "loss", loss, f"be one of {', '.join(LOSSES)}")
        require(float(alpha) >= 0, "alpha", alpha, "be >= 0 (the weight of the active loss)")
        require(float(beta) >= 0, "beta", beta, "be >= 0 (the weight of the passive loss)")
        require(float(gamma) >= 0, "gamma", gamma, "be >= 0 (NFL's focusing parameter)")
        require(float(log_zero) < 0, "log_zero", log_zero, "be < 0 (A, the value that replaces log 0 in RCE)")
        require(grad_bound is None or float(grad_bound) > 0, "grad_bound", grad_bound,
                "be > 0 or null (the gradient-norm clip; null: none)")
        self.loss, self.alpha, self.beta, self.gamma = loss, float(alpha), float(beta), float(gamma)
        self.log_zero = float(log_zero)
        self.grad_bound = None if grad_bound is None else float(grad_bound)
        self.add_network("net", self.build_network)

    def clip(self) -> None:  # through Lightning, which unscales mixed-precision gradients first
        self.clip_gradients(self.optimizers(), gradient_clip_val=self.grad_bound, gradient_clip_algorithm="norm")

    def training_step(self, batch, batch_idx: int):
        logits = self.net(batch["x"])
        loss = apl_loss(logits, batch["y"], self.loss, self.alpha, self.beta, self.gamma, self.log_zero, self.quirks)
        self.step(loss, adjust=self.clip if self.grad_bound else None)
        self.log_epoch_mean({"train/loss": loss, "train/ce": F.cross_entropy(logits.detach(), batch["y"])},
                            len(batch["y"]))
        return loss
