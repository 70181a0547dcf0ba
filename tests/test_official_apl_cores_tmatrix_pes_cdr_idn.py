"""Audits: the official losses and steps of APL, CORES², VolMinNet, T-Revision, PES, CDR and the
instance-dependent noise generator, re-typed here in their own structure (not imported),
beside ours on the same inputs, in float64.

Sources (snapshots read with ``fetch``): HanxunH/Active-Passive-Losses ``loss.py``;
UCSC-REAL/cores ``loss.py`` (loss_cores, f_beta) and ``phase1.py`` (the prior update);
xuefeng-li1/Provably-end-to-end-label-noise-learning-without-anchor-points ``models.py``
(sig_t) and ``main.py`` (the training loss); xiaoboxia/T-Revision ``loss.py`` and ``tools.py``
(fit, norm); tmllab/PES ``PES_cs.py`` (splite_confident, update_trainloader),
``common/tools.py`` (predict_softmax) and ``common/NoisyUtil.py`` (get_instance_noisy_label);
xiaoboxia/CDR ``main.py`` (train, train_one_step); UCSC-REAL/cores ``data/utils.py``
(noisify_instance). Where the official code and ours differ on purpose, the test pins the
difference (its size and where it comes from) instead of hiding it.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from scipy import stats

from noisylab.methods.apl import apl_loss
from noisylab.methods.cdr import critical_masks
from noisylab.methods.cores import beta_at, cores_loss, updated_prior
from noisylab.methods.loss_correction import estimate_transition
from noisylab.methods.pes import PES, class_weights, confident_selection, mean_softmax
from noisylab.methods.t_revision import accumulated_transitions, reweighted_loss
from noisylab.methods.volminnet import diagonally_dominant, volmin_loss
from noisylab.noise import instance_dependent, instance_flip_probabilities
from tests.conftest import tiny_method

D = torch.float64


def close(a, b, tol=1e-12):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def case(seed=0, b=12, c=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, c, generator=g, dtype=D), torch.randint(0, c, (b,), generator=g)


# ------------------------------------------------------------------------------ APL
def official_apl(name, pred, labels, alpha, beta, num_classes, gamma=0.5):
    """loss.py: NormalizedCrossEntropy, NormalizedFocalLoss, ReverseCrossEntropy,
    MeanAbsoluteError and their NCEandRCE / NCEandMAE / NFLandRCE / NFLandMAE sums, re-typed."""
    def nce(scale):
        logp = F.log_softmax(pred, dim=1)
        one_hot = F.one_hot(labels, num_classes).to(D)
        return scale * (-1 * torch.sum(one_hot * logp, dim=1) / (-logp.sum(dim=1))).mean()

    def nfl(scale):
        target = labels.view(-1, 1)
        logpt = F.log_softmax(pred, dim=1)
        normalizor = torch.sum(-1 * (1 - logpt.data.exp()) ** gamma * logpt, dim=1)
        logpt = logpt.gather(1, target).view(-1)
        pt = logpt.data.exp()
        return (scale * (-1 * (1 - pt) ** gamma * logpt) / normalizor).mean()

    def rce(scale):
        p = torch.clamp(F.softmax(pred, dim=1), min=1e-7, max=1.0)
        one_hot = torch.clamp(F.one_hot(labels, num_classes).to(D), min=1e-4, max=1.0)
        return scale * (-1 * torch.sum(p * torch.log(one_hot), dim=1)).mean()

    def mae(scale):
        p = F.softmax(pred, dim=1)
        return scale * (1.0 - torch.sum(F.one_hot(labels, num_classes).to(D) * p, dim=1)).mean()

    # the code's classes: NCEandRCE etc. sum an active (scale alpha) and a passive (scale beta)
    # loss; a loss alone is its class with ``scale`` from the config
    losses = {"nce": (nce, alpha), "nfl": (nfl, alpha), "rce": (rce, beta), "mae": (mae, beta)}
    return sum(fn(scale) for fn, scale in (losses[part] for part in name.split("+")))


def test_apl_losses_equal_the_official_loss_py_retyped():
    """All four active + passive pairs at CIFAR-10's (1, 1), MNIST's (1, 10) and CIFAR-100's
    (10, 0.1): with ``quirks=official`` (the code's RCE clamp, A = ln 1e-4, and NFL's detached
    focal weights) our apl_loss has the official value and gradient. In the paper mode the RCE
    term is A = −4 instead: the loss differs by exactly (ln 1e-4 + 4)·β·mean(1 − p_y) up to the
    1e-7 clamp."""
    logits, y = case(1)
    official_quirks = frozenset({"rce_clamp", "focal_detached_weights"})
    for name in ("nce+rce", "nce+mae", "nfl+rce", "nfl+mae"):
        for alpha, beta in ((1.0, 1.0), (1.0, 10.0), (10.0, 0.1)):
            z_o, z_m = logits.clone().requires_grad_(), logits.clone().requires_grad_()
            theirs = official_apl(name, z_o, y, alpha, beta, 10)
            ours = apl_loss(z_m, y, name, alpha, beta, official=official_quirks)
            close(ours, theirs)
            close(torch.autograd.grad(ours, z_m)[0], torch.autograd.grad(theirs, z_o)[0])
    for name, scale in (("nce", 1.0), ("nfl", 10.0), ("rce", 1.0), ("mae", 1.0)):  # configs/cifar10/sym/<loss>.yaml
        z_o, z_m = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        theirs = official_apl(name, z_o, y, scale, scale, 10)
        ours = apl_loss(z_m, y, name, scale, scale, official=official_quirks)
        close(ours, theirs)
        close(torch.autograd.grad(ours, z_m)[0], torch.autograd.grad(theirs, z_o)[0])
    paper = apl_loss(logits, y, "nce+rce", 1.0, 1.0)
    official = apl_loss(logits, y, "nce+rce", 1.0, 1.0, official=official_quirks)
    p_y = logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(official - paper, (-math.log(1e-4) - 4) * (1 - p_y).mean(), rtol=1e-5, atol=1e-5)


def test_apl_rce_clamp_and_gradients_equal_the_code_on_saturated_logits():
    """ReverseCrossEntropy / NCEandRCE of loss.py where softmax entries fall below the code's
    1e-7 clamp (logits spread ±40, 100 classes, CIFAR-100's α = 10, β = 0.1): the clamped
    entries add β·(−ln 1e-4)·1e-7 each to the value and pass no gradient, in ours as in the
    code (``rce_clamp``); equal value and gradient to 1e-12."""
    logits, y = case(11, b=16, c=100, scale=15.0)
    assert (logits.softmax(dim=1) < 1e-7).float().mean() > 0.3  # the clamp acts on many entries
    official_quirks = frozenset({"rce_clamp", "focal_detached_weights"})
    for name in ("rce", "nce+rce", "nfl+rce"):
        z_o, z_m = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        theirs = official_apl(name, z_o, y, 10.0, 0.1, 100)
        ours = apl_loss(z_m, y, name, 10.0, 0.1, official=official_quirks)
        close(ours, theirs)
        close(torch.autograd.grad(ours, z_m)[0], torch.autograd.grad(theirs, z_o)[0])


# ------------------------------------------------------------------------------ CORES²
def official_loss_cores(epoch, y, t, noise_prior):
    """loss.py::loss_cores and f_beta, re-typed (the bookkeeping arrays left out); returns
    (loss, loss_v) as the code, or (loss / 1e8 of an all-sieved batch, None)."""
    beta = np.concatenate((np.linspace(0.0, 0.0, num=10), np.linspace(0.0, 2, num=30),
                           np.linspace(2, 2, num=60)))[epoch]
    loss = F.cross_entropy(y, t, reduction="none")
    loss_ = -torch.log(F.softmax(y, dim=1) + 1e-8)
    loss_sel = loss - torch.mean(loss_, 1)
    loss = loss - beta * torch.sum(torch.mul(noise_prior, loss_), 1)
    loss_div_numpy = loss_sel.data.numpy()
    loss_v = np.zeros(len(loss))
    for i in range(len(loss)):
        if epoch <= 30 or loss_div_numpy[i] <= 0:
            loss_v[i] = 1.0
    loss_w = torch.from_numpy(loss_v) * loss
    if sum(loss_v) == 0.0:
        return torch.mean(loss_w) / 100000000, None
    return torch.sum(loss_w) / sum(loss_v), loss_v.astype(int)


def test_cores_loss_and_sieve_equal_the_official_loss_cores_retyped():
    """At epochs 0, 5, 10, 20, 30 (everything kept), 31, 50 and 99 (the sieve on), with a skewed
    prior: the same β(t) as f_beta at every epoch of 100, the same kept samples, loss and
    gradient; the prior update of phase1.py equals updated_prior."""
    logits, y = case(2, b=32, scale=2.0)
    prior = torch.tensor([0.2, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.1, 0.1], dtype=D)
    f_beta = np.concatenate((np.linspace(0.0, 0.0, num=10), np.linspace(0.0, 2, num=30), np.linspace(2, 2, num=60)))
    assert all(abs(beta_at(e, 2.0, 10, 30) - f_beta[e]) < 1e-12 for e in range(100))
    sieved_somewhere = False
    for epoch in (0, 5, 10, 20, 30, 31, 50, 99):
        z_o, z_m = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        theirs, loss_v = official_loss_cores(epoch, z_o, y, prior.unsqueeze(0))
        ours, kept, _ = cores_loss(z_m, y, beta_at(epoch, 2.0, 10, 30), prior, sieve=epoch >= 31)
        assert loss_v is not None and kept.long().tolist() == loss_v.tolist()
        sieved_somewhere |= not bool(kept.all())
        close(ours, theirs)
        close(torch.autograd.grad(ours, z_m)[0], torch.autograd.grad(theirs, z_o)[0])
    assert sieved_somewhere
    n, delta = 1000, torch.tensor([30, 0, 5, 7, 0, 1, 2, 0, 9, 4], dtype=D)
    official_prior = prior * n - delta
    close(updated_prior(prior, n, delta), official_prior / official_prior.sum())


def test_cores_batch_with_every_sample_sieved_out_crashes_the_code_and_is_skipped_here():
    """loss.py::loss_cores on a batch where no sample passes the sieve (epoch 31, every label
    the least likely class): the code returns the bare tensor mean(v·l) / 1e8 = 0 (v all 0)
    instead of its (loss, loss_v) pair, so phase1.py's ``loss, loss_v = loss_cores(...)``
    raises TypeError: the official run stops there. Ours returns a loss of 0 with no sample
    kept, and the step is skipped (CORES.training_step)."""
    logits, _ = case(12, b=8, scale=1.0)
    y = logits.argmin(dim=1)
    prior = torch.full((10,), 0.1, dtype=D)

    def official_loss_cores_raw(epoch, y_, t, noise_prior):  # the code's return statements
        beta = beta_at(epoch, 2.0, 10, 30)
        loss = F.cross_entropy(y_, t, reduction="none")
        loss_ = -torch.log(F.softmax(y_, dim=1) + 1e-8)
        loss_sel = loss - torch.mean(loss_, 1)
        loss = loss - beta * torch.sum(torch.mul(noise_prior, loss_), 1)
        loss_v = np.array([1.0 if epoch <= 30 or v <= 0 else 0.0 for v in loss_sel.data.numpy()], dtype=np.float32)
        loss_ = torch.from_numpy(loss_v).to(D) * loss
        if sum(loss_v) == 0.0:
            return torch.mean(loss_) / 100000000
        return torch.sum(loss_) / sum(loss_v), loss_v.astype(int)

    returned = official_loss_cores_raw(31, logits, y, prior.unsqueeze(0))
    assert isinstance(returned, torch.Tensor) and returned.dim() == 0 and float(returned) == 0.0
    with pytest.raises(TypeError):
        loss, loss_v = returned  # phase1.py's call site
    ours, kept, criterion = cores_loss(logits, y, beta_at(31, 2.0, 10, 30), prior, sieve=True)
    assert not kept.any() and float(ours) == 0.0 and (criterion > 0).all()


# ------------------------------------------------------------------------------ VolMinNet
def test_volminnet_loss_equals_the_official_sig_t_and_training_loss_retyped():
    """models.py::sig_t (T = row-normalised I + sigmoid(w) off the diagonal, w = −init) and
    main.py's loss, nll_loss(log(softmax(f(x)) @ T)) + lam · T.slogdet().logabsdet: the same T,
    loss, and gradients w.r.t. w and the logits (CIFAR-10: init 2 and a w after some steps;
    CIFAR-100: 100 classes, init 4.5)."""
    g = torch.Generator().manual_seed(9)
    cases = [(*case(3), -2 * torch.ones(10, 10, dtype=D)),
             (*case(3), torch.randn(10, 10, generator=g, dtype=D)),
             (*case(13, b=32, c=100), -4.5 * torch.ones(100, 100, dtype=D) + 0.3 * torch.randn(100, 100, generator=g, dtype=D))]
    for logits, y, w0 in cases:
        c = logits.shape[1]
        w_o, w_m = w0.clone().requires_grad_(), w0.clone().requires_grad_()
        z_o, z_m = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        co = torch.ones(c, c, dtype=D)
        co[np.diag_indices(c)] = 0
        t = F.normalize(torch.eye(c, dtype=D) + torch.sigmoid(w_o) * co, p=1, dim=1)
        out = torch.mm(F.softmax(z_o, 1), t)
        theirs = F.nll_loss(out.log(), y) + 1e-4 * t.slogdet().logabsdet
        transition = diagonally_dominant(w_m)
        ours, _ = volmin_loss(z_m, y, transition, 1e-4)
        close(transition, t)
        close(ours, theirs)
        for a, b in zip(torch.autograd.grad(ours, [z_m, w_m]), torch.autograd.grad(theirs, [z_o, w_o])):
            close(a, b)


# ------------------------------------------------------------------------------ T-Revision
def official_reweight_loss(out, T, target, correction=None, accumulate=True):
    """loss.py::reweight_loss (correction None: β a fresh leaf, no gradient through it) and
    reweighting_revision_loss (the per-sample loop re-binds ``T = T + correction`` each time),
    re-typed; ``accumulate=False`` is the file's reweighting_revision_loss_v2."""
    if correction is not None and not accumulate:
        out_softmax = F.softmax(out, dim=1)
        noisy = torch.matmul((T + correction).T, out_softmax.unsqueeze(-1)).squeeze()
        beta = out_softmax.gather(1, target[:, None]).squeeze() / noisy.gather(1, target[:, None]).squeeze()
        return torch.mean(beta * F.cross_entropy(out, target, reduction="none"))
    loss = 0.0
    out_softmax = F.softmax(out, dim=1)
    for i in range(len(target)):
        temp_softmax = out_softmax[i].unsqueeze(0)
        pro1 = temp_softmax[:, target[i]]
        if correction is not None:
            T = T + correction
        out_T = torch.matmul(T.t(), temp_softmax.t()).t()
        pro2 = out_T[:, target[i]]
        beta = pro1 / pro2
        if correction is None:
            beta = torch.autograd.Variable(beta, requires_grad=True)  # the code: a new leaf
        loss = loss + beta * F.cross_entropy(out[i].unsqueeze(0), target[i].unsqueeze(0))
    return (loss / len(target)).squeeze()


def test_t_revision_losses_equal_the_official_reweight_and_revision_losses_retyped():
    """Stage 2: reweight_loss = ours with β constant (gradient w.r.t. the logits equal). Stage 3:
    reweighting_revision_loss (the code main.py runs) = ours with ``accumulated_slack`` (the
    i-th sample sees T̂ + (i+1)·ΔT), gradients w.r.t. the logits and ΔT equal; its _v2 = ours
    without the quirk. The two stage-3 forms differ once ΔT ≠ 0."""
    logits, y = case(4, b=8, scale=1.5)
    c = logits.shape[1]
    g = torch.Generator().manual_seed(6)
    estimate = torch.eye(c, dtype=D) * 0.6 + 0.4 / c
    slack0 = 0.01 * torch.randn(c, c, generator=g, dtype=D)

    z_o, z_m = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    theirs = official_reweight_loss(z_o, estimate, y)
    ours, _ = reweighted_loss(z_m, y, estimate, weight_gradient=False)
    close(ours, theirs)
    close(torch.autograd.grad(ours, z_m)[0], torch.autograd.grad(theirs, z_o)[0])

    results = {}
    for accumulate in (True, False):
        z_o, z_m = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        s_o, s_m = slack0.clone().requires_grad_(), slack0.clone().requires_grad_()
        theirs = official_reweight_loss(z_o, estimate, y, correction=s_o, accumulate=accumulate)
        transition = accumulated_transitions(estimate, s_m, len(y)) if accumulate else estimate + s_m
        ours, _ = reweighted_loss(z_m, y, transition, weight_gradient=True)
        close(ours, theirs)
        for a, b in zip(torch.autograd.grad(ours, [z_m, s_m]), torch.autograd.grad(theirs, [z_o, s_o])):
            close(a, b)
        results[accumulate] = float(ours)
    assert abs(results[True] - results[False]) > 1e-3


def official_fit(X, num_classes, filter_outlier=False):
    """T-Revision tools.py::fit, re-typed (``robust_eta`` is a view of X: zeroing it edits X)."""
    c = num_classes
    T = np.empty((c, c))
    eta_corr = X
    for i in np.arange(c):
        if not filter_outlier:
            idx_best = np.argmax(eta_corr[:, i])
        else:
            eta_thresh = np.percentile(eta_corr[:, i], 97, method="higher")  # the code: interpolation=
            robust_eta = eta_corr[:, i]
            robust_eta[robust_eta >= eta_thresh] = 0.0
            idx_best = np.argmax(robust_eta)
        for j in np.arange(c):
            T[i, j] = eta_corr[idx_best, j]
    return T


def official_norm(T):
    """T-Revision tools.py::norm, re-typed: ``T / row_sum`` with row_sum of shape (C,) divides
    column j by row j's sum."""
    row_sum = np.sum(T, 1)
    return T / row_sum


def test_t_revision_estimate_equals_the_official_fit_and_norm_except_where_its_view_bites():
    """main.py's T̂ = norm(fit(prob, C, filter_outlier)) against ours (loss_correction's
    estimate_transition, which T-Revision uses). On softmax outputs of 10 classes (5 seeds, 3000
    samples, with and without the outlier filter) they agree to 1e-15: the anchors are the
    same and their rows sum to 1, so norm's division by the wrong axis is a no-op. Where an
    anchor of class i is also in the top 3% of an earlier class j < i, the code's in-place
    zeroing of column j (``robust_eta`` is a view) sets T̂[i, j] = 0, the row no longer sums to 1,
    and norm then divides column k by row k's sum: on the hand case below the code's T̂ is
    [[.6, .6, .37], [0, .8, .01], [.3, .4, .68]], ours [[.6, .03, .37], [.95, .04, .01], [.3, .02, .68]]
    (max |Δ| 0.95). Ours follows the paper (a copy; rows normalised), as method=forward documents
    for the same code in giorgiop/loss-correction."""
    for seed in range(5):
        g = np.random.default_rng(seed)
        logits = 3 * g.normal(size=(3000, 10))
        logits[np.arange(3000), g.integers(0, 10, 3000)] += 4
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        for filter_outlier in (False, True):
            official = official_norm(official_fit(probs.copy(), 10, filter_outlier))
            np.testing.assert_allclose(estimate_transition(probs, filter_outlier, 97.0), official, rtol=0, atol=1e-15)
    # 34 samples: the 97th percentile ('higher') is each column's maximum
    probs = np.array([[0.95, 0.04, 0.01], [0.6, 0.03, 0.37], [0.05, 0.9, 0.05], [0.1, 0.01, 0.89]]
                     + [[0.3, 0.02, 0.68]] * 30)
    official = official_norm(official_fit(probs.copy(), 3, True))
    ours = estimate_transition(probs, True, 97.0)
    np.testing.assert_allclose(ours, [[0.6, 0.03, 0.37], [0.95, 0.04, 0.01], [0.3, 0.02, 0.68]], atol=1e-12)
    np.testing.assert_allclose(official, [[0.6, 0.6, 0.37], [0.0, 0.8, 0.01], [0.3, 0.4, 0.68]], atol=1e-12)
    assert np.abs(official - ours).max() == pytest.approx(0.95)


# ------------------------------------------------------------------------------ PES
def official_class_weights(selected_labels, num_classes):
    """PES_cs.py::update_trainloader's class weights, re-typed: mean(count over the classes
    present) / count, the inf of an empty class set to 0."""
    train_nums = np.zeros(num_classes, dtype=int)
    for item in selected_labels.numpy():
        train_nums[item] += 1
    with np.errstate(divide="ignore"):
        cw = np.mean(train_nums[train_nums != 0]) / train_nums
        cw[cw == np.inf] = 0
    return cw


def test_pes_selection_and_class_weights_equal_the_official_update_trainloader_retyped():
    """PES_cs.py: splite_confident (prediction == noisy label) and update_trainloader's class
    weights, mean(count over the classes present) / count, 0 for a class with none, fed to
    CrossEntropyLoss(weight=...): the same selection, weights and weighted loss."""
    logits, y = case(5, b=40, c=5, scale=2.0)
    y[y == 3] = 4  # class 3 never selected: weight 0 (the code's inf → 0)
    logits[torch.arange(0, 40, 2), y[::2]] += 3.0  # a third or so predicted as their label
    preds = torch.max(logits.data, 1)[1]
    official_idx = [i for i in range(len(y)) if preds[i] == y[i]]
    cw = official_class_weights(y[official_idx], 5)
    selected = confident_selection(logits, y)
    assert torch.nonzero(selected).squeeze(1).tolist() == official_idx and len(official_idx) >= 10
    weights = class_weights(y, selected, 5)
    np.testing.assert_allclose(weights.numpy(), cw, rtol=1e-6)
    assert weights[3] == 0
    official_weights = torch.FloatTensor(cw)  # float32 in the code, as ours
    official_loss = torch.nn.CrossEntropyLoss(weight=official_weights.to(D))(logits[official_idx], y[official_idx])
    close(F.cross_entropy(logits[selected], y[selected], weight=weights.to(D)), official_loss, 1e-6)


def test_pes_class_weights_with_one_or_no_selected_sample_equal_the_code():
    """update_trainloader's cw = mean(train_nums != 0) / train_nums, inf → 0, for counts
    [7, 1, 0, 2, 30]: a class with one selected sample gets mean(count) itself (10), none 0,
    and no clipping or smoothing anywhere (ours equal to float32 rounding)."""
    counts = [7, 1, 0, 2, 30]
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)] + [torch.full((5,), 2)])
    selected = torch.arange(len(y)) < sum(counts)  # class 2's five samples not selected
    cw = official_class_weights(y[selected], 5)
    np.testing.assert_allclose(class_weights(y, selected, 5).numpy(), cw, rtol=1e-6)
    assert cw[1] == 10.0 and cw[2] == 0.0


def official_predict_softmax(views_of_loader, model):
    """common/tools.py::predict_softmax, re-typed: each batch of the loader gives two
    independently augmented views (Semi_Unlabeled_Dataset), their softmax averaged."""
    softmax_outs = []
    with torch.no_grad():
        for images1, images2 in views_of_loader:
            logits1 = model(images1)
            logits2 = model(images2)
            outputs = (F.softmax(logits1, dim=1) + F.softmax(logits2, dim=1)) / 2
            softmax_outs.append(outputs)
    return torch.cat(softmax_outs, dim=0)


def test_pes_augmented_selection_averages_two_views_as_the_code(monkeypatch):
    """update_trainloader selects with splite_confident on predict_softmax's output: the mean
    softmax of two augmented views. With ``quirks=official`` (``augmented_selection``) ours
    makes two augmented passes over the training set and selects on their mean softmax: the
    same selection and per-sample label probability as the code re-typed on the same two views.
    Picked so that the views disagree: selecting on one view alone (ours before this audit)
    differs from the code on some samples. Without the quirk ours makes one plain pass."""
    n, c = 64, 5
    g = torch.Generator().manual_seed(21)
    view1, view2 = 2 * torch.randn(n, c, generator=g, dtype=D), 2 * torch.randn(n, c, generator=g, dtype=D)
    y = torch.randint(0, c, (n,), generator=g)
    batches = [(view1[i:i + 16], view2[i:i + 16]) for i in range(0, n, 16)]  # the code's loader, in order
    soft_outs = official_predict_softmax(batches, lambda images: images)
    probs, preds = torch.max(soft_outs.data, 1)
    official_idx = [i for i in range(n) if preds[i] == y[i]]
    one_view = torch.nonzero(confident_selection(view1, y)).squeeze(1).tolist()
    assert one_view != official_idx

    method = tiny_method(PES, train_size=n, num_classes=c, quirks="official", refine_groups=0)
    passes = []

    def training_set_pass(network=None, augment=False, batch_size=None):
        passes.append(augment)
        return (view1, view2, view1)[len(passes) - 1], None

    monkeypatch.setattr(method, "training_set_pass", training_set_pass)
    datamodule = type("DM", (), {"train": {"y": y}})()
    monkeypatch.setattr(PES, "trainer", property(lambda self: type("T", (), {"datamodule": datamodule})()))
    method.selected, method.label_probability = torch.zeros(n), torch.zeros(n, dtype=D)
    method.select()
    assert passes == [True, True]
    assert torch.nonzero(method.selected).squeeze(1).tolist() == official_idx
    close(method.label_probability, soft_outs.gather(1, y[:, None]).squeeze(1))
    close(mean_softmax([view1, view2]), soft_outs, 1e-15)

    method.quirks = frozenset()
    passes.clear()
    method.select()
    assert passes == [False] and torch.nonzero(method.selected).squeeze(1).tolist() == one_view


# ------------------------------------------------------------------------------ CDR
def test_cdr_mask_equals_the_official_train_one_step_retyped():
    """main.py::train_one_step on a small conv + linear network: the (1 − τ) fraction of
    weight entries (dim 2 or 4) with the largest |w·g| over all of them keep their gradient,
    the code multiplying by ``clip`` = 1 − τ too (our ``scaled_gradient`` quirk); biases keep
    theirs. Ours (critical_masks, scaled by 1 − τ) leaves every gradient the same."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 4 * 4, 10)).to(D)
    x = torch.randn(6, 1, 6, 6, dtype=D)
    y = torch.randint(0, 10, (6,))
    tau = 0.4
    for scaled in (True, False):
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        raw = {n: p.grad.clone() for n, p in net.named_parameters()}
        # official
        clip = 1 - tau
        all_g = torch.cat([p.grad.data.view(-1) for p in net.parameters() if p.dim() in (2, 4)])
        all_v = torch.cat([p.data.view(-1) for p in net.parameters() if p.dim() in (2, 4)])
        thresh = torch.topk(torch.abs(all_g * all_v), int(clip * all_v.size(0)))[0][-1]
        official = {}
        for n, p in net.named_parameters():
            mask = (torch.abs(p.data * p.grad.data) >= thresh).to(D) if p.dim() in (2, 4) else torch.ones_like(p)
            official[n] = p.grad * mask * (clip if scaled and p.dim() in (2, 4) else 1.0)
        # ours
        weights = [p for p in net.parameters() if p.dim() in (2, 4)]
        masks = iter(critical_masks([w.detach() for w in weights], [raw[n] for n, p in net.named_parameters()
                                                                   if p.dim() in (2, 4)], clip))
        for n, p in net.named_parameters():
            ours = raw[n] * next(masks) * (clip if scaled else 1.0) if p.dim() in (2, 4) else raw[n]
            close(ours, official[n])
        kept = sum(int((official[n] != 0).sum()) for n, p in net.named_parameters() if p.dim() in (2, 4))
        assert kept == int(clip * all_v.size(0))


def official_train_one_step(net, data, label, optimizer, criterion, nonzero_ratio, clip):
    """main.py::train_one_step, re-typed (``torch.FloatTensor`` for the code's ``torch.cuda.FloatTensor``:
    the mask, and clip = 1 − τ with it, are float32 as there, also on float64 gradients)."""
    net.train()
    pred = net(data)
    loss = criterion(pred, label)
    loss.backward()
    to_concat_g, to_concat_v = [], []
    for name, param in net.named_parameters():  # noqa: B007 (the code's loop)
        if param.dim() in [2, 4]:
            to_concat_g.append(param.grad.data.view(-1))
            to_concat_v.append(param.data.view(-1))
    all_g, all_v = torch.cat(to_concat_g), torch.cat(to_concat_v)
    metric = torch.abs(all_g * all_v)
    nz = int(nonzero_ratio * all_v.size(0))
    top_values, _ = torch.topk(metric, nz)
    thresh = top_values[-1]
    for name, param in net.named_parameters():  # noqa: B007 (the code's loop)
        if param.dim() in [2, 4]:
            mask = (torch.abs(param.data * param.grad.data) >= thresh).type(torch.FloatTensor)
            mask = mask * clip
            param.grad.data = mask * param.grad.data
    optimizer.step()
    optimizer.zero_grad()
    return loss


def test_cdr_mask_gradients_of_our_method_equals_the_official_train_one_step():
    """Our CDR.mask_gradients (quirks=official: ``scaled_gradient``) on its own network, beside
    the code's train_one_step on a copy: the same masked gradients entry by entry, hence the
    same SGD step (lr 0.01, momentum 0.9, weight decay 1e-3, the code's CIFAR optimiser)."""
    from noisylab.methods.cdr import CDR

    torch.manual_seed(1)
    method = tiny_method(CDR, num_classes=4, quirks="official", clip_rate=0.3).to(D)
    official_net = copy.deepcopy(method.net)
    x, y = torch.randn(10, 8, dtype=D), torch.randint(0, 4, (10,))
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=1e-3)
    official_opt = torch.optim.SGD(official_net.parameters(), **sgd)
    official_train_one_step(official_net, x, y, official_opt, torch.nn.CrossEntropyLoss(), 0.7, 0.7)
    ours_opt = torch.optim.SGD(method.net.parameters(), **sgd)
    method.net.train()
    F.cross_entropy(method.net(x), y).backward()
    method.mask_gradients()
    kept = sum(int((p.grad != 0).sum()) for p in method.weights())
    assert kept == int(0.7 * sum(p.numel() for p in method.weights()))
    ours_opt.step()
    for a, b in zip(method.net.parameters(), official_net.parameters()):
        close(a, b)


def test_cdr_code_updates_batch_norm_statistics_twice_per_step():
    """main.py::train runs the network on each batch once for its accuracy (``logits1 =
    model1(data)``, train mode) before train_one_step runs it again for the loss: the
    gradients, mask and step are those of one forward (equal to ours to 1e-12), but every
    BatchNorm's running statistics move twice per batch (the code's ResNet-50 and LeNet have
    BN): with momentum 0.1 each batch enters them with weight 0.19 instead of 0.1, and
    num_batches_tracked counts 2 per step. Ours runs one forward, as the paper; the test pins
    the difference (not a quirk of ours)."""
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 4 * 4, 10)).to(D)
    official_net, ours_net = copy.deepcopy(net), copy.deepcopy(net)
    x, y = torch.randn(6, 1, 6, 6, dtype=D), torch.randint(0, 10, (6,))
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=1e-3)
    clip = 1 - 0.4
    # official: train()'s loop body
    official_opt = torch.optim.SGD(official_net.parameters(), **sgd)
    official_net(x)  # logits1 = model1(data); prec1 = accuracy(logits1, labels)
    official_train_one_step(official_net, x, y, official_opt, torch.nn.CrossEntropyLoss(), clip, clip)
    # ours: one forward, critical_masks scaled by 1 − τ (quirk scaled_gradient), the step
    ours_opt = torch.optim.SGD(ours_net.parameters(), **sgd)
    F.cross_entropy(ours_net(x), y).backward()
    weights = [p for p in ours_net.parameters() if p.dim() in (2, 4)]
    for w, m in zip(weights, critical_masks([w.detach() for w in weights], [w.grad for w in weights], clip)):
        w.grad.mul_(m * clip)
    ours_opt.step()
    for a, b in zip(ours_net.parameters(), official_net.parameters()):
        close(a, b)
    bn_o, bn_m = official_net[1], ours_net[1]
    mean = net[0](x).mean(dim=(0, 2, 3))
    close(bn_m.running_mean, 0.1 * mean)
    close(bn_o.running_mean, 0.19 * mean)  # 0.9·(0.1·μ) + 0.1·μ
    assert int(bn_o.num_batches_tracked) == 2 and int(bn_m.num_batches_tracked) == 1


# ------------------------------------------------------------------------------ IDN noise
def official_get_instance_noisy_label(n, newdataset, labels, num_classes, feature_size, norm_std, seed):
    """tmllab/PES common/NoisyUtil.py::get_instance_noisy_label (= xiaoboxia/Part-dependent-label-noise
    tools.py's, less its prints and CUDA moves), re-typed; returns (labels, P) (P: float32)."""
    label_num = num_classes
    np.random.seed(int(seed))
    torch.manual_seed(int(seed))
    P = []
    flip_distribution = stats.truncnorm((0 - n) / norm_std, (1 - n) / norm_std, loc=n, scale=norm_std)
    flip_rate = flip_distribution.rvs(labels.shape[0])
    W = np.random.randn(label_num, feature_size, label_num)
    W = torch.FloatTensor(W)
    for i, (x, y) in enumerate(newdataset):
        A = x.view(1, -1).mm(W[y]).squeeze(0)
        A[y] = -math.inf
        A = flip_rate[i] * F.softmax(A, dim=0)
        A[y] += 1 - flip_rate[i]
        P.append(A)
    P = torch.stack(P, 0).cpu().numpy()
    l1 = [i for i in range(label_num)]
    new_label = [np.random.choice(l1, p=P[i]) for i in range(labels.shape[0])]
    return np.array(new_label), P


def test_instance_noise_equals_the_official_get_instance_noisy_label_retyped():
    """PES's (and Part-dependent-label-noise's) get_instance_noisy_label, which seeds numpy's
    global legacy generator and draws from it: the N flip rates (scipy's truncnorm), then
    W ~ randn(C, D, C) in one call, then one np.random.choice per sample. Ours, handed a legacy
    ``np.random.RandomState(seed)`` in place of its Generator, makes the same draws in the same
    order (its W_c one class at a time fills randn(C, D, C) in the same C order; its final draw
    is one uniform per sample compared with the row's cumulative sums, as np.random.choice):
    the same per-sample distributions P (the code's float32 to 1e-5) and the SAME noisy labels,
    sample for sample (600 samples, 5 classes, rate 0.4). With its own PCG64 Generator (the
    configs) ours draws other numbers: realised rate near the target, the per-sample flip
    rates spread by flip_std, no flip onto the true class (P[n, y_n] = 1 − q_n, the rest q_n)."""
    n_samples, c, d, rate, std = 600, 5, 12, 0.4, 0.1
    data_rng = np.random.default_rng(0)
    features = data_rng.uniform(0, 1, (n_samples, d))
    labels = data_rng.integers(0, c, n_samples)
    data, targets = torch.from_numpy(features).type(torch.FloatTensor), torch.from_numpy(labels)
    official_labels, official_p = official_get_instance_noisy_label(rate, zip(data, targets), targets, c, d, std, 3)
    ours_p = instance_flip_probabilities(labels, features, c, rate, np.random.RandomState(3), std)
    np.testing.assert_allclose(ours_p, official_p, rtol=1e-5, atol=1e-6)
    ours = instance_dependent(labels, features, c, rate, np.random.RandomState(3), std)
    assert (ours.labels == official_labels).all()
    assert abs(ours.actual_rate - float(np.mean(official_labels != labels))) == 0
    # ours with its own generator: the same model, other draws
    p = instance_flip_probabilities(labels, features, c, rate, np.random.default_rng(3), std)
    rows = np.arange(n_samples)
    assert np.allclose(p.sum(axis=1), 1) and (p[rows, labels] < 1).all()
    flips = 1 - p[rows, labels]
    assert abs(flips.mean() - rate) < 0.02 and 0.07 < flips.std() < 0.11  # q_n ~ N(0.4, 0.1²) on [0, 1]
    realised = instance_dependent(labels, features, c, rate, np.random.default_rng(3), std)
    assert abs(realised.actual_rate - rate) < 0.05 and np.diag(realised.transition).min() > 0.4


def official_noisify_instance(train_data, train_labels, noise_rate, num_class, seed=0):
    """UCSC-REAL/cores data/utils.py::noisify_instance, re-typed; the code's 50000 (CIFAR's
    training set) is len(train_data) and num_class is passed (the code: 10 or 100 from the
    labels). Returns (labels, P, q, w)."""
    np.random.seed(seed)
    q_ = np.random.normal(loc=noise_rate, scale=0.1, size=1000000)
    q = []
    for pro in q_:
        if 0 < pro < 1:
            q.append(pro)
        if len(q) == len(train_data):
            break
    w = np.random.normal(loc=0, scale=1, size=(train_data[0].size, num_class))
    noisy_labels, rows = [], []
    for i, sample in enumerate(train_data):
        sample = sample.flatten()
        p_all = np.matmul(sample, w)
        p_all[train_labels[i]] = -1000000
        p_all = q[i] * F.softmax(torch.tensor(p_all), dim=0).numpy()
        p_all[train_labels[i]] = 1 - q[i]
        rows.append(p_all / sum(p_all))
        noisy_labels.append(np.random.choice(np.arange(num_class), p=p_all / sum(p_all)))
    return np.array(noisy_labels), np.array(rows), np.array(q), w


def test_instance_noise_equals_the_cores_noisify_instance_given_its_draws(monkeypatch):
    """CORES²'s noisify_instance differs from ours in its draws only: q by rejecting normal
    draws outside (0, 1) (the same truncated normal, other numbers), ONE projection w for all
    classes (ours: one per class), −1e6 for the true class's score (ours −inf), then
    np.random.choice per sample. Handed the code's q (truncnorm.rvs patched to return them),
    its w for every class, and the uniforms its np.random.choice consumes, ours builds the same
    P (1e-12) and the same labels on raw-pixel-like uint8 inputs (3×4×4, 200 samples, 10
    classes, rate 0.4: the scores are then far apart, so P's flip part is nearly one-hot, as on
    CIFAR). What stays different by construction: the per-class W (a model difference: in the
    code two samples with the same pixels flip the same way whatever their class) and the
    random numbers."""
    n_samples, c, rate = 200, 10, 0.4
    g = np.random.default_rng(5)
    images = g.integers(0, 256, (n_samples, 4, 4, 3), dtype=np.uint8)
    labels = g.integers(0, c, n_samples)
    official_labels, official_p, q, w = official_noisify_instance(images, labels, rate, c)
    np.random.seed(0)  # the global state np.random.choice starts from: after q_ and w
    np.random.normal(size=1000000)
    np.random.normal(size=w.shape)
    uniforms = np.random.random_sample(n_samples)

    class CodeDraws:  # the code's draws, in the order ours asks for them
        def standard_normal(self, shape):
            assert shape == w.shape
            return w

        def random(self, size):
            return uniforms[:size]

    def truncnorm_rvs(a, b, loc, scale, size, random_state):
        assert (a, b, loc, scale) == (pytest.approx(-4.0), pytest.approx(6.0), rate, 0.1)
        return q[:size]

    monkeypatch.setattr(scipy.stats, "truncnorm", type("Patched", (), {"rvs": staticmethod(truncnorm_rvs)}))
    ours_p = instance_flip_probabilities(labels, images, c, rate, CodeDraws(), 0.1)
    np.testing.assert_allclose(ours_p, official_p, rtol=1e-12, atol=1e-12)
    ours = instance_dependent(labels, images, c, rate, CodeDraws(), 0.1)
    assert (ours.labels == official_labels).all()
    assert ((ours_p > 1e-6).sum(axis=1) <= 3).all()  # nearly one-hot flips on raw pixels
