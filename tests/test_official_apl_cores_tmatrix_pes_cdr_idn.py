"""Audits: the official losses and steps of APL, CORES², VolMinNet, T-Revision, PES, CDR and the
instance-dependent noise generator, re-typed here in their own structure (not imported),
beside ours on the same inputs, in float64.

Sources (snapshots read with ``fetch``): HanxunH/Active-Passive-Losses ``loss.py``;
UCSC-REAL/cores ``loss.py`` (loss_cores, f_beta) and ``phase1.py`` (the prior update);
xuefeng-li1/Provably-end-to-end-label-noise-learning-without-anchor-points ``models.py``
(sig_t) and ``main.py`` (the training loss); xiaoboxia/T-Revision ``loss.py``; tmllab/PES
``PES_cs.py`` (splite_confident, update_trainloader) and ``common/NoisyUtil.py``
(get_instance_noisy_label); xiaoboxia/CDR ``main.py`` (train_one_step).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from noisylab.methods.apl import apl_loss
from noisylab.methods.cdr import critical_masks
from noisylab.methods.cores import beta_at, cores_loss, updated_prior
from noisylab.methods.pes import class_weights, confident_selection
from noisylab.methods.t_revision import accumulated_transitions, reweighted_loss
from noisylab.methods.volminnet import diagonally_dominant, volmin_loss
from noisylab.noise import instance_flip_probabilities

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

    active, passive = name.split("+")
    return {"nce": nce, "nfl": nfl}[active](alpha) + {"rce": rce, "mae": mae}[passive](beta)


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
    paper = apl_loss(logits, y, "nce+rce", 1.0, 1.0)
    official = apl_loss(logits, y, "nce+rce", 1.0, 1.0, official=official_quirks)
    p_y = logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(official - paper, (-math.log(1e-4) - 4) * (1 - p_y).mean(), rtol=1e-5, atol=1e-5)


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


# ------------------------------------------------------------------------------ VolMinNet
def test_volminnet_loss_equals_the_official_sig_t_and_training_loss_retyped():
    """models.py::sig_t (T = row-normalised I + sigmoid(w) off the diagonal, w = −init) and
    main.py's loss, nll_loss(log(softmax(f(x)) @ T)) + lam · T.slogdet().logabsdet: the same T,
    loss, and gradients w.r.t. w and the logits (init 2, and a w after some steps)."""
    logits, y = case(3)
    c = logits.shape[1]
    for w0 in (-2 * torch.ones(c, c, dtype=D), torch.randn(c, c, generator=torch.Generator().manual_seed(9), dtype=D)):
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


# ------------------------------------------------------------------------------ PES
def test_pes_selection_and_class_weights_equal_the_official_update_trainloader_retyped():
    """PES_cs.py: splite_confident (prediction == noisy label) and update_trainloader's class
    weights, mean(count over the classes present) / count, 0 for a class with none, fed to
    CrossEntropyLoss(weight=...): the same selection, weights and weighted loss."""
    logits, y = case(5, b=40, c=5, scale=2.0)
    y[y == 3] = 4  # class 3 never selected: weight 0 (the code's inf → 0)
    logits[torch.arange(0, 40, 2), y[::2]] += 3.0  # a third or so predicted as their label
    preds = torch.max(logits.data, 1)[1]
    official_idx = [i for i in range(len(y)) if preds[i] == y[i]]
    train_nums = np.zeros(5, dtype=int)
    for item in y[official_idx].numpy():
        train_nums[item] += 1
    with np.errstate(divide="ignore"):
        cw = np.mean(train_nums[train_nums != 0]) / train_nums
        cw[cw == np.inf] = 0
    selected = confident_selection(logits, y)
    assert torch.nonzero(selected).squeeze(1).tolist() == official_idx and len(official_idx) >= 10
    weights = class_weights(y, selected, 5)
    np.testing.assert_allclose(weights.numpy(), cw, rtol=1e-6)
    assert weights[3] == 0
    official_weights = torch.FloatTensor(cw)  # float32 in the code, as ours
    official_loss = torch.nn.CrossEntropyLoss(weight=official_weights.to(D))(logits[official_idx], y[official_idx])
    close(F.cross_entropy(logits[selected], y[selected], weight=weights.to(D)), official_loss, 1e-6)


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


# ------------------------------------------------------------------------------ IDN noise
def test_instance_noise_probabilities_equal_the_official_get_instance_noisy_label_retyped():
    """common/NoisyUtil.py::get_instance_noisy_label with numpy's legacy generator seeded as the
    code (truncated-normal flip rates, then W ~ randn(C, D, C) in one call): given the same
    legacy generator, ours draws the same flip rates and projections and builds the same
    per-sample label distribution P (float64 here; the code's float32 agrees to 1e-5). The
    final draw differs (the code: np.random.choice per row; ours: one uniform per row from its
    own generator), so the labels are compared through P only."""
    n_samples, c, d, rate, std = 300, 5, 12, 0.4, 0.1
    data_rng = np.random.default_rng(0)
    features = data_rng.uniform(0, 1, (n_samples, d))
    labels = data_rng.integers(0, c, n_samples)
    np.random.seed(3)
    flip_rate = stats.truncnorm((0 - rate) / std, (1 - rate) / std, loc=rate, scale=std).rvs(n_samples)
    W = torch.tensor(np.random.randn(c, d, c), dtype=torch.float32)
    rows = []
    for i in range(n_samples):
        x, y = torch.tensor(features[i], dtype=torch.float32), int(labels[i])
        A = x.view(1, -1).mm(W[y]).squeeze(0)
        A[y] = -math.inf
        A = flip_rate[i] * F.softmax(A, dim=0)
        A[y] += 1 - flip_rate[i]
        rows.append(A)
    official = torch.stack(rows).numpy()
    ours = instance_flip_probabilities(labels, features, c, rate, np.random.RandomState(3), std)
    np.testing.assert_allclose(ours, official, rtol=1e-5, atol=1e-6)
    assert np.allclose(ours.sum(axis=1), 1) and (ours[np.arange(n_samples), labels] < 1).all()
    flips = 1 - ours[np.arange(n_samples), labels]
    assert abs(flips.mean() - rate) < 0.02 and flips.std() > 0.05  # per-sample rates around the nominal one
