"""SOSELETO — Source Selection for Target Optimization (Litany & Freedman, arXiv 1805.09622,
ICLR 2019 LLD workshop; official code orlitany/SOSELETO: the 2-D notebook only).

Many source samples, few target samples, a shared representation θ with a source head φ_s
and a target head φ_t. Every source sample j carries a persistent weight α_j ∈ [0, 1]:

    inner:  θ, φ_s ← min  L_s = (1/m) Σ_j α_j ℓ(y_j^s, F(x_j^s; θ, φ_s))
    outer:  α, φ_t ← min  L_t = mean_i ℓ(y_i^t, F(x_i^t; θ*(α), φ_t))

One iteration on a source batch and a target batch:

1. ∂L_t/∂α_j through one look-ahead step of the network (``self.meta_gradient``): with
   ``gradient: first_order`` (the paper's approximation, the notebook's computation) the
   target gradient is taken at the current θ, ∂L_t/∂α_j ≈ −λ_p ⟨∇θ ℓ_j, ∇θ L_t(θ)⟩;
   computed without a double backward (``lookahead.alignment_gradient``, tested equal to the
   look-ahead at zero weights); ``gradient: lookahead`` takes it at θ̂ = θ − λ_p ∇θ Σ_j α_j ℓ_j (the one-step bilevel
   gradient the approximation stands for). λ_p is the optimiser's current learning rate.
2. α_j ← clip_[0,1](α_j − λ_α ∂L_t/∂α_j)  (= α_j + λ_α λ_p ⟨g_j, g_t⟩ in the first-order case:
   the notebook's update; the look-ahead's inner loss is the batch *sum* Σ_j α_j ℓ_j, so λ_α
   is the notebook's ``alpha_lr``; the paper's 1/m is absorbed into λ_α as the notebook does).
3. The real step (the protocol's optimiser) on the batch *mean* (1/m) Σ_j α_j ℓ_j with the
   freshly updated α (the notebook's order and reduction), plus the target loss according to
   ``target_step``: ``head`` — L_t trains the target head only (the classifier's input is
   detached: θ learns from the target solely through α, as the bilevel problem states);
   ``network`` — L_t trains the whole network too; ``none`` — no target term (the notebook).

Two settings. Noisy labels: source = the noisy training set, target = the trusted clean set,
one label space, so one head serves as φ_s and φ_t. Transfer (a datamodule whose facts name
``target_classes``, e.g. ``data=svhn_to_mnist``): the network's last layer gets C_s + C_t
outputs — the first C_s rows are the source head, the rest the target head, each with its own
softmax, over the shared features — and evaluation reads the target head.

Defaults, from the notebook (the paper's CIFAR/transfer hyperparameters are not public):
α initialised to 0.5, λ_α = 20 (the notebook's params; its ``train()`` default is 5),
protocol ``soseleto`` = SGD lr 0.01, momentum 0.5, batch 16, 100 epochs. Clean score: α.
Deviations: the notebook takes the target gradient on the whole target set (50 points) each
step; here the trusted batch is ``data.trusted_batch_size`` (the noisy batch size unless set;
``method_data/soseleto_toy2d.yaml`` sets the whole set). The notebook updates α sample by
sample inside the batch; with the first-order gradient each α_j depends on its own sample
only, so the batched update is the same. The default ``target_step: head`` trains the target
head on L_t, as the paper's outer problem states (φ_t ← min L_t); the notebook has no target
term (``target_step: none``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from noisylab.errors import ConfigError
from noisylab.methods.bilevel import BilevelMethod
from noisylab.methods.contract import RunFacts
from noisylab.methods.lookahead import Forward, MetaGradient

GRADIENTS = ("first_order", "lookahead")
TARGET_STEPS = ("head", "network", "none")


def weight_meta_gradient(meta_gradient: Callable, x: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor,
                         target_loss: Callable[[Forward], torch.Tensor], gradient: str,
                         source: slice = slice(None)) -> MetaGradient:
    """∂L_t/∂α_j for the batch's source samples, through ``meta_gradient(inner, outer, wrt)``
    on the inner loss Σ_j (a_j + δ_j) ℓ_j, at δ = 0: a_j = α_j (``lookahead``) or 0
    (``first_order``: the step is then θ̂ = θ, the target gradient the current one).
    ``source`` selects the source head's logits."""
    delta = torch.zeros_like(alpha, requires_grad=True)
    base = alpha.detach() if gradient == "lookahead" else torch.zeros_like(alpha)

    def inner(forward):
        return ((base + delta) * F.cross_entropy(forward(x)[:, source], y, reduction="none")).sum()

    return meta_gradient(inner, target_loss, [delta])


def updated_weights(alpha: torch.Tensor, meta_grad: torch.Tensor, lr_alpha: float) -> torch.Tensor:
    """α ← clip_[0,1](α − λ_α ∂L_t/∂α)."""
    return (alpha - lr_alpha * meta_grad).clamp(0.0, 1.0)


class DetachedFeatures:
    """Within the block, the network's head sees detached features: a loss then trains the
    head only (every noisylab model is features -> ``classifier``)."""

    def __init__(self, net: nn.Module):
        self.head = net.classifier

    def __enter__(self):
        self.handle = self.head.register_forward_pre_hook(lambda module, args: (args[0].detach(),))

    def __exit__(self, *exc):
        self.handle.remove()


class OutputSlice(nn.Module):
    """The target head's logits of a two-head network (what evaluation reads)."""

    def __init__(self, net: nn.Module, part: slice):
        super().__init__()
        self.part = part
        self.__dict__["net"] = net  # not a submodule: the parameters stay the method's own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.part]

    def train(self, mode: bool = True):
        self.net.train(mode)
        return super().train(mode)


class Soseleto(BilevelMethod):
    target_head = True  # a second head for data with target classes of their own (svhn_to_mnist)

    def __init__(self, lr_alpha: float, alpha_init: float, gradient: str, target_step: str, **settings):
        if gradient not in GRADIENTS:
            raise ConfigError(f"method.gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}.")
        if target_step not in TARGET_STEPS:
            raise ConfigError(f"method.target_step must be one of {', '.join(TARGET_STEPS)}, got {target_step!r}.")
        if not 0.0 <= float(alpha_init) <= 1.0:
            raise ConfigError(f"method.alpha_init must lie in [0, 1], got {alpha_init}.")
        if not float(lr_alpha) > 0:
            raise ConfigError(f"method.lr_alpha must be > 0, got {lr_alpha}.")
        self.lr_alpha, self.gradient, self.target_step = float(lr_alpha), gradient, target_step
        target_classes = RunFacts.of(settings["facts"]).target_classes
        self.two_heads = bool(target_classes)
        super().__init__(**settings)
        if gradient == "first_order":
            self.refuse_optimizer_step(gradient)
        c_s = self.num_classes
        self.source_part = slice(0, c_s) if self.two_heads else slice(None)
        self.target_part = slice(c_s, c_s + len(target_classes)) if self.two_heads else slice(None)
        self.per_sample_state("alpha", fill=float(alpha_init))

    def build_network(self) -> nn.Module:
        extra = len(self.facts.target_classes) if self.two_heads else 0
        return super().build_network(self.num_classes + extra)

    def network(self, name: str) -> nn.Module:
        net = super().network(name)
        return OutputSlice(net, self.target_part) if self.two_heads and name == "net" else net

    def target_loss(self, forward: Forward, trusted) -> torch.Tensor:
        return F.cross_entropy(forward(trusted["x"])[:, self.target_part], trusted["y"])

    def training_step(self, batch, batch_idx: int):
        source, trusted = batch["noisy"], batch["trusted"]
        index = source["index"]
        target_loss = lambda forward: self.target_loss(forward, trusted)  # noqa: E731
        if self.gradient == "first_order":
            meta = self.alignment_gradient(  # the same numbers as weight_meta_gradient(..., "first_order")
                lambda forward: F.cross_entropy(forward(source["x"])[:, self.source_part], source["y"],
                                                reduction="none"), target_loss)
        else:
            meta = weight_meta_gradient(self.meta_gradient, source["x"], source["y"], self.alpha[index],
                                        target_loss, self.gradient, self.source_part)
        alpha = updated_weights(self.alpha[index], meta.grads[0], self.lr_alpha)
        self.alpha[index] = alpha
        losses = F.cross_entropy(self.net(source["x"])[:, self.source_part], source["y"], reduction="none")
        source_loss = (alpha * losses).mean()
        loss = source_loss
        if self.target_step == "network":
            loss = loss + self.target_loss(self.net, trusted)
        elif self.target_step == "head":
            with DetachedFeatures(self.net):
                loss = loss + self.target_loss(self.net, trusted)
        self.step(loss)
        self.log_epoch_mean({"train/loss": source_loss, "train/target_loss": meta.outer_loss,
                             "train/alpha_mean": alpha.mean(),
                             "train/zero_alpha_fraction": (alpha == 0).float().mean()}, len(alpha))
        return loss

    def clean_score(self) -> torch.Tensor:
        return self.alpha
