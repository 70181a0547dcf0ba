"""Self-paced, Decoupling, Co-teaching+ and JoCoR on hand-made batches; the forget-rate
schedules against their formulas; each method trained end to end on digits; the reduced
reproduction sweep and the report."""

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from noisylab import report as report_module
from noisylab.methods.coteaching_plus import CoTeachingPlus, disagreement_cross_update
from noisylab.methods.decoupling import Decoupling, decoupling_losses, disagreement_mask
from noisylab.methods.jocor import jocor_loss
from noisylab.methods.selection import small_loss_indices
from noisylab.methods.selfpaced import self_paced_loss
from noisylab.schedules import build_schedule
from noisylab.train import config_dir, run
from tests.conftest import tiny_method

B, C = 8, 3
METHODS = ["selfpaced", "decoupling", "coteaching_plus", "jocor"]


def linear_net(columns):
    """A one-hot-input linear net: sample i's logits are ``columns[i]`` (a length-C list), and
    weight column i affects sample i only, so the columns a gradient touches are the samples
    a loss used."""
    net = torch.nn.Linear(len(columns), C, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(columns, dtype=torch.float32).T)
    return net


def touched(net) -> list[int]:
    return (net.weight.grad.abs().sum(0) > 0).nonzero().flatten().tolist()


def label_logit_net(correct_logit):
    """Logit ``correct_logit[i]`` for class 0 (every label is 0), 0 elsewhere: a larger
    value means a smaller loss."""
    return linear_net([[v, 0.0, 0.0] for v in correct_logit])


# ------------------------------------------------------------------------- self-paced
def test_self_paced_keeps_its_own_smallest_losses_and_trains_on_them_only():
    x, y = torch.eye(B), torch.zeros(B, dtype=torch.long)
    f = label_logit_net([1, 8, 2, 7, 3, 6, 4, 5])  # own ranking: 1, 3, 5, 7, 6, 4, 2, 0
    for forget, expected in ((0.5, [1, 3, 5, 7]), (0.25, [1, 3, 5, 6, 7, 4]), (0.0, list(range(B)))):
        f.zero_grad()
        loss, kept = self_paced_loss(f(x), y, forget)
        assert len(kept) == int((1 - forget) * B)  # R(T) = 1 - forget(T) of the batch
        assert sorted(kept.tolist()) == sorted(expected)
        loss.backward()
        assert touched(f) == sorted(expected)  # its own choice, no peer
        by_hand = torch.nn.functional.cross_entropy(f(x)[sorted(expected)], y[sorted(expected)])
        assert loss.item() == pytest.approx(by_hand.item())


# ------------------------------------------------------------------------- Decoupling
def predicting(classes, margin=4.0):
    """Logits whose argmax for sample i is classes[i] (labels all 0: loss grows with the
    distance from class 0)."""
    return [[margin if k == c else 0.1 * i for k in range(C)] for i, c in enumerate(classes)]


def test_decoupling_updates_both_networks_on_the_disagreement_set_only():
    x, y = torch.eye(B), torch.zeros(B, dtype=torch.long)
    f = linear_net(predicting([0, 0, 1, 1, 2, 2, 0, 1]))
    g = linear_net(predicting([0, 1, 1, 2, 2, 0, 0, 1]))
    logits_f, logits_g = f(x), g(x)
    mask = disagreement_mask(logits_f, logits_g)
    assert mask.nonzero().flatten().tolist() == [1, 3, 5]
    loss_f, loss_g, chosen = decoupling_losses(logits_f, logits_g, y, mask, min_batch_fraction=0.1)
    assert chosen.tolist() == [1, 3, 5]
    (loss_f + loss_g).backward()
    assert touched(f) == [1, 3, 5] and touched(g) == [1, 3, 5]
    ce = torch.nn.functional.cross_entropy(logits_f.detach(), y, reduction="none")
    assert loss_f.item() == pytest.approx(ce[[1, 3, 5]].sum().item() / 3)  # max(0.1 * 8, 3) = 3
    # a small update set is divided by min_batch_fraction * B instead (the paper's floor)
    loss_f, _, _ = decoupling_losses(logits_f.detach(), logits_g.detach(), y, mask, min_batch_fraction=0.5)
    assert loss_f.item() == pytest.approx(ce[[1, 3, 5]].sum().item() / 4)
    # full agreement: nothing to learn from
    loss_f, loss_g, chosen = decoupling_losses(logits_f, logits_f, y, disagreement_mask(logits_f, logits_f), 0.1)
    assert len(chosen) == 0 and loss_f.item() == 0.0


# ---------------------------------------------------------------------- Co-teaching+
def coteaching_plus_pair():
    """Samples 0-5 in the disagreement set, 6 and 7 agreed (and have the smallest losses of
    all, so plain Co-teaching would pick them). Within D': f ranks 0, 1, 2 smallest and
    g ranks 3, 4, 5 smallest."""
    f = linear_net([[3, 0, 0], [2, 0, 0], [1, 0, 0], [0, 1, 0], [0, 2, 0], [0, 3, 0], [9, 0, 0], [9, 0, 0]])
    g = linear_net([[0, 1, 0], [0, 2, 0], [0, 3, 0], [3, 0, 0], [2, 0, 0], [1, 0, 0], [9, 0, 0], [9, 0, 0]])
    return f, g


def test_coteaching_plus_selects_inside_the_disagreement_set_and_trains_the_peer():
    x, y = torch.eye(B), torch.zeros(B, dtype=torch.long)
    f, g = coteaching_plus_pair()
    loss_f, loss_g, kept_by_f, kept_by_g, disagree = disagreement_cross_update(f(x), g(x), y, forget_rate=0.5)
    assert disagree.tolist() == [0, 1, 2, 3, 4, 5]
    assert sorted(kept_by_f.tolist()) == [0, 1, 2]  # floor((1 - 0.5) * |D'|) = 3, from D' only
    assert sorted(kept_by_g.tolist()) == [3, 4, 5]
    (loss_f + loss_g).backward()
    assert touched(f) == [3, 4, 5]  # f learns from g's choice
    assert touched(g) == [0, 1, 2]  # g learns from f's choice
    assert loss_f.item() == pytest.approx(torch.nn.functional.cross_entropy(f(x)[3:6], y[3:6]).item())
    # the kept count follows |D'|, not |B|: floor(0.8 * 6) = 4, floor(0.6 * 6) = 3
    for forget, count in ((0.2, 4), (0.4, 3), (0.0, 6)):
        *_, kept_by_f, kept_by_g, _ = disagreement_cross_update(f(x), g(x), y, forget)
        assert len(kept_by_f) == len(kept_by_g) == count
        assert set(kept_by_f.tolist()) <= set(range(6)) and set(kept_by_g.tolist()) <= set(range(6))
    assert disagreement_cross_update(f(x), f(x), y, 0.5) is None  # full agreement


def build_method(cls, **extra):
    return tiny_method(cls, train_size=B, num_classes=C, **extra)


def record_steps(method, monkeypatch) -> list:
    steps = []
    monkeypatch.setattr(method, "step", lambda loss: steps.append(float(loss)))
    monkeypatch.setattr(method, "log", lambda *a, **k: None)
    monkeypatch.setattr(method, "log_dict", lambda *a, **k: None)
    return steps


@pytest.mark.parametrize("warmup_steps,updates", [(0, 0), (5, 1)])
def test_coteaching_plus_without_disagreement_trains_on_the_batch_only_during_warmup(
        monkeypatch, warmup_steps, updates):
    schedule = OmegaConf.create({"name": "coteaching", "tau": None, "num_gradual": 10, "exponent": 1})
    method = build_method(CoTeachingPlus, schedule=schedule, init_epoch=0, warmup_steps=warmup_steps)
    method.nets.second.load_state_dict(method.nets.first.state_dict())  # identical nets agree everywhere
    steps = record_steps(method, monkeypatch)
    batch = {"x": torch.eye(B), "y": torch.arange(B) % C, "index": torch.arange(B), "y_true": torch.arange(B) % C}
    method.training_step(batch, 0)
    assert len(steps) == updates


@pytest.mark.parametrize("warmup_steps,updates", [(0, 0), (5, 1)])
def test_decoupling_warmup_updates_on_all_samples(monkeypatch, warmup_steps, updates):
    method = build_method(Decoupling, warmup_steps=warmup_steps)
    method.nets.second.load_state_dict(method.nets.first.state_dict())
    steps = record_steps(method, monkeypatch)
    batch = {"x": torch.eye(B), "y": torch.arange(B) % C, "index": torch.arange(B), "y_true": torch.arange(B) % C}
    method.training_step(batch, 0)
    assert len(steps) == updates


# ---------------------------------------------------------------------------- JoCoR
def test_jocor_joint_loss_matches_the_formula_by_hand_and_selects_the_smallest():
    logits1 = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    logits2 = torch.tensor([[1.5, 1.0, -0.5], [0.3, -0.2, 0.1], [2.0, 0.0, 0.5], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 2, 1, 0])
    lam = 0.3

    def softmax(row):
        exps = [math.exp(v) for v in row]
        return [e / sum(exps) for e in exps]

    expected = []
    for i in range(4):
        p1, p2 = softmax(logits1[i].tolist()), softmax(logits2[i].tolist())
        ce = -math.log(p1[y[i]]) - math.log(p2[y[i]])
        kl12 = sum(p1[k] * math.log(p1[k] / p2[k]) for k in range(C))
        kl21 = sum(p2[k] * math.log(p2[k] / p1[k]) for k in range(C))
        expected.append((1 - lam) * ce + lam * (kl12 + kl21))
    joint = jocor_loss(logits1, logits2, y, co_lambda=lam)
    assert joint.tolist() == pytest.approx(expected, rel=1e-5)
    kept = small_loss_indices(joint, forget_rate=0.5)
    assert sorted(kept.tolist()) == sorted(sorted(range(4), key=expected.__getitem__)[:2])


def test_jocor_co_regularisation_reaches_both_networks():
    logits1 = torch.randn(5, C, generator=torch.Generator().manual_seed(0), requires_grad=True)
    logits2 = torch.randn(5, C, generator=torch.Generator().manual_seed(1), requires_grad=True)
    jocor_loss(logits1, logits2, torch.zeros(5, dtype=torch.long), co_lambda=1.0).sum().backward()
    assert logits1.grad.abs().sum() > 0 and logits2.grad.abs().sum() > 0  # no detach on either side


def test_jocor_step_equals_the_official_loss_jocor_retyped():
    """The official algorithm/loss.py (hongxin001/JoCoR) re-typed: kl_loss_compute(pred, soft)
    = sum_k KL-div(log_softmax(pred), softmax(soft)), no detach; the joint loss, argsort, the
    mean over int(remember·B) smallest. Ours (jocor_loss, small_loss_indices, the mean) gives
    the same loss, the same kept set and the same gradients, on pair-45-like labels."""
    import torch.nn.functional as F

    def kl_loss_compute(pred, soft_targets):
        return torch.sum(F.kl_div(F.log_softmax(pred, dim=1), F.softmax(soft_targets, dim=1), reduction="none"), 1)

    def loss_jocor(y_1, y_2, t, forget_rate, co_lambda):
        loss_pick = (F.cross_entropy(y_1, t, reduction="none") * (1 - co_lambda)
                     + F.cross_entropy(y_2, t, reduction="none") * (1 - co_lambda)
                     + co_lambda * kl_loss_compute(y_1, y_2) + co_lambda * kl_loss_compute(y_2, y_1))
        ind_sorted = torch.argsort(loss_pick.detach())
        num_remember = int((1 - forget_rate) * len(ind_sorted))
        return torch.mean(loss_pick[ind_sorted[:num_remember]]), ind_sorted[:num_remember]

    g = torch.Generator().manual_seed(4)
    base1, base2 = torch.randn(32, 10, generator=g, dtype=torch.float64), torch.randn(32, 10, generator=g, dtype=torch.float64)
    y_true = torch.randint(0, 10, (32,), generator=g)
    y = torch.where(torch.rand(32, generator=g) < 0.45, (y_true + 1) % 10, y_true)  # pair-45
    for co_lambda in (0.1, 0.65, 0.9):
        official_logits = [base1.clone().requires_grad_(), base2.clone().requires_grad_()]
        ours_logits = [base1.clone().requires_grad_(), base2.clone().requires_grad_()]
        official, official_kept = loss_jocor(*official_logits, y, 0.45, co_lambda)
        joint = jocor_loss(*ours_logits, y, co_lambda)
        kept = small_loss_indices(joint, 0.45)
        ours = joint[kept].mean()
        assert sorted(kept.tolist()) == sorted(official_kept.tolist()) and len(kept) == 17  # int(0.55 * 32)
        torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-12)
        official.backward()
        ours.backward()
        for a, b in zip(ours_logits, official_logits):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------ schedules
def test_coteaching_schedule_from_config_matches_its_formula():
    schedule = build_schedule(OmegaConf.create({"name": "coteaching", "tau": None, "num_gradual": 10, "exponent": 1}),
                              noise_rate=0.45, max_epochs=200)
    for t in (0, 3, 9, 10, 150):
        assert schedule(t) == pytest.approx(0.45 * min(t / 10, 1.0))
    squared = build_schedule(OmegaConf.create({"name": "coteaching", "tau": 0.3, "num_gradual": 5, "exponent": 2}),
                             noise_rate=0.45, max_epochs=200)
    assert squared(2) == pytest.approx(0.3 * (2 / 5) ** 2) and squared(7) == pytest.approx(0.3)


def test_s2e_schedule_from_config_matches_its_formula():
    x = [0.6, 0.8, 0.3, 0.7, 0.2, 1.5, 0.1, 0.4, 0.5, 0.25, 0.05, 1.2]
    schedule = build_schedule(OmegaConf.create({"name": "s2e", "params": x}), noise_rate=0.5, max_epochs=200)
    T = 200.0
    for t in (0, 1, 7, 60, 199):
        value = (x[0] * (1 - math.exp(-x[2] * t ** x[1]))
                 + (1 - x[0]) * x[7] * (1 - (x[4] * t + 1) ** (-x[3]))
                 + (1 - x[0]) * (1 - x[7]) * (1 - math.log(1 + x[8]) / math.log(1 + x[8] + x[9] * t))
                 - x[6] * (t / T) ** x[5]
                 - x[10] * math.log(1 + t ** x[11]) / math.log(1 + T ** x[11]))
        assert schedule(t) == pytest.approx(min(max(value, 0.0), 0.99))
    assert schedule(60) > 0.3  # a real schedule, not clipped to 0


# ------------------------------------------------------------- training, end to end
FAST = ["debug=fast", "data=digits", "callbacks=none"]
EXTRA = {"coteaching_plus": ["method.init_epoch=1"],  # one epoch of each phase
         "decoupling": ["method.warmup_steps=3"]}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_on_digits_with_its_statistics(make_cfg, one_thread, method):
    """(The clean-label shuffle of every method is in test_method_contract.py.)"""
    overrides = [*FAST, f"method={method}", *EXTRA.get(method, [])]
    results = run(make_cfg(*overrides))
    metrics = results["metrics"]
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert 0.0 <= metrics["train/label_precision"] <= 1.0
    if method != "selfpaced":
        assert 0.0 <= metrics["test/acc_net2"] <= 1.0
    if method in ("selfpaced", "coteaching_plus", "jocor"):
        assert metrics["train/forget_rate"] > 0.0  # the epoch-1 value of the coteaching schedule
    if method in ("decoupling", "coteaching_plus"):
        assert 0.0 < metrics["train/update_fraction"] <= 1.0



# -------------------------------------------------------------- sweeps and report
def compose_sweep(name, *overrides):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=[f"+sweep={name}", *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("sweep,data,model,init_epoch", [("coteaching_digits", "digits", "mlp", 0),
                                                         ("coteaching_mnist1d", "mnist1d", "cnn1d", 20),
                                                         ("coteaching_mnist", "mnist", "cnn9", 0),
                                                         ("coteaching_cifar10", "cifar10", "cnn9", 20)])
def test_reproduction_sweeps_compose_with_the_grid_and_the_paper_numbers(sweep, data, model, init_epoch):
    cfg = compose_sweep(sweep, "method=coteaching_plus")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    methods, noises = params.method.split(","), params.noise.split(",")
    assert methods == ["ce", "selfpaced", "decoupling", "coteaching", "coteaching_plus", "jocor"]
    assert noises == ["pair45", "sym50", "sym20"]
    resolved = subtrees(cfg)
    assert (resolved["data"]["name"], resolved["model"]["name"]) == (data, model)
    assert resolved["data"]["val_fraction"] == 0.0
    assert resolved["method"]["init_epoch"] == init_epoch  # conf/method_data/, else the CIFAR-10 default
    assert {m: sorted(cells) for m, cells in resolved["paper"].items()} == {m: sorted(noises) for m in methods}
    assert resolved["paper"]["coteaching"]["pair45"] == {"cifar10": 72.62}.get(data, 87.63)
    for method in methods:  # every job of the grid composes
        job = subtrees(compose_sweep(sweep, f"method={method}", "noise=sym20", "seed=1"))
        assert job["method"]["name"] == method and job["model"]["name"] == model


def subtrees(cfg) -> dict:
    """The resolved groups a job uses (the hydra node needs a running Hydra to resolve)."""
    return {key: OmegaConf.to_container(cfg[key], resolve=True)
            for key in ("method", "data", "noise", "model", "schedule", "paper")}


def test_method_defaults_without_a_sweep(make_cfg):
    cfg = OmegaConf.to_container(make_cfg("method=coteaching_plus", "data=cifar10"), resolve=True)
    assert cfg["method"]["init_epoch"] == 20 and cfg["model"]["name"] == "cnn6"
    assert OmegaConf.to_container(make_cfg("method=jocor", "data=cifar10"), resolve=True)["method"]["co_lambda"] == 0.9
    assert OmegaConf.to_container(make_cfg("method=selfpaced", "data=cifar10"), resolve=True)["model"]["name"] == "cnn9"


def fake_result(root, job, method, noise, seed, acc, paper):
    folder = root / job
    folder.mkdir(parents=True)
    payload = {"method": method, "data": "digits", "model": "mlp", "seed": seed,
               "noise": {"name": noise, "kind": "symmetric", "rate": 0.5},
               "metrics": {"test/acc": acc, "test/acc_last10": acc}, "config": {"paper": paper}}
    (folder / "results.json").write_text(json.dumps(payload))


def test_report_prints_ours_beside_the_paper(tmp_path, capsys):
    paper = {"ce": {"sym50": 66.05}, "coteaching": {"sym50": 91.32}}
    fake_result(tmp_path, "0_ce_sym50_s0", "ce", "sym50", 0, 0.80, paper)
    fake_result(tmp_path, "1_ce_sym50_s1", "ce", "sym50", 1, 0.90, paper)
    fake_result(tmp_path, "2_coteaching_sym50_s0", "coteaching", "sym50", 0, 0.95, paper)
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| method | sym50 ours | sym50 paper | runs |" in out
    assert "| ce | 85.00 ± 7.07 | 66.05 | 2 |" in out
    assert "| coteaching | 95.00 | 91.32 | 1 |" in out
    assert (tmp_path / "report.md").read_text().count("| ce |") == 1
    rows = (tmp_path / "report.csv").read_text().splitlines()
    assert rows[0].startswith("method,noise,metric,n,mean,std,paper") and rows[1].startswith("ce,sym50,test/acc_last10,2,85.0000")
    assert report_module.main([str(tmp_path / "missing")]) == 2


def test_report_reads_epoch_curves_from_the_csv_and_plots_them(tmp_path):
    fake_result(tmp_path, "0_coteaching_sym50_s0", "coteaching", "sym50", 0, 0.9, {})
    folder = tmp_path / "0_coteaching_sym50_s0"
    payload = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**payload, "run_dir": str(folder)}))
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text(  # Lightning's layout: val and train rows apart
        "epoch,step,test/acc_epoch,train/label_precision\n0,9,0.5,\n0,9,,0.6\n1,19,0.7,\n1,19,,0.8\n")
    assert report_module.epoch_curves(folder) == {
        "test/acc_epoch": [0.5, 0.7], "train/label_precision": [0.6, 0.8]}
    assert "report_curves.png" in report_module.report(tmp_path)
    assert (tmp_path / "report_curves.png").stat().st_size > 1000
