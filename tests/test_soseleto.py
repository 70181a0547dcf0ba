"""SOSELETO: the α update against its closed form computed by hand (float64, one step, both
look-ahead backends, both gradients), α kept in [0, 1], the target head trained alone, and
on the 2-D toy the clean points weighted far above the flipped ones."""

import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from noisylab.methods.lookahead import LookaheadSettings, meta_gradient
from noisylab.methods.soseleto import DetachedFeatures, Soseleto, updated_weights, weight_meta_gradient
from noisylab.models import build_model
from noisylab.train import build_datamodule, build_method, run
from tests.fixtures import write_mnist, write_svhn

LR, LR_ALPHA = 0.2, 4.0


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def batches():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    xt = torch.randn(5, 4, generator=g, dtype=torch.float64)
    yt = torch.randint(0, 3, (5,), generator=g)
    alpha = torch.tensor([0.5, 0.02, 0.97, 0.3, 0.6, 0.5], dtype=torch.float64)
    return x, y, xt, yt, alpha


def flat_grad(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])


def expected_meta_gradient(net, x, y, xt, yt, alpha, gradient):
    """−lr ⟨g_j, ∇L_t⟩ with g_j each sample's own gradient at θ and ∇L_t at θ (first order)
    or at θ̂ = θ − lr Σ_j α_j g_j written out by hand."""
    net = copy.deepcopy(net)
    params = list(net.parameters())
    losses = F.cross_entropy(net(x), y, reduction="none")
    per_sample = torch.stack([flat_grad(losses[j], params) for j in range(len(y))])
    if gradient == "lookahead":
        step = -LR * (alpha[:, None] * per_sample).sum(0)
        sizes = [p.numel() for p in params]
        fast = {name: p.detach() + d.view_as(p) for (name, p), d in zip(net.named_parameters(), step.split(sizes))}
        for p in fast.values():
            p.requires_grad_()
        target = flat_grad(F.cross_entropy(torch.func.functional_call(net, fast, (xt,)), yt), list(fast.values()))
    else:
        target = flat_grad(F.cross_entropy(net(xt), yt), params)
    return -LR * per_sample @ target


@pytest.mark.parametrize("backend", ["higher", "func"])
@pytest.mark.parametrize("gradient", ["first_order", "lookahead"])
def test_alpha_update_matches_the_closed_form(backend, gradient):
    net = tiny_net()
    x, y, xt, yt, alpha = batches()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.5)  # the look-ahead takes its current lr
    before = copy.deepcopy(net.state_dict())
    meta = weight_meta_gradient(functools.partial(meta_gradient, net, opt, settings=LookaheadSettings(backend=backend)),
                                x, y, alpha, lambda forward: F.cross_entropy(forward(xt), yt), gradient)
    expected = expected_meta_gradient(net, x, y, xt, yt, alpha, gradient)
    torch.testing.assert_close(meta.grads[0], expected, atol=1e-12, rtol=1e-10)
    assert expected.abs().min() > 1e-3  # every sample moves: the test is not about zeros
    new = updated_weights(alpha, meta.grads[0], LR_ALPHA)
    unclipped = alpha - LR_ALPHA * expected
    assert ((unclipped < 0) | (unclipped > 1)).any() and ((unclipped > 0) & (unclipped < 1)).any()
    torch.testing.assert_close(new, unclipped.clamp(0, 1), atol=1e-12, rtol=0)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key  # the real network is untouched


def test_first_order_equals_the_notebook_update():
    """The notebook: α_j += alpha_lr · lr · ⟨g_j, g_t⟩, then clamp to [0, 1]."""
    net = tiny_net()
    x, y, xt, yt, alpha = batches()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    meta = weight_meta_gradient(functools.partial(meta_gradient, net, opt), x, y, alpha,
                                lambda forward: F.cross_entropy(forward(xt), yt), "first_order")
    params = list(net.parameters())
    g_t = flat_grad(F.cross_entropy(net(xt), yt), params)
    notebook = alpha.clone()
    for j in range(len(y)):  # one sample at a time, as the notebook's loop
        g_j = flat_grad(F.cross_entropy(net(x[j:j + 1]), y[j:j + 1]), params)
        notebook[j] = torch.clamp(notebook[j] + LR_ALPHA * LR * (g_j @ g_t), 0.0, 1.0)
    torch.testing.assert_close(updated_weights(alpha, meta.grads[0], LR_ALPHA), notebook, atol=1e-12, rtol=0)


def test_alpha_stays_in_the_unit_interval():
    g = torch.Generator().manual_seed(0)
    alpha = torch.rand(1000, generator=g)
    for _ in range(20):
        alpha = updated_weights(alpha, torch.randn(1000, generator=g) * 3, 20.0)
        assert alpha.min() >= 0 and alpha.max() <= 1
    assert (alpha == 0).any() and (alpha == 1).any()


def test_head_only_target_step_leaves_the_features_alone():
    torch.manual_seed(0)
    net = build_model("mlp", (4,), 3, hidden=[5])
    x, y = torch.randn(7, 4), torch.randint(0, 3, (7,))
    with DetachedFeatures(net):
        F.cross_entropy(net(x), y).backward()
    assert all(p.grad is None for p in net.body.parameters())
    assert net.classifier.weight.grad.abs().sum() > 0
    F.cross_entropy(net(x), y).backward()  # the hook is gone afterwards
    assert all(p.grad is not None for p in net.body.parameters())


def test_on_toy2d_clean_points_get_far_larger_weights_than_flipped_ones(make_cfg, one_thread):
    """The slides' synthetic experiment with the notebook's settings (facts §12, test 11: 0.834
    against 0.039 and AUROC 0.997 after 100 epochs); 25 epochs here, to stay fast."""
    results = run(make_cfg("method=soseleto", "data=toy2d", "debug=fast", "protocol.epochs=25", "callbacks=none"))
    per_sample = np.load(Path(results["run_dir"]) / "per_sample.npz")
    alpha, flipped = per_sample["alpha"], per_sample["y"] != per_sample["y_true"]
    assert 80 < flipped.sum() < 120 and alpha.min() >= 0 and alpha.max() <= 1
    assert alpha[~flipped].mean() > alpha[flipped].mean() + 0.3
    assert roc_auc_score(~flipped, alpha) > 0.9
    assert results["metrics"]["train/detection_auc"] == pytest.approx(roc_auc_score(~flipped, alpha), abs=1e-4)


def test_transfer_has_a_source_and_a_target_head_and_is_tested_on_the_target_one(tmp_path, make_cfg, one_thread):
    """data=svhn_to_mnist on files in the real formats: the last layer holds 5 source + 5 target
    rows; the source loss never reaches the target rows (with target_step=none they keep
    their initial values) and evaluation reads the target head."""
    write_svhn(tmp_path, n_train=30, n_test=5, seed=1)
    write_mnist(tmp_path, gz=True, n_train=60, n_test=20, seed=2)
    cfg = make_cfg("method=soseleto", "data=svhn_to_mnist", f"data.root={tmp_path}", "noise=none", "debug=fast",
                   "method.target_step=none", "callbacks=default")
    torch.manual_seed(cfg.seed)
    initial = build_method(cfg, build_datamodule(cfg)).net.classifier
    results = run(cfg)
    method = Soseleto.load_from_checkpoint(Path(results["run_dir"]) / "checkpoints" / "last.ckpt")
    head = method.net.classifier
    assert head.out_features == 10 and method.source_part == slice(0, 5) and method.target_part == slice(5, 10)
    assert torch.equal(head.weight[5:], initial.weight[5:]) and torch.equal(head.bias[5:], initial.bias[5:])
    assert not torch.equal(head.weight[:5], initial.weight[:5])
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(method.network("net")(x), method.net(x)[:, 5:])
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0
