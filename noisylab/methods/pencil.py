"""PENCIL (Yi & Wu, "Probabilistic End-to-end Noise Correction for Learning with Noisy Labels",
CVPR 2019; official code yikun2019/PENCIL).

Each training sample i has label logits ỹ_i (C numbers), its label distribution is
y^d_i = softmax(ỹ_i), initialised as ỹ_i = K·onehot(ŷ_i) from the given label ŷ_i (K = 10).
With f_i = softmax f(x_i; θ), the batch means of
    L_c = (1/C)·KL(f_i ‖ y^d_i)       (classification; the network's distribution first)
    L_o = -log y^d_i[ŷ_i]              (compatibility with the given label)
    L_e = -(1/C)·Σ_j f_ij log f_ij     (entropy)
(the paper's L = (1/C)·L_c + α·L_o + (β/C)·L_e; the code's means over classes are the 1/C).
Stages (epochs 0-based, as the code's ``stage1``/``stage2``):
    1. ``backbone`` (epochs < stage1 = 70): CE on the given labels; ỹ_i = K·onehot(ŷ_i) is
       written as each sample is visited;
    2. ``correction`` (< stage2 = 200): L = L_c + α·L_o + β·L_e; one SGD step of the network
       and, for the batch's rows only, ỹ_i ← ỹ_i - λ·∂L/∂ỹ_i with λ = ``label_lr`` = 600
       (large because L is a batch mean and L_c carries 1/C);
    3. ``finetune`` (the rest, to 320): L_c alone against the fixed y^d, at lr ``lr2`` = 0.2,
       ×0.1 after one and two thirds of the stage (``lr2: null``: the protocol's lr plan goes on).
Defaults α 0.1, β 0.4 (the paper's CIFAR-10 values, as PENCIL#4 quotes Sec. 4.2; the code's
argparse defaults are α 0.4, β 0.1: ``method.alpha=0.4 method.beta=0.1``). Protocol ``pencil``:
SGD lr 0.06 (constant in stages 1-2), momentum 0.9, weight decay 1e-4, batch 128, 320 epochs.
Clean score: the mass of the learned label distribution on the given label, y^d_i[ŷ_i].

The compatibility term decides whether labels flip: with the paper's L_o and α = 1/C (0.1 on
CIFAR-10), a noisy sample whose prediction is confidently f = onehot(t) has its label
distribution settle where α·(y^d - onehot(ŷ)) + (y^d - f)/C = 0, a tie of 1/2 between ŷ and t,
so its argmax never moves off ŷ; the code's L_o (below) pulls far more weakly toward ŷ and the
label flips to t (digits, 50% symmetric noise: learned labels 51% right with the paper's L_o,
96% with ``quirks=official``, at about the same test accuracy).

Deviations (``quirks=official`` turns the first two on): the code passes y^d, already a
probability vector, to ``CrossEntropyLoss`` as logits, so its L_o is CE(softmax(y^d), ŷ)
(``double_softmax``); its stage-3 lr uses floor division (``lr2 // 10``), so after the first
third of stage 3 the lr is 0 (``lr2_floor_division``). Not switchable: ỹ is updated in place
(the code collects the updated rows and loads them at the next epoch: the same, as each sample
is visited once per epoch); the gradient for ỹ is taken separately from the network's backward
(unaffected by loss scaling); the network is the standard ResNet-32 (``resnet32``), where the
code uses a pre-activation ResNet-32; the code's 5,000-image clean validation split is the
noisy one here.

Noise: the paper's symmetric noise includes the true class (the code's ``addnoise_SN.py``
gives each image, with probability r, ``np.random.randint(0, 10)``: about 0.9·r of the labels
end wrong, as Arazo's uniform noise): ``noise.include_true_class=true``, which its sweep
(``+sweep=pencil_cifar10``) sets. The project's ``noise=symXX`` default flips to another class
(Co-teaching's convention): a harder noise at the same nominal rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.errors import ConfigError
from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import Stage, require
from noisylab.methods.joint_opt import mass_on_given, thirds_schedule


def classification_loss(logits: torch.Tensor, label_logits: torch.Tensor) -> torch.Tensor:
    """L_c: mean over the batch and the classes of f·(log f - log y^d)."""
    log_f = F.log_softmax(logits, dim=1)
    return (log_f.exp() * (log_f - F.log_softmax(label_logits, dim=1))).mean()


def pencil_loss(logits: torch.Tensor, label_logits: torch.Tensor, y: torch.Tensor, alpha: float, beta: float,
                double_softmax: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 2's L_c + α·L_o + β·L_e; returns (loss, parts)."""
    log_f = F.log_softmax(logits, dim=1)
    classification = classification_loss(logits, label_logits)
    if double_softmax:  # the code: CrossEntropyLoss(softmax(ỹ), ŷ)
        compatibility = F.cross_entropy(label_logits.softmax(dim=1), y)
    else:
        compatibility = F.cross_entropy(label_logits, y)  # -log softmax(ỹ)[ŷ]
    entropy = -(log_f.exp() * log_f).mean()
    loss = classification + alpha * compatibility + beta * entropy
    return loss, {"train/loss_c": classification, "train/loss_o": compatibility, "train/loss_e": entropy}


class PENCIL(LNLMethod):
    official_quirks = ("double_softmax", "lr2_floor_division")

    def __init__(self, alpha: float, beta: float, label_lr: float, k: float, stage1: int, stage2: int,
                 lr2: float | None, **settings):
        super().__init__(**settings)
        if not 1 <= int(stage1) <= int(stage2):
            raise ConfigError(f"method.stage1 and method.stage2 need 1 <= stage1 <= stage2 (stage 1 "
                              f"initialises the label variables), got {stage1} and {stage2}.")
        require(float(alpha) >= 0, "alpha", alpha, "be >= 0 (the weight of the compatibility loss)")
        require(float(beta) >= 0, "beta", beta, "be >= 0 (the weight of the entropy loss)")
        require(float(label_lr) > 0, "label_lr", label_lr, "be > 0 (lambda, the label logits' step size)")
        require(float(k) > 0, "k", k, "be > 0 (the label logits start as k x onehot(given label))")
        require(lr2 is None or float(lr2) > 0, "lr2", lr2, "be null (the protocol's lr plan) or > 0")
        self.alpha, self.beta, self.label_lr, self.k = float(alpha), float(beta), float(label_lr), float(k)
        self.stage1, self.stage2 = int(stage1), int(stage2)
        self.lr2 = None if lr2 is None else float(lr2)
        self.add_network("net", self.build_network)
        self.per_sample_state("label_logits", self.num_classes)
        self.per_sample_state("observed_label", fill=-1, dtype=torch.long)

    def stages(self):
        if self.lr2 is None:
            finetune = Stage("finetune")
        else:
            plan = thirds_schedule(max(self.max_epochs - self.stage2, 0))
            if "lr2_floor_division" in self.quirks:  # lr2 // 10 == lr2 // 100 == 0.0
                plan = {**plan, "milestones": plan["milestones"][:1], "gamma": 0.0}
            finetune = Stage("finetune", lr=self.lr2, lr_schedule=plan)
        return [Stage("backbone", epochs=self.stage1), Stage("correction", epochs=self.stage2 - self.stage1), finetune]

    def training_step(self, batch, batch_idx: int):
        x, y, index = batch["x"], batch["y"], batch["index"]
        logits = self.net(x)
        stage, parts = self.stage.name, {}
        if stage == "backbone":
            self.observed_label[index] = y
            self.label_logits[index] = self.k * F.one_hot(y, self.num_classes).to(self.label_logits.dtype)
            loss = F.cross_entropy(logits, y)
        elif stage == "correction":
            label_logits = self.label_logits[index].requires_grad_(True)
            loss, parts = pencil_loss(logits, label_logits, y, self.alpha, self.beta, "double_softmax" in self.quirks)
            (label_grad,) = torch.autograd.grad(loss, label_logits, retain_graph=True)
            self.label_logits[index] = label_logits.detach() - self.label_lr * label_grad
        else:
            loss = classification_loss(logits, self.label_logits[index])
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss, **parts}, len(y))
        return loss

    def clean_score(self) -> torch.Tensor:
        return mass_on_given(self.label_logits.softmax(dim=1), self.observed_label)
