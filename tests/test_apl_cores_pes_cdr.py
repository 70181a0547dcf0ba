"""APL's normalised losses against their closed forms, CORES²'s regulariser, sieve and prior on a
hand case, CDR's gradient mask, PES's layer groups, selection and class weights."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisylab.methods.apl import (
    CODE_A,
    apl_loss,
    mean_absolute_error,
    normalized_cross_entropy,
    normalized_focal,
    reverse_cross_entropy,
)
from noisylab.methods.cdr import critical_masks
from noisylab.methods.cores import beta_at, cores_loss, updated_prior
from noisylab.methods.pes import class_weights, confident_selection, layer_groups, renewed_modules
from noisylab.models import build_model

# two samples, three classes: p = (0.5, 0.3, 0.2) and (0.1, 0.1, 0.8), labels 0 and 1
P = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64)
LOGITS, Y = P.log(), torch.tensor([0, 1])


def test_nce_is_the_label_log_probability_over_the_sum_of_all():
    expected = [math.log(0.5) / math.log(0.5 * 0.3 * 0.2), math.log(0.1) / math.log(0.1 * 0.1 * 0.8)]
    assert normalized_cross_entropy(LOGITS, Y).tolist() == pytest.approx(expected)
    # its sum over all labels is 1 (the normalisation), and a near one-hot prediction of the label gives ~0
    total = sum(normalized_cross_entropy(LOGITS, torch.tensor([k, k])) for k in range(3))
    assert total.tolist() == pytest.approx([1.0, 1.0])
    sharp = torch.tensor([[30.0, 0.0, 0.0]])
    assert float(normalized_cross_entropy(sharp, torch.tensor([0]))) < 1e-12


def test_nfl_weights_each_log_by_its_focal_factor():
    g = 0.5
    focal = [-(1 - p) ** g * math.log(p) for p in (0.5, 0.3, 0.2)]
    assert float(normalized_focal(LOGITS[:1], Y[:1], g)) == pytest.approx(focal[0] / sum(focal))
    assert normalized_focal(LOGITS, Y, 0.0).tolist() == pytest.approx(normalized_cross_entropy(LOGITS, Y).tolist())
    # the code's detached weights: the same value, another gradient
    free, fixed = (LOGITS.clone().requires_grad_() for _ in range(2))
    assert float(normalized_focal(free, Y, g).sum()) == pytest.approx(float(normalized_focal(fixed, Y, g, True).sum()))
    normalized_focal(free, Y, g).sum().backward()
    normalized_focal(fixed, Y, g, True).sum().backward()
    assert not torch.allclose(free.grad, fixed.grad)


def test_rce_is_minus_a_times_one_minus_p_y_and_mae_one_minus_p_y():
    assert reverse_cross_entropy(LOGITS, Y, -4.0).tolist() == pytest.approx([4 * 0.5, 4 * 0.9])
    assert reverse_cross_entropy(LOGITS, Y, CODE_A, clamp=True).tolist() == pytest.approx(
        [-math.log(1e-4) * 0.5, -math.log(1e-4) * 0.9])
    # the code's RCE literally: -sum p·log clamp(onehot, 1e-4)
    code = -(P.clamp(min=1e-7) * F.one_hot(Y, 3).double().clamp(min=1e-4).log()).sum(1)
    assert reverse_cross_entropy(LOGITS, Y, CODE_A, clamp=True).tolist() == pytest.approx(code.tolist())
    assert mean_absolute_error(LOGITS, Y).tolist() == pytest.approx([0.5, 0.9])


def test_apl_adds_alpha_active_and_beta_passive_batch_means():
    nce, rce = normalized_cross_entropy(LOGITS, Y).mean(), reverse_cross_entropy(LOGITS, Y).mean()
    assert float(apl_loss(LOGITS, Y, "nce+rce", 2.0, 0.5)) == pytest.approx(float(2 * nce + 0.5 * rce))
    assert float(apl_loss(LOGITS, Y, "nfl+mae", 1.0, 3.0, gamma=0.0)) == pytest.approx(
        float(nce + 3 * mean_absolute_error(LOGITS, Y).mean()))
    assert float(apl_loss(LOGITS, Y, "rce", 7.0, 1.0, official=frozenset({"rce_clamp"}))) == pytest.approx(
        -CODE_A * 0.7)


def test_cores_regulariser_sieve_and_prior_on_a_hand_case():
    prior = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    loss, kept, criterion = cores_loss(LOGITS, Y, 2.0, prior, sieve=True)
    ce = torch.tensor([-math.log(0.5), -math.log(0.1)], dtype=torch.float64)
    log_all = -(P + 1e-8).log()
    assert criterion.tolist() == pytest.approx((ce - log_all.mean(1)).tolist(), abs=1e-6)
    # sample 0: CE 0.69 < mean 1.17 -> kept; sample 1: CE 2.30 > mean 1.61 -> sieved out
    assert kept.tolist() == [True, False]
    assert float(loss) == pytest.approx(float(ce[0] - 2.0 * (prior * log_all[0]).sum()), abs=1e-6)
    everything, kept_all, _ = cores_loss(LOGITS, Y, 0.0, prior, sieve=False)
    assert kept_all.all() and float(everything) == pytest.approx(float(ce.mean()), abs=1e-6)
    # the prior: N·pi_0 less the sieved-out counts by label, normalised
    assert updated_prior(prior, 8, torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)).tolist() == \
        pytest.approx([2 / 6, 2 / 6, 2 / 6])


def test_cores_beta_schedule_is_the_codes_linspace():
    # the code: linspace(0, 0, 10), linspace(0, 2, 30), 2 after
    assert [beta_at(e, 2.0, 10, 30) for e in (0, 9, 10, 11, 39, 40, 99)] == pytest.approx(
        [0, 0, 0, 2 / 29, 2, 2, 2])


def test_cdr_keeps_the_largest_weight_times_gradient_fraction():
    w = [torch.tensor([[1.0, -2.0], [3.0, 0.5]]), torch.tensor([4.0, 0.1, -1.0, 2.0]).reshape(2, 2)]
    g = [torch.tensor([[0.5, 0.5], [-0.1, 1.0]]), torch.tensor([0.05, 10.0, 0.2, -0.1]).reshape(2, 2)]
    # |w·g| = [0.5, 1.0, 0.3, 0.5] and [0.2, 1.0, 0.2, 0.2]: the 4 largest of 8 are 1.0, 1.0, 0.5, 0.5
    masks = critical_masks(w, g, 0.5)
    assert masks[0].tolist() == [[True, True], [False, True]]
    assert masks[1].tolist() == [[False, True], [False, False]]
    assert sum(int(m.sum()) for m in critical_masks(w, g, 0.25)) == 2  # 1.0 and 1.0
    assert all(m.all() for m in critical_masks(w, g, 1.0))


def test_pes_layer_groups_selection_and_class_weights():
    resnet = build_model("preact_resnet18", (3, 32, 32), 10)
    assert layer_groups(resnet) == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    assert renewed_modules(resnet, 1) == ["layer4", "classifier"] and renewed_modules(resnet, 0) == ["classifier"]
    mlp = build_model("mlp", (1, 8, 8), 10, hidden=[32, 16])
    assert layer_groups(mlp) == ["body.1", "body.3"]
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 0, 1])
    selected = confident_selection(logits, y)
    assert selected.tolist() == [True, False, True, False]
    assert class_weights(y, selected, 3).tolist() == [1.0, 0.0, 0.0]  # class 0 only: mean 2 / 2
    assert class_weights(torch.tensor([0, 0, 0, 1]), torch.ones(4, dtype=torch.bool), 2).tolist() == pytest.approx([2 / 3, 2.0])


def test_pes_reinitialises_only_the_later_layers(make_cfg, one_thread):
    from noisylab.train import build_datamodule, build_method

    cfg = make_cfg("method=pes", "data=digits", "model=mlp", "+model.hidden=[32,16]")
    method = build_method(cfg, build_datamodule(cfg))
    before = {k: v.clone() for k, v in method.net.state_dict().items()}
    fresh = method.build_network()
    for module in renewed_modules(method.net, 1):
        method.net.get_submodule(module).load_state_dict(fresh.get_submodule(module).state_dict())
    after = method.net.state_dict()
    assert torch.equal(after["body.1.weight"], before["body.1.weight"])
    assert not torch.equal(after["body.3.weight"], before["body.3.weight"])
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    assert isinstance(method.net.get_submodule("classifier"), nn.Linear)
