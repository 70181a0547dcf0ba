"""DivideMix (Li, Socher & Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised
Learning", ICLR 2020; official code LiJunnan1992/DivideMix, ``Train_cifar.py``).

Two networks A, B. Warm-up (``warmup_epochs``): cross-entropy on the noisy labels, plus the
confidence penalty mean_i Σ_c p_ic log p_ic under asymmetric noise. Then, every epoch:
    1. each network's per-sample CE over the training set (eval mode, no augmentation),
       min-max normalised (the mean of the last 5 epochs' at 90% noise), a two-component GMM
       (scikit-learn, reg_covar 5e-4, tol 1e-2, max_iter 10): w_i = P(low-mean component | l_i);
    2. co-divide: A trains with the labelled set {w^B > τ} and weights w^B chosen by B's GMM,
       B with A's (a network never uses its own division); τ = ``p_threshold`` = 0.5;
    3. per batch, two augmented views; co-refinement of the labelled targets
       sharpen(w·onehot(ỹ) + (1 − w)·mean of own softmax over the views, T), co-guessing of the
       unlabelled targets sharpen(mean softmax of both networks over both views, T), T = 0.5;
    4. MixMatch: λ ~ Beta(4, 4), λ' = max(λ, 1 − λ), all (labelled and unlabelled) inputs and
       targets mixed with a permutation of themselves; L = L_x + λ_u(t)·L_u + L_reg with
       L_x = −mean Σ t log softmax, L_u = mean (softmax − t)² (over samples and classes),
       L_reg = Σ_c (1/C) log((1/C) / mean_batch p_c), λ_u(t) ramped linearly over 16 epochs
       from the warm-up's end (t counts batches as fractions of an epoch).
Test: the mean of both networks' logits (``test/acc``), each network beside it. Clean score:
the mean of both networks' GMM posteriors of the last fit (0.5 before the first).

Protocol ``dividemix`` (the paper's §4.1 and the code): PreAct ResNet-18, SGD 0.02, momentum
0.9, weight decay 5e-4, batch 128 (the paper's number; the code's 64 labelled + 64 unlabelled
samples per step, and its warm-up batch), 300 epochs, lr /10 at 150, warm-up 10 epochs on
CIFAR-10, 30 on CIFAR-100, random crop + flip.
λ_u by noise rate (the paper's appendix: 0 at sym20, 25 at sym50/80, 50 at sym90 and 0 at
asym40 on CIFAR-10; 25 at sym20, 150 above on CIFAR-100), looked up in ``lambda_u_by_rate``
at the nominal rate nearest the run's when ``lambda_u`` is null.

Deviations from the official code (none of them matters for the published numbers' shape,
and ``quirks=official`` has nothing to switch): the code trains A for a whole epoch over
its labelled set (|L|/64 batches of 64 labelled and 64 unlabelled samples, the unlabelled
loader cycled), then B for a whole epoch with the updated A; here every batch of the
training set is split into its labelled and unlabelled parts by the peer's division and both
networks take one step on it (each sample is seen once per epoch, labelled or not; the
per-batch sizes of the two parts vary, 128 in all as the code's 64 + 64). The network's own no-gradient forwards for the targets run on the
whole batch (the code: on the labelled and the unlabelled batch apart; it matters only for
batch-norm statistics). λ and the permutation come from torch's generator (the code: numpy),
so a resumed run continues exactly. A GMM fit on losses that are all equal gives w = 0.5
everywhere (the code divides by zero). On data without augmentation (``digits``,
``mnist1d``) the two views are identical (the warning says so).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from noisylab.methods.base import LNLMethod, log
from noisylab.methods.contract import Stage, require
from noisylab.methods.ieg import sharpen
from noisylab.methods.joint_opt import uniform_prior_kl
from noisylab.methods.pair import MeanOfNetworks

GMM_SETTINGS = {"max_iter": 10, "tol": 1e-2, "reg_covar": 5e-4}  # the code's eval_train
ASYMMETRIC_KINDS = ("asymmetric", "pair")


def normalise_losses(losses: torch.Tensor) -> torch.Tensor:
    """(l − min) / (max − min); all zeros when every loss is the same."""
    spread = losses.max() - losses.min()
    return (losses - losses.min()) / spread if float(spread) > 0 else torch.zeros_like(losses)


def gmm_clean_posterior(losses: torch.Tensor) -> torch.Tensor:
    """Step 1: P(the component of smaller mean | l_i) of a two-component GMM fit to ``losses``
    (numpy's global generator seeds its k-means start, as the code's)."""
    values = losses.detach().double().cpu().numpy().reshape(-1, 1)
    if np.ptp(values) == 0:
        return torch.full_like(losses, 0.5)
    gmm = GaussianMixture(n_components=2, **GMM_SETTINGS).fit(values)
    posterior = gmm.predict_proba(values)[:, gmm.means_.argmin()]
    return torch.as_tensor(posterior, dtype=losses.dtype, device=losses.device)


def co_divide(clean_prob_a: torch.Tensor, clean_prob_b: torch.Tensor, threshold: float):
    """Step 2: (labelled set of A, labelled set of B) as masks: each from the *other* network's
    posterior."""
    return clean_prob_b > threshold, clean_prob_a > threshold


def co_refined_targets(own_view_logits, onehot: torch.Tensor, clean_prob: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Step 3, labelled: sharpen(w·onehot + (1 − w)·mean_views softmax(own), T)."""
    own = torch.stack([z.softmax(dim=1) for z in own_view_logits]).mean(dim=0)
    w = clean_prob.view(-1, 1).to(own.dtype)
    return sharpen(w * onehot + (1 - w) * own, temperature)


def co_guessed_targets(view_logits, temperature: float) -> torch.Tensor:
    """Step 3, unlabelled: sharpen(mean softmax over both networks and both views, T)."""
    return sharpen(torch.stack([z.softmax(dim=1) for z in view_logits]).mean(dim=0), temperature)


def mixmatch_losses(logits_x: torch.Tensor, targets_x: torch.Tensor, logits_u: torch.Tensor,
                    targets_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 4: L_x = −mean_i Σ_c t log softmax(z) and L_u = mean_ic (softmax(z) − t)²; an empty
    part contributes 0."""
    zero = logits_x.sum() * 0 + logits_u.sum() * 0
    loss_x = -(F.log_softmax(logits_x, dim=1) * targets_x).sum(dim=1).mean() if len(logits_x) else zero
    loss_u = (logits_u.softmax(dim=1) - targets_u).pow(2).mean() if len(logits_u) else zero
    return loss_x, loss_u


def linear_rampup(progress: float, warmup_epochs: int, rampup_epochs: int, lambda_u: float) -> float:
    """λ_u · clip((t − warm-up) / ramp-up length, 0, 1), t in epochs (fractions within one)."""
    return lambda_u * float(np.clip((progress - warmup_epochs) / rampup_epochs, 0.0, 1.0))


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The confidence penalty: mean_i Σ_c p_ic log p_ic."""
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * log_p).sum(dim=1).mean()


def nearest_rate_value(table, rate: float) -> float:
    """The value of ``table`` ([[rate, value], ...]) at the listed rate nearest ``rate``."""
    return float(min(table, key=lambda row: abs(float(row[0]) - rate))[1])


def rate_table(table) -> bool:
    """``table`` is a non-empty list of [rate, value] pairs of numbers."""
    try:
        return len(table) > 0 and all(len(row) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in row) for row in table)
    except TypeError:
        return False


class DivideMix(LNLMethod):
    reported = ("ensemble", "net1", "net2")
    raw_batches = True

    def __init__(self, warmup_epochs: int, p_threshold: float, temperature: float, alpha: float,
                 lambda_u: float | None, lambda_u_by_rate, lambda_u_asymmetric: float, rampup_epochs: int,
                 prior_weight: float, confidence_penalty: bool | None, loss_window: int | None, **settings):
        super().__init__(**settings)
        require(int(warmup_epochs) >= 1, "warmup_epochs", warmup_epochs, "be >= 1 (the GMM needs a warmed-up network)")
        require(0 < float(p_threshold) < 1, "p_threshold", p_threshold, "lie in (0, 1)")
        require(float(temperature) > 0, "temperature", temperature, "be > 0 (the sharpening T)")
        require(float(alpha) > 0, "alpha", alpha, "be > 0 (MixMatch's Beta(alpha, alpha))")
        require(int(rampup_epochs) >= 1, "rampup_epochs", rampup_epochs, "be >= 1")
        require(float(prior_weight) >= 0, "prior_weight", prior_weight, "be >= 0")
        require(loss_window is None or int(loss_window) >= 1, "loss_window", loss_window, "be >= 1 or null")
        require(rate_table(lambda_u_by_rate), "lambda_u_by_rate", lambda_u_by_rate,
                "be a list of [noise rate, lambda_u] pairs")
        asymmetric = self.facts.noise_kind in ASYMMETRIC_KINDS
        if lambda_u is None:
            lambda_u = lambda_u_asymmetric if asymmetric else nearest_rate_value(lambda_u_by_rate, self.noise_rate)
        require(float(lambda_u) >= 0, "lambda_u", lambda_u, "be >= 0 (the weight of the unlabelled loss)")
        self.warmup_epochs, self.p_threshold, self.temperature = int(warmup_epochs), float(p_threshold), float(temperature)
        self.alpha, self.lambda_u, self.rampup_epochs = float(alpha), float(lambda_u), int(rampup_epochs)
        self.prior_weight = float(prior_weight)
        self.confidence_penalty = asymmetric if confidence_penalty is None else bool(confidence_penalty)
        # the code averages the last 5 epochs' normalised losses at 90% noise ("convergence stability")
        self.loss_window = int(loss_window) if loss_window is not None else (5 if self.noise_rate >= 0.9 else 1)
        self.add_network("net1", self.build_network)
        self.add_network("net2", self.build_network)
        self.per_sample_state("clean_prob", 2, fill=0.5)  # each network's GMM posterior w
        self.per_sample_state("loss_history", 2, self.loss_window)
        self.register_buffer("fits", torch.zeros((), dtype=torch.long))

    def stages(self):
        return [Stage("warmup", epochs=self.warmup_epochs), Stage("train")]

    def network(self, name: str):
        return MeanOfNetworks(self.net1, self.net2) if name == "ensemble" else getattr(self, name)

    def on_fit_start(self) -> None:
        if self.trainer.datamodule.transform.augment in (None, "none"):
            log.warning("method=dividemix on data without augmentation: its two views of a sample are identical "
                        "(data.augment=crop gives distinct views).")

    # ------------------------------------------------------------------ step 1-2: the division
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.stage.name == "train":
            self.divide()

    @torch.no_grad()
    def divide(self) -> None:
        """Both networks' normalised losses, each one's GMM posterior (on the mean of the last
        ``loss_window`` epochs' losses)."""
        slot = int(self.fits) % self.loss_window
        filled = min(int(self.fits) + 1, self.loss_window)
        for k, network in enumerate((self.net1, self.net2)):
            _, losses = self.training_set_pass(network)
            self.loss_history[:, k, slot] = normalise_losses(losses)
            # slots fill in order 0, 1, ...: the first ``filled`` are the epochs seen so far
            self.clean_prob[:, k] = gmm_clean_posterior(self.loss_history[:, k, :filled].mean(dim=1))
        self.fits += 1
        labelled_1, labelled_2 = co_divide(self.clean_prob[:, 0], self.clean_prob[:, 1], self.p_threshold)
        self.log_epoch_mean({"train/labelled_fraction_net1": labelled_1.float().mean(),
                             "train/labelled_fraction_net2": labelled_2.float().mean()}, 1)

    def clean_score(self) -> torch.Tensor:
        return self.clean_prob.mean(dim=1)

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx: int):
        x, y, index = batch["x"], batch["y"], batch["index"]
        if self.stage.name == "warmup":
            x = self.view(x)
            losses = []
            for network in (self.net1, self.net2):
                logits = network(x)
                loss = F.cross_entropy(logits, y)
                losses.append(loss + negative_entropy(logits) if self.confidence_penalty else loss)
            self.step(losses[0] + losses[1])  # each network gets the gradient of its own loss
            self.log_epoch_mean({"train/loss": losses[0], "train/loss_net2": losses[1]}, len(y))
            return losses[0]
        views = (self.view(x), self.view(x))
        onehot = F.one_hot(y, self.num_classes).float()
        progress = self.current_epoch + batch_idx / max(self.trainer.num_training_batches, 1)
        lambda_u = linear_rampup(progress, self.warmup_epochs, self.rampup_epochs, self.lambda_u)
        labelled = co_divide(self.clean_prob[index, 0], self.clean_prob[index, 1], self.p_threshold)
        peer_prob = (self.clean_prob[index, 1], self.clean_prob[index, 0])
        nets, losses, logged = (self.net1, self.net2), [], {}
        for k, suffix in ((0, ""), (1, "_net2")):
            loss_x, loss_u, penalty = self.semi_supervised_losses(nets[k], nets[1 - k], views, onehot,
                                                                  peer_prob[k], labelled[k])
            losses.append(loss_x + lambda_u * loss_u + self.prior_weight * penalty)
            logged.update({f"train/loss{suffix}": losses[-1], f"train/loss_x{suffix}": loss_x,
                           f"train/loss_u{suffix}": loss_u,
                           f"train/labelled_precision{suffix}": self.precision(labelled[k], y, batch["y_true"])})
        self.step(losses[0] + losses[1])  # loss of network k depends on network k's parameters only
        self.log_epoch_mean({"train/lambda_u": lambda_u, **logged}, len(y))
        return losses[0]

    @staticmethod
    def precision(labelled: torch.Tensor, y: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """Diagnostic: the fraction of the labelled part whose label is clean (NaN if none)."""
        known = labelled & (y_true >= 0)
        return (y[known] == y_true[known]).float().mean() if bool(known.any()) else y.new_tensor(float("nan"), dtype=torch.float)

    def semi_supervised_losses(self, own, peer, views, onehot, clean_prob, labelled):
        """Steps 3-4 for network ``own``: (L_x, L_u, L_reg) on its labelled/unlabelled split."""
        unlabelled = ~labelled
        with torch.no_grad():
            own_logits = [own(v) for v in views]  # train mode, as the code
            peer.eval()
            try:
                peer_logits = [peer(v[unlabelled]) for v in views]
            finally:
                peer.train()
            targets_x = co_refined_targets([z[labelled] for z in own_logits], onehot[labelled],
                                           clean_prob[labelled], self.temperature)
            targets_u = co_guessed_targets([z[unlabelled] for z in own_logits] + peer_logits, self.temperature)
        inputs = torch.cat([views[0][labelled], views[1][labelled], views[0][unlabelled], views[1][unlabelled]])
        targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
        lam = float(torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha)).sample())
        lam = max(lam, 1 - lam)
        perm = torch.randperm(len(inputs)).to(inputs.device)
        logits = own(lam * inputs + (1 - lam) * inputs[perm])
        mixed_targets = lam * targets + (1 - lam) * targets[perm]
        size_x = 2 * int(labelled.sum())
        loss_x, loss_u = mixmatch_losses(logits[:size_x], mixed_targets[:size_x], logits[size_x:],
                                         mixed_targets[size_x:])
        return loss_x, loss_u, uniform_prior_kl(F.log_softmax(logits, dim=1))
