"""Audits: the official training steps of DivideMix, ELR / ELR+ and SOP / SOP+, re-typed here
in their own structure (not imported), beside ours on the same inputs, in float64.

Sources (snapshots read with ``fetch``): LiJunnan1992/DivideMix ``Train_cifar.py`` (train,
eval_train, SemiLoss, linear_rampup, NegEntropy); shengliu66/ELR ``ELR/model/loss.py``
(elr_loss), ``ELR/trainer/trainer.py`` (_train_epoch), ``ELR_plus/model/loss.py``
(elr_plus_loss, update_hist), ``ELR_plus/utils/util.py`` (sigmoid_rampup),
``ELR_plus/trainer/trainer.py`` (_train_epoch, _mixup_data, update_ema_variables);
shengliu66/SOP ``model/loss.py`` (overparametrization_loss) and ``trainer/trainer.py``
(_train_epoch) at the commits named in each test.

The first tests compare the official functions with ours' pure functions (float64, to 1e-12 or 1e-10);
the last section calls ours' own steps (DivideMix.semi_supervised_losses and divide,
ELR.training_step, ELRPlus.training_step and update_averages, SOP.loss and SOPPlus.loss) on
tiny instances, so the composition (clamps, which average feeds which table, the ramps' step
counts, the loss window's ring buffer, the views) is checked too.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from noisylab.methods.dividemix import (
    DivideMix,
    co_divide,
    co_guessed_targets,
    co_refined_targets,
    gmm_clean_posterior,
    linear_rampup,
    mixmatch_losses,
    negative_entropy,
    normalise_losses,
)
from noisylab.methods.elr import ELR, ELRPlus, elr_loss, elr_plus_loss, sigmoid_rampup, update_targets
from noisylab.methods.joint_opt import uniform_prior_kl
from noisylab.methods.sop import SOP, SOPPlus, sop_loss
from tests.conftest import tiny_method

D = torch.float64


def close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------ DivideMix
def test_dividemix_mixmatch_step_equals_the_official_train_retyped():
    """Train_cifar.py::train for one batch, re-typed: co-guessing over both networks' two views,
    co-refinement with w_x (the peer's clean posterior), T = 0.5 sharpening, mixup with
    l = max(l, 1 − l) and one permutation, SemiLoss (Lx soft CE, Lu mean squared error),
    linear_rampup(epoch + batch_idx / num_iter, warm_up) · λ_u, and the uniform-prior penalty.
    Ours (co_refined_targets, co_guessed_targets, mixmatch_losses, linear_rampup,
    uniform_prior_kl) gives the same targets, losses, λ and gradients."""
    g = torch.Generator().manual_seed(0)
    b, c, dim, T, lambda_u, warm_up = 6, 10, 5, 0.5, 25.0, 10
    x, x2, u, u2 = (torch.randn(b, dim, generator=g, dtype=D) for _ in range(4))
    labels = torch.randint(0, c, (b,), generator=g)
    w_x = torch.rand(b, generator=g, dtype=D)
    net = torch.nn.Linear(dim, c).to(D)
    net2 = torch.nn.Linear(dim, c).to(D)
    l_raw = 0.3
    idx = torch.randperm(4 * b, generator=g)
    epoch, batch_idx, num_iter = 17, 3, 40

    def official():
        labels_x = torch.zeros(b, c, dtype=D).scatter_(1, labels.view(-1, 1), 1)
        wx = w_x.view(-1, 1)
        with torch.no_grad():
            pu = (torch.softmax(net(u), 1) + torch.softmax(net(u2), 1) + torch.softmax(net2(u), 1)
                  + torch.softmax(net2(u2), 1)) / 4
            ptu = pu ** (1 / T)
            targets_u = ptu / ptu.sum(dim=1, keepdim=True)
            px = (torch.softmax(net(x), 1) + torch.softmax(net(x2), 1)) / 2
            px = wx * labels_x + (1 - wx) * px
            ptx = px ** (1 / T)
            targets_x = ptx / ptx.sum(dim=1, keepdim=True)
        lam = max(l_raw, 1 - l_raw)
        all_inputs = torch.cat([x, x2, u, u2])
        all_targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
        mixed_input = lam * all_inputs + (1 - lam) * all_inputs[idx]
        mixed_target = lam * all_targets + (1 - lam) * all_targets[idx]
        logits = net(mixed_input)
        logits_x, logits_u = logits[:2 * b], logits[2 * b:]
        Lx = -torch.mean(torch.sum(F.log_softmax(logits_x, dim=1) * mixed_target[:2 * b], dim=1))
        Lu = torch.mean((torch.softmax(logits_u, dim=1) - mixed_target[2 * b:]) ** 2)
        current = np.clip((epoch + batch_idx / num_iter - warm_up) / 16, 0.0, 1.0)
        lamb = lambda_u * float(current)
        prior = torch.ones(c, dtype=D) / c
        pred_mean = torch.softmax(logits, dim=1).mean(0)
        penalty = torch.sum(prior * torch.log(prior / pred_mean))
        return targets_x, targets_u, Lx, Lu, lamb, penalty, Lx + lamb * Lu + penalty

    def ours():
        onehot = F.one_hot(labels, c).to(D)
        with torch.no_grad():
            targets_x = co_refined_targets([net(x), net(x2)], onehot, w_x, T)
            targets_u = co_guessed_targets([net(u), net(u2), net2(u), net2(u2)], T)
        lam = max(l_raw, 1 - l_raw)
        inputs = torch.cat([x, x2, u, u2])
        targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
        logits = net(lam * inputs + (1 - lam) * inputs[idx])
        mixed = lam * targets + (1 - lam) * targets[idx]
        loss_x, loss_u = mixmatch_losses(logits[:2 * b], mixed[:2 * b], logits[2 * b:], mixed[2 * b:])
        lamb = linear_rampup(epoch + batch_idx / num_iter, warm_up, 16, lambda_u)
        penalty = uniform_prior_kl(F.log_softmax(logits, dim=1))
        return targets_x, targets_u, loss_x, loss_u, lamb, penalty, loss_x + lamb * loss_u + penalty

    theirs = official()
    grads_theirs = torch.autograd.grad(theirs[-1], list(net.parameters()))
    mine = ours()
    grads_mine = torch.autograd.grad(mine[-1], list(net.parameters()))
    for a, b_ in zip(mine[:4], theirs[:4]):
        close(a, b_)
    assert mine[4] == theirs[4] and 0 < mine[4] < lambda_u  # inside the ramp-up
    close(mine[5], theirs[5])
    close(mine[6], theirs[6])
    for a, b_ in zip(grads_mine, grads_theirs):
        close(a, b_)


def test_dividemix_co_divide_equals_the_official_eval_train_retyped():
    """eval_train re-typed: per-sample CE, min-max normalised, a GaussianMixture(2, max_iter 10,
    tol 1e-2, reg_covar 5e-4) fit, the posterior of the smaller-mean component. Ours
    (normalise_losses, gmm_clean_posterior), with numpy's global generator in the same state,
    gives the same posteriors and so the same labelled set at p_threshold 0.5."""
    rng = np.random.default_rng(3)
    clean = rng.gamma(2.0, 0.2, 300)
    noisy = rng.gamma(6.0, 0.5, 200)
    raw = torch.tensor(np.concatenate([clean, noisy]), dtype=D)

    np.random.seed(11)
    losses = (raw - raw.min()) / (raw.max() - raw.min())
    input_loss = losses.reshape(-1, 1).numpy()
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)
    gmm.fit(input_loss)
    official = gmm.predict_proba(input_loss)[:, gmm.means_.argmin()]

    np.random.seed(11)
    ours = gmm_clean_posterior(normalise_losses(raw)).numpy()
    np.testing.assert_allclose(ours, official, rtol=0, atol=1e-12)
    assert ((ours > 0.5) == (official > 0.5)).all()
    assert (ours[:300] > 0.5).mean() > 0.9 and (ours[300:] > 0.5).mean() < 0.1  # the low losses are "clean"


def test_dividemix_confidence_penalty_equals_the_official_negentropy():
    """NegEntropy re-typed: mean_i Σ_c p log p, the warm-up penalty for asymmetric noise."""
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(1), dtype=D, requires_grad=True)
    probs = torch.softmax(logits, dim=1)
    official = torch.mean(torch.sum(probs.log() * probs, dim=1))
    ours = negative_entropy(logits)
    close(ours, official)
    close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(official, logits)[0])


# ------------------------------------------------------------------------------ ELR / ELR+
class OfficialELRLoss:
    """ELR/model/loss.py::elr_loss, re-typed (the config's λ passed in)."""

    def __init__(self, num_examp, num_classes, beta, lam, dtype=D):
        self.target = torch.zeros(num_examp, num_classes, dtype=dtype)
        self.beta, self.lam = beta, lam

    def __call__(self, index, output, label):
        y_pred = F.softmax(output, dim=1)
        y_pred = torch.clamp(y_pred, 1e-4, 1.0 - 1e-4)
        y_pred_ = y_pred.data.detach()
        self.target[index] = self.beta * self.target[index] + (1 - self.beta) * (y_pred_ / y_pred_.sum(dim=1, keepdim=True))
        ce_loss = F.cross_entropy(output, label)
        elr_reg = ((1 - (self.target[index] * y_pred).sum(dim=1)).log()).mean()
        return ce_loss + self.lam * elr_reg


def test_elr_step_equals_the_official_elr_loss_retyped_over_successive_batches():
    """Three successive batches with overlapping indices (a sample's second visit reads its
    first target): the same loss, the same gradient w.r.t. the logits, the same target table."""
    g = torch.Generator().manual_seed(2)
    n, c, beta, lam = 20, 10, 0.7, 3.0
    official = OfficialELRLoss(n, c, beta, lam)
    targets = torch.zeros(n, c, dtype=D)
    for index in (torch.arange(0, 8), torch.arange(4, 14), torch.tensor([0, 3, 5, 13, 19])):
        base = 3 * torch.randn(len(index), c, generator=g, dtype=D)
        y = torch.randint(0, c, (len(index),), generator=g)
        z_official, z_ours = base.clone().requires_grad_(), base.clone().requires_grad_()
        theirs = official(index, z_official, y)
        with torch.no_grad():
            probs = z_ours.softmax(dim=1).clamp(1e-4, 1 - 1e-4)
            rows = update_targets(targets, index, probs, beta)
        ours = elr_loss(z_ours, y, rows, lam)
        close(ours, theirs)
        close(torch.autograd.grad(ours, z_ours)[0], torch.autograd.grad(theirs, z_official)[0])
        close(targets, official.target)
    assert int((targets.sum(dim=1) > 0).sum()) == 15  # the rows never visited stay 0


def test_elr_plus_step_equals_the_official_elr_plus_loss_retyped():
    """ELR_plus: update_hist (the peer's average's softmax, unclamped, into pred_hist; q the mixup
    of the batch's rows), the trainer's _mixup_data (λ' = max(λ, 1 − λ), mixed one-hot labels),
    elr_plus_loss with sigmoid_rampup(iteration, coef_step) · λ, on CIFAR-10 and on CIFAR-100's
    branch (labels × q, renormalised). Ours: update_targets, elr_plus_loss, sigmoid_rampup."""
    g = torch.Generator().manual_seed(5)
    n, beta, lam, coef_step = 30, 0.7, 3.0, 40
    for c, label_times_target in ((10, False), (100, True)):
        pred_hist = torch.zeros(n, c, dtype=D)
        targets = torch.zeros(n, c, dtype=D)
        for step, index in ((1, torch.arange(0, 12)), (7, torch.arange(6, 18))):
            ema_out = torch.randn(len(index), c, generator=g, dtype=D)
            base = torch.randn(len(index), c, generator=g, dtype=D)
            y = torch.randint(0, c, (len(index),), generator=g)
            mix_index = torch.randperm(len(index), generator=g)
            mixup_l = max(0.35, 1 - 0.35)
            onehot = F.one_hot(y, c).to(D)
            # official
            y_pred_ = F.softmax(ema_out, dim=1)
            pred_hist[index] = beta * pred_hist[index] + (1 - beta) * y_pred_ / y_pred_.sum(dim=1, keepdim=True)
            q = mixup_l * pred_hist[index] + (1 - mixup_l) * pred_hist[index][mix_index]
            y_labeled = mixup_l * onehot + (1 - mixup_l) * onehot[mix_index]
            z_official = base.clone().requires_grad_()
            y_pred = torch.clamp(F.softmax(z_official, dim=1), 1e-4, 1.0 - 1e-4)
            if c == 100:
                y_labeled = y_labeled * q
                y_labeled = y_labeled / y_labeled.sum(dim=1, keepdim=True)
            ce_loss = torch.mean(-torch.sum(y_labeled * F.log_softmax(z_official, dim=1), dim=-1))
            reg = ((1 - (q * y_pred).sum(dim=1)).log()).mean()
            current = np.clip(step, 0.0, coef_step)
            ramp = float(np.exp(-5.0 * (1.0 - current / coef_step) ** 2))
            theirs = ce_loss + ramp * (lam * reg)
            # ours
            rows = update_targets(targets, index, ema_out.softmax(dim=1), beta)
            z_ours = base.clone().requires_grad_()
            ours = elr_plus_loss(z_ours, mixup_l * onehot + (1 - mixup_l) * onehot[mix_index],
                                 mixup_l * rows + (1 - mixup_l) * rows[mix_index],
                                 sigmoid_rampup(step, coef_step) * lam, label_times_target)
            assert sigmoid_rampup(step, coef_step) == ramp
            close(ours, theirs)
            close(torch.autograd.grad(ours, z_ours)[0], torch.autograd.grad(theirs, z_official)[0])
            close(targets, pred_hist)


# ------------------------------------------------------------------------------ SOP / SOP+
def official_sop_loss_2022_07(index, outputs, label, u, v, ratio_reg, ratio_consistency, ratio_balance, num_classes):
    """shengliu66/SOP model/loss.py::overparametrization_loss.forward at commit 21a4017
    (2022-07-01; the same loss as the first commit 7abd976 of 2022-02-21, the code of the
    paper's publication), re-typed."""
    if len(outputs) > len(index):
        output, output2 = torch.chunk(outputs, 2)
    else:
        output = outputs
    U_square = u[index] ** 2 * label
    V_square = v[index] ** 2 * (1 - label)
    U_square = torch.clamp(U_square, 0, 1 - 1e-4)
    V_square = torch.clamp(V_square, 0, 1 - 1e-4)
    original_prediction = F.softmax(output, dim=1)
    prediction = torch.clamp(original_prediction + U_square - V_square.detach(), min=1e-4)
    prediction = F.normalize(prediction, p=1, eps=1e-4)
    prediction = torch.clamp(prediction, min=1e-4, max=1.0)
    label_one_hot = torch.zeros(len(output), num_classes, dtype=D).scatter_(1, output.detach().argmax(dim=1).view(-1, 1), 1)
    MSE_loss = F.mse_loss((label_one_hot + U_square.detach() - V_square), label, reduction="sum") / len(label)
    loss = torch.mean(-torch.sum(label * torch.log(prediction), dim=-1))
    loss = loss + ratio_reg * MSE_loss
    if ratio_balance > 0:
        avg_prediction = torch.mean(prediction, dim=0)
        prior_distr = 1.0 / num_classes * torch.ones_like(avg_prediction)
        avg_prediction = torch.clamp(avg_prediction, min=1e-4, max=1.0)
        balance_kl = torch.mean(-(prior_distr * torch.log(avg_prediction)).sum(dim=0))
        loss = loss + ratio_balance * balance_kl
    if len(outputs) > len(index) and ratio_consistency > 0:
        preds1 = F.softmax(output, dim=1).detach()
        preds2 = F.log_softmax(output2, dim=1)
        consistency = torch.sum(F.kl_div(preds2, preds1, reduction="none"), dim=1)
        loss = loss + ratio_consistency * torch.mean(consistency)
    return loss


def sop_case(seed=7, n=16, c=10, b=6):
    g = torch.Generator().manual_seed(seed)
    u = (0.6 * torch.randn(n, 1, generator=g, dtype=D))
    v = (0.6 * torch.randn(n, c, generator=g, dtype=D))
    v[0, :] = 1.5  # v² > 1: the clamp at 1 − 1e-4 is reached
    index = torch.tensor([0, 2, 3, 7, 11, 15])[:b]
    y = torch.randint(0, c, (b,), generator=g)
    logits = 2 * torch.randn(2 * b, c, generator=g, dtype=D)
    return u, v, index, y, logits


def test_sop_and_sop_plus_steps_equal_the_official_overparametrization_loss_retyped():
    """SOP (one view) and SOP+ (two views, ratio_consistency 0.9, ratio_balance 0.1), ratio_reg
    100: the same loss and the same gradients w.r.t. both views' logits, u and v (only the
    batch's rows of u and v get a gradient)."""
    u, v, index, y, logits = sop_case()
    c, b = v.shape[1], len(index)
    label = F.one_hot(y, c).to(D)
    for two_views, consistency, balance in ((False, 0.0, 0.0), (True, 0.9, 0.1)):
        z = logits if two_views else logits[:b]
        leaves_o = [z.clone().requires_grad_(), u.clone().requires_grad_(), v.clone().requires_grad_()]
        leaves_m = [z.clone().requires_grad_(), u.clone().requires_grad_(), v.clone().requires_grad_()]
        theirs = official_sop_loss_2022_07(index, leaves_o[0], label, leaves_o[1], leaves_o[2], 100.0,
                                           consistency, balance, c)
        first, second = (leaves_m[0].chunk(2) if two_views else (leaves_m[0], None))
        ours, _ = sop_loss(first, y, leaves_m[1][index], leaves_m[2][index], 100.0, balance, second, consistency)
        close(ours, theirs, 1e-10)
        grads = torch.autograd.grad(ours, leaves_m)
        for a, b_ in zip(grads, torch.autograd.grad(theirs, leaves_o)):
            close(a, b_, 1e-10)
        outside = torch.ones(len(u), dtype=torch.bool)
        outside[index] = False
        assert grads[1][outside].abs().sum() == 0 and grads[2][outside].abs().sum() == 0
        assert grads[1][index].abs().sum() > 0 and grads[2][index].abs().sum() > 0


def test_sop_differs_from_the_repository_s_final_loss_by_a_documented_amount():
    """The repository's final loss.py (commit 9a3fd24, 2022-09-08, after the paper) changed
    three things: the MSE term has weight 1 (no ratio_reg), its gradient also reaches u (no
    sg(U)), and U, V are clamped at 1 instead of 1 − 1e-4. Ours follows the code of the paper's
    publication (the test above); this test re-types the final one and pins the size of the
    difference on the same inputs, as the docstring of noisylab/methods/sop.py states it."""
    u, v, index, y, logits = sop_case()
    c, b = v.shape[1], len(index)
    label = F.one_hot(y, c).to(D)
    z = logits[:b]
    leaves = [u.clone().requires_grad_(), v.clone().requires_grad_()]
    U = torch.clamp(leaves[0][index] ** 2 * label, 0, 1)
    V = torch.clamp(leaves[1][index] ** 2 * (1 - label), 0, 1)
    prediction = torch.clamp(F.softmax(z, dim=1) + U - V.detach(), min=1e-4)
    prediction = torch.clamp(F.normalize(prediction, p=1, eps=1e-4), min=1e-4, max=1.0)
    hard = torch.zeros(b, c, dtype=D).scatter_(1, z.argmax(dim=1).view(-1, 1), 1)
    final = torch.mean(-torch.sum(label * torch.log(prediction), dim=-1)) + F.mse_loss(hard + U - V, label, reduction="sum") / b
    final_grad_u = torch.autograd.grad(final, leaves[0])[0]
    ours_leaves = [u.clone().requires_grad_(), v.clone().requires_grad_()]
    ours, parts = sop_loss(z, y, ours_leaves[0][index], ours_leaves[1][index], 100.0)
    ours_grad_u = torch.autograd.grad(ours, ours_leaves[0])[0]
    # the MSE's weight: 100 × against 1 ×; the loss values differ by about 99 × the MSE
    assert abs(float(ours - final) - 99 * float(parts["train/loss_mse"])) < 0.05 * float(ours - final)
    # u's gradient: ours from the CE term alone, the final code's also from the MSE
    assert not torch.allclose(ours_grad_u, final_grad_u)


# ------------------------------------------------------- the same, through ours' own steps
def draws(seed, *sizes, alpha):
    """The (λ', permutation) pairs ours draws from torch's global generator after
    ``torch.manual_seed(seed)``: Beta(α, α), max(λ, 1 − λ), then randperm, once per size."""
    torch.manual_seed(seed)
    out = []
    for size in sizes:
        lam = float(torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample())
        out.append((max(lam, 1 - lam), torch.randperm(size)))
    return out


def test_dividemix_semi_supervised_losses_equal_the_official_train_on_an_uneven_split():
    """LiJunnan1992/DivideMix Train_cifar.py::train (one batch of net; net2 in eval mode) and
    SemiLoss, linear_rampup, re-typed, beside ours' own DivideMix.semi_supervised_losses (the
    method, called with a stand-in ``self`` holding T and α) on a batch the peer's posterior
    splits 5 labelled / 9 unlabelled (the code's labelled and unlabelled batches are the two
    parts, in batch order). The peer has batch norm with fixed running statistics: the code
    forwards it in eval mode, so must ours. Same λ' and permutation (ours' torch draws, fed to
    the official); equal co-refined/co-guessed targets (through Lx, Lu), Lx, Lu, the prior
    penalty, L = Lx + λ_u(t)·Lu + L_reg and its gradient w.r.t. net's parameters; net2 gets
    none. (The own network is linear: its train-mode forwards on the whole batch, ours, and on
    each part, the code's, differ only through batch norm: a documented deviation.)"""
    g = torch.Generator().manual_seed(8)
    n, c, dim, T, alpha, lambda_u, warm_up = 14, 10, 5, 0.5, 4.0, 25.0, 10
    views = (torch.randn(n, dim, generator=g, dtype=D), torch.randn(n, dim, generator=g, dtype=D))
    y = torch.randint(0, c, (n,), generator=g)
    w = torch.rand(n, generator=g, dtype=D)
    labelled = torch.zeros(n, dtype=torch.bool)
    labelled[torch.tensor([1, 4, 5, 9, 12])] = True
    net = torch.nn.Linear(dim, c).to(D)
    net2 = torch.nn.Sequential(torch.nn.Linear(dim, c), torch.nn.BatchNorm1d(c)).to(D)
    net2[1].running_mean.copy_(torch.randn(c, generator=g, dtype=D))
    net2[1].running_var.copy_(torch.rand(c, generator=g, dtype=D) + 0.5)
    net.train()
    net2.train()  # ours puts the peer in eval mode for its forwards and back
    epoch, batch_idx, num_iter = 12, 5, 30
    [(lam, idx)] = draws(21, 2 * n, alpha=alpha)

    def official():
        net2.eval()
        inputs_x, inputs_x2 = views[0][labelled], views[1][labelled]
        inputs_u, inputs_u2 = views[0][~labelled], views[1][~labelled]
        batch_size = inputs_x.size(0)
        labels_x = torch.zeros(batch_size, c, dtype=D).scatter_(1, y[labelled].view(-1, 1), 1)
        w_x = w[labelled].view(-1, 1)
        with torch.no_grad():
            outputs_u11, outputs_u12 = net(inputs_u), net(inputs_u2)
            outputs_u21, outputs_u22 = net2(inputs_u), net2(inputs_u2)
            pu = (torch.softmax(outputs_u11, dim=1) + torch.softmax(outputs_u12, dim=1)
                  + torch.softmax(outputs_u21, dim=1) + torch.softmax(outputs_u22, dim=1)) / 4
            ptu = pu ** (1 / T)
            targets_u = (ptu / ptu.sum(dim=1, keepdim=True)).detach()
            outputs_x, outputs_x2 = net(inputs_x), net(inputs_x2)
            px = (torch.softmax(outputs_x, dim=1) + torch.softmax(outputs_x2, dim=1)) / 2
            px = w_x * labels_x + (1 - w_x) * px
            ptx = px ** (1 / T)
            targets_x = (ptx / ptx.sum(dim=1, keepdim=True)).detach()
        all_inputs = torch.cat([inputs_x, inputs_x2, inputs_u, inputs_u2], dim=0)
        all_targets = torch.cat([targets_x, targets_x, targets_u, targets_u], dim=0)
        input_a, input_b = all_inputs, all_inputs[idx]
        target_a, target_b = all_targets, all_targets[idx]
        mixed_input = lam * input_a + (1 - lam) * input_b
        mixed_target = lam * target_a + (1 - lam) * target_b
        logits = net(mixed_input)
        logits_x, logits_u = logits[:batch_size * 2], logits[batch_size * 2:]
        probs_u = torch.softmax(logits_u, dim=1)
        Lx = -torch.mean(torch.sum(F.log_softmax(logits_x, dim=1) * mixed_target[:batch_size * 2], dim=1))
        Lu = torch.mean((probs_u - mixed_target[batch_size * 2:]) ** 2)
        current = np.clip((epoch + batch_idx / num_iter - warm_up) / 16, 0.0, 1.0)
        lamb = lambda_u * float(current)
        prior = torch.ones(c, dtype=D) / c
        pred_mean = torch.softmax(logits, dim=1).mean(0)
        penalty = torch.sum(prior * torch.log(prior / pred_mean))
        net2.train()
        return Lx, Lu, penalty, Lx + lamb * Lu + penalty

    theirs = official()
    torch.manual_seed(21)
    stand_in = type("StandIn", (), {"temperature": T, "alpha": alpha})()
    loss_x, loss_u, penalty = DivideMix.semi_supervised_losses(stand_in, net, net2, views, F.one_hot(y, c).to(D),
                                                               w, labelled)
    assert net2.training  # handed back in train mode
    ours = loss_x + linear_rampup(epoch + batch_idx / num_iter, warm_up, 16, lambda_u) * loss_u + 1.0 * penalty
    for a, b_ in zip((loss_x, loss_u, penalty, ours), theirs):
        close(a, b_)
    params = list(net.parameters()) + list(net2.parameters())
    grads_ours = torch.autograd.grad(ours, params, allow_unused=True)
    grads_theirs = torch.autograd.grad(theirs[-1], params, allow_unused=True)
    for a, b_ in zip(grads_ours[:2], grads_theirs[:2]):
        close(a, b_)
    assert all(gr is None for gr in grads_ours[2:] + grads_theirs[2:])  # the peer only guesses
    # without eval mode the peer's guesses (through Lu) would differ
    assert float(loss_u) > 0 and float(loss_x) > 0


def test_dividemix_divide_with_a_loss_window_equals_the_official_eval_train_history():
    """LiJunnan1992/DivideMix Train_cifar.py::eval_train and its caller, re-typed over seven
    epochs at r = 0.9: each network's per-sample CE into a float32 vector, min-max normalised,
    appended to all_loss, history[-5:].mean(0) fed to GaussianMixture(2, max_iter 10, tol 1e-2,
    reg_covar 5e-4), net1 then net2 each epoch from numpy's global generator; pred = prob > 0.5
    and net1 trains on pred2 (co-divide). Ours: DivideMix.divide (a tiny instance, loss_window 5,
    training_set_pass replaced by the same per-sample losses) with its ring buffer of five
    epochs. Both hold the losses in float32 and ours fits the GMM on them in float64 (the code
    in float32) and stores w in float32: the posteriors agree to 1e-6 (measured ≤ 1.2e-7), the
    labelled sets exactly, including after the ring buffer wraps."""
    n, epochs = 400, 7
    rng = np.random.default_rng(4)
    per_epoch = []
    for e in range(epochs):
        pair = []
        for k in range(2):
            clean = rng.gamma(2.0, 0.2 + 0.01 * e, 240)
            noisy = rng.gamma(6.0 - 0.3 * e + k, 0.5, 160)
            pair.append(torch.tensor(np.concatenate([clean, noisy]), dtype=torch.float32))
        per_epoch.append(pair)

    def eval_train(epoch_losses, all_loss, r):
        losses = torch.zeros(n)
        for b in range(n):
            losses[b] = epoch_losses[b]
        losses = (losses - losses.min()) / (losses.max() - losses.min())
        all_loss.append(losses)
        if r == 0.9:
            history = torch.stack(all_loss)
            input_loss = history[-5:].mean(0)
            input_loss = input_loss.reshape(-1, 1)
        else:
            input_loss = losses.reshape(-1, 1)
        gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)
        gmm.fit(input_loss)
        prob = gmm.predict_proba(input_loss)
        prob = prob[:, gmm.means_.argmin()]
        return prob, all_loss

    np.random.seed(17)
    all_loss, official = [[], []], []
    for e in range(epochs):
        prob1, all_loss[0] = eval_train(per_epoch[e][0], all_loss[0], 0.9)
        prob2, all_loss[1] = eval_train(per_epoch[e][1], all_loss[1], 0.9)
        official.append((prob1, prob2))

    method = tiny_method(DivideMix, train_size=n, num_classes=10, loss_window=5)
    assert tiny_method(DivideMix, train_size=n, num_classes=10).loss_window == 1  # r = 0.5: this epoch's alone
    queue = iter([losses for pair in per_epoch for losses in pair])
    method.training_set_pass = lambda network: (None, next(queue))
    np.random.seed(17)
    for e in range(epochs):
        method.divide()
        prob1, prob2 = official[e]
        ours1, ours2 = method.clean_prob[:, 0].double().numpy(), method.clean_prob[:, 1].double().numpy()
        np.testing.assert_allclose(ours1, prob1, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours2, prob2, rtol=0, atol=1e-6)
        labelled_1, labelled_2 = co_divide(method.clean_prob[:, 0], method.clean_prob[:, 1], 0.5)
        assert (labelled_1.numpy() == (prob2 > 0.5)).all() and (labelled_2.numpy() == (prob1 > 0.5)).all()
    assert int(method.fits) == epochs


def test_elr_training_step_equals_the_official_elr_loss_retyped():
    """shengliu66/ELR ELR/model/loss.py::elr_loss and ELR/trainer/trainer.py::_train_epoch (the
    loss on the network's output and the batch's indices), re-typed, beside ours' own
    ELR.training_step (a tiny instance; its optimiser step replaced by a capture) over three
    batches with overlapping indices: the same loss, the same gradients w.r.t. the network's
    parameters, the same target table. In float32: ours computes the target update from
    logits.float() (for mixed precision), so a float64 network would get float32-precision
    targets (≈ 1e-8 apart from the code's); in float32 it is the code's arithmetic up to the
    order of one product ((1 − β)·p / Σp against (1 − β)·(p / Σp): measured ≤ 1.2e-7), to 1e-6."""
    torch.manual_seed(0)
    n, c, beta, lam = 20, 10, 0.7, 3.0
    method = tiny_method(ELR, train_size=n, num_classes=c, beta=beta, elr_lambda=lam)
    with torch.no_grad():
        method.net.classifier.weight.mul_(6.0)  # confident outputs: the clamp at 1e-4 is reached
    captured = []
    method.step = lambda loss, *args, **kwargs: captured.append(loss)
    official = OfficialELRLoss(n, c, beta, lam, dtype=torch.float32)
    params = list(method.net.parameters())
    g = torch.Generator().manual_seed(3)
    for index in (torch.arange(0, 8), torch.arange(4, 14), torch.tensor([0, 3, 5, 13, 19])):
        x = 3 * torch.randn(len(index), 8, generator=g)
        y = torch.randint(0, c, (len(index),), generator=g)
        assert bool((method.net(x).softmax(dim=1) < 1e-4).any())
        ours = method.training_step({"x": x, "y": y, "index": index}, 0)
        assert captured[-1] is ours
        grads_ours = torch.autograd.grad(ours, params)
        theirs = official(index.tolist(), method.net(x), y)
        close(ours, theirs, 1e-6)
        for a, b_ in zip(grads_ours, torch.autograd.grad(theirs, params)):
            close(a, b_, 1e-6)
        close(method.target, official.target, 1e-6)
    assert int((method.target.sum(dim=1) > 0).sum()) == 15


def test_elr_plus_training_step_equals_the_official_elr_plus_trainer_retyped():
    """shengliu66/ELR ELR_plus/trainer/trainer.py::_train_epoch, _mixup_data and
    update_ema_variables, ELR_plus/model/loss.py::elr_plus_loss (forward, update_hist), re-typed,
    beside ours' own ELRPlus.training_step and update_averages (a tiny instance; the optimiser
    step replaced by a capture) for two batches, on CIFAR-10's branch (coef_step 0) and
    CIFAR-100's (100 classes: labels × q; coef_step 5). Per network k: its peer's weight average
    on the unmixed batch into its pred_hist, the mixup (ours' torch draws fed to the official),
    the loss at iteration global_step + local_step (1, 2), then the weight average with
    a = sigmoid_rampup(step + 1, ema_step) · 0.997. The same gradients w.r.t. each network's
    parameters (net k's from loss k alone), the same tables pred_hist¹ / pred_hist², the same
    weight averages. The code runs net1's whole epoch before net2's, so net2 reads ema1 after
    that epoch; here both read the averages before the batch's update (ours' documented order).
    In float32, ours' arithmetic, the code's (the targets come from .float() softmaxes), to 1e-6."""
    def official_sigmoid_rampup(current, rampup_length):
        if rampup_length == 0:
            return 1.0
        current = np.clip(current, 0.0, rampup_length)
        phase = 1.0 - current / rampup_length
        return float(np.exp(-5.0 * phase * phase))

    class OfficialELRPlusLoss:
        def __init__(self, num_examp, config, num_classes, beta):
            self.config, self.beta, self.num_classes = config, beta, num_classes
            self.pred_hist = torch.zeros(num_examp, num_classes)
            self.q = 0

        def __call__(self, iteration, output, y_labeled):
            y_pred = F.softmax(output, dim=1)
            y_pred = torch.clamp(y_pred, 1e-4, 1.0 - 1e-4)
            if self.num_classes == 100:
                y_labeled = y_labeled * self.q
                y_labeled = y_labeled / y_labeled.sum(dim=1, keepdim=True)
            ce_loss = torch.mean(-torch.sum(y_labeled * F.log_softmax(output, dim=1), dim=-1))
            reg = ((1 - (self.q * y_pred).sum(dim=1)).log()).mean()
            return ce_loss + official_sigmoid_rampup(iteration, self.config["coef_step"]) * (
                self.config["train_loss"]["args"]["lambda"] * reg)

        def update_hist(self, epoch, out, index=None, mix_index=..., mixup_l=1):
            y_pred_ = F.softmax(out, dim=1)
            self.pred_hist[index] = self.beta * self.pred_hist[index] + (1 - self.beta) * y_pred_ / y_pred_.sum(dim=1, keepdim=True)
            self.q = mixup_l * self.pred_hist[index] + (1 - mixup_l) * self.pred_hist[index][mix_index]

    def update_ema_variables(model, model_ema, global_step, config, alpha_=0.997):
        alpha = official_sigmoid_rampup(global_step + 1, config["ema_step"]) * alpha_
        for ema_param, param in zip(model_ema.parameters(), model.parameters()):
            ema_param.data.mul_(alpha).add_(param.data, alpha=1 - alpha)  # the code's add_(1 - alpha, param.data)

    n, beta, lam, b = 30, 0.7, 3.0, 12
    for c, coef_step in ((10, 0), (100, 5)):
        torch.manual_seed(1)
        config = {"coef_step": coef_step, "ema_step": 4, "num_classes": c, "train_loss": {"args": {"lambda": lam}}}
        method = tiny_method(ELRPlus, train_size=n, num_classes=c, beta=beta, elr_lambda=lam, mixup_alpha=1.0,
                             ema_rampup_steps=4, lambda_rampup_steps=coef_step, label_times_target=c == 100)
        with torch.no_grad():
            for net in (method.net1, method.net2):  # confident outputs: the clamp at 1e-4 is reached
                net.classifier.weight.mul_(8.0)
            for p in list(method.ema1.parameters()) + list(method.ema2.parameters()):
                p.add_(0.3 * torch.randn_like(p))  # averages unlike their networks (the code: other initialisations)
        captured = []
        method.step = lambda loss, *args, captured=captured, **kwargs: captured.append(loss)
        criteria = [OfficialELRPlusLoss(n, config, c, beta), OfficialELRPlusLoss(n, config, c, beta)]
        official_emas = [copy.deepcopy(method.ema1), copy.deepcopy(method.ema2)]
        g = torch.Generator().manual_seed(9)
        for local_step, index in ((1, torch.arange(0, b)), (2, torch.arange(8, 8 + b))):
            data_original = torch.randn(b, 8, generator=g)
            target_original = torch.randint(0, c, (b,), generator=g)
            mixups = draws(40 + local_step, b, b, alpha=1.0)
            assert all(bool((net(data_original).softmax(dim=1) < 1e-4).any()) for net in (method.net1, method.net2))
            peers_before = [copy.deepcopy(e) for e in official_emas]
            losses = []
            for k, (model, peer_ema) in enumerate(((method.net1, peers_before[1]), (method.net2, peers_before[0]))):
                target = torch.zeros(b, c).scatter_(1, target_original.view(-1, 1), 1)
                mixup_l, mix_index = mixups[k]
                data = mixup_l * data_original + (1 - mixup_l) * data_original[mix_index, :]
                target = mixup_l * target + (1 - mixup_l) * target[mix_index, :]
                output = model(data)
                output_original = peer_ema(data_original).data.detach()
                criteria[k].update_hist(0, output_original, index.tolist(), mix_index=mix_index, mixup_l=mixup_l)
                losses.append(criteria[k](0 + local_step, output, target))
            torch.manual_seed(40 + local_step)
            ours = method.training_step({"x": data_original, "y": target_original, "index": index}, 0)
            assert captured[-1] is ours
            close(ours, losses[0] + losses[1], 1e-6)
            for net, loss in ((method.net1, losses[0]), (method.net2, losses[1])):
                params = list(net.parameters())
                for a, b_ in zip(torch.autograd.grad(ours, params, retain_graph=True),
                                 torch.autograd.grad(loss, params)):
                    close(a, b_, 1e-6)
            close(method.target, criteria[0].pred_hist, 1e-6)
            close(method.target2, criteria[1].pred_hist, 1e-6)
            update_ema_variables(method.net1, official_emas[0], 0 + local_step, config)
            update_ema_variables(method.net2, official_emas[1], 0 + local_step, config)
            for ours_ema, their_ema in ((method.ema1, official_emas[0]), (method.ema2, official_emas[1])):
                for a, b_ in zip(ours_ema.parameters(), their_ema.parameters()):
                    close(a, b_, 1e-6)
        assert int(method.updates) == 2


def test_sop_and_sop_plus_loss_methods_equal_the_official_train_epoch_retyped():
    """shengliu66/SOP trainer/trainer.py::_train_epoch and model/loss.py::overparametrization_loss
    at 21a4017, re-typed: one-hot target, one forward of cat([data, data2]) when
    ratio_consistency > 0, the loss on (indexs, output, target). Ours: SOP.loss and SOPPlus.loss
    themselves (tiny instances in float64 with the test's u, v; SOP+'s two views replaced by two
    fixed tensors): the same loss and gradients w.r.t. the network's parameters, u and v."""
    u, v, index, y, _ = sop_case()
    n, c = v.shape
    g = torch.Generator().manual_seed(12)
    data, data2 = torch.randn(len(index), 8, generator=g, dtype=D), torch.randn(len(index), 8, generator=g, dtype=D)
    for cls, settings in ((SOP, {}), (SOPPlus, {"ratio_consistency": 0.9, "ratio_balance": 0.1})):
        torch.manual_seed(2)
        method = tiny_method(cls, train_size=n, num_classes=c, ratio_reg=100.0, **settings).double()
        with torch.no_grad():
            method.u.copy_(u)
            method.v.copy_(v)
            method.net.classifier.weight.mul_(8.0)  # confident outputs: argmax and the clamps matter
        views = iter([data, data2])
        method.view = lambda x, views=views: next(views)
        ours, _ = method.loss({"x": data, "y": y, "index": index})
        target = torch.zeros(len(y), c, dtype=D).scatter_(1, y.view(-1, 1), 1)
        data_all = torch.cat([data, data2]) if cls is SOPPlus else data
        output = method.net(data_all)
        theirs = official_sop_loss_2022_07(index, output, target, method.u, method.v, 100.0,
                                           settings.get("ratio_consistency", 0.0),
                                           settings.get("ratio_balance", 0.0), c)
        close(ours, theirs, 1e-10)
        leaves = [*method.net.parameters(), method.u, method.v]
        for a, b_ in zip(torch.autograd.grad(ours, leaves), torch.autograd.grad(theirs, leaves)):
            close(a, b_, 1e-10)
