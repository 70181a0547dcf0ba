"""The fused (vmapped) two-network path gives the plain path's results.

Equality tests run in float64: in float32 the 9-layer CNN's gradients already differ by ~1%
between two mathematically equal computations (the plain path against itself in float64
differs as much as the fused path does), which would hide a real difference.
"""

import copy
import io
import json
from pathlib import Path

import pytest
import torch

from noisylab.methods.coteaching import cross_update_losses
from noisylab.methods.fused import FusedNetworkPair
from noisylab.methods.pair import NetworkPair, make_pair
from noisylab.models import build_model
from noisylab.train import run

MNIST_LIKE = (1, 28, 28)  # the smallest input cnn9 takes
TINY = (1, 8, 8)  # for cnn6 (BatchNorm, no dropout) where the network does not matter
FORGET = 0.25


@pytest.fixture
def float64():
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


def builder(name: str, shape=MNIST_LIKE, **settings):
    return lambda: build_model(name, shape, 10, **settings)


def both_pairs(build, seed: int = 0):
    torch.manual_seed(seed)
    plain = NetworkPair(build)
    torch.manual_seed(seed)
    fused = make_pair(build, fused=True)
    return plain, fused


def batch(size: int, shape=MNIST_LIKE, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(size, *shape, generator=generator, dtype=torch.get_default_dtype())
    return x, torch.randint(0, 10, (size,), generator=generator)


def per_network(fused: FusedNetworkPair, i: int) -> dict[str, torch.Tensor]:
    """Network i's parameters (with .grad) and buffers, by the plain network's names."""
    params, buffers = fused.state()
    out = {name: value[i] for name, value in {**params, **buffers}.items()}
    out.update({f"{name}.grad": value.grad[i] for name, value in params.items() if value.grad is not None})
    return out


def plain_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = dict(network.named_parameters()) | dict(network.named_buffers())
    out.update({f"{name}.grad": value.grad for name, value in network.named_parameters() if value.grad is not None})
    return out


def assert_same_networks(plain: NetworkPair, fused: FusedNetworkPair, **tolerance) -> None:
    for i, network in enumerate((plain.first, plain.second)):
        expected, actual = plain_state(network), per_network(fused, i)
        assert expected.keys() == actual.keys()
        for name, value in expected.items():
            torch.testing.assert_close(actual[name], value, **tolerance, msg=lambda m, n=name, i=i: f"net{i + 1} {n}: {m}")


def coteaching_step(pair, optimizer, x, y):
    logits1, logits2 = pair(x)
    loss1, loss2, kept_by_1, kept_by_2 = cross_update_losses(logits1, logits2, y, FORGET)
    optimizer.zero_grad(set_to_none=True)
    (loss1 + loss2).backward()
    optimizer.step()
    return logits1, logits2, loss1, loss2, kept_by_1, kept_by_2


@pytest.mark.parametrize("build", [builder("mlp"), builder("cnn9", dropout=0.0)], ids=["mlp", "cnn9-train-mode"])
def test_same_step_as_the_plain_pair(float64, build):
    """One Co-teaching step in train mode (BatchNorm on batch statistics): same logits,
    selections, losses, gradients, parameters after Adam, BN running stats; then the same
    eval-mode logits (BN on each network's own running stats)."""
    plain, fused = both_pairs(build)
    assert_same_networks(plain, fused, rtol=0, atol=0)  # the same initialisation
    x, y = batch(3)  # small: float64 cnn9 is slow on CPU; Co-teaching keeps int(0.75 * 3) = 2
    results = [coteaching_step(pair, torch.optim.Adam(pair.parameters(), lr=1e-3), x, y) for pair in (plain, fused)]
    for expected, actual in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    # atol: a conv bias before BN has a zero gradient up to rounding, which Adam scales to ~1e-10
    assert_same_networks(plain, fused, rtol=1e-9, atol=1e-9)  # parameters, grads, running stats
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()):
        assert int(fused.state()[1]["body.1.num_batches_tracked"][1]) == 1
        assert not torch.equal(fused.state()[1]["body.1.running_mean"][0], fused.state()[1]["body.1.running_mean"][1])
    plain.eval()
    fused.eval()
    with torch.no_grad():
        expected = plain(x)
        for i, logits in enumerate(fused(x)):
            torch.testing.assert_close(logits, expected[i], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(fused.member(i)(x), expected[i], rtol=1e-9, atol=1e-9)


def test_eval_mode_with_dropout_matches_the_plain_pair():
    plain, fused = both_pairs(builder("cnn9"))  # dropout 0.25, off in eval mode
    plain.eval()
    fused.eval()
    x, _ = batch(1)
    with torch.no_grad():
        for expected, actual in zip(plain(x), fused(x), strict=True):
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fused.member(1)(x), plain.member(1)(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build", [builder("mlp", dropout=0.5), builder("cnn9")], ids=["mlp-dropout", "cnn9-dropout2d"])
def test_each_network_draws_its_own_dropout_mask(build):
    torch.manual_seed(0)
    network = build()
    fused = FusedNetworkPair(lambda: copy.deepcopy(network))  # two identical networks
    x, _ = batch(2)
    with torch.no_grad():
        fused.eval()
        logits1, logits2 = fused(x)
        torch.testing.assert_close(logits1, logits2, rtol=0, atol=0)
        fused.train()
        logits1, logits2 = fused(x)  # same weights and BN batch stats: only the masks differ
        assert not torch.allclose(logits1, logits2)
        again1, _ = fused(x)
        assert not torch.allclose(logits1, again1)  # fresh masks on every call


def test_members_follow_the_pair_mode_and_export_standalone_networks():
    plain, fused = both_pairs(builder("cnn6", TINY))
    member = fused.member(1)
    assert member.training and list(member.parameters()) == []
    fused.eval()
    assert not member.training
    member.train()
    assert fused.training and fused.stacked.body[1].training
    member.eval()
    assert not fused.stacked.body[1].training
    exported = fused.export(1)
    x, _ = batch(4, TINY)
    with torch.no_grad():
        torch.testing.assert_close(exported.eval()(x), member(x), rtol=0, atol=0)
        torch.testing.assert_close(exported(x), plain.second.eval()(x), rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip():
    build = builder("cnn6", TINY)
    torch.manual_seed(0)
    fused = FusedNetworkPair(build)
    x, y = batch(8, TINY)
    coteaching_step(fused, torch.optim.SGD(fused.parameters(), lr=0.1), x, y)  # moves the running stats
    state = fused.state_dict()
    assert state["stacked.body.0.weight"].shape == (2, 64, 1, 3, 3)
    assert state["stacked.body.1.running_var"].shape == (2, 64)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    restored = FusedNetworkPair(build)
    restored.load_state_dict(torch.load(buffer))
    for name, value in state.items():
        assert torch.equal(restored.state_dict()[name], value), name
    fused.eval()
    restored.eval()
    with torch.no_grad():
        for expected, actual in zip(fused(x), restored(x), strict=True):
            assert torch.equal(actual, expected)


FAST = ["debug=fast", "method=coteaching", "data=digits"]


def test_lightning_run_fused_coteaching_matches_plain(make_cfg):
    results = run(make_cfg(*FAST, "method.fused=true"))
    written = json.loads((Path(results["run_dir"]) / "results.json").read_text())
    assert written["config"]["method"]["fused"] is True and written["epochs"] == 2
    assert {"test/acc", "test/acc_net2", "train/label_precision"} <= written["metrics"].keys()
    fused_weights = torch.load(Path(results["run_dir"]) / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert fused_weights["nets.stacked.classifier.weight"].shape[0] == 2

    plain = run(make_cfg(*FAST, "method.fused=false"))  # digits uses the mlp: no BN, no dropout
    plain_weights = torch.load(Path(plain["run_dir"]) / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    for key, value in plain_weights.items():
        if key.startswith("nets."):
            _, member, name = key.split(".", 2)
            stacked = fused_weights[f"nets.stacked.{name}"][("first", "second").index(member)]
            torch.testing.assert_close(stacked, value, rtol=1e-5, atol=1e-6, msg=key)
    for key in ("test/acc", "test/acc_net2"):
        assert results["metrics"][key] == pytest.approx(plain["metrics"][key], abs=0.01)
