"""DivideMix, ELR and ELR+: each loss and update rule against hand-computed values, the GMM
division, co-divide in a real run, and the per-sample targets' row-wise update."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylab.methods.dividemix import (
    DivideMix,
    co_divide,
    co_guessed_targets,
    co_refined_targets,
    gmm_clean_posterior,
    linear_rampup,
    mixmatch_losses,
    nearest_rate_value,
    negative_entropy,
    normalise_losses,
)
from noisylab.methods.elr import ELRPlus, elr_loss, elr_plus_loss, observed_label_mass, sigmoid_rampup, update_targets
from noisylab.train import run
from tests.conftest import tiny_method

FAST = ["debug=fast", "data=digits"]


# ------------------------------------------------------------------------------ DivideMix
def test_the_gmm_posterior_orders_samples_by_loss():
    generator = np.random.default_rng(0)
    losses = np.concatenate([generator.normal(0.2, 0.05, 300), generator.normal(1.5, 0.05, 200)])
    np.random.seed(0)
    posterior = gmm_clean_posterior(normalise_losses(torch.tensor(losses, dtype=torch.float32)))
    by_loss = posterior[np.argsort(losses)]
    assert torch.all(by_loss[1:] <= by_loss[:-1] + 1e-6)  # higher loss, never cleaner
    assert bool((posterior[:300] > 0.99).all()) and bool((posterior[300:] < 0.01).all())
    assert torch.equal(gmm_clean_posterior(torch.ones(5)), torch.full((5,), 0.5))  # no spread: undecided


def test_normalised_losses_span_zero_to_one():
    assert torch.allclose(normalise_losses(torch.tensor([2.0, 4.0, 3.0])), torch.tensor([0.0, 1.0, 0.5]))


def test_co_divide_gives_each_network_the_peers_set():
    prob_a, prob_b = torch.tensor([0.9, 0.9, 0.1, 0.1]), torch.tensor([0.9, 0.1, 0.9, 0.1])
    labelled_a, labelled_b = co_divide(prob_a, prob_b, 0.5)
    assert labelled_a.tolist() == [True, False, True, False]  # B's choice
    assert labelled_b.tolist() == [True, True, False, False]  # A's choice


def test_co_refinement_and_co_guessing_by_hand():
    # own views: softmax [0.5, 0.5] and [0.8, 0.2] (logits 0, 0 and log 4, 0): mean [0.65, 0.35]
    views = [torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(4.0), 0.0]])]
    refined = co_refined_targets(views, torch.tensor([[0.0, 1.0]]), torch.tensor([0.6]), temperature=0.5)
    # 0.6·[0, 1] + 0.4·[0.65, 0.35] = [0.26, 0.74]; squared and renormalised
    expected = torch.tensor([0.26 ** 2, 0.74 ** 2]) / (0.26 ** 2 + 0.74 ** 2)
    assert torch.allclose(refined, expected.view(1, 2), atol=1e-6)
    # four predictions [0.5, .5], [.8, .2], [.5, .5], [.2, .8]: mean [0.5, 0.5] stays; [.8,.2]x4 sharpens
    guessed = co_guessed_targets(views + [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])], 0.5)
    assert torch.allclose(guessed, torch.tensor([[0.5, 0.5]]))
    sharp = co_guessed_targets([torch.tensor([[math.log(4.0), 0.0]])] * 4, 0.5)
    assert torch.allclose(sharp, torch.tensor([[16 / 17, 1 / 17]]))


def test_mixmatch_losses_by_hand():
    logits_x, targets_x = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]), torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    logits_u, targets_u = torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 1.0]])
    loss_x, loss_u = mixmatch_losses(logits_x, targets_x, logits_u, targets_u)
    # sample 1: -log 0.5; sample 2: -(0.5 log 0.75 + 0.5 log 0.25)
    assert float(loss_x) == pytest.approx((math.log(2) - 0.5 * math.log(0.75) - 0.5 * math.log(0.25)) / 2)
    assert float(loss_u) == pytest.approx((0.75 ** 2 + 0.75 ** 2) / 2)  # mean over samples and classes
    empty_x, _ = mixmatch_losses(logits_x[:0], targets_x[:0], logits_u, targets_u)
    assert float(empty_x) == 0.0


def test_lambda_u_ramp_penalties_and_the_table():
    assert linear_rampup(10.0, 10, 16, 25.0) == 0.0
    assert linear_rampup(18.0, 10, 16, 25.0) == 12.5
    assert linear_rampup(40.0, 10, 16, 25.0) == 25.0
    assert float(negative_entropy(torch.zeros(3, 4))) == pytest.approx(-math.log(4))
    table = [[0.2, 0], [0.5, 25], [0.8, 25], [0.9, 50]]
    assert [nearest_rate_value(table, r) for r in (0.0, 0.45, 0.8, 0.92)] == [0, 25, 25, 50]
    assert tiny_method(DivideMix).lambda_u == 25  # noise 0.5 in tiny_method
    assert tiny_method(DivideMix, noise_kind="asymmetric").lambda_u == 0
    assert tiny_method(DivideMix, noise_kind="asymmetric").confidence_penalty
    assert not tiny_method(DivideMix).confidence_penalty


class CoDivideSpy(DivideMix):
    """Records, for every semi-supervised loss, which network trains and on which labelled set."""

    calls: list = []

    def training_step(self, batch, batch_idx):
        self._index = batch["index"]
        return super().training_step(batch, batch_idx)

    def semi_supervised_losses(self, own, peer, views, onehot, clean_prob, labelled):
        k = 0 if own is self.net1 else 1
        CoDivideSpy.calls.append((k, labelled.clone(), self.clean_prob[self._index].clone()))
        return super().semi_supervised_losses(own, peer, views, onehot, clean_prob, labelled)


def test_in_a_run_each_network_trains_on_the_set_its_peer_chose(make_cfg, one_thread):
    CoDivideSpy.calls.clear()
    run(make_cfg(*FAST, "method=dividemix", "noise=sym80", "method.warmup_epochs=1",
                 "method._target_=tests.test_dividemix_elr.CoDivideSpy"))
    assert {k for k, _, _ in CoDivideSpy.calls} == {0, 1}
    own_differs = False
    for k, labelled, prob in CoDivideSpy.calls:
        assert torch.equal(labelled, prob[:, 1 - k] > 0.5)
        own_differs |= not torch.equal(labelled, prob[:, k] > 0.5)
    assert own_differs  # the two divisions differ somewhere, so the test would see a swap


# ------------------------------------------------------------------------------ ELR
def test_elr_loss_by_hand():
    logits, y = torch.zeros(2, 4), torch.tensor([1, 3])
    targets = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    # p uniform: CE = log 4; <t, p> = 1/4 for both rows: log(3/4)
    assert float(elr_loss(logits, y, targets, 3.0)) == pytest.approx(math.log(4) + 3.0 * math.log(0.75))
    logits.requires_grad_(True)
    elr_loss(logits, y, targets.requires_grad_(True), 3.0).backward()
    assert targets.grad is None  # the targets are constants


def test_the_targets_update_only_the_batchs_rows():
    targets = torch.rand(6, 3)
    before = targets.clone()
    probs = torch.tensor([[0.2, 0.3, 0.5], [1.0, 1.0, 2.0]])  # the second row renormalised to [.25, .25, .5]
    rows = update_targets(targets, torch.tensor([4, 1]), probs, beta=0.7)
    expected = 0.7 * before[[4, 1]] + 0.3 * torch.tensor([[0.2, 0.3, 0.5], [0.25, 0.25, 0.5]])
    assert torch.allclose(targets[[4, 1]], expected) and torch.allclose(rows, expected)
    untouched = [0, 2, 3, 5]
    assert torch.equal(targets[untouched], before[untouched])
    assert torch.equal(observed_label_mass(targets, torch.tensor([0, 1, 2, 0, 1, 2]))[[0, 2]],
                       before[[0, 2], [0, 2]])


def test_elr_plus_loss_ramp_and_weight_average_by_hand():
    logits, labels = torch.zeros(1, 2), torch.tensor([[0.8, 0.2]])
    targets = torch.tensor([[0.6, 0.4]])
    plain = -(0.8 * math.log(0.5) + 0.2 * math.log(0.5)) + 7 * math.log(1 - 0.5)
    assert float(elr_plus_loss(logits, labels, targets, 7.0, False)) == pytest.approx(plain)
    weighted = torch.tensor([0.48, 0.08]) / 0.56  # labels x targets, renormalised: still sums to 1
    assert float(elr_plus_loss(logits, labels, targets, 7.0, True)) == pytest.approx(
        float(-(weighted * math.log(0.5)).sum()) + 7 * math.log(0.5))
    assert sigmoid_rampup(5, 0) == 1.0 and sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25)) and sigmoid_rampup(500, 100) == 1.0

    method = tiny_method(ELRPlus, ema_rampup_steps=4)
    with torch.no_grad():
        for p in method.net1.parameters():
            p.add_(1.0)
    average_before = [p.clone() for p in method.ema1.parameters()]
    method.update_averages()  # first update: a = sigmoid_rampup(2, 4) · 0.997
    a = math.exp(-5 * 0.5 ** 2) * 0.997
    for average, before, p in zip(method.ema1.parameters(), average_before, method.net1.parameters()):
        assert torch.allclose(average, a * before + (1 - a) * p)
    assert all(not p.requires_grad for p in method.ema1.parameters())
    assert all(id(p) not in {id(q) for q in method.declare_optimizers()["net"][0]} for p in method.ema2.parameters())


def test_elr_gradient_matches_autograd_of_the_formula():
    """The regulariser's gradient pushes p towards the target: d/dz of log(1 - <t, p>) by hand."""
    z = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    elr_loss(z, torch.tensor([0]), t, 1.0).backward()
    p = F.softmax(z.detach(), dim=1)
    inner = (t * p).sum()
    # d<t,p>/dz_j = p_j (t_j - <t,p>); d log(1 - s) = -ds / (1 - s); CE gradient p - onehot
    expected = (p - torch.tensor([[1.0, 0, 0]], dtype=torch.float64)) - p * (t - inner) / (1 - inner)
    assert torch.allclose(z.grad, expected)


@pytest.mark.parametrize("method,official", [
    ("elr", lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, eta_min=0.001)),
    ("sop", lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300, eta_min=0.0002))])
def test_elr_and_sop_recipes_are_the_official_cosine_plans_down_to_eta_min(make_cfg, method, official):
    """ELR's and SOP's schedules, epoch by epoch, are their official schedulers stepped once an
    epoch (ELR/config_cifar10.json: warm restarts, T_0 10, eta_min 1e-3; SOP's
    config_cifar100.json: cosine over 300 epochs, eta_min 2e-4)."""
    from noisylab.methods.base import lr_factor

    cfg = make_cfg(f"method={method}")
    base = float(cfg.protocol.optimizer.lr)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = official(optimizer)
    for epoch in range(cfg.protocol.epochs):
        assert base * lr_factor(cfg.protocol.lr_schedule, epoch, cfg.protocol.epochs) == pytest.approx(
            optimizer.param_groups[0]["lr"], rel=1e-9), epoch
        optimizer.step()
        scheduler.step()
