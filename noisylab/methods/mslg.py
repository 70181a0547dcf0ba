"""Meta Soft Label Generation (Algan & Ulusoy, "Meta Soft Label Generation for Noisy Labels",
ICPR 2020, arXiv 2007.05836; official PyTorch code gorkemalgan/MSLG_noisy_label,
``main.py::metapencil``).

Every training sample i carries label logits ỹ_i ∈ R^C (its soft label is softmax(ỹ_i)),
initialised to K·onehot(given label) — K = 10 is the scale of that initial logit, nothing
more (softmax(10·e_y) puts 1 − 4·10⁻⁴ on the given class for C = 10). Two stages:

1. **warm-up** (``warmup_epochs``, 44 of 120 on CIFAR-10): plain cross-entropy on the given
   labels; ỹ is untouched.
2. **meta**: per noisy batch (x, ỹ) and trusted batch (x', y'), with o = f(x; θ), p = softmax(o)
   and everything averaged over the B·C entries, as the code does::

       L_c(θ, ỹ) = mean_{b,c} p ⊙ (log p − log(softmax(ỹ) + 10⁻¹⁰))      (KL(p ‖ softmax ỹ))
       θ̂        = θ − α ∇θ L_c(θ, ỹ)        (one plain SGD look-ahead, α = 0.5 fixed, 2nd order)
       ỹ        ← ỹ − β ∂CE(f(x'; θ̂), y')/∂ỹ                 (β = 4000: it offsets the 1/(B·C))
       θ        ← the optimiser's step on L_c(θ, ỹ) + γ · mean_{b,c}(−p log p)      (γ = 1)

With γ = 1 the two p·log p terms cancel: the network's loss is −mean p·log(softmax(ỹ) + 10⁻¹⁰),
which pulls p towards argmax softmax(ỹ) with a gradient bounded like MAE's (the labels, not
the loss, carry the correction). The look-ahead is :mod:`noisylab.methods.lookahead` with ``lookahead.lr: 0.5`` and
``step: sgd``. Protocol ``mslg`` (the official CIFAR-10 recipe): SGD 0.01, momentum 0.9,
weight decay 1e-4, batch 128, 120 epochs, lr ×0.1 after epochs 40 and 80; the 8-layer CNN
(``cnn8``); trusted batch = the noisy batch size, not augmented (the code's meta loader has no
augmentation). CIFAR-100 (``conf/method_data/mslg_cifar100.yaml``): 21 warm-up epochs of 60.

Clean score: the soft label's probability on the given label (``agreement``), as learned at
the sample's last meta step; ``per_sample.npz`` holds it and the label logits ``label_logits``.

Deviations from the official code:

* trusted set: ``trusted_per_class`` clean images (400 per class on CIFAR-10: 4,000) are taken
  out of the *training* data; the code draws its 4,000 meta images (not stratified) from the
  CIFAR-10 *test* split and tests on the other 5,000, keeping all 50,000 training images;
* BatchNorm: the look-ahead uses batch statistics on copies of the running buffers
  (``batchnorm: batch``), so it has no side effects; the code's functional forwards call
  ``F.batch_norm(training=True)`` on the real running buffers, so every meta forward (noisy
  batch at θ̂'s graph and trusted batch) also moves the real running statistics;
* batches are shuffled and ỹ is indexed by each sample's index; the code's training loader is
  un-shuffled and indexes ỹ by position (every epoch sees the batches in one fixed order);
* the network's forward on the noisy batch is computed twice (once inside the look-ahead,
  once for the real step, the same values in train mode); the code reuses one forward;
* augmentation: the dataset's crop + horizontal flip (the code also flips vertically);
  model selection: noisylab reports the last-10 mean and the test accuracy at the best noisy
  validation accuracy, the code the test accuracy at the best accuracy on its meta set;
* the code can instead pick its meta set from the noisy data after the warm-up
  (``--clean_data 0``, not its default); not offered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.bilevel import BilevelMethod
from noisylab.methods.contract import Stage, require

LOG_EPS = 1e-10  # the code's log(softmax(ỹ) + 1e-10)


def soft_label_kl(logits: torch.Tensor, label_logits: torch.Tensor) -> torch.Tensor:
    """MSLG's classification loss: mean over the B·C entries of p·(log p − log(q + 1e-10)),
    p = softmax(logits), q = softmax(label_logits) (KL(p ‖ q) / C, averaged over the batch)."""
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - torch.log(F.softmax(label_logits, dim=1) + LOG_EPS))).mean()


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """MSLG's entropy loss: mean over the B·C entries of −p·log p."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).mean()


class MetaSoftLabels(BilevelMethod):
    raw_batches = True  # the noisy batch is augmented, the trusted one not (as the code's meta loader)

    def __init__(self, beta: float, gamma: float, k: float, warmup_epochs: int, **settings):
        super().__init__(**settings)
        if not float(k) > 0:
            raise ConfigError(f"method.k (the initial label logit) must be > 0, got {k}.")
        if int(warmup_epochs) < 0:
            raise ConfigError(f"method.warmup_epochs must be >= 0, got {warmup_epochs}.")
        require(float(beta) > 0, "beta", beta, "be > 0 (the label logits' step size)")
        require(float(gamma) >= 0, "gamma", gamma, "be >= 0 (the weight of the entropy loss)")
        self.beta, self.gamma, self.k = float(beta), float(gamma), float(k)
        self.warmup_epochs = int(warmup_epochs)
        self.per_sample_state("label_logits", self.num_classes)
        self.per_sample_state("agreement", fill=1.0)

    def stages(self) -> list[Stage]:
        return [Stage("warmup", epochs=self.warmup_epochs), Stage("meta")]

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        span = self.stage_at(self.current_epoch)
        if span.stage.name == "meta" and self.current_epoch == span.start:
            self.initialise_labels()

    @torch.no_grad()
    def initialise_labels(self) -> None:
        """ỹ_i = K·onehot(given label of i) for every training sample, as the code does."""
        for batch in self.trainer.datamodule.ordered_train_batches():
            index, y = batch["index"].to(self.device), batch["y"].to(self.device)
            self.label_logits[index] = self.k * F.one_hot(y, self.num_classes).to(self.label_logits.dtype)
            self.agreement[index] = F.softmax(self.label_logits[index], dim=1).gather(1, y[:, None])[:, 0]

    def training_step(self, batch, batch_idx: int):
        noisy, trusted = batch["noisy"], batch["trusted"]
        x, y = self.view(noisy["x"]), noisy["y"]
        if self.stage.name == "warmup":
            loss = F.cross_entropy(self.net(x), y)
            self.step(loss)
            self.log_epoch_mean({"train/loss": loss}, len(y))
            return loss
        x_trusted = self.view(trusted["x"], augment=False)
        index = noisy["index"]
        labels = self.label_logits[index].requires_grad_()
        meta = self.meta_gradient(lambda forward: soft_label_kl(forward(x), labels),
                                  lambda forward: F.cross_entropy(forward(x_trusted), trusted["y"]), [labels])
        updated = labels.detach() - self.beta * meta.grads[0]
        self.label_logits[index] = updated
        soft = F.softmax(updated, dim=1)
        self.agreement[index] = soft.gather(1, y[:, None])[:, 0]
        logits = self.net(x)
        loss = soft_label_kl(logits, updated) + self.gamma * entropy_loss(logits)
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss, "train/meta_loss": meta.outer_loss,
                             "train/label_agreement": (soft.argmax(1) == y).float().mean()}, len(y))
        return loss

    def clean_score(self) -> torch.Tensor:
        return self.agreement
