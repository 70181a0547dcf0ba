"""SOP and SOP+ (Liu, Zhu, Qu & You, "Robust Training under Label Noise by
Over-parameterization", ICML 2022; official code shengliu66/SOP).

Label noise is sparse: each training sample i gets its own noise term
s_i = u_i⊙u_i⊙y_i − v_i⊙v_i⊙(1 − y_i) (y_i the one-hot given label; u_i one number, v_i one
per class, both initialised N(0, 1e-8²)), trained beside the network with plain SGD at their
own learning rates lr_u, lr_v (no momentum, no weight decay, no lr plan). For a batch,
U = clamp(u²·y, 0, 1−1e-4), V = clamp(v²·(1−y), 0, 1−1e-4), p = softmax f(x):
    1. q = clamp(p + U − sg(V), 1e-4) / ‖·‖₁, clamped to [1e-4, 1];
    2. L_CE  = mean_i −Σ_c y_ic log q_ic                      (trains θ and u)
       L_MSE = Σ_i ‖onehot(argmax f(x_i)) + sg(U_i) − V_i − y_i‖² / B   (trains v)
       L = L_CE + ratio_reg·L_MSE   (sg: no gradient; ratio_reg = 100, the code's default);
    3. one backward, then a step of the network's optimiser and of u's and v's (only the
       batch's rows have a gradient, so only they move).
SOP+ (``sop_plus``) adds, with two views of each image, ratio_consistency·KL(sg p(view 1) ‖
p(view 2)) and ratio_balance·(−Σ_c (1/C) log mean_i q_ic) (0.9 and 0.1, the code's CIFAR
values). Clean score: −u_i², the mass the noise term moved onto the given label.

Defaults: CIFAR-10's lr_u = lr_v = 10 (the paper's Table A.1 as noisypy's CIFAR-10 configs
quote it; CIFAR-100: lr_u 1, lr_v 10, the official README's example, and ratio_reg 10, its config_cifar100.json, in ``conf/method_data/``;
asymmetric noise: lr_v 100; digits: 1 and 1, a measured CPU setting, not the paper's).
Protocol ``sop`` (the code's config): PreAct ResNet-18, SGD 0.02, momentum 0.9, weight decay
5e-4, batch 128, 300 epochs, cosine lr down to eta_min 2e-4.

Which official code: the loss of the code as published with the paper (shengliu66/SOP
``model/loss.py`` from the first commit, 2022-02-21, to 21a4017, 2022-07-01: ratio_reg · MSE
with sg(U), U and V clamped at 1 − 1e-4; re-typed beside ours in
tests/test_official_dividemix_elr_sop.py). Later commits (5851882, 2022-08-14, to the final 9a3fd24,
2022-09-08) changed it: the MSE has weight 1, its gradient reaches u too, and the clamps are
at 1; on the test's inputs the loss differs by 99 × the MSE term and u's gradient changes.
That later loss is not offered: the published numbers predate it.

Deviations from the official code: SOP+'s second view is a second draw of the data's own
augmentation (the code: AutoAugment + Cutout on the second view); SOP (without +) is run on that recipe and PreAct ResNet-18, where the
paper's Table 1 uses ResNet-34 (not offered here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import require

CLAMP = 1e-4  # the code's floor for q and ceiling 1 - CLAMP for U and V


def noise_terms(u_rows: torch.Tensor, v_rows: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V): u² on the given label, v² on the others, each clamped to [0, 1 − 1e-4]."""
    return ((u_rows ** 2 * onehot).clamp(0.0, 1.0 - CLAMP),
            (v_rows ** 2 * (1.0 - onehot)).clamp(0.0, 1.0 - CLAMP))


def sop_loss(logits: torch.Tensor, y: torch.Tensor, u_rows: torch.Tensor, v_rows: torch.Tensor,
             ratio_reg: float, ratio_balance: float = 0.0, logits_second_view: torch.Tensor | None = None,
             ratio_consistency: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Steps 1-2 (and SOP+'s terms); returns (loss, parts)."""
    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    big_u, big_v = noise_terms(u_rows, v_rows, onehot)
    q = (logits.softmax(dim=1) + big_u - big_v.detach()).clamp(min=CLAMP)
    q = F.normalize(q, p=1, dim=1, eps=CLAMP).clamp(CLAMP, 1.0)
    cross_entropy = -(onehot * q.log()).sum(dim=1).mean()
    predicted = F.one_hot(logits.detach().argmax(dim=1), logits.shape[1]).to(logits.dtype)
    mse = ((predicted + big_u.detach() - big_v - onehot) ** 2).sum() / len(y)
    loss, parts = cross_entropy + ratio_reg * mse, {"train/loss_ce": cross_entropy, "train/loss_mse": mse}
    if ratio_balance > 0:
        mean_q = q.mean(dim=0).clamp(CLAMP, 1.0)
        parts["train/loss_balance"] = -mean_q.log().mean()  # −Σ_c (1/C) log mean q_c
        loss = loss + ratio_balance * parts["train/loss_balance"]
    if logits_second_view is not None and ratio_consistency > 0:
        parts["train/loss_consistency"] = F.kl_div(F.log_softmax(logits_second_view, dim=1),
                                                   logits.detach().softmax(dim=1), reduction="none").sum(dim=1).mean()
        loss = loss + ratio_consistency * parts["train/loss_consistency"]
    return loss, parts


class SOP(LNLMethod):
    def __init__(self, lr_u: float, lr_v: float, ratio_reg: float, init_std: float, **settings):
        super().__init__(**settings)
        require(float(lr_u) > 0, "lr_u", lr_u, "be > 0 (the learning rate of the per-sample u)")
        require(float(lr_v) > 0, "lr_v", lr_v, "be > 0 (the learning rate of the per-sample v)")
        require(float(ratio_reg) >= 0, "ratio_reg", ratio_reg, "be >= 0 (the weight of the MSE term that trains v)")
        require(float(init_std) >= 0, "init_std", init_std, "be >= 0 (u and v start as N(0, init_std²))")
        self.lr_u, self.lr_v, self.ratio_reg = float(lr_u), float(lr_v), float(ratio_reg)
        self.add_network("net", self.build_network)
        self.per_sample_parameter("u", float(init_std) * torch.randn(self.train_size, 1))
        self.per_sample_parameter("v", float(init_std) * torch.randn(self.train_size, self.num_classes))

    def declare_optimizers(self):
        plain_sgd = {"name": "sgd", "momentum": 0.0, "weight_decay": 0.0}  # the code's: rows outside the batch stay put
        return {**super().declare_optimizers(), "u": ([self.u], {**plain_sgd, "lr": self.lr_u}),
                "v": ([self.v], {**plain_sgd, "lr": self.lr_v})}

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index = batch["index"]
        return sop_loss(self.net(batch["x"]), batch["y"], self.u[index], self.v[index], self.ratio_reg)

    def training_step(self, batch, batch_idx: int):
        loss, parts = self.loss(batch)
        self.step(loss, ("net", "u", "v"))
        self.log_epoch_mean({"train/loss": loss, **parts}, len(batch["y"]))
        return loss

    def clean_score(self) -> torch.Tensor:
        return -self.u.detach()[:, 0] ** 2


class SOPPlus(SOP):
    """SOP+: two views per image, the consistency and class-balance terms."""

    raw_batches = True  # two augmented views of each image (self.view)

    def __init__(self, ratio_consistency: float, ratio_balance: float, **settings):
        super().__init__(**settings)
        require(float(ratio_consistency) >= 0, "ratio_consistency", ratio_consistency, "be >= 0")
        require(float(ratio_balance) >= 0, "ratio_balance", ratio_balance, "be >= 0")
        self.ratio_consistency, self.ratio_balance = float(ratio_consistency), float(ratio_balance)

    def loss(self, batch):
        x, index = batch["x"], batch["index"]
        first, second = self.net(torch.cat([self.view(x), self.view(x)])).chunk(2)  # one pass, as the code
        return sop_loss(first, batch["y"], self.u[index], self.v[index], self.ratio_reg, self.ratio_balance,
                        second, self.ratio_consistency)
