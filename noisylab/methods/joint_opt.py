"""Joint Optimization (Tanaka et al., "Joint Optimization Framework for Learning with Noisy
Labels", CVPR 2018; official Chainer code DaikiTanaka-UT/JointOptimization).

The network θ and a soft label y_i per training sample are optimised alternately. With
s_i = softmax f(x_i; θ) and s̄ the batch mean of s, the network's loss is
    L = L_c + α·L_p + β·L_e,
    L_c = mean_i KL(y_i ‖ s_i)                 (classification, against the soft labels)
    L_p = KL(p ‖ s̄) = Σ_j p_j log(p_j / s̄_j)   (prior: keeps the mean prediction near p)
    L_e = -mean_i Σ_j s_ij log s_ij             (entropy: pushes predictions to one-hot)
with p uniform (1/C). The labels start as the given one-hot labels; the softmax of each
sample's training forward pass (augmented, train mode) goes into a ring buffer of the last
``average_epochs`` (10) epochs, and from epoch ``begin`` (70) on, before every epoch, each
label becomes the buffer's mean (``label_update=soft``, the default and the code's) or its
one-hot argmax (``hard``). Stages:
    1. ``joint`` (``joint_epochs``, 200): the loss above, the labels updated as described;
    2. ``retrain``: a network re-built from scratch trained with L_c alone against the final
       labels (the last update happens at this stage's start), at ``retrain_lr`` (0.2) ×0.1
       after one and two thirds of the stage (the code's 40 and 80 of 120 epochs).
``label_update=none`` never updates the labels: the loss CE + α·L_p + β·L_e on the given
labels, which is what MSLG's re-implementation runs as "Joint Opt." (``conf/method_protocol/``).

Protocol ``joint_opt``: the code's README recipe for symmetric noise (SGD lr 0.08 constant in
stage 1, momentum 0.9, weight decay 1e-4, batch 128, 200 + 120 epochs; α 1.2, β 0.8; for 40%
asymmetric noise the README uses lr 0.03, α 0.8, β 0.4). Clean score: the mass of the learned
label on the given label, y_i[ŷ_i].

Deviations: L_c and L_p are the paper's KL divergences, where the code uses the cross-entropies
-Σ y log s and -Σ p log s̄ (the same gradients; logged values differ by the constant entropies);
labels are updated at the start of the next epoch instead of the end of this one (the same
labels are used, and a checkpoint holds a consistent state); before the first update the given
one-hot label is written into a row as its sample is visited; with ``begin`` below
``average_epochs`` the mean runs over the epochs recorded so far (the code averages zeros in);
the network is the standard ResNet-32 (``resnet32``), where the code uses a pre-activation
ResNet-32; inputs are normalised by the dataset's mean and std (the code subtracts the mean
image); the code's 10% clean validation split is the noisy one here.

Noise: the paper's symmetric noise includes the true class (the code gives r·N images
``np.random.randint(10)``, so about 0.9·r of the labels end wrong, as Arazo's uniform noise):
``noise.include_true_class=true``, which its sweep (``+sweep=joint_opt_cifar10``) sets. The
project's ``noise=symXX`` default flips to another class (Co-teaching's convention): a harder
noise at the same nominal rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import Stage, require

LABEL_UPDATES = ("soft", "hard", "none")


def soft_label_kl(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """L_c: batch mean of KL(y_i ‖ softmax(logits_i)) (0·log 0 = 0)."""
    log_s = F.log_softmax(logits, dim=1)
    return (torch.xlogy(soft_labels, soft_labels) - soft_labels * log_s).sum(dim=1).mean()


def uniform_prior_kl(log_probs: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ s̄) = Σ_c p_c log(p_c / s̄_c), p uniform, s̄ the batch mean of the predictions
    (from their logs, in log space: safe when a class's mean is tiny)."""
    log_mean = torch.logsumexp(log_probs, dim=0) - math.log(len(log_probs))
    prior = torch.full_like(log_mean, 1.0 / log_probs.shape[1])
    return (prior * (prior.log() - log_mean)).sum()


def joint_opt_loss(logits: torch.Tensor, soft_labels: torch.Tensor, alpha: float,
                   beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_c + α·L_p + β·L_e of one batch, with a uniform prior p; returns (loss, parts)."""
    log_s = F.log_softmax(logits, dim=1)
    classification = soft_label_kl(logits, soft_labels)
    prior_term = uniform_prior_kl(log_s)
    entropy = -(log_s.exp() * log_s).sum(dim=1).mean()
    loss = classification + alpha * prior_term + beta * entropy
    return loss, {"train/loss_c": classification, "train/loss_p": prior_term, "train/loss_e": entropy}


def averaged_labels(predictions: torch.Tensor, hard: bool) -> torch.Tensor:
    """New labels from recorded softmax outputs (N x epochs x C): their mean, or its one-hot
    argmax with ``hard``."""
    mean = predictions.mean(dim=1)
    return F.one_hot(mean.argmax(dim=1), mean.shape[1]).to(mean.dtype) if hard else mean


def mass_on_given(distributions: torch.Tensor, observed_label: torch.Tensor) -> torch.Tensor:
    """Per sample, the probability its label distribution puts on its given label (0 for a
    sample never visited, ``observed_label`` -1): the clean score of label-learning methods."""
    mass = distributions.gather(1, observed_label.clamp(min=0)[:, None]).squeeze(1)
    return torch.where(observed_label >= 0, mass, 0.0)


def thirds_schedule(epochs: int) -> dict:
    """lr ×0.1 after one and two thirds of a stage of ``epochs`` (Tanaka's and PENCIL's last stage)."""
    return {"name": "multistep", "milestones": [epochs // 3, (2 * epochs) // 3], "gamma": 0.1}


class JointOptimization(LNLMethod):
    def __init__(self, alpha: float, beta: float, begin: int, average_epochs: int, label_update: str,
                 joint_epochs: int | None, retrain_lr: float | None, **settings):
        super().__init__(**settings)
        if label_update not in LABEL_UPDATES:
            raise ConfigError(f"method.label_update must be one of {', '.join(LABEL_UPDATES)}, got {label_update!r}.")
        if int(begin) < 1 or int(average_epochs) < 1:
            raise ConfigError(f"method.begin and method.average_epochs must be >= 1, got {begin} and {average_epochs}.")
        require(float(alpha) >= 0, "alpha", alpha, "be >= 0 (the weight of the prior term)")
        require(float(beta) >= 0, "beta", beta, "be >= 0 (the weight of the entropy term)")
        require(joint_epochs is None or int(joint_epochs) >= 1, "joint_epochs", joint_epochs,
                "be null (no retraining) or >= 1 (the labels are learned in the joint stage)")
        require(joint_epochs is None or label_update == "none" or int(begin) <= int(joint_epochs), "begin", begin,
                f"be <= method.joint_epochs ({joint_epochs}) (labels are renewed from epoch begin to the joint stage's end)")
        require(retrain_lr is None or float(retrain_lr) > 0, "retrain_lr", retrain_lr, "be null (the protocol's) or > 0")
        self.alpha, self.beta, self.begin = float(alpha), float(beta), int(begin)
        self.average_epochs, self.label_update = int(average_epochs), label_update
        self.joint_epochs = None if joint_epochs is None else int(joint_epochs)
        self.retrain_lr = None if retrain_lr is None else float(retrain_lr)
        self.add_network("net", self.build_network)
        self.per_sample_state("soft_label", self.num_classes)
        self.per_sample_state("prediction", self.average_epochs, self.num_classes)
        self.per_sample_state("observed_label", fill=-1, dtype=torch.long)

    def stages(self):
        if self.joint_epochs is None:
            return [Stage("joint")]
        retrain = max(self.max_epochs - self.joint_epochs, 0)
        return [Stage("joint", epochs=self.joint_epochs),
                Stage("retrain", reinit=True, lr=self.retrain_lr,
                      lr_schedule=None if self.retrain_lr is None else thirds_schedule(retrain))]

    def updates_labels_at(self, epoch: int) -> bool:
        """Labels are renewed before ``epoch`` from ``begin`` to the end of the joint stage
        (the last renewal opens the retraining stage)."""
        joint_end = self.max_epochs if self.joint_epochs is None else self.joint_epochs
        return self.label_update != "none" and self.begin <= epoch <= joint_end

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        if self.updates_labels_at(epoch):
            recorded = self.prediction[:, :min(epoch, self.average_epochs)]
            self.soft_label.copy_(averaged_labels(recorded, self.label_update == "hard"))
        super().on_train_epoch_start()

    def training_step(self, batch, batch_idx: int):
        x, y, index = batch["x"], batch["y"], batch["index"]
        logits = self.net(x)
        if self.stage.name == "joint":
            self.observed_label[index] = y
            if self.label_update == "none" or self.current_epoch < self.begin:
                self.soft_label[index] = F.one_hot(y, self.num_classes).to(self.soft_label.dtype)
            self.prediction[index, self.current_epoch % self.average_epochs] = logits.detach().softmax(dim=1)
            loss, parts = joint_opt_loss(logits, self.soft_label[index], self.alpha, self.beta)
        else:
            loss = soft_label_kl(logits, self.soft_label[index])
            parts = {}
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss, **parts}, len(y))
        return loss

    def clean_score(self) -> torch.Tensor:
        return mass_on_given(self.soft_label, self.observed_label)
