"""VolMinNet (Li, Liu, Han, Niu & Sugiyama, "Provably End-to-end Label-noise Learning without
Anchor Points", ICML 2021; official code
xuefeng-li1/Provably-end-to-end-label-noise-learning-without-anchor-points).

The transition matrix T (T_ij = P(observed j | true i)) is learned with the network, without
anchor points, by minimising its volume:
    1. T = rownorm(I + sigmoid(W) ⊙ (1 − I)), W a C×C parameter initialised to −init
       (init 2: off-diagonal entries start at sigmoid(−2) ≈ 0.12 before the row
       normalisation; CIFAR-100: 4.5), so T is diagonally dominant throughout;
    2. with p = softmax f(x): L = −mean_i log (p_i^T T)_{y_i} + λ·log|det T|   (λ = 1e-4);
    3. one backward, a step of the network's optimiser and of T's (its own optimiser; its lr
       follows the network's lr plan, as the code's second MultiStepLR).
The classifier f is evaluated alone (test accuracy of p, not of p^T T). ``train/transition_error``
logs ‖T − T_realised‖₁ / ‖T_realised‖₁ (a diagnostic, as the code prints; T_realised is never
trained on).

Protocol ``volminnet`` (the code's CIFAR-10 branch): SGD 0.01, momentum 0.9, weight decay
1e-4, batch 128, 80 epochs, lr ×0.1 at 30 and 60; T's optimiser SGD 0.01 momentum 0.9
(MNIST and CIFAR-100: Adam 0.01, ``conf/method_data/``).

Deviations: the network is PreAct ResNet-18 (the code: a standard ResNet-18 whose first
convolution has no padding); the code's ``--anchor`` option (which data to train on) is not
reproduced; the code reports the test accuracy at the epoch of lowest noisy-validation loss,
the report here reads the last-10 mean (``test/acc_at_best_val`` selects by noisy-validation
accuracy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import require


def diagonally_dominant(weights: torch.Tensor) -> torch.Tensor:
    """Step 1: T = rownorm(I + sigmoid(W) off the diagonal)."""
    off_diagonal = 1.0 - torch.eye(len(weights), dtype=weights.dtype, device=weights.device)
    unnormalised = torch.eye(len(weights), dtype=weights.dtype, device=weights.device) + weights.sigmoid() * off_diagonal
    return unnormalised / unnormalised.sum(dim=1, keepdim=True)


def volmin_loss(logits: torch.Tensor, y: torch.Tensor, transition: torch.Tensor,
                lam: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Step 2: forward-corrected NLL plus λ·log|det T|; returns (loss, parts)."""
    noisy = logits.softmax(dim=1) @ transition
    nll = F.nll_loss(noisy.log(), y)
    volume = torch.linalg.slogdet(transition).logabsdet
    return nll + lam * volume, {"train/loss_nll": nll, "train/log_volume": volume}


def transition_error(estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """‖T̂ − T‖₁ / ‖T‖₁ (entrywise sums), the code's ``tools.error``."""
    return (estimate - truth).abs().sum() / truth.abs().sum()


# T's optimisers in the code: SGD with momentum 0.9 (CIFAR-10), Adam (MNIST, CIFAR-100); no weight decay
TRANSITION_OPTIMIZERS = {"sgd": {"name": "sgd", "momentum": 0.9, "weight_decay": 0.0},
                         "adam": {"name": "adam", "weight_decay": 0.0}}


class VolMinNet(LNLMethod):
    def __init__(self, lam: float, init: float, transition_optimizer: str, transition_lr: float, **settings):
        super().__init__(**settings)
        require(float(lam) >= 0, "lam", lam, "be >= 0 (the weight of log det T)")
        require(float(init) > 0, "init", init, "be > 0 (T's off-diagonal weights start at -init)")
        require(transition_optimizer in TRANSITION_OPTIMIZERS, "transition_optimizer", transition_optimizer,
                "be sgd or adam")
        require(float(transition_lr) > 0, "transition_lr", transition_lr, "be > 0")
        self.lam = float(lam)
        self.transition_optimizer = {**TRANSITION_OPTIMIZERS[transition_optimizer], "lr": float(transition_lr)}
        self.add_network("net", self.build_network)
        self.transition_weights = nn.Parameter(torch.full((self.num_classes, self.num_classes), -float(init)))

    def transition(self) -> torch.Tensor:
        return diagonally_dominant(self.transition_weights)

    def declare_optimizers(self):
        return {**super().declare_optimizers(), "transition": ([self.transition_weights], self.transition_optimizer)}

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        lr, _ = self.epoch_hyperparameters(self.current_epoch)  # T's lr follows the network's plan
        factor = lr / float(self.protocol.optimizer.lr)
        for group in self.optimizer("transition").param_groups:
            group["lr"] = self.transition_optimizer["lr"] * factor

    def training_step(self, batch, batch_idx: int):
        loss, parts = volmin_loss(self.net(batch["x"]), batch["y"], self.transition(), self.lam)
        self.step(loss, ("net", "transition"))
        self.log_epoch_mean({"train/loss": loss, **parts}, len(batch["y"]))
        return loss

    def on_train_epoch_end(self) -> None:
        if self.facts.transition is not None:
            truth = torch.tensor(self.facts.transition, dtype=torch.float32, device=self.device)
            self.log("train/transition_error", transition_error(self.transition().detach(), truth),
                     on_step=False, on_epoch=True, batch_size=1)
        super().on_train_epoch_end()
