"""L2RW: the weights of one real training step against the paper's closed form (gradient
agreement with the trusted batch), and the update they drive."""

import copy

import pytest
import torch
import torch.nn.functional as F

from noisylab.methods.l2rw import LearningToReweight, normalised_weights
from tests.conftest import tiny_method


def test_normalised_weights_clip_and_normalise():
    w = normalised_weights(torch.tensor([-2.0, 1.0, -1.0, 0.0]))
    assert w.tolist() == [pytest.approx(2 / 3), 0.0, pytest.approx(1 / 3), 0.0]
    assert normalised_weights(torch.tensor([1.0, 0.5])).tolist() == [0.0, 0.0]  # no NaN when none helps


class FakeTrainer:
    def __init__(self, optimizer):
        self.optimizers = [optimizer]


@pytest.mark.parametrize("gradient,backend", [("lookahead", "higher"), ("lookahead", "func"), ("alignment", "higher")])
def test_one_step_reweights_by_gradient_agreement(monkeypatch, gradient, backend):
    torch.manual_seed(0)
    method = tiny_method(LearningToReweight, train_size=6, gradient=gradient,
                         lookahead={"backend": backend, "step": "sgd",
                                                                      "lr": None, "batchnorm": "batch"})
    method.net.double()
    optimizer = torch.optim.SGD(method.net.parameters(), lr=0.5)
    method._optimizer_names = ["net"]
    monkeypatch.setattr(type(method), "trainer", property(lambda self: FakeTrainer(optimizer)))
    stepped = []
    monkeypatch.setattr(method, "step", lambda loss, name="net": stepped.append(loss))
    monkeypatch.setattr(method, "log_epoch_mean", lambda *a, **k: None)
    g = torch.Generator().manual_seed(1)
    noisy = {"x": torch.randn(6, 8, generator=g, dtype=torch.float64), "y": torch.tensor([0, 1, 2, 0, 1, 2]),
             "index": torch.tensor([5, 4, 3, 2, 1, 0])}
    trusted = {"x": torch.randn(4, 8, generator=g, dtype=torch.float64), "y": torch.tensor([0, 1, 2, 1]),
               "index": torch.arange(4)}
    before = copy.deepcopy(method.net)

    loss = method.training_step({"noisy": noisy, "trusted": trusted}, 0)

    params = list(before.parameters())
    g_trusted = torch.autograd.grad(F.cross_entropy(before(trusted["x"]), trusted["y"]), params)
    losses = F.cross_entropy(before(noisy["x"]), noisy["y"], reduction="none")
    agreement = torch.stack([sum((a * b).sum() for a, b in zip(
        torch.autograd.grad(losses[i], params, retain_graph=True), g_trusted)) for i in range(6)])
    expected = agreement.clamp(min=0) / agreement.clamp(min=0).sum()
    torch.testing.assert_close(method.weight[noisy["index"]].double(), 6 * expected, rtol=1e-5, atol=1e-7)
    assert 0 < (expected > 0).sum() < 6  # some samples are dropped, some kept: a real test of the clip
    torch.testing.assert_close(loss, (expected * losses).sum(), rtol=1e-6, atol=1e-8)  # ε is float32
    assert stepped and stepped[0] is loss
