"""IEG: its pieces against closed forms on fixed numbers, and one real training step's meta
weights and relabelling choices against the meta-gradient written out by hand for a
float64 linear-softmax network with momentum and weight decay."""

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from noisylab.methods.base import lr_factor
from noisylab.methods.contract import RunFacts
from noisylab.methods.ieg import (
    IEG,
    consistency_loss,
    final_loss,
    guess_labels,
    logit_norm,
    meta_weights,
    mixed_targets,
    mixup,
    mixup_cross_entropy,
    mixup_own_weight,
    relabel_choice,
    sharpen,
)
from tests.conftest import method_defaults


def ce(logits, target):  # −Σ t log softmax(z), written out
    logits = torch.as_tensor(logits, dtype=torch.float64)
    log_z = math.log(sum(math.exp(v) for v in logits.tolist()))
    return -sum(t * (v - log_z) for t, v in zip(target, logits.tolist()))


def test_logit_norm_divides_by_the_root_mean_square_of_the_whole_tensor():
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)  # mean(z²) = 25/4
    torch.testing.assert_close(logit_norm(z), z / math.sqrt(25 / 4 + 1e-8))


def test_sharpen_squares_and_renormalises_at_half_temperature():
    got = sharpen(torch.tensor([[0.6, 0.4]], dtype=torch.float64), 0.5)
    torch.testing.assert_close(got, torch.tensor([[9 / 13, 4 / 13]], dtype=torch.float64))


def test_pseudo_label_averages_the_views_then_sharpens():
    view1 = torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)  # mean(z²) = 1: unchanged
    view2 = torch.tensor([[0.0, 0.0], [2.0, -2.0]], dtype=torch.float64)   # mean(z²) = 2: ÷ √2
    s = 1 / (1 + math.exp(-2))                 # softmax([1, −1])[0]
    t = 1 / (1 + math.exp(-2 * math.sqrt(2)))  # softmax([√2, −√2])[0]
    rows = [((s + 0.5) / 2), ((s + t) / 2)]
    expected = torch.tensor([[a * a / (a * a + (1 - a) ** 2), (1 - a) ** 2 / (a * a + (1 - a) ** 2)] for a in rows],
                            dtype=torch.float64)
    torch.testing.assert_close(guess_labels([view1, view2], 0.5), expected)


def test_relabel_keeps_the_given_label_only_where_the_meta_gradient_is_negative():
    got = relabel_choice(torch.tensor([-0.1, 0.0, 0.2, -1e-12]))
    assert got.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_meta_weights_clip_and_normalise_with_the_codes_epsilon():
    got = meta_weights(torch.tensor([-2.0, 1.0, -1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor([2.0, 0.0, 1.0, 0.0], dtype=torch.float64) / (3 + 1e-5))
    assert meta_weights(torch.tensor([1.0, 0.5])).tolist() == [0.0, 0.0]  # none helps: zeros, no NaN


def test_mixed_targets_per_sample_and_scalar_lambda():
    onehot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pseudo = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    torch.testing.assert_close(mixed_targets(torch.tensor([1.0, 0.0]), onehot, pseudo),
                               torch.tensor([[1.0, 0.0], [0.6, 0.4]]))
    torch.testing.assert_close(mixed_targets(0.9, onehot, pseudo), torch.tensor([[0.92, 0.08], [0.06, 0.94]]))


def test_final_loss_averages_relabelled_unweighted_and_initial_lambda_weighted_ce():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=torch.float64)  # softmax .5/.5, .75/.25
    onehot = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    pseudo = torch.tensor([[0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    got = final_loss(logits, onehot, pseudo, relabel=torch.tensor([1.0, 0.0], dtype=torch.float64),
                     weights=torch.tensor([0.25, 0.75], dtype=torch.float64), init_lambda=0.9)
    relabelled = (math.log(2) - (0.6 * math.log(0.75) + 0.4 * math.log(0.25))) / 2
    weighted = 0.25 * math.log(2) - 0.75 * (0.06 * math.log(0.75) + 0.94 * math.log(0.25))
    assert got.item() == pytest.approx((relabelled + weighted) / 2, rel=1e-12)


def test_consistency_is_the_kl_from_the_first_view_which_gets_no_gradient():
    z = torch.tensor([[0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    z_aug = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64, requires_grad=True)
    loss = consistency_loss(z, z_aug)
    assert loss.item() == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25), rel=1e-12)
    loss.backward()
    assert z.grad is None and z_aug.grad.abs().sum() > 0


def test_mixup_own_weight_is_at_least_a_half():
    got = mixup_own_weight(torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64), 0.5)  # m = u²/2
    torch.testing.assert_close(got, torch.tensor([1.0, 0.5, 31 / 32], dtype=torch.float64))


def test_mixup_mixes_inputs_and_targets_with_the_partner():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    mx, mt = mixup(x, t, torch.tensor([1.0, 0.5, 0.75]), torch.tensor([2, 0, 1]))
    torch.testing.assert_close(mx, torch.tensor([[1.0], [1.5], [2.75]]))
    torch.testing.assert_close(mt, torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.375, 0.625]]))


def test_mixup_cross_entropy_normalises_each_part_on_its_own():
    logits = torch.tensor([[2.0, 0.0], [1.0, -1.0], [0.0, 3.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    got = mixup_cross_entropy(logits, targets, num_probes=1, views=2, ce_factor=5.0)
    r2 = math.sqrt(2)  # [2, 0] / √2, [1, −1] / 1, [0, 3] / √4.5
    expected = ce([r2, 0.0], [1, 0]) + 5 * (ce([1.0, -1.0], [0.5, 0.5]) + ce([0.0, r2], [0, 1])) / 2
    assert got.item() == pytest.approx(expected, rel=1e-7)


def test_cosine_restarts_as_tensorflows_schedule():
    plan = OmegaConf.create({"name": "cosine_restarts", "first_period": 2, "t_mul": 1.5, "m_mul": 0.9})
    assert lr_factor(plan, 0, 100) == pytest.approx(1.0)
    assert lr_factor(plan, 1, 100) == pytest.approx(0.5)                   # half-way down the first period
    assert lr_factor(plan, 2.0001, 100) == pytest.approx(0.9, rel=1e-6)    # restart 1 at 0.9 × the peak
    assert lr_factor(plan, 3.5, 100) == pytest.approx(0.45)                # half of period 2 (length 3)
    assert lr_factor(plan, 6.125, 100) == pytest.approx(0.81 * 0.5 * (1 + math.cos(math.pi / 4)))  # period 3
    flat = OmegaConf.create({"name": "cosine_restarts", "first_period": 2, "t_mul": 1, "m_mul": 0.5})
    assert lr_factor(flat, 3, 100) == pytest.approx(0.25)


class FakeTrainer:
    world_size = 1

    def __init__(self, optimizer, current_epoch=0, num_training_batches=1):
        self.optimizers = [optimizer]
        self.current_epoch, self.num_training_batches = current_epoch, num_training_batches


def linear_ieg(quirks="paper", **settings):
    """IEG on a float64 linear-softmax network (mlp, no hidden layer): 8 features, 3 classes."""
    facts = RunFacts(num_classes=3, input_shape=(8,), train_size=10, max_epochs=10, noise_rate=0.5,
                     noise_kind="symmetric")
    protocol = {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
                "lr_schedule": {"name": "cosine_restarts", "first_period": 2, "t_mul": 1.5, "m_mul": 0.9}}
    method = IEG(facts=facts, model={"name": "mlp", "hidden": []}, protocol=protocol, quirks=quirks,
                 **{**method_defaults(IEG), **settings})
    method.double()
    method._optimizer_names = ["net"]
    return method


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_one_step_weights_and_relabels_by_the_hand_computed_meta_gradient(monkeypatch, backend):
    torch.manual_seed(0)
    method = linear_ieg(lookahead={"backend": backend, "step": "optimizer", "lr": 0.1, "batchnorm": "batch"})
    layer = method.net.classifier  # the only layer
    optimizer = torch.optim.SGD(method.net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for p in method.net.parameters():  # a populated momentum buffer, as after earlier steps
        optimizer.state[p]["momentum_buffer"] = 0.3 * torch.randn_like(p)
    monkeypatch.setattr(type(method), "trainer", property(lambda self: FakeTrainer(optimizer)))
    monkeypatch.setattr(method, "view", lambda x, augment=True: x)  # the views are the inputs
    stepped = []
    monkeypatch.setattr(method, "step", lambda loss, name="net": stepped.append(loss))
    monkeypatch.setattr(method, "log_epoch_mean", lambda *a, **k: None)
    g = torch.Generator().manual_seed(3)
    n, m = 10, 6
    noisy = {"x": torch.randn(n, 8, generator=g, dtype=torch.float64), "y": torch.randint(0, 3, (n,), generator=g),
             "index": torch.arange(n).flip(0)}
    trusted = {"x": torch.randn(m, 8, generator=g, dtype=torch.float64), "y": torch.tensor([0, 1, 2, 0, 1, 2]),
               "index": torch.arange(m)}
    W, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    buf_W, buf_b = optimizer.state[layer.weight]["momentum_buffer"], optimizer.state[layer.bias]["momentum_buffer"]

    torch.manual_seed(7)
    loss = method.training_step({"noisy": noisy, "trusted": trusted}, 0)

    # the meta-gradient by hand: θ̂ = θ − lr(μ·buf + ∇ + wd·θ), ∇ = Σ w⁰ (p_i − ŷ_i)[x_i; 1]ᵀ
    x, y = noisy["x"], noisy["y"]
    z = x @ W.T + b
    onehot = F.one_hot(y, 3).double()
    pseudo = guess_labels([z, z], 0.5)
    w0, lam0, lr, mu, wd = 1 / n, 0.9, 0.1, 0.9, 5e-4
    residual = torch.softmax(z, 1) - (lam0 * onehot + (1 - lam0) * pseudo)
    W_hat = W - lr * (mu * buf_W + w0 * residual.T @ x + wd * W)
    b_hat = b - lr * (mu * buf_b + w0 * residual.sum(0) + wd * b)
    probe_residual = torch.softmax(trusted["x"] @ W_hat.T + b_hat, 1) - F.one_hot(trusted["y"], 3).double()
    G_W, G_b = probe_residual.T @ trusted["x"] / m, probe_residual.sum(0) / m  # ∂L_probe/∂θ̂
    back = x @ G_W.T + G_b                                                      # G [x_i; 1], per sample
    grad_w = -lr * (residual * back).sum(1)
    grad_lam = lr * w0 * ((onehot - pseudo) * back).sum(1)

    expected_relabel = (grad_lam < 0).double()
    assert 0 < expected_relabel.sum() < n  # both choices occur: the sign test can fail
    assert method.relabel[noisy["index"]].tolist() == expected_relabel.tolist()
    expected_w = grad_w.neg().clamp(min=0) / (grad_w.neg().clamp(min=0).sum() + 1e-5)
    torch.testing.assert_close(method.weight[noisy["index"]].double(), n * expected_w, rtol=1e-6, atol=1e-9)

    # the loss is the final loss on these choices plus the MixUp CE and the consistency term
    torch.manual_seed(7)
    pick = torch.randint(m, (n,))
    own = mixup_own_weight(torch.rand(3 * n), 0.5).double()
    pool_x = torch.cat([trusted["x"][pick], x, x])
    pool_t = torch.cat([F.one_hot(trusted["y"][pick], 3).double(), pseudo, pseudo])
    mixed_x, mixed_t = mixup(pool_x, pool_t, own, torch.randperm(3 * n))
    expected = (final_loss(z, onehot, pseudo, expected_relabel, expected_w, 0.9)
                + mixup_cross_entropy(mixed_x @ W.T + b, mixed_t, n, 2, 5.0))  # views equal: KL = 0
    assert stepped and stepped[0] is loss
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-9)


def test_official_pseudo_label_gradient_reaches_the_guess_through_the_look_ahead(monkeypatch):
    """quirk pseudo_label_gradient: the look-ahead's gradient also flows through the guess
    g(θ) (the code's raw CE), checked against autograd on θ̂ = θ − lr(μ·buf + ∇θ inner + wd·θ)
    written out here; and it changes relabel decisions against the constant guess."""
    torch.manual_seed(0)
    n, m, lr, mu, wd = 10, 6, 0.1, 0.9, 5e-4
    g = torch.Generator().manual_seed(3)
    noisy = {"x": 3 * torch.randn(n, 8, generator=g, dtype=torch.float64), "y": torch.randint(0, 3, (n,), generator=g),
             "index": torch.arange(n)}
    trusted = {"x": torch.randn(m, 8, generator=g, dtype=torch.float64), "y": torch.tensor([0, 1, 2, 0, 1, 2]),
               "index": torch.arange(m)}
    buffers = [0.3 * torch.randn(3, 8, dtype=torch.float64), 0.3 * torch.randn(3, dtype=torch.float64)]
    chosen = {}
    for quirks in ("paper", "official"):
        method = linear_ieg(quirks=quirks, lookahead={"backend": "higher", "step": "optimizer", "lr": lr,
                                                      "batchnorm": "batch"})
        with torch.no_grad():
            method.net.classifier.weight.copy_(torch.randn(3, 8, generator=torch.Generator().manual_seed(5)))
        optimizer = torch.optim.SGD(method.net.parameters(), lr=lr, momentum=mu, weight_decay=wd)
        for p, buffer in zip(method.net.parameters(), buffers):
            optimizer.state[p]["momentum_buffer"] = buffer.clone()
        monkeypatch.setattr(type(method), "trainer", property(lambda self, o=optimizer: FakeTrainer(o)))
        monkeypatch.setattr(method, "view", lambda x, augment=True: x)
        monkeypatch.setattr(method, "step", lambda loss, name="net": None)
        monkeypatch.setattr(method, "log_epoch_mean", lambda *a, **k: None)
        theta = [p.detach().clone() for p in method.net.parameters()]
        method.training_step({"noisy": noisy, "trusted": trusted}, 0)
        chosen[quirks] = method.relabel.clone()

    W, b = (t.clone().requires_grad_() for t in theta)
    w0 = torch.full((n,), 1 / n, dtype=torch.float64, requires_grad=True)
    lam0 = torch.full((n,), 0.9, dtype=torch.float64, requires_grad=True)
    z = noisy["x"] @ W.T + b
    guess = guess_labels([z, z], 0.5)  # a function of θ: not detached
    inner = (w0 * F.cross_entropy(z, mixed_targets(lam0, F.one_hot(noisy["y"], 3).double(), guess),
                                  reduction="none")).sum()
    grads = torch.autograd.grad(inner, [W, b], create_graph=True)
    W_hat, b_hat = (p - lr * (mu * buf + grad + wd * p) for p, buf, grad in zip((W, b), buffers, grads))
    probe = F.cross_entropy(trusted["x"] @ W_hat.T + b_hat, trusted["y"])
    _, grad_lam = torch.autograd.grad(probe, [w0, lam0])
    assert chosen["official"].tolist() == (grad_lam < 0).double().tolist()
    assert chosen["official"].tolist() != chosen["paper"].tolist()  # the guess's gradient changes decisions


def test_ema_follows_tensorflows_warm_up():
    method = linear_ieg()
    old = [p.detach().clone() for p in method.ema.parameters()]
    with torch.no_grad():
        for p in method.net.parameters():
            p.add_(1.0)
    method.update_ema()  # first update: decay min(0.999, 2/11)
    for shadow, before, new in zip(method.ema.parameters(), old, method.net.parameters()):
        torch.testing.assert_close(shadow, 2 / 11 * before + 9 / 11 * new.detach())
    assert not any(p.requires_grad for p in method.ema.parameters())


def test_lr_is_refreshed_every_iteration(monkeypatch):
    method = linear_ieg()
    optimizer = torch.optim.SGD(method.net.parameters(), lr=0.1, momentum=0.9)
    monkeypatch.setattr(type(method), "trainer", property(lambda self: FakeTrainer(optimizer, 3, 4)))
    monkeypatch.setattr(type(method), "current_epoch", property(lambda self: 3))
    method.on_train_batch_start({}, 2)  # epoch 3.5 of first_period 2, t_mul 1.5: half of period 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.45)


def test_runs_with_one_trusted_image_per_class(make_cfg, one_thread):
    import numpy as np

    from noisylab.train import run

    results = run(make_cfg("debug=fast", "data=digits", "method=ieg", "data.trusted_per_class=1"))
    assert results["metrics"]["test/acc"] > 0.1 and "test/acc_net" in results["metrics"]
    per_sample = np.load(f"{results['run_dir']}/per_sample.npz")
    assert set(np.unique(per_sample["relabel"])) <= {0.0, 1.0} and per_sample["weight"].min() >= 0


def test_a_stopped_run_resumes_exactly(make_cfg, one_thread):
    """Random views, MixUp draws, the EMA and the per-iteration lr continue as if never stopped."""
    from pathlib import Path

    from noisylab.train import run
    from tests.test_method_contract import network_weights, stopped_run

    base = ["debug=fast", "data=digits", "method=ieg", "protocol.epochs=3", "data.augment=crop", "+data.padding=1"]
    whole = run(make_cfg(*base))
    stopped = stopped_run(make_cfg(*base, "+callbacks.stop._target_=tests.test_method_contract.stop_after",
                           "+callbacks.stop.epochs=2"))
    resumed = run(make_cfg(*base, f"ckpt_path={stopped['run_dir']}/checkpoints/last.ckpt"))
    assert (stopped["epochs"], resumed["epochs"]) == (2, 3)
    for key, value in whole["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    ema = [torch.load(Path(r["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
           for r in (whole, resumed)]
    for name in [k for k in ema[0] if k.startswith(("ema.", "net."))]:
        assert torch.allclose(ema[0][name].float(), ema[1][name].float()), name
    assert network_weights(Path(whole["run_dir"]) / "checkpoints" / "last.ckpt")
