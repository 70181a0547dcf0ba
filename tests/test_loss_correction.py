"""Bootstrapping, SCE and GCE: the losses against their formulas computed by hand, and
truncated GCE's pruning of the training set."""

import math

import pytest
import torch

from noisylab.methods.bootstrap import bootstrap_loss
from noisylab.methods.gce import GeneralizedCrossEntropy, lq_loss, truncation_weights
from noisylab.methods.sce import CODE_A, sce_loss
from tests.conftest import tiny_method

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
Y = torch.tensor([0, 2, 0, 1])


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


PROBS = [softmax(row) for row in LOGITS.tolist()]


@pytest.mark.parametrize("hard,beta", [(False, 0.95), (True, 0.8)])
def test_bootstrap_matches_its_formula(hard, beta):
    expected = []
    for p, y in zip(PROBS, Y.tolist()):
        own = [1.0 if k == max(range(3), key=p.__getitem__) else 0.0 for k in range(3)] if hard else p
        target = [beta * (k == y) + (1 - beta) * own[k] for k in range(3)]
        expected.append(-sum(t * math.log(q) for t, q in zip(target, p)))
    assert bootstrap_loss(LOGITS, Y, beta, hard).item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    assert bootstrap_loss(LOGITS, Y, 1.0, hard).item() == pytest.approx(
        torch.nn.functional.cross_entropy(LOGITS, Y).item(), rel=1e-6)  # beta = 1: plain CE


def test_soft_bootstrap_target_carries_a_gradient_unless_detached():
    logits = LOGITS.clone().requires_grad_(True)
    bootstrap_loss(logits, Y, 0.0, hard=False).backward()  # pure entropy minimisation
    through_target = logits.grad.clone()
    logits.grad = None
    bootstrap_loss(logits, Y, 0.0, hard=False, detach_target=True).backward()
    assert not torch.allclose(through_target, logits.grad)


def test_sce_matches_its_formula_with_the_papers_and_the_codes_A():
    alpha, beta = 0.1, 1.0
    for log_zero in (-4.0, CODE_A):
        expected = sum(alpha * -math.log(p[y]) + beta * -log_zero * (1 - p[y]) for p, y in zip(PROBS, Y.tolist())) / 4
        assert sce_loss(LOGITS, Y, alpha, beta, log_zero).item() == pytest.approx(expected, rel=1e-5)
    assert CODE_A == pytest.approx(-9.2103, abs=1e-4)


def test_lq_matches_its_formula_and_its_limits():
    q = 0.7
    expected = [(1 - p[y] ** q) / q for p, y in zip(PROBS, Y.tolist())]
    assert lq_loss(LOGITS, Y, q).tolist() == pytest.approx(expected, rel=1e-5)
    assert lq_loss(LOGITS, Y, 1.0).tolist() == pytest.approx([1 - p[y] for p, y in zip(PROBS, Y.tolist())], rel=1e-5)
    ce = torch.nn.functional.cross_entropy(LOGITS, Y, reduction="none")
    assert lq_loss(LOGITS, Y, 1e-4).tolist() == pytest.approx(ce.tolist(), rel=1e-3)  # q -> 0: CE


def test_truncated_gce_prunes_the_samples_at_or_below_k_on_schedule(monkeypatch):
    method = tiny_method(GeneralizedCrossEntropy, train_size=4, truncated=True, start_prune=2, prune_every=3)
    assert [round(p[y], 3) for p, y in zip(PROBS, Y.tolist())] == [0.786, 0.367, 0.017, 0.333]
    cross_entropy = torch.nn.functional.cross_entropy(LOGITS, Y, reduction="none")
    assert truncation_weights(cross_entropy, 0.5).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert truncation_weights(cross_entropy, 0.3).tolist() == [1.0, 1.0, 0.0, 1.0]

    passes = []
    monkeypatch.setattr(method, "training_set_pass",
                        lambda net, augment=False: passes.append(augment) or (LOGITS, cross_entropy))
    monkeypatch.setattr(type(method), "current_epoch", property(lambda self: self._epoch))
    monkeypatch.setattr("noisylab.methods.base.LNLMethod.on_train_epoch_start", lambda self: None)
    pruned_at = []
    for epoch in range(9):
        method._epoch = epoch
        before = len(passes)
        method.on_train_epoch_start()
        if len(passes) > before:
            pruned_at.append(epoch)
    assert pruned_at == [2, 5, 8]
    assert all(passes)  # on augmented images, as the reference's pass over its training loader
    from tests.conftest import method_defaults

    assert method_defaults(GeneralizedCrossEntropy)["start_prune"] == 39  # the reference's first pruning: (39 + 1) % 10 == 0
    assert method.weight.tolist() == [1.0, 0.0, 0.0, 0.0] and torch.equal(method.clean_score(), method.weight)


def test_mixup_mixes_inputs_and_labels_with_one_lambda():
    from noisylab.methods.mixup import mixup_loss

    net = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(3))  # logits = inputs
    x, y, perm, lam = LOGITS[:3], Y[:3], torch.tensor([2, 0, 1]), 0.3
    mixed = lam * x + (1 - lam) * x[perm]
    expected = 0.0
    for i in range(3):
        p = softmax(mixed[i].tolist())
        expected += lam * -math.log(p[y[i]]) + (1 - lam) * -math.log(p[y[perm[i]]])
    assert mixup_loss(net, x, y, lam, perm).item() == pytest.approx(expected / 3, rel=1e-5)
    assert mixup_loss(net, x, y, 1.0, perm).item() == pytest.approx(
        torch.nn.functional.cross_entropy(x, y).item(), rel=1e-6)  # lambda = 1: plain CE


T = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.2, 0.0, 0.8]])


def test_forward_and_backward_losses_match_their_formulas():
    from noisylab.methods.loss_correction import backward_loss, forward_loss

    inverse = torch.linalg.inv(T).tolist()
    forward, backward = 0.0, 0.0
    for p, y in zip(PROBS, Y.tolist()):
        forward += -math.log(sum(p[i] * T[i, y].item() for i in range(3)))
        backward += -sum(inverse[y][j] * math.log(p[j]) for j in range(3))
    assert forward_loss(LOGITS, Y, T).item() == pytest.approx(forward / 4, rel=1e-5)
    assert backward_loss(LOGITS, Y, T).item() == pytest.approx(backward / 4, rel=1e-4)
    ce = torch.nn.functional.cross_entropy(LOGITS, Y).item()
    assert forward_loss(LOGITS, Y, torch.eye(3)).item() == pytest.approx(ce, rel=1e-5)
    assert backward_loss(LOGITS, Y, torch.eye(3)).item() == pytest.approx(ce, rel=1e-5)


def test_the_transition_estimate_takes_anchors_below_the_percentile_on_a_copy():
    import numpy as np

    from noisylab.methods.loss_correction import estimate_transition

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=200)
    probs[7] = [0.999, 0.001, 0.0]       # an outlier: the plain argmax anchor of class 0
    plain = estimate_transition(probs, filter_outlier=False)
    assert np.allclose(plain[0], probs[7])
    filtered = estimate_transition(probs, filter_outlier=True, percentile=97.0)
    column = probs[:, 0]
    below = np.where(column < np.percentile(column, 97.0, method="higher"), column, 0.0)
    assert np.allclose(filtered[0], probs[np.argmax(below)] / probs[np.argmax(below)].sum())
    for i in (1, 2):  # later classes see the untouched probabilities (the code's in-place view does not)
        col = probs[:, i]
        anchor = np.argmax(np.where(col < np.percentile(col, 97.0, method="higher"), col, 0.0))
        assert np.allclose(filtered[i], probs[anchor])
    assert np.allclose(filtered.sum(axis=1), 1.0)


def test_the_oracle_uses_the_realised_transition_and_skips_the_estimate_stage():
    from noisylab.methods.contract import RunFacts
    from noisylab.methods.loss_correction import LossCorrection
    from tests.conftest import method_defaults

    facts = RunFacts(num_classes=3, input_shape=(8,), train_size=8, max_epochs=5, transition=tuple(map(tuple, T.tolist())))
    method = LossCorrection(facts=facts, model={"name": "mlp", "hidden": [4]}, protocol={"optimizer": {"lr": 1e-3}},
                            **{**method_defaults(LossCorrection), "transition": "oracle"})
    assert torch.allclose(method.transition, T) and [s.name for s in method.stages()] == ["corrected"]
    estimated = LossCorrection(facts=facts, model={"name": "mlp", "hidden": [4]}, protocol={"optimizer": {"lr": 1e-3}},
                               **{**method_defaults(LossCorrection), "estimate_epochs": 2})
    assert torch.equal(estimated.transition, torch.eye(3))
    assert [(s.stage.name, s.start, s.end) for s in estimated.stage_spans] == [("estimate", 0, 2), ("corrected", 2, 5)]


def test_the_transition_estimate_recovers_a_known_t_from_oracle_probabilities():
    """p(ỹ|x) = Tᵀ p(y|x); for a sample of class i beyond doubt it is row i of T, and with T
    diagonally dominant it maximises p(ỹ = i|x): the anchor estimator returns T."""
    import numpy as np

    from noisylab.methods.loss_correction import estimate_transition

    T = np.array([[0.6, 0.3, 0.1], [0.05, 0.7, 0.25], [0.2, 0.1, 0.7]])
    rng = np.random.default_rng(1)
    clean = rng.dirichlet(np.ones(3), size=400)
    anchors = np.repeat(np.eye(3), 30, axis=0) * rng.uniform(0.97, 1.0, size=(90, 1))
    anchors += (1 - anchors.sum(axis=1, keepdims=True)) / 3  # near-certain samples of each class
    noisy = np.concatenate([clean, anchors]) @ T
    assert np.allclose(estimate_transition(noisy, filter_outlier=False), T, atol=0.02)
    assert np.allclose(estimate_transition(noisy, filter_outlier=True, percentile=97.0), T, atol=0.03)


def test_official_probability_clip_bounds_the_backward_loss():
    """quirk probability_clip: p clamped to [1e-7, 1 - 1e-7] (the Keras code's epsilon), so
    the backward loss, unbounded below without it, stops at the clipped value."""
    from noisylab.methods.loss_correction import LossCorrection, backward_loss, forward_loss

    transition = torch.tensor([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    inverse = torch.linalg.inv(transition).tolist()  # diagonal 2.5, off-diagonal -0.5
    logits, y = torch.tensor([[500.0, 0.0, -500.0]]), torch.tensor([0])
    eps = 1e-7
    clipped = -(inverse[0][0] * math.log(1 - eps) + inverse[0][1] * math.log(eps) + inverse[0][2] * math.log(eps))
    assert backward_loss(logits, y, transition, clip=True).item() == pytest.approx(clipped, rel=1e-4)
    unclipped = -(inverse[0][1] * -500.0 + inverse[0][2] * -1000.0)  # log p = z - 500
    assert backward_loss(logits, y, transition).item() == pytest.approx(unclipped, rel=1e-4)
    assert unclipped == pytest.approx(-750) and clipped == pytest.approx(-16.12, abs=0.01)  # the bound: ln(1e-7)
    assert forward_loss(logits, y, transition, clip=True).item() == pytest.approx(
        -math.log(0.6 * (1 - eps) + 0.2 * eps + 0.2 * eps), rel=1e-5)
    assert tiny_method(LossCorrection, quirks="official", direction="backward").quirks == {"probability_clip"}


def test_truncated_gce_says_when_it_pruned_every_sample(make_cfg, one_thread, caplog):
    """k near 1 on an untrained network: every p_y <= k, every weight 0, and one line says so."""
    from noisylab.train import run

    with caplog.at_level("WARNING", logger="noisylab"):
        run(make_cfg("method=gce", "data=digits", "debug=fast", "protocol.epochs=1", "method.truncated=true",
                     "method.k=0.99", "method.start_prune=0", "method.prune_every=1"))
    assert "pruned every training sample at epoch 0" in caplog.text
