"""The bilevel look-ahead: its meta-gradient against an independent closed form, central
finite differences and the other backend (float64); no side effects on the real model."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisylab.errors import ConfigError
from noisylab.methods.lookahead import LookaheadSettings, meta_gradient

BACKENDS = ("higher", "func")


def tiny_bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()


def data(seed: int = 1, n: int = 8, m: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    xv = torch.randn(m, 5, generator=g, dtype=torch.float64)
    yv = torch.randint(0, 3, (m,), generator=g)
    return x, y, xv, yv


def sgd_with_momentum(net, x, y, weight_decay=1e-2, nesterov=False):
    """A real optimiser with a populated momentum buffer (one real step taken)."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()
    return opt


def weighted(eps, x, y):
    return lambda forward: (eps * F.cross_entropy(forward(x), y, reduction="none")).sum()


def clean(xv, yv):
    return lambda forward: F.cross_entropy(forward(xv), yv)


@pytest.mark.parametrize("backend", BACKENDS)
def test_l2rw_identity_at_zero_weights(backend):
    """At ε = 0, θ̂ = θ, so ∂L_val/∂ε_i = −lr ⟨∇L_val(θ), ∇ℓ_i(θ)⟩ exactly (Ren et al.)."""
    net = tiny_bn_net()
    x, y, xv, yv = data()
    lr = 0.3
    eps = torch.zeros(len(y), dtype=torch.float64, requires_grad=True)
    got = meta_gradient(net, torch.optim.SGD(net.parameters(), lr=lr), weighted(eps, x, y), clean(xv, yv),
                        [eps], LookaheadSettings(backend=backend)).grads[0]
    reference = copy.deepcopy(net)  # batch statistics in every forward, as the look-ahead
    params = list(reference.parameters())
    g_val = torch.autograd.grad(F.cross_entropy(reference(xv), yv), params)
    losses = F.cross_entropy(reference(x), y, reduction="none")
    expected = torch.stack([
        -lr * sum((a * b).sum() for a, b in zip(torch.autograd.grad(losses[i], params, retain_graph=True), g_val))
        for i in range(len(y))])
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    assert got.abs().max() > 1e-4  # not trivially zero


def fast_weights_loss(net, opt, eps, x, y, xv, yv, lr, nesterov=False):
    """outer(θ − lr·d(θ, ε)) written out by hand for torch's SGD with momentum: the
    independent reference of the finite-difference test."""
    clone = copy.deepcopy(net)
    params = list(clone.parameters())
    g = torch.autograd.grad(weighted(eps, x, y)(clone), params)
    group = opt.param_groups[0]
    fast = []
    for p, real, gi in zip(params, net.parameters(), g):
        d = gi + group["weight_decay"] * p
        buf = group["momentum"] * opt.state[real]["momentum_buffer"] + d
        d = d + group["momentum"] * buf if nesterov else buf
        fast.append(p - lr * d)
    out = torch.func.functional_call(clone, dict(zip([n for n, _ in clone.named_parameters()], fast)), (xv,))
    return F.cross_entropy(out, yv)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nesterov", [False, True])
def test_optimizer_step_matches_finite_differences(backend, nesterov):
    """IEG's look-ahead: the real optimiser's step with its momentum buffer and weight decay,
    at ε = 1/B (where the L2RW identity no longer holds)."""
    net = tiny_bn_net()
    x, y, xv, yv = data()
    opt = sgd_with_momentum(net, x, y, nesterov=nesterov)
    lr = 0.1
    eps = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64, requires_grad=True)
    got = meta_gradient(net, opt, weighted(eps, x, y), clean(xv, yv), [eps],
                        LookaheadSettings(backend=backend, step="optimizer")).grads[0]
    h = 1e-5
    numeric = torch.zeros_like(eps)
    for i in range(len(eps)):
        plus, minus = eps.detach().clone(), eps.detach().clone()
        plus[i] += h
        minus[i] -= h
        numeric[i] = (fast_weights_loss(net, opt, plus, x, y, xv, yv, lr, nesterov)
                      - fast_weights_loss(net, opt, minus, x, y, xv, yv, lr, nesterov)) / (2 * h)
    torch.testing.assert_close(got, numeric, atol=1e-9, rtol=1e-6)


def test_backends_agree_for_a_weighting_network():
    """Meta-Weight-Net's shape of problem: φ = the parameters of a loss→weight MLP."""
    net = tiny_bn_net()
    x, y, xv, yv = data()
    torch.manual_seed(3)
    vnet = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid()).double()

    def inner(forward):
        losses = F.cross_entropy(forward(x), y, reduction="none")
        return (vnet(losses.detach()[:, None]).squeeze(1) * losses).mean()

    results = [meta_gradient(net, torch.optim.SGD(net.parameters(), lr=0.2), inner, clean(xv, yv),
                             list(vnet.parameters()), LookaheadSettings(backend=b, lr=0.5)).grads
               for b in BACKENDS]
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    # and along a random direction against central finite differences
    direction = [torch.randn_like(p) for p in vnet.parameters()]
    h = 1e-5

    def outer_at(shift):
        shifted = copy.deepcopy(vnet)
        with torch.no_grad():
            for p, d in zip(shifted.parameters(), direction):
                p.add_(shift * d)
        clone = copy.deepcopy(net)
        params = list(clone.parameters())
        losses = F.cross_entropy(clone(x), y, reduction="none")
        g = torch.autograd.grad((shifted(losses.detach()[:, None]).squeeze(1) * losses).mean(), params)
        names = [n for n, _ in clone.named_parameters()]
        fast = {n: p - 0.5 * gi for n, p, gi in zip(names, params, g)}
        return F.cross_entropy(torch.func.functional_call(clone, fast, (xv,)), yv)

    numeric = (outer_at(h) - outer_at(-h)) / (2 * h)
    analytic = sum((g * d).sum() for g, d in zip(results[0], direction))
    torch.testing.assert_close(analytic, numeric, atol=1e-9, rtol=1e-6)


def state_snapshot(net, opt):
    return ({k: v.clone() for k, v in net.state_dict().items()},
            {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batchnorm", ["batch", "running"])
def test_lookahead_leaves_model_buffers_and_optimizer_untouched(backend, batchnorm):
    net = tiny_bn_net()
    x, y, xv, yv = data()
    opt = sgd_with_momentum(net, x, y)
    before = state_snapshot(net, opt)
    eps = torch.full((len(y),), 0.125, dtype=torch.float64, requires_grad=True)
    meta_gradient(net, opt, weighted(eps, x, y), clean(xv, yv), [eps],
                  LookaheadSettings(backend=backend, step="optimizer", batchnorm=batchnorm))
    after = state_snapshot(net, opt)
    for key, value in before[0].items():
        assert torch.equal(value, after[0][key]), key  # weights, running stats, num_batches_tracked
    for pid, state in before[1].items():
        for key, value in state.items():
            assert torch.equal(value, after[1][pid][key])
    assert net.training and net[1].training  # BatchNorm mode restored
    assert all(p.grad is None or p.grad.abs().sum() > 0 for p in net.parameters())


def test_running_batchnorm_uses_the_running_statistics():
    """batchnorm=running: the look-ahead's forwards are eval-mode BatchNorm, so its result
    differs from batch statistics and equals that of a model put in eval mode by hand."""
    net = tiny_bn_net()
    x, y, xv, yv = data()
    sgd_with_momentum(net, x, y)  # running stats away from their init
    eps = torch.full((len(y),), 0.125, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    running = meta_gradient(net, opt, weighted(eps, x, y), clean(xv, yv), [eps],
                            LookaheadSettings(batchnorm="running")).grads[0]
    batch = meta_gradient(net, opt, weighted(eps, x, y), clean(xv, yv), [eps]).grads[0]
    evaluated = copy.deepcopy(net).eval()
    by_hand = meta_gradient(evaluated, torch.optim.SGD(evaluated.parameters(), lr=0.1), weighted(eps, x, y),
                            clean(xv, yv), [eps]).grads[0]
    torch.testing.assert_close(running, by_hand, atol=1e-14, rtol=0)
    assert (running - batch).abs().max() > 1e-6


def test_compiled_network_is_refused_with_a_sentence():
    net = tiny_bn_net()
    compiled = torch.compile(net)  # wrapping compiles nothing until called
    x, y, xv, yv = data()
    eps = torch.zeros(len(y), dtype=torch.float64, requires_grad=True)
    with pytest.raises(ConfigError, match="torch.compile"):
        meta_gradient(compiled, torch.optim.SGD(net.parameters(), lr=0.1), weighted(eps, x, y), clean(xv, yv), [eps])
    net.compile()  # in place, as speed.compile does
    with pytest.raises(ConfigError, match="torch.compile"):
        meta_gradient(net, torch.optim.SGD(net.parameters(), lr=0.1), weighted(eps, x, y), clean(xv, yv), [eps])


def test_func_backend_refuses_mirroring_adam():
    net = tiny_bn_net()
    x, y, xv, yv = data()
    eps = torch.zeros(len(y), dtype=torch.float64, requires_grad=True)
    with pytest.raises(ConfigError, match="SGD only"):
        meta_gradient(net, torch.optim.Adam(net.parameters()), weighted(eps, x, y), clean(xv, yv), [eps],
                      LookaheadSettings(backend="func", step="optimizer"))


@pytest.mark.parametrize("bad, message", [({"backend": "jax"}, "backend=jax"), ({"lr": -1}, "lr must"),
                                          ({"stepp": "sgd"}, "lookahead.stepp")])
def test_settings_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        LookaheadSettings.of(bad)


@pytest.mark.parametrize("batchnorm", ["batch", "running"])
def test_alignment_shortcut_equals_the_lookahead_at_zero_weights(batchnorm):
    """The forward-mode shortcut gives the look-ahead's gradient at ε = 0, BatchNorm's coupling
    of the batch included, and touches nothing."""
    from noisylab.methods.lookahead import alignment_gradient

    net = tiny_bn_net()
    x, y, xv, yv = data()
    opt = sgd_with_momentum(net, x, y)
    before = state_snapshot(net, opt)
    eps = torch.zeros(len(y), dtype=torch.float64, requires_grad=True)
    full = meta_gradient(net, torch.optim.SGD(net.parameters(), lr=0.3), weighted(eps, x, y), clean(xv, yv), [eps],
                         LookaheadSettings(batchnorm=batchnorm))
    fast = alignment_gradient(net, lambda forward: F.cross_entropy(forward(x), y, reduction="none"),
                              clean(xv, yv), lr=0.3, batchnorm=batchnorm)
    torch.testing.assert_close(fast.grads[0], full.grads[0], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(fast.outer_loss, full.outer_loss)
    for key, value in before[0].items():
        assert torch.equal(value, net.state_dict()[key]), key
