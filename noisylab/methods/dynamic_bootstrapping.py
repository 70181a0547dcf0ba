"""Beta-mixture dynamic bootstrapping (Arazo, Ortego, Albert, O'Connor & McGuinness,
"Unsupervised Label Noise Modeling and Loss Correction", ICML 2019), as the official code
runs it (PaulAlbert31/LabelNoiseCorrection, commit 5e9a73ee: train.py, utils.py, RunScripts.sh).

One network. After every epoch (the warm-up included) the per-sample cross-entropy of the
whole training set is computed in eval mode (on augmented images, as the code's tracking
loader uses the training transform: ``augment_pass``), and a two-component beta mixture is
fit to it (``beta_mixture.py``: 5th-95th percentile clipping, scaling, 10 EM steps, the
100-entry table of the noisy posterior). In a training step, B_i = P(noisy | l_i) is read from
that table for the batch's own current losses (one extra forward in eval mode, as the code's
``compute_probabilities_batch``), clipped to [1e-4, 1 - 1e-4]; B = 1/2 before the first fit.
h = log-softmax of the network on the mixed input, pi a permutation of the batch, and
R = sum_c (1/C) log((1/C) / mean_batch softmax_c) the prior regulariser, weight
``reg_weight`` = 1 (RunScripts.sh; the argparse default is 0).

``dyr_h`` (M-DYR-H, ``--Mixup Static --BootBeta Hard``):
    epochs 1-105: mixup, lambda ~ Beta(32, 32);
    from 106: z = argmax f(x) from an unmixed forward (train mode, no gradient), mixup input
    x~ = lambda x + (1 - lambda) x_pi, and
    L = lambda·mean[(1 - B) CE(h, y) + B CE(h, z)] + (1 - lambda)·mean[(1 - B_pi) CE(h, y_pi)
        + B_pi CE(h, z_pi)] + w R.
``dyr_sh`` (MD-DYR-SH, ``--Mixup Dynamic``):
    epochs 1-105: mixup, lambda ~ Beta(32, 32);
    106-110: guided mixup x~ = [(1 - B) x + (1 - B_pi) x_pi] / (2 - B - B_pi), loss
    lambda' CE(h, y) + (1 - lambda') CE(h, y_pi) with lambda' ~ Beta(32, 32) drawn independently of
    the input weights (the code's), no regulariser;
    from 111: the same inputs and soft-to-hard bootstrapping with p = softmax(f(x) / T) from an
    unmixed forward, L = 0.5·mean[(1 - B) CE(h, y) - B sum p·h] + 0.5·mean[same at pi] + w R
    (fixed weights 0.5, the code's); T = linspace(1, 0.001, 89)[epoch - 111], then 0.001
    (the code's hard-coded end at epoch 200: 200 - 111 = 89 steps).
Epochs above are the code's (1-based); the settings count 0-based: ``warmup_epochs`` = 105,
``guided_epochs`` = 5, ``temperature_epochs`` = 89.

Protocol ``arazo`` (RunScripts.sh): PreAct ResNet-18, SGD 0.1, momentum 0.9, weight decay 1e-4,
batch 128, 300 epochs, lr x0.1 at 100 and 250, crop + flip + normalisation. Per-sample score
(``clean_posterior``, written after every fit): 1 - B_i of each training sample's loss in the
pass. Reported beside the noisy-validation selection: ``test/acc_best`` (the code's "best", the
highest test accuracy of any epoch) and ``test/acc_last``.

The defaults are the code's behaviour (``quirks=official`` has nothing more to switch on).
Deviations: lambda, pi and lambda' come from torch's generator (the code: numpy and torch);
the code calls ``scheduler.step()`` at the start of each epoch, so its lr drops one epoch
earlier (1-based epochs 100 and 250) than the protocol's; normalisation with the dataset's
statistics (see mixup.py); uniform noise with ``include_true_class=true`` relabels exactly
int(r N) samples over all C classes (the code: an independent Bernoulli(r) per sample, and
only classes 0-9 on CIFAR-100, a bug not copied); a beta-mixture fit on losses of one value
is uninformative (B = 1/2) where the code gives NaN (beta_mixture.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.base import LNLMethod
from noisylab.methods.beta_mixture import CLEAN, LOOKUP_SIZE, NOISY, fit_losses, read_lookup, scale_losses
from noisylab.methods.contract import Stage, require
from noisylab.methods.joint_opt import uniform_prior_kl
from noisylab.methods.mixup import draw_mixup, mix_inputs, mixup_criterion, mixup_loss

B_CLIP = 1e-4  # B is kept in [1e-4, 1 - 1e-4]


def prior_regulariser(logits: torch.Tensor) -> torch.Tensor:
    """R = sum_c (1/C) log((1/C) / p_c), p = the batch mean of softmax(logits)."""
    return uniform_prior_kl(F.log_softmax(logits, dim=1))  # Joint Optimization's L_p, as the code


def hard_bootstrap_mixup_loss(logits: torch.Tensor, y: torch.Tensor, z: torch.Tensor, noisy: torch.Tensor,
                              lam: float, perm: torch.Tensor) -> torch.Tensor:
    """M-DYR-H: lambda·mean[(1-B) CE(h, y) + B CE(h, z)] + (1-lambda)·mean[the same at pi]."""
    def part(index):
        label = F.cross_entropy(logits, y[index], reduction="none")
        own = F.cross_entropy(logits, z[index], reduction="none")
        return ((1.0 - noisy[index]) * label + noisy[index] * own).mean()

    identity = torch.arange(len(y), device=y.device)
    return lam * part(identity) + (1.0 - lam) * part(perm)


def soft_to_hard_loss(logits: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor, noisy: torch.Tensor,
                      perm: torch.Tensor, temperature: float) -> torch.Tensor:
    """MD-DYR-SH: 0.5·mean[(1-B) CE(h, y) - B sum softmax(f(x)/T)·h] + 0.5·mean[the same at pi]."""
    log_h = F.log_softmax(logits, dim=1)
    target = (clean_logits / temperature).softmax(dim=1)

    def part(index):
        label = F.nll_loss(log_h, y[index], reduction="none")
        own = -(target[index] * log_h).sum(dim=1)
        return ((1.0 - noisy[index]) * label + noisy[index] * own).mean()

    return 0.5 * part(torch.arange(len(y), device=y.device)) + 0.5 * part(perm)


def guided_mix(x: torch.Tensor, noisy: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x~ = [(1 - B) x + (1 - B_pi) x_pi] / (2 - B - B_pi): the cleaner sample dominates."""
    keep, keep_pi = 1.0 - noisy, 1.0 - noisy[perm]
    shape = (-1,) + (1,) * (x.dim() - 1)
    total = keep + keep_pi
    return (keep / total).view(shape) * x + (keep_pi / total).view(shape) * x[perm]


class DynamicBootstrapping(LNLMethod):
    """What M-DYR-H and MD-DYR-SH share: the mixup warm-up, the per-epoch beta-mixture fit and
    the per-batch noisy posterior B. Subclasses write ``corrected_loss`` for the later stages."""

    WARMUP = "mixup"

    def __init__(self, alpha: float, warmup_epochs: int, reg_weight: float, em_steps: int,
                 augment_pass: bool, **settings):
        super().__init__(**settings)
        if not float(alpha) > 0:
            raise ConfigError(f"method.alpha must be > 0, got {alpha}.")
        if int(warmup_epochs) < 0 or int(em_steps) < 1:
            raise ConfigError(f"method.warmup_epochs must be >= 0 and method.em_steps >= 1, got "
                              f"{warmup_epochs} and {em_steps}.")
        require(float(reg_weight) >= 0, "reg_weight", reg_weight, "be >= 0 (the weight of the prior regulariser)")
        self.alpha, self.warmup_epochs, self.reg_weight = float(alpha), int(warmup_epochs), float(reg_weight)
        self.em_steps, self.augment_pass = int(em_steps), bool(augment_pass)
        self.add_network("net", self.build_network)
        self.per_sample_state("clean_posterior", fill=0.5)
        # the last fit, as the code keeps it: P(noisy) table and the loss scaling (p5 + 1e-5, p95)
        self.register_buffer("noisy_lookup", torch.full((LOOKUP_SIZE,), 0.5))
        self.register_buffer("loss_bounds", torch.tensor([0.0, 1.0]))

    # ------------------------------------------------------------------ the noise model
    def noisy_posterior(self, losses: torch.Tensor) -> torch.Tensor:
        """B for per-sample losses, from the last fit, clipped to [1e-4, 1 - 1e-4]."""
        low, high = self.loss_bounds  # tensors: no device synchronisation per batch
        return read_lookup(self.noisy_lookup, scale_losses(losses.float(), low, high)).clamp(B_CLIP, 1.0 - B_CLIP)

    @torch.no_grad()
    def batch_noisy_posterior(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """B of the batch's current losses, the network briefly in eval mode (as the code)."""
        self.net.eval()
        try:
            losses = F.cross_entropy(self.net(x).float(), y, reduction="none")
        finally:
            self.net.train()
        return self.noisy_posterior(losses)

    def update_noise_model(self) -> None:
        """The pass over the training set and the beta-mixture fit, after an epoch."""
        _, losses = self.training_set_pass(self.net, augment=self.augment_pass)
        mixture, low, high = fit_losses(losses, self.em_steps)
        self.noisy_lookup.copy_(torch.as_tensor(mixture.noisy_lookup(), dtype=self.noisy_lookup.dtype))
        self.loss_bounds.copy_(torch.tensor([low, high], dtype=self.loss_bounds.dtype))
        self.clean_posterior.copy_(1.0 - self.noisy_posterior(losses))
        means = mixture.alphas / (mixture.alphas + mixture.betas)
        self.log_epoch_mean({"train/bmm_mean_clean": float(means[CLEAN]), "train/bmm_mean_noisy": float(means[NOISY]),
                             "train/bmm_weight_noisy": float(mixture.weights[NOISY]),
                             "train/bmm_degenerate": float(mixture.degenerate)}, 1)

    def _end_of_epoch(self) -> None:
        if self._flushed_epoch != self.current_epoch:  # once per epoch, before the base logs and syncs
            self.update_noise_model()
        super()._end_of_epoch()

    def clean_score(self) -> torch.Tensor:
        return self.clean_posterior

    # ------------------------------------------------------------------ training
    def corrected_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int):
        x, y = batch["x"], batch["y"]
        if self.stage.name == self.WARMUP:
            lam, perm = draw_mixup(self.alpha, len(y), y.device)
            loss, logged = mixup_loss(self.net, x, y, lam, perm), {}
        else:
            loss, logged = self.corrected_loss(x, y)
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss, **logged}, len(y))
        return loss


class HardBootstrapping(DynamicBootstrapping):
    """M-DYR-H: mixup with dynamic hard bootstrapping."""

    def stages(self):
        return [Stage(self.WARMUP, epochs=self.warmup_epochs), Stage("bootstrap")]

    def corrected_loss(self, x, y):
        with torch.no_grad():
            z = self.net(x).argmax(dim=1)  # train mode: batch-norm statistics move, as in the code
        lam, perm = draw_mixup(self.alpha, len(y), y.device)
        logits = self.net(mix_inputs(x, lam, perm))
        noisy = self.batch_noisy_posterior(x, y)
        loss = hard_bootstrap_mixup_loss(logits, y, z, noisy, lam, perm) + self.reg_weight * prior_regulariser(logits)
        return loss, {"train/noisy_weight": noisy.mean()}


class SoftToHardBootstrapping(DynamicBootstrapping):
    """MD-DYR-SH: guided mixup, then soft-to-hard dynamic bootstrapping with guided mixup."""

    def __init__(self, guided_epochs: int, temperature_start: float, temperature_end: float,
                 temperature_epochs: int, **settings):
        super().__init__(**settings)
        if int(guided_epochs) < 0 or int(temperature_epochs) < 1:
            raise ConfigError(f"method.guided_epochs must be >= 0 and method.temperature_epochs >= 1, got "
                              f"{guided_epochs} and {temperature_epochs}.")
        require(float(temperature_start) > 0, "temperature_start", temperature_start, "be > 0")
        require(float(temperature_end) > 0, "temperature_end", temperature_end, "be > 0")
        self.guided_epochs = int(guided_epochs)
        self.temperatures = np.linspace(float(temperature_start), float(temperature_end), int(temperature_epochs))

    def stages(self):
        return [Stage(self.WARMUP, epochs=self.warmup_epochs), Stage("guided_mixup", epochs=self.guided_epochs),
                Stage("bootstrap")]

    def temperature(self, epoch: int) -> float:
        """T at a (0-based) epoch of the bootstrapping stage: one step of the linspace per epoch."""
        start = self.warmup_epochs + self.guided_epochs
        return float(self.temperatures[min(max(epoch - start, 0), len(self.temperatures) - 1)])

    def corrected_loss(self, x, y):
        if self.stage.name == "guided_mixup":
            noisy = self.batch_noisy_posterior(x, y)
            lam, perm = draw_mixup(self.alpha, len(y), y.device)  # lambda' only weighs the labels
            loss = mixup_criterion(self.net(guided_mix(x, noisy, perm)), y, lam, perm)
            return loss, {"train/noisy_weight": noisy.mean()}
        with torch.no_grad():
            clean_logits = self.net(x)  # train mode, as in the code
        noisy = self.batch_noisy_posterior(x, y)
        perm = torch.randperm(len(y)).to(y.device)
        logits = self.net(guided_mix(x, noisy, perm))
        temperature = self.temperature(self.current_epoch)
        loss = soft_to_hard_loss(logits, y, clean_logits, noisy, perm, temperature)
        loss = loss + self.reg_weight * prior_regulariser(logits)
        return loss, {"train/noisy_weight": noisy.mean(), "train/temperature": temperature}
