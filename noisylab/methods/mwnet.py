"""Meta-Weight-Net (Shu, Xie, Yi, Zhao, Zhou, Xu & Meng, "Meta-Weight-Net: Learning an Explicit
Mapping For Sample Weighting", NeurIPS 2019; official code xjtushujun/meta-weight-net).

A weighting network V (an MLP 1 → 100 → 1, ReLU, sigmoid; parameters Θ) maps a sample's
loss to its weight. Each iteration, on a noisy batch and a trusted (meta) batch:

    ℓ_i = CE(f(x_i; θ), ỹ_i);  v_i = V(ℓ_i; Θ)  (ℓ_i detached at V's input)
    θ̂(Θ) = θ − α_t ∇θ Σ_i n(v)_i ℓ_i          (one plain-SGD look-ahead at the current lr α_t)
    Θ    ← the meta optimiser's step on ∇Θ mean_j CE(f(x^v_j; θ̂(Θ)), y^v_j)
    θ    ← the optimiser's step on Σ_i n(V(ℓ_i; Θ))_i ℓ_i  (losses recomputed, V fixed)

with the weights normalised by ``weight_norm``: ``sum`` n(v) = v / Σ v (the paper and its
WRN-28-10 script ``train_WRN-28-10_Meta_PGC.py``; v unchanged when Σ v = 0) or ``batch``
n(v) = v / B (the "stable" ResNet-32 script ``MW-Net.py``).

The two official recipes are protocols, and each carries the weighting network's recipe in
its ``meta`` block (``weight_norm``, ``optimizer``), which the method config follows unless
``method.weight_norm`` / ``method.meta_optimizer`` are set:

* ``mwnet_wrn`` (default; the paper's uniform-noise table, WRN-28-10): SGD 0.1, momentum 0.9,
  Nesterov, weight decay 5e-4, batch 100, 20k iterations with lr ×0.1 at 18k and 19k; V by
  SGD 1e-3, momentum 0.9, Nesterov, weight decay 5e-4; weights / Σ v.
* ``mwnet`` (the stable script, ResNet-32): SGD 0.1, momentum 0.9, weight decay 5e-4, batch
  100, 120 epochs, lr ×0.1 at 80 and 100; V by Adam 1e-3, weight decay 1e-4; weights / B.

Both: trusted (meta) set 1,000 clean images carved from the training set (100 per class on
CIFAR-10, 10 on CIFAR-100), meta batch = batch size (100); the look-ahead on a copy in train
mode (batch statistics). Clean score: V's weight of each sample at its last visit (the real
step's v_i, before normalisation; 1 before the first visit).

Deviations: the WRN script's iterations are expressed as epochs (41 epochs of 490 batches,
steps at epochs 37 and 39, i.e. iterations 18,130 and 19,110) and its batches are drawn by
epoch without replacement (the script draws each batch from a freshly shuffled loader); the
crop pads with zeros (the scripts pad by reflection); both scripts report the largest test
accuracy seen during training, noisylab the mean of the last 10 epochs.

Slow start, not a defect: V begins as a random function of the loss (PyTorch's default
initialisation, as the code), increasing or decreasing by the seed's draw, and each of its
steps is the meta-gradient scaled by the look-ahead lr α_t and V's lr 1e-3, so it turns slowly.
Measured on ``data=toy2d model.hidden=[2] protocol=soseleto`` (lr 0.01): with seed 2, V starts
increasing in the loss, so it favours the flipped points (detection AUC 0.003 at epochs 25-50,
weights 0.51-0.63), then turns (AUC 0.07 at epoch 75, 0.33 at 100, 0.84 at 150, 0.998 from
200 on); seeds 0 and 1 end their first 20 epochs at AUC 0.997 and 0.66; with the default
``mwnet_wrn`` recipe (lr 0.1) seed 0 reaches 0.997 within 6 epochs. A short run's AUC reflects
V's initial draw more than what it learned.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from noisylab.errors import ConfigError
from noisylab.methods.base import build_optimizer, plain
from noisylab.methods.bilevel import BilevelMethod, trusted_loss
from noisylab.methods.lookahead import Forward

WEIGHT_NORMS = ("sum", "batch")


class WeightNet(nn.Sequential):
    """V: loss → weight in (0, 1), an MLP 1 → hidden → 1 with ReLU and a sigmoid (PyTorch's
    default Linear initialisation, as the official ``MetaLinear``)."""

    def __init__(self, hidden: int):
        super().__init__(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """(B,) per-sample losses → (B,) weights."""
        return self(losses[:, None]).squeeze(1)


def normalise(v: torch.Tensor, weight_norm: str) -> torch.Tensor:
    """``sum``: v / Σ v (v itself when Σ v = 0: zeros, never NaN); ``batch``: v / B."""
    if weight_norm == "batch":
        return v / len(v)
    total = v.sum()
    return v / torch.where(total != 0, total, torch.ones_like(total))


def weighted_loss(losses: torch.Tensor, v: torch.Tensor, weight_norm: str) -> torch.Tensor:
    return (normalise(v, weight_norm) * losses).sum()


def inner_loss(vnet: WeightNet, x: torch.Tensor, y: torch.Tensor, weight_norm: str) -> Callable[[Forward], torch.Tensor]:
    """The look-ahead's training loss, a function of Θ through V (V sees detached losses)."""
    def inner(forward: Forward) -> torch.Tensor:
        losses = F.cross_entropy(forward(x), y, reduction="none")
        return weighted_loss(losses, vnet.weights(losses.detach()), weight_norm)
    return inner


def check_optimizer(key: str, cfg) -> None:
    """Stops with one sentence unless ``cfg`` builds an optimiser with lr > 0 (a misspelled
    name or key, a negative value). A block without a name is refused: on the command line
    ``method.meta_optimizer.lr=...`` replaces the protocol's whole block by ``{lr: ...}``."""
    try:
        if "name" not in OmegaConf.create(cfg) and "_target_" not in OmegaConf.create(cfg):
            raise ValueError(f"it names no optimiser (setting one key of method.{key} replaces the whole block; "
                             "protocol.meta.optimizer.lr=... changes one value of the protocol's)")
        if not float(OmegaConf.create(cfg).lr) > 0:
            raise ValueError("its lr must be > 0")
        build_optimizer([nn.Parameter(torch.zeros(1))], OmegaConf.create(cfg))
    except Exception as error:  # noqa: BLE001 - whatever the reason, the sentence names the setting
        raise ConfigError(f"method.{key}={cfg} is not a valid optimiser: {str(error).splitlines()[0].rstrip('.')}.") from None


class MetaWeightNet(BilevelMethod):
    def __init__(self, weight_norm: str, meta_optimizer, hidden: int, **settings):
        super().__init__(**settings)
        if weight_norm not in WEIGHT_NORMS:
            raise ConfigError(f"method.weight_norm must be one of {', '.join(WEIGHT_NORMS)}, got {weight_norm!r}.")
        if int(hidden) < 1:
            raise ConfigError(f"method.hidden must be >= 1, got {hidden}.")
        self.weight_norm = weight_norm
        self.meta_optimizer_cfg = plain(meta_optimizer)
        check_optimizer("meta_optimizer", self.meta_optimizer_cfg)
        self.vnet = WeightNet(int(hidden))  # not a network of add_network: it has its own optimiser
        self.per_sample_state("weight", fill=1.0)

    def declare_optimizers(self):
        return {**super().declare_optimizers(), "meta": (self.vnet.parameters(), self.meta_optimizer_cfg)}

    def training_step(self, batch, batch_idx: int):
        noisy, trusted = batch["noisy"], batch["trusted"]
        theta = list(self.vnet.parameters())
        meta = self.meta_gradient(inner_loss(self.vnet, noisy["x"], noisy["y"], self.weight_norm),
                                  trusted_loss(trusted["x"], trusted["y"]), theta)
        # a linear surrogate whose gradient is the meta-gradient: the step goes through self.step
        self.step(sum((p * g).sum() for p, g in zip(theta, meta.grads)), "meta")

        losses = F.cross_entropy(self.net(noisy["x"]), noisy["y"], reduction="none")
        with torch.no_grad():
            v = self.vnet.weights(losses.detach())
        loss = weighted_loss(losses, v, self.weight_norm)
        self.step(loss)
        self.weight[noisy["index"]] = v.to(self.weight.dtype)
        self.log_epoch_mean({"train/loss": loss, "train/meta_loss": meta.outer_loss,
                             "train/mean_weight": v.mean()}, len(v))
        return loss

    def clean_score(self) -> torch.Tensor:
        return self.weight
