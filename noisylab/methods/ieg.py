"""IEG: "Distilling Effective Supervision from Severe Label Noise" (Zhang, Zhang, Arik, Lee &
Pfister, CVPR 2020; official TF code google-research/google-research ``ieg/``, read for
``models/model.py``, ``custom_ops.py``, ``basemodel.py``, ``wrn.py``, ``options.py``).

Each iteration, on a noisy batch (x, ỹ) of size B and a trusted (probe) batch:

1. **Pseudo labels.** K views of x (K = ``views`` = 2, the code's ν); each view's logits are
   scaled by ``logit_norm`` (z / √(mean(z²) + 1e-8), the mean over the whole view), softmaxed,
   averaged over the views and sharpened, p^(1/T) renormalised (T = 0.5): the guess g.
2. **MixUp** (the code's mode ``xxy.yxy``): a pool of B probes drawn with replacement (one-hot
   labels) and the K views (label g) is mixed with a random permutation of itself, each
   element keeping the weight max(m, 1 − m), m = u^(1/β)/2, u ~ U(0, 1), β = 0.5. The mixed
   logits are ``logit_norm``-ed per part; L_xe = CE(probe part) + p · CE(view parts), p = 5.
3. **Consistency:** L_cs = k · mean_i KL(softmax(z¹_i) ‖ softmax(z^k_i)) between the first
   view (a constant) and each other view, k = 20 (the code's mean over B·C times C).
4. **Meta step** with weights w⁰ = 1/B and relabel coefficients λ⁰ = 0.9 (``init_lambda``,
   the code's grad_eps_init): targets ŷ = λ·onehot(ỹ) + (1 − λ)·g, the look-ahead
   θ̂ = θ − 0.1·(∇θ Σ_i w_i CE(ŷ_i, z¹_i) + wd·θ + 0.9·m) with the real optimiser's momentum m
   (``lookahead.step: optimizer``, ``lookahead.lr: 0.1`` = the code's meta_stepsize, not the
   scheduled lr), the probe loss at θ̂ (batch statistics), then
   w = max(−∂/∂w, 0) / (Σ max(−∂/∂w, 0) + 1e-5) and λ_i = 1 if ∂/∂λ_i < 0 else 0: keep the
   given label where raising λ lowers the probe loss, otherwise take the pseudo label.
5. **Final loss** (as the code, not "weights × relabelled CE"):
   L = ½[mean_i CE(λ_i onehot + (1 − λ_i) g, z¹_i) + Σ_i w_i CE(0.9 onehot + 0.1 g, z¹_i)]
   + L_xe + L_cs — an unweighted CE on the meta-relabelled targets and a weighted CE on
   targets with the *initial* λ; one momentum-SGD step (weight decay in the optimiser, as
   the code's l2 loss wd·‖θ‖²/2), then the EMA of the weights (decay 0.999, warmed up as TF's
   ExponentialMovingAverage with num_updates: min(0.999, (1 + n)/(10 + n))).

Evaluation uses the EMA weights with the network's own BatchNorm statistics, as the code's
``eval_step``: ``test/acc`` is the EMA network's, ``test/acc_net`` the raw one's.

Protocol ``ieg`` (the code's WRN-28-10 CIFAR recipe): momentum SGD 0.1 / 0.9, weight decay
5e-4 (the WRN's default at the paper's release; a later options.py says 4e-4), batch 100,
cosine decay with restarts (first period 500 iterations, t_mul 1.5, m_mul 0.9) refreshed every
iteration, 200,000 iterations. Iterations map to epochs at the code's 490 iterations per
epoch (49,000 CIFAR training images after the 1,000 probes, batch 100): first period
500/490 = 1.0204 epochs, 408 epochs in all (the README: "200 epochs can obtain reported
results"). Trusted set: 10 images per class (CIFAR-100's 1,000 probes); 1 per class works
as well (``data.trusted_per_class=1``). Per-sample state: ``weight`` (w·B at the sample's
last visit, 1 = an average sample) and ``relabel`` (λ at its last visit: 1 kept the given
label, 0 took the pseudo label); the clean score is ``weight``.

Deviations: the strong view is another draw of the data's augmentation (noisylab has no
AutoAugment; the code's second view is AutoAugment); probe batches are shuffled draws of the
trusted set (the code cycles them unshuffled, class-balanced); the probe loss at θ̂ omits the
code's weight-decay term wd·‖θ̂‖²/2 (the look-ahead API hands the outer loss a forward only);
the guessed labels are constants in the look-ahead (the code's raw CE there lets its gradient
reach them through the look-ahead step, while ``tf.losses`` stops it in the final loss;
``quirks=official``, quirk ``pseudo_label_gradient``, recomputes them inside the look-ahead so
that it does. Measured on the same states (digits, MLP, sym-50, 5 epochs, 65 steps): it changes
9% of the relabel decisions per step (13% in the later steps, at most 32%) and the weights by up
to 15% of the largest weight (4% on average); an earlier audit measured about 14% of the
decisions and weights changed by up to 45%); a last, smaller batch is kept (the code drops it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.base import log
from noisylab.methods.bilevel import BilevelMethod
from noisylab.methods.contract import require


def logit_norm(logits: torch.Tensor) -> torch.Tensor:
    """z / √(mean(z²) + 1e-8), the mean over the whole tensor (one view, or one mixed part)."""
    return logits * torch.rsqrt(logits.pow(2).mean() + 1e-8)


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T), renormalised per row."""
    q = p.pow(1.0 / temperature)
    return q / q.sum(dim=1, keepdim=True)


def guess_labels(view_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """The pseudo label: the mean over the views of softmax(logit_norm(z)), sharpened."""
    p = torch.stack([F.softmax(logit_norm(z), dim=1) for z in view_logits]).mean(dim=0)
    return sharpen(p, temperature)


def mixed_targets(lam: torch.Tensor | float, onehot: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """λ·onehot(ỹ) + (1 − λ)·g, with λ a number or one per sample."""
    lam = torch.as_tensor(lam, dtype=onehot.dtype, device=onehot.device)
    lam = lam.view(-1, 1) if lam.dim() else lam
    return lam * onehot + (1 - lam) * pseudo


def meta_weights(grad_w: torch.Tensor) -> torch.Tensor:
    """w = max(−g, 0) / (Σ max(−g, 0) + 1e-5), as the code (no division by zero)."""
    w = torch.clamp(-grad_w, min=0)
    return w / (w.sum() + 1e-5)


def relabel_choice(grad_lam: torch.Tensor) -> torch.Tensor:
    """λ_i = 1 (the given label) where ∂L_probe/∂λ_i < 0, else 0 (the pseudo label)."""
    return (grad_lam < 0).to(grad_lam.dtype)


def final_loss(logits: torch.Tensor, onehot: torch.Tensor, pseudo: torch.Tensor, relabel: torch.Tensor,
               weights: torch.Tensor, init_lambda: float) -> torch.Tensor:
    """½[mean_i CE(ŷ_i(λ_i), z_i) + Σ_i w_i CE(ŷ_i(λ⁰), z_i)]: the relabelled targets
    unweighted, the initial-λ targets weighted."""
    relabelled = F.cross_entropy(logits, mixed_targets(relabel, onehot, pseudo))
    weighted = (weights * F.cross_entropy(logits, mixed_targets(init_lambda, onehot, pseudo), reduction="none")).sum()
    return (relabelled + weighted) / 2


def consistency_loss(logits: torch.Tensor, aug_logits: torch.Tensor) -> torch.Tensor:
    """mean_i KL(softmax(z_i) ‖ softmax(z^aug_i)), the first view a constant."""
    return F.kl_div(F.log_softmax(aug_logits, dim=1), F.log_softmax(logits.detach(), dim=1),
                    log_target=True, reduction="batchmean")


def mixup_own_weight(u: torch.Tensor, beta: float) -> torch.Tensor:
    """The weight an element keeps: max(m, 1 − m), m = u^(1/β)/2 (the code's Beta stand-in)."""
    m = u.pow(1.0 / beta) / 2
    return torch.maximum(m, 1 - m)


def mixup(x: torch.Tensor, targets: torch.Tensor, own: torch.Tensor, perm: torch.Tensor):
    """Each element mixed with its permutation partner: own·a + (1 − own)·a[perm]."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (own.view(shape) * x + (1 - own.view(shape)) * x[perm],
            own.view(-1, 1) * targets + (1 - own.view(-1, 1)) * targets[perm])


def mixup_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, num_probes: int, views: int,
                        ce_factor: float) -> torch.Tensor:
    """CE(probe part) + p · CE(view parts), each part's logits ``logit_norm``-ed on their own."""
    parts = logits.split([num_probes] + [(len(logits) - num_probes) // views] * views)
    normed = [logit_norm(part) for part in parts]
    probe = F.cross_entropy(normed[0], targets[:num_probes])
    unlabelled = F.cross_entropy(torch.cat(normed[1:]), targets[num_probes:])
    return probe + ce_factor * unlabelled


class IEG(BilevelMethod):
    reported = ("ema", "net")
    official_quirks = ("pseudo_label_gradient",)
    raw_batches = True

    def __init__(self, views: int, temperature: float, init_lambda: float, mixup_beta: float, ce_factor: float,
                 consistency_factor: float, ema_decay: float, **settings):
        super().__init__(**settings)
        if int(views) < 2:
            raise ConfigError(f"method.views must be at least 2 (the pseudo label averages views), got {views}.")
        require(0 <= float(init_lambda) <= 1, "init_lambda", init_lambda, "lie in [0, 1]")
        require(0 <= float(ema_decay) < 1, "ema_decay", ema_decay, "lie in [0, 1) (0: evaluate the raw network)")
        require(float(temperature) > 0, "temperature", temperature, "be > 0 (the sharpening T)")
        require(float(mixup_beta) > 0, "mixup_beta", mixup_beta, "be > 0")
        require(float(ce_factor) >= 0, "ce_factor", ce_factor, "be >= 0 (the weight of the MixUp CE on the noisy views)")
        require(float(consistency_factor) >= 0, "consistency_factor", consistency_factor,
                "be >= 0 (the weight of the consistency loss)")
        self.views, self.temperature, self.init_lambda = int(views), float(temperature), float(init_lambda)
        self.mixup_beta, self.ce_factor = float(mixup_beta), float(ce_factor)
        self.consistency_factor, self.ema_decay = float(consistency_factor), float(ema_decay)
        self.add_network("ema", lambda: copy.deepcopy(self.net).requires_grad_(False))
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.per_sample_state("weight", fill=1.0)
        self.per_sample_state("relabel", fill=1.0)

    def on_fit_start(self) -> None:
        if self.trainer.datamodule.transform.augment in (None, "none"):
            log.warning("method=ieg on data without augmentation (data.augment=none): its %d views are identical, "
                        "so the pseudo label is one sharpened prediction and the consistency loss is 0; "
                        "data.augment=crop gives distinct views (+data.padding=1 on 8x8 digits).", self.views)

    def on_train_batch_start(self, batch, batch_idx: int):
        # the code's schedule moves every iteration: the lr at this iteration's fraction of the epoch
        lr, _ = self.epoch_hyperparameters(self.current_epoch + batch_idx / max(self.trainer.num_training_batches, 1))
        for group in self.optimizer("net").param_groups:
            group["lr"] = lr
        return super().on_train_batch_start(batch, batch_idx)

    def training_step(self, batch, batch_idx: int):
        noisy, trusted = batch["noisy"], batch["trusted"]
        y, size = noisy["y"], len(noisy["y"])
        views = [self.view(noisy["x"]) for _ in range(self.views)]
        probe_x, probe_y = self.view(trusted["x"]), trusted["y"]
        view_logits = [self.net(v) for v in views]
        pseudo = guess_labels(view_logits, self.temperature).detach()
        onehot = F.one_hot(y, self.num_classes).to(pseudo.dtype)

        pick = torch.randint(len(probe_y), (size,), device=self.device)  # B probes, with replacement
        pool_x = torch.cat([probe_x[pick], *views])
        pool_t = torch.cat([F.one_hot(probe_y[pick], self.num_classes).to(pseudo.dtype), pseudo.repeat(self.views, 1)])
        own = mixup_own_weight(torch.rand(len(pool_x), device=self.device), self.mixup_beta)
        mixed_x, mixed_t = mixup(pool_x, pool_t, own, torch.randperm(len(pool_x), device=self.device))
        xe_loss = mixup_cross_entropy(self.net(mixed_x), mixed_t, size, self.views, self.ce_factor)
        cs_loss = self.consistency_factor * torch.stack(
            [consistency_loss(view_logits[0], z) for z in view_logits[1:]]).mean()

        w0 = torch.full((size,), 1.0 / size, device=self.device, dtype=pseudo.dtype, requires_grad=True)
        lam0 = torch.full((size,), self.init_lambda, device=self.device, dtype=pseudo.dtype, requires_grad=True)

        def inner(forward):
            # quirk pseudo_label_gradient: the guess recomputed at the look-ahead's θ (the same values),
            # so the step's gradient also flows through it, as the code's raw CE lets it
            guess = (guess_labels([forward(v) for v in views], self.temperature)
                     if "pseudo_label_gradient" in self.quirks else pseudo)
            return (w0 * F.cross_entropy(forward(views[0]), mixed_targets(lam0, onehot, guess), reduction="none")).sum()

        def outer(forward):
            return F.cross_entropy(forward(probe_x), probe_y)

        meta = self.meta_gradient(inner, outer, [w0, lam0])
        weights, relabel = meta_weights(meta.grads[0]), relabel_choice(meta.grads[1])
        net_loss = final_loss(view_logits[0], onehot, pseudo, relabel, weights, self.init_lambda)
        loss = net_loss + xe_loss + cs_loss
        self.step(loss)
        self.update_ema()
        self.weight[noisy["index"]] = (weights * size).to(self.weight.dtype)
        self.relabel[noisy["index"]] = relabel.to(self.relabel.dtype)
        self.log_epoch_mean({"train/loss": loss, "train/net_loss": net_loss, "train/xe_loss": xe_loss,
                             "train/cs_loss": cs_loss, "train/meta_loss": meta.outer_loss,
                             "train/zero_weight_fraction": (weights == 0).float().mean(),
                             "train/kept_label_fraction": relabel.mean()}, size)
        return loss

    @torch.no_grad()
    def update_ema(self) -> None:
        """shadow ← d·shadow + (1 − d)·θ, d = min(decay, (1 + n)/(10 + n)) after the n-th step;
        BatchNorm statistics are the network's own."""
        self.ema_updates += 1
        n = self.ema_updates.double()  # on the device: float(n) would wait for the GPU every step
        weight = 1 - torch.clamp((1 + n) / (10 + n), max=self.ema_decay)
        for shadow, p in zip(self.ema.parameters(), self.net.parameters()):
            shadow.lerp_(p, weight.to(p.dtype))
        for shadow, b in zip(self.ema.buffers(), self.net.buffers()):
            shadow.copy_(b)

    def clean_score(self) -> torch.Tensor:
        return self.weight
