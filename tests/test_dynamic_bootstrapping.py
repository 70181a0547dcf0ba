"""M-DYR-H and MD-DYR-SH (noisylab/methods/dynamic_bootstrapping.py): the losses, the guided
mixup and the regulariser against hand computation on fixed logits; the stage and temperature
plan; the per-epoch fit driving B and the clean score; a run stopped inside the bootstrapping
stage resumes exactly; best and last test accuracy; the Arazo sweeps and their paper numbers
in the report."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from noisylab import report as report_module
from noisylab.methods.dynamic_bootstrapping import (
    HardBootstrapping,
    SoftToHardBootstrapping,
    guided_mix,
    hard_bootstrap_mixup_loss,
    prior_regulariser,
    soft_to_hard_loss,
)
from noisylab.train import run
from tests.conftest import tiny_method
from tests.test_method_contract import stopped_run
from tests.test_report_groups import write_job
from tests.test_selection_methods import compose_sweep, subtrees

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
UNMIXED = torch.tensor([[0.3, 1.5, -0.2], [2.0, 0.0, 0.1], [0.0, -1.0, 1.2], [0.4, 0.3, 0.9]])
Y, Z = torch.tensor([0, 2, 0, 1]), torch.tensor([1, 0, 2, 2])
B = torch.tensor([0.1, 0.8, 0.5, 0.3])
PERM = torch.tensor([2, 0, 3, 1])


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


P = [softmax(row) for row in LOGITS.tolist()]


def test_hard_bootstrapping_with_mixup_matches_its_formula():
    lam = 0.3
    direct, permuted = [], []
    for i in range(4):
        j = PERM[i].item()
        direct.append((1 - B[i].item()) * -math.log(P[i][Y[i]]) + B[i].item() * -math.log(P[i][Z[i]]))
        permuted.append((1 - B[j].item()) * -math.log(P[i][Y[j]]) + B[j].item() * -math.log(P[i][Z[j]]))
    expected = lam * sum(direct) / 4 + (1 - lam) * sum(permuted) / 4
    assert hard_bootstrap_mixup_loss(LOGITS, Y, Z, B, lam, PERM).item() == pytest.approx(expected, rel=1e-6)
    mixup = lam * torch.nn.functional.cross_entropy(LOGITS, Y) + (1 - lam) * torch.nn.functional.cross_entropy(LOGITS, Y[PERM])
    assert hard_bootstrap_mixup_loss(LOGITS, Y, Z, torch.zeros(4), lam, PERM).item() == pytest.approx(mixup.item())


@pytest.mark.parametrize("temperature", [1.0, 0.4])
def test_soft_to_hard_bootstrapping_matches_its_formula(temperature):
    q = [softmax([v / temperature for v in row]) for row in UNMIXED.tolist()]
    direct, permuted = [], []
    for i in range(4):
        j = PERM[i].item()
        own_i = -sum(q[i][c] * math.log(P[i][c]) for c in range(3))
        own_j = -sum(q[j][c] * math.log(P[i][c]) for c in range(3))
        direct.append((1 - B[i].item()) * -math.log(P[i][Y[i]]) + B[i].item() * own_i)
        permuted.append((1 - B[j].item()) * -math.log(P[i][Y[j]]) + B[j].item() * own_j)
    expected = 0.5 * sum(direct) / 4 + 0.5 * sum(permuted) / 4  # fixed weights 0.5, as the code
    assert soft_to_hard_loss(LOGITS, Y, UNMIXED, B, PERM, temperature).item() == pytest.approx(expected, rel=1e-6)


def test_a_cold_temperature_makes_the_soft_target_hard():
    hard = hard_bootstrap_mixup_loss(LOGITS, Y, UNMIXED.argmax(dim=1), B, 0.5, PERM)
    assert soft_to_hard_loss(LOGITS, Y, UNMIXED, B, PERM, 1e-3).item() == pytest.approx(hard.item(), rel=1e-5)


def test_the_prior_regulariser_matches_its_formula():
    mean = [sum(p[c] for p in P) / 4 for c in range(3)]
    expected = sum((1 / 3) * math.log((1 / 3) / m) for m in mean)
    assert prior_regulariser(LOGITS).item() == pytest.approx(expected, abs=1e-6)  # float32 logs
    balanced = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    assert prior_regulariser(balanced).item() == pytest.approx(0.0, abs=1e-7)  # mean prediction uniform
    assert prior_regulariser(torch.tensor([[5.0, 0.0, 0.0]] * 3)).item() > 0.5  # one class everywhere


def test_guided_mixup_weighs_each_input_by_its_clean_posterior():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    noisy, perm = torch.tensor([0.2, 0.6, 0.9]), torch.tensor([1, 2, 0])
    expected = [[(0.8 * 1.0 + 0.4 * 0.0) / 1.2, (0.8 * 0.0 + 0.4 * 2.0) / 1.2],
                [(0.4 * 0.0 + 0.1 * 4.0) / 0.5, (0.4 * 2.0 + 0.1 * 4.0) / 0.5],
                [(0.1 * 4.0 + 0.8 * 1.0) / 0.9, (0.1 * 4.0 + 0.8 * 0.0) / 0.9]]
    assert guided_mix(x, noisy, perm).flatten().tolist() == pytest.approx(sum(expected, []))
    images = torch.arange(24.0).view(3, 2, 2, 2)  # broadcast over image dimensions; equal B: the mean
    assert torch.allclose(guided_mix(images, torch.full((3,), 0.5), perm), (images + images[perm]) / 2)


def test_the_stages_and_the_temperature_follow_the_code():
    sh = tiny_method(SoftToHardBootstrapping, max_epochs=300)
    assert [sh.stage_at(e).stage.name for e in (0, 104, 105, 109, 110, 299)] == \
        ["mixup", "mixup", "guided_mixup", "guided_mixup", "bootstrap", "bootstrap"]
    steps = np.linspace(1, 0.001, 89)
    assert [sh.temperature(e) for e in (110, 111, 150, 198, 199, 299)] == \
        pytest.approx([1.0, steps[1], steps[40], 0.001, 0.001, 0.001])
    h = tiny_method(HardBootstrapping, max_epochs=300)
    assert [h.stage_at(e).stage.name for e in (104, 105)] == ["mixup", "bootstrap"]


def fitted_method(monkeypatch, losses):
    method = tiny_method(HardBootstrapping, train_size=len(losses))
    monkeypatch.setattr(method, "training_set_pass", lambda net, augment: (None, losses))
    method.update_noise_model()
    return method


def test_the_fit_after_an_epoch_gives_b_and_the_clean_score(monkeypatch):
    rng = np.random.default_rng(0)
    clean, noisy = rng.beta(2, 8, 300), 1.0 + 2.0 * rng.beta(8, 2, 200)  # losses below 1, above 1
    losses = torch.from_numpy(rng.permutation(np.concatenate([clean, noisy]))).float()
    is_clean = losses < 1.0
    method = fitted_method(monkeypatch, losses)
    score = method.clean_score()
    assert torch.equal(score, 1.0 - method.noisy_posterior(losses))
    assert score[is_clean].min() > score[~is_clean].max()  # separated losses, separated scores
    assert score.min() >= 1e-4 and score.max() <= 1 - 1e-4  # B clipped as in the code
    low, high = method.loss_bounds.tolist()
    assert (low, high) == pytest.approx((np.percentile(losses.numpy(), 5) + 1e-5, np.percentile(losses.numpy(), 95)),
                                        rel=1e-5)
    # B of a batch is read from the same table: a higher loss never gets a smaller B
    grid = torch.linspace(0.0, 4.0, 50)
    assert torch.all(torch.diff(method.noisy_posterior(grid)) >= 0)


def test_constant_losses_leave_b_at_one_half(monkeypatch):
    method = fitted_method(monkeypatch, torch.full((40,), 0.25))
    assert torch.all(method.clean_score() == 0.5) and torch.all(method.noisy_lookup == 0.5)


def test_the_batch_posterior_uses_eval_mode_and_restores_training_mode():
    method = tiny_method(HardBootstrapping)
    method.net = torch.nn.Sequential(torch.nn.Linear(8, 3), torch.nn.Dropout(0.9))  # random in train mode
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    method.noisy_lookup.copy_(torch.linspace(0.0, 1.0, 100))
    method.loss_bounds.copy_(torch.tensor([0.0, 3.0]))
    method.net.train()
    first, second = method.batch_noisy_posterior(x, y), method.batch_noisy_posterior(x, y)
    assert method.net.training and torch.equal(first, second)  # deterministic: no dropout in eval mode
    method.net.eval()
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(method.net(x), y, reduction="none")
    assert torch.equal(first, method.noisy_posterior(losses))


def test_best_and_last_test_accuracy_are_reported():
    method = tiny_method(HardBootstrapping)
    method.history = {"test/acc_epoch": [0.5, 0.9, 0.7, 0.6], "val/acc": [0.4, 0.5, 0.8, 0.6]}
    summary = method.summary_metrics()
    assert (summary["test/acc_best"], summary["test/acc_last"]) == (0.9, 0.6)
    assert summary["test/acc_at_best_val"] == 0.7 and summary["test/acc_last10"] == pytest.approx(0.675)


FAST = ["debug=fast", "data=digits", "protocol.epochs=4", "data.augment=crop_flip", "+data.padding=1"]
STOP = ["+callbacks.stop._target_=tests.test_method_contract.stop_after", "+callbacks.stop.epochs=3"]


@pytest.mark.parametrize("method,extra", [("dyr_h", ["method.warmup_epochs=1"]),
                                          ("dyr_sh", ["method.warmup_epochs=1", "method.guided_epochs=1"])])
def test_a_run_stopped_inside_bootstrapping_resumes_as_if_never_stopped(make_cfg, one_thread, method, extra):
    """Epochs 0-3; the bootstrapping stage from epoch 2 (dyr_h: from 1); stopped after epoch 3
    of 4, resumed from its last checkpoint (the augmented pass draws from the random streams)."""
    base = [*FAST, f"method={method}", *extra]
    whole = run(make_cfg(*base))
    stopped = stopped_run(make_cfg(*base, *STOP))
    assert stopped["epochs"] == 3 and stopped["metrics"]["train/stage"] == (1.0 if method == "dyr_h" else 2.0)
    resumed = run(make_cfg(*base, f"ckpt_path={stopped['run_dir']}/checkpoints/last.ckpt"))
    assert resumed["epochs"] == whole["epochs"] == 4
    assert resumed["metrics"] == whole["metrics"]
    assert {"test/acc_best", "test/acc_last", "train/detection_auc", "train/noisy_weight"} <= set(whole["metrics"])
    expected, got = (np.load(Path(r["run_dir"]) / "per_sample.npz") for r in (whole, resumed))
    assert np.array_equal(expected["clean_score"], got["clean_score"]) and len(np.unique(got["clean_score"])) > 2


@pytest.mark.parametrize("sweep,data,cell", [("arazo_cifar10", "cifar10", (86.8, 86.6)),
                                             ("arazo_cifar100", "cifar100", (48.2, 47.6))])
def test_the_arazo_sweeps_compose_with_uniform_noise_and_the_papers_best_and_last(sweep, data, cell):
    cfg = compose_sweep(sweep, "method=dyr_h", "noise.rate=0.8", "seed=1")
    params = cfg.hydra.sweeper.params
    assert params.method.split(",") == ["dyr_h", "dyr_sh"]
    assert [float(r) for r in params["noise.rate"].split(",")] == [0.0, 0.2, 0.5, 0.8, 0.9]
    job = subtrees(cfg)
    assert (job["data"]["name"], job["model"]["name"], job["data"]["val_fraction"]) == (data, "preact_resnet18", 0.0)
    assert job["noise"] == {**job["noise"], "kind": "symmetric", "rate": 0.8, "include_true_class": True}
    assert OmegaConf.to_container(cfg.protocol)["name"] == "arazo"
    values = job["paper"]["values"]
    assert (values["test/acc_best"]["dyr_h"][0.8], values["test/acc_last"]["dyr_h"][0.8]) == cell
    assert all(sorted(values[m][k]) == [0.0, 0.2, 0.5, 0.8, 0.9] for m in values for k in values[m])


def test_the_report_puts_the_papers_best_or_last_beside_ours(tmp_path, capsys):
    paper = subtrees(compose_sweep("arazo_cifar10", "method=dyr_h"))["paper"]
    paper = OmegaConf.to_container(OmegaConf.create(paper))  # as results.json stores it
    for job, (method, rate) in enumerate([("dyr_h", "0.8"), ("dyr_sh", "0.8"), ("dyr_h", "0.2")]):
        write_job(tmp_path, f"{job}_{method}_{rate}", [f"method={method}", f"noise.rate={rate}", "seed=1"],
                  method=method, paper=paper, metrics={"test/acc_best": 0.5 + job / 10, "test/acc_last": 0.4})
    assert report_module.main([str(tmp_path), "--metric", "test/acc_best"]) == 0
    best = capsys.readouterr().out
    assert "| dyr_h | 0.8 | 50.00 | 86.80 | 1 |" in best and "| dyr_sh | 0.8 | 60.00 | 82.40 | 1 |" in best
    assert report_module.main([str(tmp_path), "--metric", "test/acc_last"]) == 0
    last = capsys.readouterr().out
    assert "| dyr_h | 0.8 | 40.00 | 86.60 | 1 |" in last and "| dyr_h | 0.2 | 40.00 | 93.80 | 1 |" in last
