"""ELR and ELR+ (Liu, Niles-Weed, Razavian & Fernandez-Granda, "Early-Learning Regularization
Prevents Memorization of Noisy Labels", NeurIPS 2020; official code shengliu66/ELR, folders
``ELR/`` and ``ELR_plus/``: ``model/loss.py``, ``trainer/trainer.py``, ``config_*.json``).

``elr`` — one network; per batch, p = clamp(softmax f(x), 1e-4, 1 − 1e-4):
    1. temporal ensemble of the batch's rows only: t_i ← β t_i + (1 − β) p_i / Σ p_i (no
       gradient; t = 0 before a sample's first visit);
    2. L = CE(f(x), ỹ) + λ · mean_i log(1 − ⟨t_i, p_i⟩);
    β = 0.7, λ = 3 on CIFAR-10; β = 0.9, λ = 7 on CIFAR-100 (config_cifar*.json).
    On the embedded digits β = 0.97 (``conf/method_data/elr_digits.yaml``, not a paper value):
    t is updated once per epoch, and an epoch there is 10 steps, not 390, so β = 0.7 remembers
    ~30 steps and the regulariser follows memorisation (sym80: 40.4% vs 72.0%; docs/methods-grid.md).
Protocol ``elr`` (config_cifar10.json): SGD 0.02, momentum 0.9, weight decay 1e-3, batch 128,
150 epochs, cosine annealing with warm restarts every 10 epochs, crop + flip; CIFAR-100:
``protocol=elr_cifar100`` (lr ×0.01 at 80 and 120; named on the command line, as a per-dataset
file cannot swap the lr plan's kind). The paper's network is ResNet-34; noisylab has none, so
the closest, PreAct ResNet-18 (same basic blocks and CIFAR stem, two blocks per stage instead
of 3-4-6-3), is the default.

``elr_plus`` — two networks f¹, f², each with a weight average (EMA) f̄¹, f̄²; per batch, for
network k with peer j:
    1. t^k_i ← β t^k_i + (1 − β) softmax f̄^j(x_i) (the *peer's* weight average, unmixed input);
    2. mixup: λ ~ Beta(α, α), λ' = max(λ, 1 − λ), a permutation π; x̃ = λ' x + (1 − λ') x_π,
       ỹ̃ = λ' onehot(ỹ) + (1 − λ') onehot(ỹ_π), q = λ' t^k + (1 − λ') t^k_π;
    3. L = −mean Σ ỹ̃ log softmax f^k(x̃) + r(s) · λ · mean log(1 − ⟨q, clamp(softmax f^k(x̃))⟩),
       r(s) = exp(−5 (1 − s/S)²) the sigmoid ramp-up over S = ``lambda_rampup_steps`` steps;
    4. after the step, f̄^k ← a f̄^k + (1 − a) f^k, a = r_E(s + 1) · 0.997 (ramp-up over
       ``ema_rampup_steps`` = 40,000 steps).
On CIFAR-100 the code also weights the mixed labels by q (ỹ̃ ← ỹ̃ q / Σ ỹ̃ q: ``label_times_target``)
and ramps λ over 40,000 steps. Test: the mean of both networks' logits (``test/acc``).
Protocol ``elr_plus`` (config_cifar10.json): PreAct ResNet-18, SGD 0.02, momentum 0.9, weight
decay 5e-4, batch 128, 200 epochs, lr ×0.1 at 150; CIFAR-100: 250 epochs, ×0.1 at 200.

Clean score (both): the target's mass on the observed label, t_i[ỹ_i], at the sample's last
visit (the mean over both networks' targets for ELR+; ``label_mass``): how much the
early-learning predictions agree with the label.

Deviations from the official code: ELR+'s code trains f¹ for a whole epoch (its
own shuffle) and then f² (targets from the other's weight average, fixed during that epoch);
here both networks step on the same batch, each reading the peer's current average. The
averages start as copies of the networks (the code: other random initialisations, which the
ramp-up, a ≈ 0.007 at the first step, overwrites at once). λ and π come from torch's
generator (the code: numpy), so a resumed run continues exactly. ``quirks=official`` has
nothing more to switch on.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import require
from noisylab.methods.pair import MeanOfNetworks

PROBABILITY_CLAMP = 1e-4  # the code clamps softmax outputs to [1e-4, 1 - 1e-4]


def update_targets(targets: torch.Tensor, index: torch.Tensor, probs: torch.Tensor, beta: float) -> torch.Tensor:
    """Step 1 on the batch's rows only: t_i ← β t_i + (1 − β) p_i / Σ p_i; returns the new rows."""
    rows = beta * targets[index] + (1 - beta) * probs / probs.sum(dim=1, keepdim=True)
    targets[index] = rows.to(targets.dtype)
    return rows


def elr_regulariser(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_i log(1 − ⟨t_i, clamp(softmax z_i)⟩), gradients through z only."""
    probs = logits.softmax(dim=1).clamp(PROBABILITY_CLAMP, 1 - PROBABILITY_CLAMP)
    return torch.log(1 - (targets.detach() * probs).sum(dim=1)).mean()


def elr_loss(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, elr_lambda: float) -> torch.Tensor:
    """ELR's step 2: CE(z, ỹ) + λ · the regulariser."""
    return F.cross_entropy(logits, y) + elr_lambda * elr_regulariser(logits, targets)


def sigmoid_rampup(step: float, length: float) -> float:
    """exp(−5 (1 − min(s, S)/S)²), 1 when S = 0 (the code's utils.sigmoid_rampup)."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(step, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


def elr_plus_loss(logits: torch.Tensor, mixed_labels: torch.Tensor, mixed_targets: torch.Tensor, elr_lambda: float,
                  label_times_target: bool) -> torch.Tensor:
    """ELR+'s step 3 (the ramp-up applied by the caller through ``elr_lambda``)."""
    if label_times_target:  # the code's CIFAR-100 branch
        mixed_labels = mixed_labels * mixed_targets
        mixed_labels = mixed_labels / mixed_labels.sum(dim=1, keepdim=True)
    soft_ce = -(mixed_labels * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return soft_ce + elr_lambda * elr_regulariser(logits, mixed_targets)


def observed_label_mass(targets: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The clean score: t_i[ỹ_i]."""
    return targets.gather(1, y.view(-1, 1)).squeeze(1)


class ELRMixin:
    """The targets and the clean score the two variants share."""

    def setup_elr(self, beta: float, elr_lambda: float, buffers: int) -> None:
        require(0 <= float(beta) < 1, "beta", beta, "lie in [0, 1) (the temporal-ensemble momentum)")
        require(float(elr_lambda) >= 0, "elr_lambda", elr_lambda, "be >= 0 (the regulariser's weight)")
        self.beta, self.elr_lambda = float(beta), float(elr_lambda)
        for k in range(buffers):
            self.per_sample_state(f"target{'' if k == 0 else k + 1}", self.num_classes)
        self.per_sample_state("label_mass")  # t_i[ỹ_i] at the sample's last visit (the mean over the targets)

    def record_label_mass(self, index: torch.Tensor, y: torch.Tensor, *rows: torch.Tensor) -> torch.Tensor:
        mass = torch.stack([observed_label_mass(r, y) for r in rows]).mean(dim=0)
        self.label_mass[index] = mass.to(self.label_mass.dtype)
        return mass

    def clean_score(self) -> torch.Tensor:
        return self.label_mass


class ELR(ELRMixin, LNLMethod):
    def __init__(self, beta: float, elr_lambda: float, **settings):
        super().__init__(**settings)
        self.add_network("net", self.build_network)
        self.setup_elr(beta, elr_lambda, buffers=1)

    def training_step(self, batch, batch_idx: int):
        x, y, index = batch["x"], batch["y"], batch["index"]
        logits = self.net(x)
        with torch.no_grad():
            probs = logits.float().softmax(dim=1).clamp(PROBABILITY_CLAMP, 1 - PROBABILITY_CLAMP)
            targets = update_targets(self.target, index, probs, self.beta)
        loss = elr_loss(logits, y, targets, self.elr_lambda)
        self.step(loss)
        self.log_epoch_mean({"train/loss": loss, "train/target_on_label": self.record_label_mass(index, y, targets).mean()},
                            len(y))
        return loss


class ELRPlus(ELRMixin, LNLMethod):
    reported = ("ensemble", "net1", "net2")

    def __init__(self, beta: float, elr_lambda: float, mixup_alpha: float, ema_decay: float, ema_rampup_steps: int,
                 lambda_rampup_steps: int, label_times_target: bool, **settings):
        super().__init__(**settings)
        require(float(mixup_alpha) > 0, "mixup_alpha", mixup_alpha, "be > 0")
        require(0 <= float(ema_decay) < 1, "ema_decay", ema_decay, "lie in [0, 1)")
        require(int(ema_rampup_steps) >= 0, "ema_rampup_steps", ema_rampup_steps, "be >= 0")
        require(int(lambda_rampup_steps) >= 0, "lambda_rampup_steps", lambda_rampup_steps, "be >= 0")
        self.mixup_alpha, self.ema_decay = float(mixup_alpha), float(ema_decay)
        self.ema_rampup_steps, self.lambda_rampup_steps = int(ema_rampup_steps), int(lambda_rampup_steps)
        self.label_times_target = bool(label_times_target)
        for k in (1, 2):
            self.add_network(f"net{k}", self.build_network)
        for k in (1, 2):  # weight averages: not trained by the optimiser
            source = getattr(self, f"net{k}")
            self.add_network(f"ema{k}", lambda source=source: copy.deepcopy(source).requires_grad_(False))
        self.setup_elr(beta, elr_lambda, buffers=2)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def network(self, name: str):
        return MeanOfNetworks(self.net1, self.net2) if name == "ensemble" else getattr(self, name)

    def training_step(self, batch, batch_idx: int):
        x, y, index = batch["x"], batch["y"], batch["index"]
        onehot = F.one_hot(y, self.num_classes).float()
        ramp = sigmoid_rampup(float(self.updates) + 1, self.lambda_rampup_steps)  # the code's first iteration is 1
        total, logged, updated = 0, {}, []
        for k, peer_ema, targets in ((1, self.ema2, self.target), (2, self.ema1, self.target2)):
            with torch.no_grad():
                peer_probs = peer_ema(x).float().softmax(dim=1)  # the average's own batch statistics (train mode)
                rows = update_targets(targets, index, peer_probs, self.beta)
                updated.append(rows)
            lam = float(torch.distributions.Beta(torch.tensor(self.mixup_alpha),
                                                 torch.tensor(self.mixup_alpha)).sample())
            lam = max(lam, 1 - lam)
            perm = torch.randperm(len(y)).to(y.device)
            logits = getattr(self, f"net{k}")(lam * x + (1 - lam) * x[perm])
            loss = elr_plus_loss(logits, lam * onehot + (1 - lam) * onehot[perm], lam * rows + (1 - lam) * rows[perm],
                                 ramp * self.elr_lambda, self.label_times_target)
            total = total + loss
            logged[f"train/loss{'' if k == 1 else '_net2'}"] = loss
        self.step(total)  # each network's loss depends on its own parameters only
        self.update_averages()
        self.log_epoch_mean({**logged, "train/lambda_ramp": ramp,
                             "train/target_on_label": self.record_label_mass(index, y, *updated).mean()}, len(y))
        return total

    @torch.no_grad()
    def update_averages(self) -> None:
        """f̄ ← a f̄ + (1 − a) f, a = sigmoid_rampup(s + 1) · decay, s the update count (from 1)."""
        self.updates += 1
        decay = sigmoid_rampup(float(self.updates) + 1, self.ema_rampup_steps) * self.ema_decay
        for k in (1, 2):
            for average, p in zip(getattr(self, f"ema{k}").parameters(), getattr(self, f"net{k}").parameters()):
                average.mul_(decay).add_(p, alpha=1 - decay)
