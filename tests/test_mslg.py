"""MSLG: its two losses by hand, the label meta-gradient (the code's KL form, α = 0.5 plain-SGD
look-ahead) against central finite differences, and one real training step: only the batch's
rows of the soft labels move, by −β times that gradient."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from noisylab.methods.contract import Stage
from noisylab.methods.mslg import MetaSoftLabels, entropy_loss, soft_label_kl
from tests.conftest import tiny_method

ALPHA = 0.5  # the code's fixed look-ahead step


def softmax_row(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_the_losses_against_hand_computation():
    logits = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    labels = [[10.0, 0.0, 0.0], [0.2, 0.1, -0.4]]
    kl = entropy = 0.0
    for o, t in zip(logits, labels):
        p, q = softmax_row(o), softmax_row(t)
        kl += sum(pc * (math.log(pc) - math.log(qc + 1e-10)) for pc, qc in zip(p, q))
        entropy -= sum(pc * math.log(pc) for pc in p)
    # both are means over the B·C = 6 entries, as the code's torch.mean
    got_kl = soft_label_kl(torch.tensor(logits, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64))
    assert got_kl.item() == pytest.approx(kl / 6, rel=1e-12)
    assert entropy_loss(torch.tensor(logits, dtype=torch.float64)).item() == pytest.approx(entropy / 6, rel=1e-12)
    same = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64)
    assert soft_label_kl(same, same).item() == pytest.approx(0.0, abs=1e-9)  # KL(p ‖ p) = 0 (up to the 1e-10)


class FakeData:
    def __init__(self, y):
        self.y = y

    def transform(self, x, augment):
        return x

    def ordered_train_batches(self, batch_size=None):
        yield {"index": torch.arange(len(self.y)), "y": self.y, "x": torch.zeros(len(self.y), 8)}


class FakeTrainer:
    def __init__(self, optimizer, datamodule):
        self.optimizers, self.datamodule = [optimizer], datamodule


def make_method(monkeypatch, backend="higher", train_size=8):
    torch.manual_seed(0)
    method = tiny_method(MetaSoftLabels, train_size=train_size, warmup_epochs=0,
                         lookahead={"backend": backend, "step": "sgd", "lr": ALPHA, "batchnorm": "batch"})
    method.net.double()
    # a real optimiser with another lr and a populated momentum buffer: the look-ahead must ignore both
    optimizer = torch.optim.SGD(method.net.parameters(), lr=0.1, momentum=0.9)
    for p in method.net.parameters():
        optimizer.state[p]["momentum_buffer"] = torch.randn_like(p)
    method._optimizer_names = ["net"]
    given = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])[:train_size]
    monkeypatch.setattr(type(method), "trainer", property(lambda self: FakeTrainer(optimizer, FakeData(given))))
    monkeypatch.setattr(method, "log_epoch_mean", lambda *a, **k: None)
    return method, given


def batches(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    noisy = {"x": torch.randn(3, 8, generator=g, dtype=dtype), "y": torch.tensor([2, 1, 0]),
             "index": torch.tensor([5, 1, 3])}
    trusted = {"x": torch.randn(4, 8, generator=g, dtype=dtype), "y": torch.tensor([0, 1, 2, 1]),
               "index": torch.arange(4)}
    return noisy, trusted


def meta_loss_by_hand(net, x, label_logits, x_trusted, y_trusted):
    """L_meta(ỹ) = CE(f(x'; θ − α ∇θ L_c(θ, ỹ)), y'), written out: the code's look-ahead."""
    params = {n: p.detach().requires_grad_() for n, p in net.named_parameters()}
    p = F.softmax(functional_call(net, params, (x,)), dim=1)
    q = F.softmax(label_logits, dim=1)
    inner = (p * (torch.log(p) - torch.log(q + 1e-10))).sum() / p.numel()
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    fast = {n: w - ALPHA * g for (n, w), g in zip(params.items(), grads)}
    return F.cross_entropy(functional_call(net, fast, (x_trusted,)), y_trusted)


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_the_label_meta_gradient_matches_finite_differences(monkeypatch, backend):
    method, _ = make_method(monkeypatch, backend)
    noisy, trusted = batches()
    g = torch.Generator().manual_seed(2)
    labels = (10.0 * F.one_hot(noisy["y"], 3).double() + torch.randn(3, 3, generator=g, dtype=torch.float64))
    labels.requires_grad_()
    meta = method.meta_gradient(lambda forward: soft_label_kl(forward(noisy["x"]), labels),
                                lambda forward: F.cross_entropy(forward(trusted["x"]), trusted["y"]), [labels])
    grad = meta.grads[0]
    assert grad.abs().max() > 1e-6  # a real gradient, not zeros
    h = 1e-5
    for i, c in [(0, 0), (0, 2), (1, 1), (2, 0), (2, 1)]:
        plus, minus = labels.detach().clone(), labels.detach().clone()
        plus[i, c] += h
        minus[i, c] -= h
        fd = (meta_loss_by_hand(method.net, noisy["x"], plus, trusted["x"], trusted["y"])
              - meta_loss_by_hand(method.net, noisy["x"], minus, trusted["x"], trusted["y"])) / (2 * h)
        assert grad[i, c].item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-12), (i, c)
    # the softmax is shift-invariant: each row's gradient sums to zero
    torch.testing.assert_close(grad.sum(1), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_labels_start_at_k_times_the_given_one_hot(monkeypatch):
    method, given = make_method(monkeypatch)
    method.initialise_labels()
    torch.testing.assert_close(method.label_logits, 10.0 * F.one_hot(given, 3).float())
    expected = math.exp(10) / (math.exp(10) + 2)
    torch.testing.assert_close(method.agreement, torch.full((8,), expected))


def test_one_meta_step_moves_only_the_batchs_rows_by_minus_beta_times_the_gradient(monkeypatch):
    method, given = make_method(monkeypatch)
    method.initialise_labels()
    start, start_agreement = method.label_logits.clone(), method.agreement.clone()
    noisy, trusted = batches()
    noisy["y"] = given[noisy["index"]]
    before = copy.deepcopy(method.net)
    stepped = []
    monkeypatch.setattr(method, "step", lambda loss, name="net": stepped.append(loss))
    assert method.stage.name == "meta"

    loss = method.training_step({"noisy": noisy, "trusted": trusted}, 0)

    index = noisy["index"]
    labels = start[index].double().requires_grad_()
    grad = torch.autograd.grad(meta_loss_by_hand(before, noisy["x"], labels, trusted["x"], trusted["y"]), labels)[0]
    expected = start[index].double() - 4000.0 * grad
    assert (expected - start[index].double()).abs().max() > 1e-3  # the labels did move
    torch.testing.assert_close(method.label_logits[index].double(), expected, rtol=1e-5, atol=1e-5)
    others = torch.ones(8, dtype=torch.bool)
    others[index] = False
    assert torch.equal(method.label_logits[others], start[others])  # bit for bit
    soft = F.softmax(method.label_logits[index], dim=1)
    torch.testing.assert_close(method.agreement[index], soft.gather(1, noisy["y"][:, None])[:, 0])
    assert torch.equal(method.agreement[others], start_agreement[others])
    # the real loss: KL to the updated soft labels + γ·entropy, at the network before its step
    logits = before(noisy["x"])
    q = F.softmax(method.label_logits[index].double(), dim=1)
    p = F.softmax(logits, dim=1)
    by_hand = (p * (torch.log(p) - torch.log(q + 1e-10))).mean() - (p * torch.log(p)).mean()
    torch.testing.assert_close(loss, by_hand, rtol=1e-6, atol=1e-9)
    assert stepped and stepped[0] is loss
    for a, b in zip(before.parameters(), method.net.parameters()):  # the look-ahead left the network alone
        assert torch.equal(a, b)


def test_the_warm_up_is_plain_cross_entropy_and_leaves_the_labels(monkeypatch):
    method, given = make_method(monkeypatch)
    method.warmup_epochs = 3
    assert method.stages() == [Stage("warmup", epochs=3), Stage("meta")]
    assert method.stage.name == "warmup"
    noisy, trusted = batches()
    stepped = []
    monkeypatch.setattr(method, "step", lambda loss, name="net": stepped.append(loss))
    loss = method.training_step({"noisy": noisy, "trusted": trusted}, 0)
    torch.testing.assert_close(loss, F.cross_entropy(method.net(noisy["x"]), noisy["y"]))
    assert method.label_logits.abs().sum() == 0 and stepped == [loss]


def test_the_table_sweep_composes_every_uniform_job_and_holds_the_slides_numbers():
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from noisylab.report import Job, paper_value
    from noisylab.train import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            sweep = compose("config", overrides=["+sweep=mslg_cifar10"], return_hydra_config=True)
            params = sweep.hydra.sweeper.params
            methods = params.method.split(",")
            assert params.noise.split(",") == ["sym20", "feature_dependent"]
            assert params["noise.rate"].split(",") == ["0.2", "0.4", "0.6", "0.8"] and params.protocol == "mslg"
            for method in methods:  # every uniform job composes (feature_dependent: noise of another branch)
                job = compose("config", overrides=["+sweep=mslg_cifar10", f"method={method}", "protocol=mslg",
                                                   "noise=sym20", "noise.rate=0.6", "seed=1"])
                assert (job.method.name, job.model.name, job.data.name, job.protocol.name) == (method, "cnn8", "cifar10", "mslg")
                assert job.noise.kind == "symmetric" and job.noise.rate == 0.6 and job.data.val_fraction == 0.0
            assert job.method.trusted_per_class == 400 and job.method.warmup_epochs == 44  # the last: mslg
    finally:
        GlobalHydra.instance().clear()
    paper = OmegaConf.to_container(sweep.paper)
    assert set(methods) <= set(paper["values"])
    for method, kind, rate, number in [("mslg", "symmetric", "0.8", 56.26), ("mslg", "feature_dependent", "0.8", 74.87),
                                       ("ce", "feature_dependent", "0.2", 81.21), ("sce", "feature_dependent", "0.6", None)]:
        job = Job(Path("."), {"config": {"method": {"name": method}, "noise": {"kind": kind, "rate": float(rate)}}},
                  overrides={"method": method, "noise": "sym20", "noise.rate": rate}, has_overrides=True)
        assert paper_value(paper, job) == number
    link = Path(__file__).resolve().parents[1] / "multirun_sweeps" / "mslg_cifar10.yaml"
    assert link.is_symlink() and str(link.readlink()) == "../conf/sweep/mslg_cifar10.yaml"
