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


@pytest.mark.parametrize("gradient,backend,quirks", [("lookahead", "higher", "paper"), ("lookahead", "func", "paper"),
                                                     ("alignment", "higher", "paper"),
                                                     ("alignment", "higher", ["clean_cost_decay"])])
def test_one_step_reweights_by_gradient_agreement(monkeypatch, gradient, backend, quirks):
    """quirks=[clean_cost_decay]: the official clean cost's decay λW of the weight matrices
    joins the trusted gradient (λ = 0.05, the protocol's weight decay)."""
    torch.manual_seed(0)
    decay = 0.05
    method = tiny_method(LearningToReweight, train_size=6, gradient=gradient, quirks=quirks,
                         protocol={"optimizer": {"name": "sgd", "lr": 0.5, "weight_decay": decay}},
                         lookahead={"backend": backend, "step": "sgd", "lr": None, "batchnorm": "batch"})
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

    def weights(g_outer):
        agreement = torch.stack([sum((a * b).sum() for a, b in zip(
            torch.autograd.grad(losses[i], params, retain_graph=True), g_outer)) for i in range(6)])
        return agreement.clamp(min=0) / agreement.clamp(min=0).sum()

    expected = weights(g_trusted)
    if quirks != "paper":
        plain = expected
        expected = weights([g + decay * p if p.dim() > 1 else g for g, p in zip(g_trusted, params)])
        assert (expected - plain).abs().max() > 1e-3  # the decay term changes the weights
    torch.testing.assert_close(method.weight[noisy["index"]].double(), 6 * expected, rtol=1e-5, atol=1e-7)
    assert 0 < (expected > 0).sum() < 6  # some samples are dropped, some kept: a real test of the clip
    torch.testing.assert_close(loss, (expected * losses).sum(), rtol=1e-6, atol=1e-8)  # ε is float32
    assert stepped and stepped[0] is loss


def test_official_weight_decay_falls_on_weight_matrices_only():
    """quirk decay_weights_only: one SGD step on a zero loss shrinks the weight matrices by
    lr·λ and leaves the biases; without it every parameter shrinks."""
    from noisylab.methods.base import build_optimizer

    for only in (True, False):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        before = [p.detach().clone() for p in net.parameters()]
        optimizer = build_optimizer(net.parameters(), {"name": "sgd", "lr": 0.5, "momentum": 0.0,
                                                       "weight_decay": 0.1}, decay_weights_only=only)
        sum(p.sum() * 0 for p in net.parameters()).backward()
        optimizer.step()
        for old, new in zip(before, net.parameters()):
            shrunk = old.dim() > 1 or not only
            torch.testing.assert_close(new.detach(), old * (1 - 0.05) if shrunk else old)


def test_the_published_model_settings_join_that_model_only(make_cfg):
    from noisylab.methods.contract import published_model

    for overrides, dropout in ((["model=wrn28_10"], 0.3), (["model=wrn28_10", "+model.dropout=0.0"], 0.0),
                               (["model=resnet32"], None)):
        cfg = make_cfg("method=l2rw", "data=digits", *overrides)
        published_model(cfg)
        assert cfg.model.get("dropout") == dropout
    assert tiny_method(LearningToReweight, quirks="official").quirks == {"clean_cost_decay", "decay_weights_only"}
