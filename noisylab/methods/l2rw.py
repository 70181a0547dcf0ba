"""Learning to Reweight Examples (Ren, Zeng, Yang & Urtasun, ICML 2018; official TF code
uber-research/learning-to-reweight-examples).

Each iteration, with per-sample weights ε = 0 on the noisy batch:

    θ̂(ε) = θ − lr ∇θ Σ_i ε_i ℓ_i(θ)                   (one look-ahead step)
    w̃_i  = max(−∂/∂ε_i mean_j ℓ^trusted_j(θ̂), 0)       (the trusted loss's meta-gradient)
    w_i  = w̃_i / Σ_k w̃_k   (all zero when Σ w̃ = 0)
    θ    ← the optimiser's step on Σ_i w_i ℓ_i(θ)

When every w_i is 0 the loss is 0, but the optimiser still steps: θ moves by its momentum and
weight decay, as in the official code (whose step adds the decay term to the zero loss).

At ε = 0, θ̂ = θ and the meta-gradient is −lr ⟨∇θ ℓ_i, ∇θ L_trusted⟩: the weight of a sample
is how well its gradient agrees with the clean data's (tested against this closed form).
The scale of lr cancels in the normalisation. ``gradient: alignment`` (default) computes it
in that form, as the official code's non-legacy path does (one backward + one forward-mode
pass, no double backward: ``lookahead.alignment_gradient``); ``gradient: lookahead`` through
the differentiable step (``lookahead.backend``: ``higher`` or ``func``). Both give the same
weights (tested).

Protocol ``l2rw``: the paper's CIFAR WRN-28-10 configuration (SGD 0.1, momentum 0.9, weight
decay 2e-4, batch 100, lr ×0.1 at 40k and 50k of 60k iterations — 80, 100 and 120 epochs at
500 iterations per epoch); trusted set 1,000 clean CIFAR images (100 per class), trusted
batch = the noisy batch size. Clean score: the weight of each sample at its last visit, ×B
(1 = an average sample). Model: WRN-28-10 with dropout 0.3 between each block's convs, as the
official ``cifar-wide-resnet-28-10.prototxt`` (``model_settings`` of conf/method/l2rw.yaml,
applied when the run uses that model; ``model.dropout=0`` turns it off).

Deviations, on purpose; ``quirks=official`` turns the named ones back on:
* the trusted (clean) loss is the plain mean cross-entropy, the paper's; the official code's
  clean cost adds its L2 weight decay (λ/2)·Σ‖W‖² over conv kernels and fc weights, whose
  gradient λW then enters the meta-gradient ⟨∇ℓ_i, ∇L_trusted + λW⟩ (quirk
  ``clean_cost_decay``, ``gradient: alignment`` only: through the look-ahead the decay of θ
  does not depend on ε, as in the code's legacy path);
* the optimiser's weight decay falls on every parameter; the code decays conv kernels and fc
  weights only, not biases or BatchNorm's scales and shifts (quirk ``decay_weights_only``);
* iterations expressed as epochs; the look-ahead uses the current learning rate instead of
  the code's step size 1 (equivalent after normalisation).
The two quirks' effect on the WRN-28-10 CIFAR recipe is not measured (it needs a GPU); on fixed
inputs the decay term changes the weights (tests/test_l2rw.py). On the CPU, ``+sweep=bilevel_digits
method=l2rw`` (digits MLP, no BatchNorm), last-10 test accuracy, mean ± std over seeds 0-4:
sym50 paper 92.4 ± 0.6, official 92.4 ± 1.1; pair45 94.9 ± 1.3 vs 94.7 ± 0.3; sym80 77.0 ± 1.4 vs
79.2 ± 1.5 (clean_cost_decay alone 78.4, decay_weights_only alone 78.2). Only sym80's +2.2 is
larger than the seed spread, and only just.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.bilevel import BilevelMethod, trusted_loss
from noisylab.schema import optimizer_settings

GRADIENTS = ("alignment", "lookahead")


def normalised_weights(meta_grad: torch.Tensor) -> torch.Tensor:
    """w = max(−g, 0) / Σ max(−g, 0); zeros (never NaN) when no sample helps."""
    w = torch.clamp(-meta_grad, min=0)
    total = w.sum()
    return w / torch.where(total > 0, total, 1.0)  # no host sync: a Python branch on total would wait for the GPU


class LearningToReweight(BilevelMethod):
    official_quirks = ("clean_cost_decay", "decay_weights_only")

    def __init__(self, gradient: str, **settings):
        if gradient not in GRADIENTS:
            raise ConfigError(f"method.gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}.")
        super().__init__(**settings)
        if gradient == "alignment":
            self.refuse_optimizer_step(gradient)
        self.gradient = gradient
        self.per_sample_state("weight", fill=1.0)

    def training_step(self, batch, batch_idx: int):
        noisy, trusted = batch["noisy"], batch["trusted"]

        def losses(forward):
            return F.cross_entropy(forward(noisy["x"]), noisy["y"], reduction="none")

        outer = trusted_loss(trusted["x"], trusted["y"])
        if self.gradient == "alignment":
            decay = optimizer_settings(self.protocol.optimizer)["weight_decay"] if "clean_cost_decay" in self.quirks else 0.0
            meta = self.alignment_gradient(losses, outer, decay)
        else:
            eps = torch.zeros(len(noisy["y"]), device=self.device, requires_grad=True)
            meta = self.meta_gradient(lambda forward: (eps * losses(forward)).sum(), outer, [eps])
        w = normalised_weights(meta.grads[0])
        loss = (w * F.cross_entropy(self.net(noisy["x"]), noisy["y"], reduction="none")).sum()
        self.step(loss)
        self.weight[noisy["index"]] = (w * len(w)).to(self.weight.dtype)
        self.log_epoch_mean({"train/loss": loss, "train/meta_loss": meta.outer_loss,
                             "train/zero_weight_fraction": (w == 0).float().mean()}, len(w))
        return loss

    def clean_score(self) -> torch.Tensor:
        return self.weight
