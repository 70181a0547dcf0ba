"""mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018; official code
facebookresearch/mixup-cifar10).

One network; for each (augmented) mini-batch:
    1. lambda ~ Beta(alpha, alpha), one draw per batch; pi = a random permutation of the batch;
    2. x~ = lambda·x + (1 - lambda)·x[pi];
    3. L = lambda·CE(f(x~), y) + (1 - lambda)·CE(f(x~), y[pi]).
alpha = 1 is the official default; the paper's corrupted-label runs use 8 and 32, and Arazo et
al. warm up with 32 (``method.alpha=32``).

Protocol ``mixup`` (the official CIFAR code's): PreAct ResNet-18, SGD 0.1, momentum 0.9, weight
decay 1e-4, batch 128, 200 epochs, lr /10 at 100 and 150, crop + flip and normalisation.
Deviations: the normalisation constants are the dataset's (the code's CIFAR-10 std is
0.2023/0.1994/0.2010, a known mis-computation; ours 0.2470/0.2435/0.2616); lambda and pi come
from torch's generator (the code draws lambda with numpy), so they are in the checkpoint's
random state and a resumed run continues exactly; the paper trains on all 50,000 CIFAR images,
noisylab holds out ``data.val_fraction`` (10% by default) as a noisy validation split
(``data.val_fraction=0`` for the paper's setting, as the Arazo sweeps set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.base import LNLMethod


def draw_mixup(alpha: float, batch_size: int, device) -> tuple[float, torch.Tensor]:
    """Step 1: lambda ~ Beta(alpha, alpha) and a permutation of the batch (torch's generator)."""
    concentration = torch.tensor(float(alpha))
    lam = float(torch.distributions.Beta(concentration, concentration).sample())
    return lam, torch.randperm(batch_size).to(device)


def mixup_criterion(logits: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """Step 3: lambda·CE(logits, y) + (1 - lambda)·CE(logits, y[pi])."""
    return lam * F.cross_entropy(logits, y) + (1.0 - lam) * F.cross_entropy(logits, y[perm])


def mix_inputs(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """Step 2: lambda·x + (1 - lambda)·x[pi]."""
    return lam * x + (1.0 - lam) * x[perm]


def mixup_loss(network, x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """Steps 2-3 for a given lambda and permutation."""
    return mixup_criterion(network(mix_inputs(x, lam, perm)), y, lam, perm)


class Mixup(LNLMethod):
    def __init__(self, alpha: float, **settings):
        super().__init__(**settings)
        if not float(alpha) > 0:
            raise ConfigError(f"method.alpha must be > 0, got {alpha}.")
        self.alpha = float(alpha)
        self.add_network("net", self.build_network)

    def training_step(self, batch, batch_idx: int):
        x, y = batch["x"], batch["y"]
        lam, perm = draw_mixup(self.alpha, len(y), y.device)
        loss = mixup_loss(self.net, x, y, lam, perm)
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss, "train/mixup_lambda": lam}, len(y))
        return loss
