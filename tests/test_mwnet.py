"""Meta-Weight-Net: V's meta-gradient against central finite differences of a look-ahead
written out by hand (float64), the weight normalisations on fixed numbers, the declared
optimisers, and the two official recipes as protocols."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisylab.errors import ConfigError
from noisylab.methods.bilevel import trusted_loss
from noisylab.methods.lookahead import LookaheadSettings, meta_gradient
from noisylab.methods.mwnet import MetaWeightNet, WeightNet, inner_loss, normalise
from tests.conftest import tiny_method


def tiny_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()


def data(n: int = 8, m: int = 6):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g),
            torch.randn(m, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (m,), generator=g))


def lookahead_by_hand(net, vnet, x, y, xv, yv, lr, weight_norm):
    """outer(θ − lr ∇θ Σ n(v)_i ℓ_i), every step spelled out: the independent reference."""
    clone = copy.deepcopy(net)
    names, params = zip(*clone.named_parameters())
    losses = F.cross_entropy(clone(x), y, reduction="none")
    v = vnet(losses.detach().unsqueeze(1)).squeeze(1)
    weights = v / v.sum() if weight_norm == "sum" else v / len(v)
    grads = torch.autograd.grad((weights * losses).sum(), params)
    fast = {n: p - lr * g for n, p, g in zip(names, params, grads)}
    return F.cross_entropy(torch.func.functional_call(clone, fast, (xv,)), yv)


@pytest.mark.parametrize("backend", ["higher", "func"])
@pytest.mark.parametrize("weight_norm", ["sum", "batch"])
def test_weighting_network_meta_gradient_matches_finite_differences(backend, weight_norm):
    """⟨∂L_meta/∂Θ, d⟩ along a random direction d of V's parameters, through the method's own
    inner and outer losses, with the look-ahead at the optimiser's current lr."""
    net = tiny_bn_net()
    x, y, xv, yv = data()
    torch.manual_seed(3)
    vnet = WeightNet(hidden=7).double()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    optimizer.param_groups[0]["lr"] = 0.4  # what the schedule set this epoch
    grads = meta_gradient(net, optimizer, inner_loss(vnet, x, y, weight_norm), trusted_loss(xv, yv),
                          list(vnet.parameters()), LookaheadSettings(backend=backend)).grads
    direction = [torch.randn_like(p) for p in vnet.parameters()]
    h = 1e-5
    moved = [copy.deepcopy(vnet) for _ in range(2)]
    with torch.no_grad():
        for sign, module in zip((1, -1), moved):
            for p, d in zip(module.parameters(), direction):
                p.add_(sign * h * d)
    plus, minus = (lookahead_by_hand(net, module, x, y, xv, yv, 0.4, weight_norm) for module in moved)
    numeric = (plus - minus) / (2 * h)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    assert abs(float(numeric)) > 1e-6  # V really moves the meta loss
    torch.testing.assert_close(analytic, numeric, atol=1e-9, rtol=1e-6)
    assert all(p.grad is None for p in net.parameters())  # the look-ahead left the network alone


def test_normalisations_on_fixed_numbers():
    v = torch.tensor([0.2, 0.3, 0.5, 1.0])
    torch.testing.assert_close(normalise(v, "sum"), torch.tensor([0.1, 0.15, 0.25, 0.5]))
    torch.testing.assert_close(normalise(v, "batch"), torch.tensor([0.05, 0.075, 0.125, 0.25]))


def test_all_zero_weights_stay_zero_not_nan():
    v = torch.sigmoid(torch.full((5,), -200.0)).requires_grad_()  # underflows to exactly 0
    assert v.sum() == 0
    for mode in ("sum", "batch"):
        out = normalise(v, mode)
        assert torch.equal(out, torch.zeros(5))
        (grad,) = torch.autograd.grad(out.sum(), v)
        assert torch.isfinite(grad).all()


def test_weighting_network_shape_and_range():
    vnet = WeightNet(hidden=100)
    shapes = [tuple(p.shape) for p in vnet.parameters()]
    assert shapes == [(100, 1), (100,), (1, 100), (1,)]  # 1 -> 100 -> 1: 301 parameters
    w = vnet.weights(torch.linspace(0, 20, 9))
    assert w.shape == (9,) and bool(((w > 0) & (w < 1)).all())


def test_only_the_network_and_v_are_declared_each_once():
    method = tiny_method(MetaWeightNet)
    declared = method.declare_optimizers()
    assert list(declared) == ["net", "meta"]
    net_params, meta_params = (list(declared[name][0]) for name in ("net", "meta"))
    assert {id(p) for p in net_params} == {id(p) for p in method.net.parameters()}
    assert [id(p) for p in meta_params] == [id(p) for p in method.vnet.parameters()]
    everything = {id(p) for p in method.parameters()}
    assert everything == {id(p) for p in net_params} | {id(p) for p in meta_params}
    net_opt, meta_opt = method.configure_optimizers()  # refuses strays and doubles
    assert isinstance(meta_opt, torch.optim.SGD) and meta_opt.param_groups[0]["nesterov"]  # the paper's V optimiser
    assert meta_opt.param_groups[0]["lr"] == 1e-3 and meta_opt.param_groups[0]["weight_decay"] == 5e-4


@pytest.mark.parametrize("overrides, expected", [
    ([], ("mwnet_wrn", "sum", "sgd", True)),
    (["protocol=mwnet", "model=resnet32"], ("mwnet", "batch", "adam", False)),
    (["protocol=mwnet", "method.weight_norm=sum"], ("mwnet", "sum", "adam", False)),
    (["protocol=l2rw"], ("l2rw", "sum", "sgd", False)),  # a foreign recipe: V keeps the paper's
])
def test_the_two_official_recipes(make_cfg, overrides, expected):
    cfg = make_cfg("method=mwnet", "data=digits", *overrides)
    protocol, weight_norm, meta_name, nesterov = expected
    assert cfg.protocol.name == protocol and cfg.method.weight_norm == weight_norm
    assert cfg.method.meta_optimizer["_target_"] == {"sgd": "torch.optim.SGD", "adam": "torch.optim.Adam"}[meta_name]
    assert bool(cfg.protocol.optimizer.get("nesterov", False)) == nesterov


def test_recipes_hold_the_scripts_numbers(make_cfg):
    wrn = make_cfg("method=mwnet").protocol
    assert (wrn.epochs, list(wrn.lr_schedule.milestones), wrn.batch_size) == (41, [37, 39], 100)
    assert 490 * 37 >= 18000 > 490 * 36 and 490 * 39 >= 19000 > 490 * 38  # 49,000 images / 100 per batch
    stable = make_cfg("method=mwnet", "protocol=mwnet").protocol
    assert (stable.epochs, list(stable.lr_schedule.milestones), stable.optimizer.weight_decay) == (120, [80, 100], 5e-4)
    assert make_cfg("method=mwnet", "data=cifar100").method.trusted_per_class == 10


def test_unknown_normalisation_is_refused():
    with pytest.raises(ConfigError, match="weight_norm must be one of sum, batch"):
        tiny_method(MetaWeightNet, weight_norm="mean")


def test_benchmark_times_every_variant(one_thread):
    """Runs each variant (no timing assertion: speed is reported by ``make bench``, not tested)."""
    import math

    from noisylab.benchmarks.fused import Plan
    from noisylab.benchmarks.meta import VARIANTS, measure

    result = measure("lenet", torch.device("cpu"), Plan(warmup=1, repeats=1, steps=1))
    for variant in VARIANTS[1:]:
        assert result[f"{variant}_ms"] > 0 and math.isfinite(result[f"{variant}/plain"]), (variant, result)


@pytest.mark.parametrize("method", ["ce", "l2rw", "mwnet"])
def test_cifar10_sweep_runs_every_method_on_the_papers_recipe_and_noise(make_cfg, method):
    import os
    from pathlib import Path

    cfg = make_cfg("+sweep=mwnet_cifar10", f"method={method}", "noise=sym40", "protocol=mwnet_wrn")
    assert (cfg.protocol.name, cfg.model.name, cfg.data.name) == ("mwnet_wrn", "wrn28_10", "cifar10")
    assert cfg.noise.rate == 0.4 and cfg.noise.include_true_class and cfg.data.val_fraction == 0.0
    assert cfg.paper.l2rw.sym40 == 86.92 and cfg.paper.mwnet.sym40 == 89.27
    root = Path(__file__).resolve().parents[1]
    for name in ("mwnet_cifar10", "mwnet_digits"):
        link = root / "multirun_sweeps" / f"{name}.yaml"
        assert link.is_symlink() and os.readlink(link) == f"../conf/sweep/{name}.yaml"
