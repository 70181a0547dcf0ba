"""SOP's loss and per-sample variables, VolMinNet's learned transition matrix, T-Revision's
reweighted loss: hand-computed cases, a known T recovered, rows touched, exact resume."""

import math
from pathlib import Path

import pytest
import torch

from noisylab.methods.sop import sop_loss
from noisylab.methods.t_revision import reweighted_loss
from noisylab.methods.volminnet import diagonally_dominant, transition_error, volmin_loss
from noisylab.train import run
from tests.test_method_contract import FAST, network_weights, stopped_run


def test_sop_loss_and_its_gradients_match_a_hand_computed_case():
    """p = (1/2, 1/4, 1/4), given label 0, u = 0.5, v = (0, 0.2, 0.4), ratio_reg 1:
    U = (0.25, 0, 0), V = (0, 0.04, 0.16), q ∝ (0.75, 0.21, 0.09) with sum S = 1.05;
    L_CE = -log(0.75/1.05); argmax f = 0, so L_MSE = 0.25² + 0.04² + 0.16² = 0.0897.
    ∂L/∂u = -2u/0.75 + 2u/1.05 (the CE term only); ∂L/∂v_c = 4 v_c³ (the MSE term only; v_0
    is masked by the label)."""
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    u = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([[0.3, 0.2, 0.4]], dtype=torch.float64, requires_grad=True)
    loss, parts = sop_loss(logits, torch.tensor([0]), u, v, ratio_reg=1.0)
    assert parts["train/loss_ce"].item() == pytest.approx(-math.log(0.75 / 1.05), abs=1e-12)
    assert parts["train/loss_mse"].item() == pytest.approx(0.0897, abs=1e-12)
    assert loss.item() == pytest.approx(-math.log(0.75 / 1.05) + 0.0897, abs=1e-12)
    loss.backward()
    assert u.grad.item() == pytest.approx(-1 / 0.75 + 1 / 1.05, abs=1e-12)
    assert v.grad.tolist()[0] == pytest.approx([0.0, 4 * 0.2 ** 3, 4 * 0.4 ** 3], abs=1e-12)
    # the network sees q (through p) but not the MSE term: the CE gradient alone
    ce_only = torch.tensor([[math.log(2.0), 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    q = ce_only.softmax(dim=1) + torch.tensor([[0.25, -0.04, -0.16]], dtype=torch.float64)
    (-(q[0, 0] / q.sum()).log()).backward()
    assert torch.allclose(logits.grad, ce_only.grad)


def test_sop_plus_terms():
    """Equal views: no consistency loss; a uniform q: balance = log C. Different views: the KL."""
    y, u, v = torch.tensor([0, 1]), torch.zeros(2, 1), torch.zeros(2, 4)
    logits = torch.zeros(2, 4)
    _, parts = sop_loss(logits, y, u, v, 0.0, ratio_balance=1.0, logits_second_view=logits, ratio_consistency=1.0)
    assert parts["train/loss_consistency"].item() == pytest.approx(0.0, abs=1e-7)
    assert parts["train/loss_balance"].item() == pytest.approx(math.log(4), abs=1e-6)
    second = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2)
    _, parts = sop_loss(logits, y, u, v, 0.0, ratio_balance=0.0, logits_second_view=second, ratio_consistency=1.0)
    log_q2 = second.log_softmax(dim=1)[0]
    assert parts["train/loss_consistency"].item() == pytest.approx(-(0.25 * (log_q2 - math.log(0.25))).sum().item())


ROWS: list[tuple[torch.Tensor, dict, dict]] = []


def watch_rows():
    """Records u and v before and after each training step, with the batch's indices."""
    from pytorch_lightning import Callback

    class _Watch(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.before = {name: getattr(module, name).detach().clone() for name in ("u", "v")}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            after = {name: getattr(module, name).detach().clone() for name in ("u", "v")}
            ROWS.append((batch["index"].cpu(), self.before, after))

    return _Watch()


def test_sop_moves_only_the_batch_rows_and_resumes_exactly(make_cfg, one_thread):
    """Every step moves u on the batch's rows and no other row of u or v; a run killed after
    epoch 2 of 3 and resumed ends where the whole run ends (u, v, network, metrics)."""
    ROWS.clear()
    base = [*FAST, "method=sop", "protocol.epochs=3"]
    whole = run(make_cfg(*base, "+callbacks.rows._target_=tests.test_sop_transition.watch_rows"))
    assert len(ROWS) >= 10
    for index, before, after in ROWS:
        outside = torch.ones(len(before["u"]), dtype=torch.bool)
        outside[index] = False
        for name in ("u", "v"):
            assert torch.equal(before[name][outside], after[name][outside]), name
        assert (before["u"][index] != after["u"][index]).all()
    assert any((before["v"][index] != after["v"][index]).any() for index, before, after in ROWS)

    stopped = stopped_run(make_cfg(*base, "+callbacks.stop._target_=tests.test_method_contract.stop_after",
                           "+callbacks.stop.epochs=2"))
    resumed = run(make_cfg(*base, f"ckpt_path={stopped['run_dir']}/checkpoints/last.ckpt"))
    assert resumed["epochs"] == 3
    states = same_end(whole, resumed)
    for name in ("u", "v"):
        assert torch.equal(states[0][name], states[1][name]), name


def same_end(whole: dict, resumed: dict) -> list[dict]:
    """Asserts equal metrics and network weights; returns both runs' last state dicts."""
    for key, value in whole["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    paths = [Path(r["run_dir"]) / "checkpoints" / "last.ckpt" for r in (whole, resumed)]
    weights = network_weights(paths[1])
    for name, tensor in network_weights(paths[0]).items():
        assert torch.allclose(tensor, weights[name]), name
    return [torch.load(path, weights_only=False)["state_dict"] for path in paths]


def separable_noisy_data(truth: torch.Tensor, n: int = 3000):
    """Three well-separated clusters on a circle; labels flipped by ``truth``."""
    generator = torch.Generator().manual_seed(0)
    y_true = torch.randint(0, len(truth), (n,), generator=generator)
    angles = y_true.double() * (2 * math.pi / len(truth))
    x = 3 * torch.stack([angles.cos(), angles.sin()], 1) + 0.3 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x, torch.multinomial(truth[y_true], 1, generator=generator).squeeze(1)


def test_volminnet_recovers_a_known_transition_matrix():
    """A linear classifier and T learned together (VolMinNet's loss, Adam) on separable data
    with a cyclic 30% flip: T, started near the identity, comes within 5% of the truth (the
    code's error ‖T̂ − T‖₁/‖T‖₁; 0.41 at the start). λ = 1e-2, larger than the paper's 1e-4, so
    that 300 full-batch steps suffice."""
    torch.manual_seed(0)
    truth = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.7, 0.3], [0.3, 0.0, 0.7]], dtype=torch.float64)
    x, y = separable_noisy_data(truth)
    net = torch.nn.Linear(2, 3).double()
    weights = torch.nn.Parameter(torch.full((3, 3), -2.0, dtype=torch.float64))
    assert transition_error(diagonally_dominant(weights).detach(), truth).item() > 0.4
    optimizer = torch.optim.Adam([*net.parameters(), weights], lr=0.05)
    for _ in range(300):
        loss, _ = volmin_loss(net(x), y, diagonally_dominant(weights), 1e-2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert transition_error(diagonally_dominant(weights).detach(), truth).item() < 0.05


def test_volminnet_transition_is_row_stochastic_and_starts_near_identity():
    transition = diagonally_dominant(torch.full((4, 4), -2.0))
    off = 1 / (1 + math.exp(2.0))
    assert torch.allclose(transition.sum(dim=1), torch.ones(4))
    assert transition[0, 0].item() == pytest.approx(1 / (1 + 3 * off))
    assert transition[0, 1].item() == pytest.approx(off / (1 + 3 * off))
    loss, parts = volmin_loss(torch.zeros(1, 4), torch.tensor([2]), torch.eye(4) * 0.5 + 0.125, 0.1)
    # p uniform: (p^T T)_y = 1/4; det(0.5 I + 0.125·11^T) = 0.5³·(0.5 + 4·0.125)
    assert loss.item() == pytest.approx(math.log(4) + 0.1 * math.log(0.5 ** 3 * 1.0), abs=1e-6)


def test_t_revision_reweighted_loss_matches_a_hand_computed_case():
    """p = (0.5, 0.3, 0.2), y = 1, T with rows (0.8, 0.2, 0), (0.1, 0.9, 0), (0, 0.3, 0.7):
    (T^T p)_1 = 0.5·0.2 + 0.3·0.9 + 0.2·0.3 = 0.43, β = 0.3/0.43, L = β·(-log 0.3). In the
    reweighting stage β is a constant; in the revision stage ∂L/∂T_i1 = -CE·β·p_i/0.43."""
    logits = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64).log().requires_grad_(True)
    transition = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]], dtype=torch.float64,
                              requires_grad=True)
    beta, ce = 0.3 / 0.43, -math.log(0.3)
    loss, weights = reweighted_loss(logits, torch.tensor([1]), transition)
    assert weights.item() == pytest.approx(beta) and loss.item() == pytest.approx(beta * ce)
    loss.backward()
    assert transition.grad is None  # constant β: T gets no gradient
    # the network's gradient is β times CE's: (p - onehot(y))·β
    assert logits.grad.tolist()[0] == pytest.approx([0.5 * beta, (0.3 - 1) * beta, 0.2 * beta])
    loss, _ = reweighted_loss(logits, torch.tensor([1]), transition, weight_gradient=True)
    loss.backward()
    expected = [-ce * beta * p / 0.43 for p in (0.5, 0.3, 0.2)]
    assert transition.grad[:, 1].tolist() == pytest.approx(expected)
    assert transition.grad[:, [0, 2]].abs().sum().item() == 0.0


def test_t_revision_resumes_exactly_inside_the_revision_stage(make_cfg, one_thread):
    """Stages of 1, 1 and 2 epochs, killed after epoch 3 (inside the revision): the resumed run
    keeps T̂, ΔT and Adam's state and ends where the whole run ends."""
    base = [*FAST, "method=t_revision", "protocol.epochs=4", "method.estimate_epochs=1", "method.reweight_epochs=1",
            "method.revision_lr=0.01", "method.slack_optimizer.lr=0.01"]
    whole = run(make_cfg(*base))
    stopped = stopped_run(make_cfg(*base, "+callbacks.stop._target_=tests.test_method_contract.stop_after",
                           "+callbacks.stop.epochs=3"))
    resumed = run(make_cfg(*base, f"ckpt_path={stopped['run_dir']}/checkpoints/last.ckpt"))
    states = same_end(whole, resumed)
    assert not torch.equal(states[0]["estimated_transition"], torch.eye(10))  # T̂ was estimated
    assert states[0]["slack"].abs().sum() > 0  # ΔT was learned
    for name in ("estimated_transition", "slack"):
        assert torch.allclose(states[0][name], states[1][name]), name
