"""Joint Optimization and PENCIL: their losses and label updates against hand computation, the
stage plans, updates that touch only the batch's rows, and an exact resume inside a later stage."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from noisylab.methods.joint_opt import JointOptimization, averaged_labels, joint_opt_loss, mass_on_given
from noisylab.methods.pencil import PENCIL, pencil_loss
from noisylab.train import run
from tests.conftest import tiny_method
from tests.test_method_contract import stopped_run

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
Y = torch.tensor([0, 2, 0, 1])
SOFT = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.6, 0.4, 0.0], [0.0, 1.0, 0.0]])
LABEL_LOGITS = torch.tensor([[10.0, 0.0, 0.0], [0.5, -0.5, 2.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


PROBS = [softmax(row) for row in LOGITS.tolist()]
LABEL_PROBS = [softmax(row) for row in LABEL_LOGITS.tolist()]


def close(tensor, expected, atol=1e-6):
    return torch.allclose(tensor, torch.tensor(expected, dtype=tensor.dtype), atol=atol)


def xlogy(x, y):
    return 0.0 if x == 0 else x * math.log(y)


def test_joint_opt_loss_matches_its_formula():
    alpha, beta = 1.2, 0.8
    kl = sum(xlogy(y, y) - xlogy(y, s) for ys, ss in zip(SOFT.tolist(), PROBS) for y, s in zip(ys, ss)) / 4
    mean = [sum(p[j] for p in PROBS) / 4 for j in range(3)]
    prior = sum(1 / 3 * math.log((1 / 3) / m) for m in mean)
    entropy = -sum(s * math.log(s) for p in PROBS for s in p) / 4
    loss, parts = joint_opt_loss(LOGITS, SOFT, alpha, beta)
    assert parts["train/loss_c"].item() == pytest.approx(kl, rel=1e-5)
    assert parts["train/loss_p"].item() == pytest.approx(prior, rel=1e-5)
    assert parts["train/loss_e"].item() == pytest.approx(entropy, rel=1e-5)
    assert loss.item() == pytest.approx(kl + alpha * prior + beta * entropy, rel=1e-5)
    one_hot = torch.nn.functional.one_hot(Y, 3).float()  # one-hot labels: L_c is the plain CE
    _, parts = joint_opt_loss(LOGITS, one_hot, alpha, beta)
    assert parts["train/loss_c"].item() == pytest.approx(torch.nn.functional.cross_entropy(LOGITS, Y).item(), rel=1e-6)


def test_joint_opt_labels_are_the_mean_or_its_argmax():
    predictions = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], [[0.2, 0.5, 0.3], [0.4, 0.5, 0.1]]])
    assert close(averaged_labels(predictions, hard=False), [[0.4, 0.25, 0.35], [0.3, 0.5, 0.2]])
    assert averaged_labels(predictions, hard=True).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert mass_on_given(SOFT, torch.tensor([0, 2, 1, -1])).tolist() == pytest.approx([1.0, 0.5, 0.4, 0.0])


def test_joint_opt_renews_labels_from_the_recorded_epochs_on_its_schedule(monkeypatch):
    method = tiny_method(JointOptimization, max_epochs=10, train_size=2, begin=2, average_epochs=3, joint_epochs=6)
    assert [e for e in range(10) if method.updates_labels_at(e)] == [2, 3, 4, 5, 6]  # 6: opens the retraining
    never = tiny_method(JointOptimization, max_epochs=10, train_size=2, label_update="none", joint_epochs=None)
    assert not any(never.updates_labels_at(e) for e in range(10)) and [s.name for s in never.stages()] == ["joint"]

    monkeypatch.setattr(type(method), "current_epoch", property(lambda self: self._epoch))
    monkeypatch.setattr("noisylab.methods.base.LNLMethod.on_train_epoch_start", lambda self: None)
    slots = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                          [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]])
    method.prediction.copy_(slots)
    method.soft_label.fill_(7.0)
    method._epoch = 1  # before begin: untouched
    method.on_train_epoch_start()
    assert (method.soft_label == 7.0).all()
    method._epoch = 2  # two epochs recorded (slots 0, 1)
    method.on_train_epoch_start()
    assert close(method.soft_label, [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    method._epoch = 5  # the ring is full: all three slots
    method.on_train_epoch_start()
    assert close(method.soft_label, [[1 / 3, 1 / 3, 1 / 3], [1 / 3, 1.5 / 3, 0.5 / 3]])


def test_pencil_loss_and_label_gradient_match_their_formulas():
    alpha, beta, c, b = 0.1, 0.4, 3, 4
    kl = sum(f * (math.log(f) - math.log(yd)) for fs, yds in zip(PROBS, LABEL_PROBS) for f, yd in zip(fs, yds)) / (b * c)
    compat = -sum(math.log(yd[y]) for yd, y in zip(LABEL_PROBS, Y.tolist())) / b
    entropy = -sum(f * math.log(f) for fs in PROBS for f in fs) / (b * c)
    label_logits = LABEL_LOGITS.clone().requires_grad_(True)
    loss, parts = pencil_loss(LOGITS, label_logits, Y, alpha, beta)
    assert [parts[k].item() for k in ("train/loss_c", "train/loss_o", "train/loss_e")] == pytest.approx(
        [kl, compat, entropy], rel=1e-5)
    assert loss.item() == pytest.approx(kl + alpha * compat + beta * entropy, rel=1e-5)
    # dL/dỹ_ik = [(y^d_ik - f_ik)/C + alpha (y^d_ik - [k = ŷ_i])] / B; the entropy has none
    (grad,) = torch.autograd.grad(loss, label_logits)
    expected = [[((yd[k] - f[k]) / c + alpha * (yd[k] - (k == y))) / b for k in range(c)]
                for f, yd, y in zip(PROBS, LABEL_PROBS, Y.tolist())]
    assert close(grad, expected, atol=1e-7)

    # the code's L_o: CE with the label distribution taken as logits (softmax applied twice)
    code_compat = -sum(math.log(softmax(yd)[y]) for yd, y in zip(LABEL_PROBS, Y.tolist())) / b
    _, parts = pencil_loss(LOGITS, LABEL_LOGITS, Y, alpha, beta, double_softmax=True)
    assert parts["train/loss_o"].item() == pytest.approx(code_compat, rel=1e-5)


def test_the_stage_plans_and_their_learning_rates():
    protocol = {"optimizer": {"name": "sgd", "lr": 0.06}, "lr_schedule": {"name": "none"}}
    pencil = tiny_method(PENCIL, max_epochs=320, protocol=protocol)
    assert [(s.stage.name, s.start, s.end) for s in pencil.stage_spans] == [
        ("backbone", 0, 70), ("correction", 70, 200), ("finetune", 200, 320)]
    lrs = {e: pencil.epoch_hyperparameters(e)[0] for e in (0, 199, 200, 239, 240, 279, 280, 319)}
    assert lrs == pytest.approx({0: 0.06, 199: 0.06, 200: 0.2, 239: 0.2, 240: 0.02, 279: 0.02, 280: 0.002, 319: 0.002})
    official = tiny_method(PENCIL, max_epochs=320, protocol=protocol, quirks="official")
    assert [official.epoch_hyperparameters(e)[0] for e in (239, 240, 319)] == pytest.approx([0.2, 0.0, 0.0])

    joint = tiny_method(JointOptimization, max_epochs=320, protocol={**protocol, "optimizer": {"name": "sgd", "lr": 0.08}})
    assert [(s.stage.name, s.start, s.end, s.stage.reinit) for s in joint.stage_spans] == [
        ("joint", 0, 200, False), ("retrain", 200, 320, True)]
    lrs = {e: joint.epoch_hyperparameters(e)[0] for e in (0, 199, 200, 239, 240, 280)}
    assert lrs == pytest.approx({0: 0.08, 199: 0.08, 200: 0.2, 239: 0.2, 240: 0.02, 280: 0.002})


# ------------------------------------------------------------------ inside real runs (digits)
FAST = ["debug=fast", "data=digits"]
SHORT = {"joint_opt": ["method.begin=1", "method.average_epochs=2", "method.joint_epochs=2", "protocol.epochs=3"],
         "pencil": ["method.stage1=1", "method.stage2=2", "protocol.epochs=3"]}


def _rows_changed(before: torch.Tensor, after: torch.Tensor) -> set[int]:
    return set(torch.nonzero((before != after).reshape(len(before), -1).any(dim=1)).flatten().tolist())


class RowProbe:
    """Mixed into a method: after every training step, which rows of each per-sample buffer changed."""

    seen: list = []

    def training_step(self, batch, batch_idx):
        before = {name: getattr(self, name).clone() for name in self._per_sample}
        loss = super().training_step(batch, batch_idx)
        changed = {name: _rows_changed(before[name], getattr(self, name)) for name in self._per_sample}
        RowProbe.seen.append((self.stage.name, set(batch["index"].tolist()), changed))
        return loss


class JointOptProbe(RowProbe, JointOptimization):
    pass


class PencilProbe(RowProbe, PENCIL):
    pass


@pytest.mark.parametrize("method,probe", [("joint_opt", "JointOptProbe"), ("pencil", "PencilProbe")])
def test_a_step_updates_only_the_rows_of_its_batch(make_cfg, one_thread, method, probe):
    RowProbe.seen.clear()
    run(make_cfg(*FAST, f"method={method}", *SHORT[method], f"method._target_=tests.test_label_learning.{probe}"))
    stages = {stage for stage, _, _ in RowProbe.seen}
    assert stages == ({"joint", "retrain"} if method == "joint_opt" else {"backbone", "correction", "finetune"})
    for stage, index, changed in RowProbe.seen:
        for name, rows in changed.items():
            assert rows <= index, (stage, name)
        if method == "pencil" and stage in ("backbone", "correction"):
            assert changed["label_logits"] == index  # every row of the batch is written or moved
        if method == "pencil" and stage == "finetune":
            assert not changed["label_logits"]  # fixed labels
        if method == "joint_opt" and stage == "joint":
            assert changed["prediction"] == index  # this epoch's slot of every sample in the batch
        if method == "joint_opt" and stage == "retrain":
            assert not any(changed.values())


def test_a_run_stopped_inside_a_later_stage_resumes_exactly(make_cfg, one_thread):
    for method, stop, extra in (("joint_opt", 3, ["method.joint_epochs=2", "protocol.epochs=4"]),
                                ("pencil", 2, ["method.stage1=1", "method.stage2=3", "protocol.epochs=4"])):
        base = [*FAST, f"method={method}", "method.begin=1" if method == "joint_opt" else "method.k=10", *extra]
        whole = run(make_cfg(*base))
        stopped = stopped_run(make_cfg(*base, "+callbacks.stop._target_=tests.test_method_contract.stop_after",
                               f"+callbacks.stop.epochs={stop}"))
        assert stopped["epochs"] == stop
        resumed = run(make_cfg(*base, f"ckpt_path={stopped['run_dir']}/checkpoints/last.ckpt"))
        assert resumed["epochs"] == 4
        # the loss parts of an earlier stage are last logged before the stop
        assert set(whole["metrics"]) - set(resumed["metrics"]) <= {f"train/loss_{p}" for p in "cpoe"}
        for key, value in resumed["metrics"].items():
            assert value == pytest.approx(whole["metrics"][key], abs=1e-6), (method, key)
        expected = np.load(Path(whole["run_dir"]) / "per_sample.npz")
        got = np.load(Path(resumed["run_dir"]) / "per_sample.npz")
        for name in expected.files:
            assert np.array_equal(expected[name], got[name]), (method, name)


def test_the_mslg_sweep_runs_every_row_on_mslgs_recipe_with_its_settings(make_cfg):
    import os

    root = Path(__file__).resolve().parents[1]
    link = root / "multirun_sweeps" / "mslg_baselines_cifar10.yaml"
    assert link.is_symlink() and os.readlink(link) == "../conf/sweep/mslg_baselines_cifar10.yaml"
    settings = {"pencil": {"stage1": 21, "stage2": 80, "label_lr": 400.0, "alpha": 0.1, "beta": 0.8, "lr2": None},
                "joint_opt": {"label_update": "none", "joint_epochs": None, "alpha": 1.2, "beta": 0.8},
                "forward": {"transition": "oracle"}, "bootstrap_soft": {"beta": 0.95}, "sce": {"alpha": 0.1, "beta": 1.0},
                "gce": {"q": 0.7, "truncated": False}, "ce": {}}
    for method, expected in settings.items():
        cfg = make_cfg("+sweep=mslg_baselines_cifar10", f"method={method}", "protocol=mslg", "noise=sym60", "seed=1")
        assert (cfg.protocol.name, cfg.trainer.max_epochs, cfg.data.name, cfg.data.val_fraction) == ("mslg", 120, "cifar10", 0.0)
        assert {key: cfg.method[key] for key in expected} == expected, method
    paper = cfg.paper
    assert sorted(paper) == sorted(settings) and all(sorted(paper[m]) == ["sym20", "sym40", "sym60", "sym80"] for m in paper)
    assert paper.pencil.sym80 == 46.57 and paper.joint_opt.sym20 == 83.74 and paper.ce.sym60 == 66.46
    from omegaconf import OmegaConf

    grid = OmegaConf.load(root / "conf" / "sweep" / "mslg_baselines_cifar10.yaml").hydra.sweeper.params
    assert sorted(grid.method.split(",")) == sorted(settings) and grid.protocol == "mslg"
    assert make_cfg("method=pencil", "data=cifar10").method.stage1 == 70  # the paper's values elsewhere


def test_the_compatibility_term_decides_whether_a_noisy_label_flips():
    """The docstring's claim: a network confident in class t, a label given as 0; 130 epochs of
    label steps (lambda 600, batch 128). The paper's L_o at alpha = 1/C stops at a tie; the
    code's L_o (softmax applied twice) moves the label to t."""
    batch, classes, alpha, label_lr = 128, 10, 0.1, 600.0
    y = torch.zeros(batch, dtype=torch.long)
    logits = torch.zeros(batch, classes)
    logits[:, 3] = math.log(0.99 * (classes - 1) / 0.01)  # softmax: 0.99 on class 3
    for double_softmax, (given, true) in ((False, (0.5, 0.5)), (True, (0.11, 0.88))):
        label_logits = torch.zeros(batch, classes)
        label_logits[:, 0] = 10.0
        for _ in range(130):
            variable = label_logits.clone().requires_grad_(True)
            loss, _ = pencil_loss(logits, variable, y, alpha, 0.4, double_softmax)
            label_logits = label_logits - label_lr * torch.autograd.grad(loss, variable)[0]
        distribution = label_logits[0].softmax(dim=0)
        assert distribution[0].item() == pytest.approx(given, abs=0.02), double_softmax
        assert distribution[3].item() == pytest.approx(true, abs=0.02), double_softmax
