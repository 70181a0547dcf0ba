"""Co-teaching's cross update on a hand-made batch, and its schedule."""

import pytest
import torch

from noisylab.methods.coteaching import cross_update_losses
from noisylab.methods.selection import label_precision, small_loss_indices
from noisylab.schedules import CoteachingSchedule

B, C = 8, 3


def linear_net(correct_logit):
    """A one-hot-input linear net whose logit for the label of sample i is correct_logit[i]:
    a larger value = a smaller loss. Its weight column i only affects sample i."""
    net = torch.nn.Linear(B, C, bias=False)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0] = torch.tensor(correct_logit, dtype=torch.float32)
    return net


def test_each_network_learns_from_the_samples_its_peer_ranks_smallest():
    x, y = torch.eye(B), torch.zeros(B, dtype=torch.long)
    f = linear_net([8, 7, 6, 5, 4, 3, 2, 1])  # f ranks samples 0..3 smallest-loss
    g = linear_net([1, 2, 3, 4, 5, 6, 7, 8])  # g ranks samples 4..7 smallest-loss
    loss_f, loss_g, kept_by_f, kept_by_g = cross_update_losses(f(x), g(x), y, forget_rate=0.5)
    assert sorted(kept_by_f.tolist()) == [0, 1, 2, 3]
    assert sorted(kept_by_g.tolist()) == [4, 5, 6, 7]
    (loss_f + loss_g).backward()
    touched_f = (f.weight.grad.abs().sum(0) > 0).nonzero().flatten().tolist()
    touched_g = (g.weight.grad.abs().sum(0) > 0).nonzero().flatten().tolist()
    assert touched_f == [4, 5, 6, 7]  # f is updated on g's choice
    assert touched_g == [0, 1, 2, 3]  # g is updated on f's choice
    expected = torch.nn.functional.cross_entropy(f(x)[4:], y[4:])
    assert loss_f.item() == pytest.approx(expected.item())  # a plain mean over the kept samples


def test_small_loss_selection_keeps_floor_of_remember_rate():
    losses = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    assert small_loss_indices(losses, 0.4).tolist() == [1, 3, 0]  # int(0.6 * 5) = 3
    assert small_loss_indices(losses, 0.0).tolist() == [1, 3, 0, 4, 2]
    assert small_loss_indices(losses, 0.99).tolist() == [1]  # never an empty selection


def test_label_precision_counts_clean_kept_samples_and_ignores_unknown():
    y = torch.tensor([0, 1, 2, 3])
    y_true = torch.tensor([0, 0, 2, -1])
    assert label_precision(torch.tensor([0, 1, 2, 3]), y, y_true).item() == pytest.approx(2 / 3)
    assert torch.isnan(label_precision(torch.tensor([3]), y, y_true))  # no clean label known


def test_coteaching_schedule_values():
    schedule = CoteachingSchedule(tau=0.45, num_gradual=10, exponent=1)
    assert schedule(0) == 0.0
    assert schedule(5) == pytest.approx(0.225)
    assert schedule(10) == pytest.approx(0.45) and schedule(150) == pytest.approx(0.45)
    assert CoteachingSchedule(0.5, 10, 2)(5) == pytest.approx(0.5 * 0.25)


def test_coteaching_lr_and_beta1_plan():
    """Linear decay to 0 from epoch 80 of 200, beta1 0.9 -> 0.1 there (official code)."""
    from noisylab.methods.ce import CrossEntropy
    from tests.conftest import tiny_method

    method = tiny_method(CrossEntropy, max_epochs=200, protocol={
        "optimizer": {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999]},
        "lr_schedule": {"name": "linear_decay", "decay_start": 80, "beta1_after_decay": 0.1}})
    assert method.epoch_hyperparameters(0) == (0.001, 0.9)
    assert method.epoch_hyperparameters(79) == (0.001, 0.9)
    assert method.epoch_hyperparameters(80) == (pytest.approx(0.001), 0.1)
    assert method.epoch_hyperparameters(140)[0] == pytest.approx(0.001 * 60 / 120)
    assert method.epoch_hyperparameters(199)[0] == pytest.approx(0.001 / 120)
