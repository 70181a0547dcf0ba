"""Audits: the official training steps of DivideMix, ELR / ELR+ and SOP / SOP+, re-typed here
in their own structure (not imported), beside ours on the same inputs, in float64.

Sources (snapshots read with ``fetch``): LiJunnan1992/DivideMix ``Train_cifar.py`` (train,
eval_train, SemiLoss, linear_rampup, NegEntropy); shengliu66/ELR ``ELR/model/loss.py``
(elr_loss), ``ELR_plus/model/loss.py`` (elr_plus_loss, update_hist), ``ELR_plus/utils/util.py``
(sigmoid_rampup), ``ELR_plus/trainer/trainer.py`` (_mixup_data); shengliu66/SOP
``model/loss.py`` (overparametrization_loss) at the commits named in each test.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture

from noisylab.methods.dividemix import (
    co_guessed_targets,
    co_refined_targets,
    gmm_clean_posterior,
    linear_rampup,
    mixmatch_losses,
    negative_entropy,
    normalise_losses,
)
from noisylab.methods.elr import elr_loss, elr_plus_loss, sigmoid_rampup, update_targets
from noisylab.methods.joint_opt import uniform_prior_kl
from noisylab.methods.sop import sop_loss

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

    def __init__(self, num_examp, num_classes, beta, lam):
        self.target = torch.zeros(num_examp, num_classes, dtype=D)
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
