"""CORES² phase 1: the confidence-regularised sample sieve (Cheng et al., "Learning with
Instance-Dependent Label Noise: A Sample Sieve Approach", ICLR 2021; official code
UCSC-REAL/cores, ``phase1.py`` and ``loss.py::loss_cores``).

One network, p = softmax f(x), observed label y, pi = the current prior of the noisy labels:
    1. per sample: l = CE(p, y) - beta(t)·sum_k pi_k·(-log p_k)   (the confidence regulariser);
    2. the sieve: v = 1[CE(p, y) - (1/C)·sum_k CE(p, k) <= 0] from epoch ``sieve_start`` on
       (v = 1 before); the loss is sum v·l / sum v;
    3. after each epoch, pi = (N·pi_0 - the counts, by label, of the samples sieved out in it),
       normalised; pi_0 = the noisy labels' class distribution;
    4. beta(t): 0 for ``beta_warmup`` epochs, linear to ``beta`` over ``beta_ramp`` epochs, then
       ``beta``; the lr of epoch t is the protocol's divided by 1 + beta(t).
Defaults (the code's): beta 2, 10 epochs at 0, a 30-epoch ramp, the sieve from epoch 31 (the
code's ``epoch <= 30`` keeps everything). Clean score: minus the sieve's criterion of step 2 at
the sample's last visit (below 0: kept).

Protocol ``cores`` (phase1.py): SGD 0.1 without momentum or weight decay, batch 64, 100
epochs, lr x0.1 at epoch 50, crop + flip, normalisation. Deviations: the code's ResNet-34 is
not offered (the method's model is ``preact_resnet18``); phase 2 (consistency training on the
sieved set with UDA's augmentations, ``phase2/``) is not implemented: this is CORES² without
it, the "CORES" rows of the paper. When no sample of a batch passes the sieve, ``loss_cores``
returns 1e-8 × the mean loss alone instead of its (loss, loss_v) pair, so phase1.py's unpacking
raises TypeError and the official run stops; here the step is skipped. With labels not held in
memory (``clothing1m``) pi_0 is uniform. ``quirks=official`` changes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import require


def beta_at(epoch: int, beta: float, warmup: int, ramp: int) -> float:
    """The regulariser's weight at ``epoch``: 0 for ``warmup`` epochs, then linear over ``ramp``
    epochs (the code's linspace(0, beta, ramp): 0 at the ramp's first epoch, beta at its last)."""
    if epoch < warmup:
        return 0.0
    if epoch < warmup + ramp:
        return beta * (epoch - warmup) / max(ramp - 1, 1)
    return beta


def cores_loss(logits: torch.Tensor, y: torch.Tensor, beta: float, prior: torch.Tensor, sieve: bool):
    """Steps 1-2: (the batch loss over the kept samples, the kept mask, the sieve criterion)."""
    ce = F.cross_entropy(logits, y, reduction="none")
    ce_all = -torch.log(logits.softmax(dim=1) + 1e-8)  # CE against every class, as the code
    criterion = ce - ce_all.mean(dim=1)
    per_sample = ce - beta * (ce_all * prior).sum(dim=1)
    kept = (criterion <= 0) if sieve else torch.ones_like(ce, dtype=torch.bool)
    loss = (per_sample * kept).sum() / kept.sum().clamp(min=1)
    return loss, kept, criterion.detach()


def updated_prior(label_prior: torch.Tensor, train_size: int, sieved_out_counts: torch.Tensor) -> torch.Tensor:
    """Step 3: the labels' prior less this epoch's sieved-out samples, normalised."""
    remaining = label_prior * train_size - sieved_out_counts
    return remaining / remaining.sum()


class CORES(LNLMethod):
    def __init__(self, beta: float, beta_warmup: int, beta_ramp: int, sieve_start: int, **settings):
        super().__init__(**settings)
        require(float(beta) >= 0, "beta", beta, "be >= 0 (the confidence regulariser's final weight)")
        require(int(beta_warmup) >= 0, "beta_warmup", beta_warmup, "be >= 0 (epochs with beta 0)")
        require(int(beta_ramp) >= 1, "beta_ramp", beta_ramp, "be >= 1 (epochs of beta's linear ramp)")
        require(int(sieve_start) >= 0, "sieve_start", sieve_start, "be >= 0 (the first epoch the sieve acts)")
        self.beta, self.beta_warmup, self.beta_ramp = float(beta), int(beta_warmup), int(beta_ramp)
        self.sieve_start = int(sieve_start)
        self.add_network("net", self.build_network)
        self.register_buffer("label_prior", torch.zeros(self.num_classes))  # pi_0 (set at the first epoch)
        self.register_buffer("prior", torch.zeros(self.num_classes))        # pi, updated after each epoch
        self.register_buffer("sieved_out", torch.zeros(self.num_classes))   # this epoch's counts by label
        self.sieve_criterion = self.per_sample_state("sieve_criterion")

    def beta_at(self, epoch: int) -> float:
        return beta_at(epoch, self.beta, self.beta_warmup, self.beta_ramp)

    def epoch_hyperparameters(self, epoch: int):
        lr, beta1 = super().epoch_hyperparameters(epoch)
        return lr / (1.0 + self.beta_at(epoch)), beta1  # the code's adjust_learning_rate

    def on_train_epoch_start(self) -> None:
        if float(self.label_prior.sum()) == 0:
            train = self.trainer.datamodule.train
            if isinstance(train, dict):
                counts = torch.bincount(train["y"].to(self.device), minlength=self.num_classes).float()
            else:  # labels not in memory (a file list): a uniform prior
                counts = torch.ones(self.num_classes, device=self.device)
            self.label_prior.copy_(counts / counts.sum())
            self.prior.copy_(self.label_prior)
        self.sieved_out.zero_()
        super().on_train_epoch_start()

    def training_step(self, batch, batch_idx: int):
        y = batch["y"]
        beta, sieve = self.beta_at(self.current_epoch), self.current_epoch >= self.sieve_start
        loss, kept, criterion = cores_loss(self.net(batch["x"]), y, beta, self.prior, sieve)
        if bool(kept.any()):
            self.step(loss)
        self.sieve_criterion[batch["index"]] = criterion
        self.sieved_out += torch.bincount(y[~kept], minlength=self.num_classes).float()
        clean = y == batch["y_true"]
        self.log_epoch_mean({"train/loss": loss, "train/beta": beta, "train/kept": kept.float().mean(),
                             "train/label_precision": (clean & kept).sum() / kept.sum().clamp(min=1)}, len(y))
        return loss

    def _end_of_epoch(self) -> None:
        if self._flushed_epoch == self.current_epoch:
            return
        super()._end_of_epoch()  # (before validation and the epoch's checkpoint, which holds the new prior)
        if self.trainer.world_size > 1:  # each process saw its share of the epoch
            self.sieved_out.copy_(self.trainer.strategy.reduce(self.sieved_out, reduce_op="sum"))
        self.prior.copy_(updated_prior(self.label_prior, self.train_size, self.sieved_out))

    def clean_score(self) -> torch.Tensor:
        return -self.sieve_criterion
