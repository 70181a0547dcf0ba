"""The method contract, for every method config in conf/method/ (a new method gets these
tests the day it lands), and the pieces of the contract on small hand-made methods:
declared optimisers, stages, the training-set pass, views, per-sample scores, exact resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from noisylab.errors import ConfigError
from noisylab.methods.ce import CrossEntropy
from noisylab.methods.contract import Stage, accepted_settings
from noisylab.train import build_datamodule, build_method, rewrite_overrides, run
from tests.conftest import shuffle_y_true

METHODS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml"))
FAST = ["debug=fast", "data=digits"]
# Two-stage methods get one epoch of each stage in a short run.
EXTRA = {"coteaching_plus": ["method.init_epoch=1"], "decoupling": ["method.warmup_steps=3"],
         "gce": ["method.truncated=true", "method.start_prune=1", "method.prune_every=1", "method.k=0.1"],
         "forward": ["method.estimate_epochs=1"], "backward": ["method.estimate_epochs=1"],
         "mslg": ["method.warmup_epochs=1"],
         "joint_opt": ["method.joint_epochs=1", "method.begin=1"], "pencil": ["method.stage1=1", "method.stage2=2"],
         "dyr_h": ["method.warmup_epochs=1"], "dyr_sh": ["method.warmup_epochs=0", "method.guided_epochs=1"],
         "cores": ["method.sieve_start=1", "method.beta_warmup=0", "method.beta_ramp=2",
                   "protocol.optimizer.momentum=0.9"],  # (the recipe has no momentum: no optimiser state)
         "pes": ["method.early_epochs=1", "method.refine_epochs=0", "method.head_epochs=0"],
         "t_revision": ["method.estimate_epochs=1", "method.reweight_epochs=0"],
         "dividemix": ["method.warmup_epochs=1"]}


def network_weights(checkpoint_path) -> dict:
    state = torch.load(checkpoint_path, weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("net.", "nets.", "net1.", "net2."))}


def overrides(method, *more):
    return [*FAST, f"method={method}", *EXTRA.get(method, []), *more]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_meets_the_contract(make_cfg, monkeypatch, one_thread, method):
    """2 epochs on digits: a valid results.json and per_sample.npz; a checkpoint that restores
    the per-sample state and every declared optimiser; y_true never trained on."""
    cfg = make_cfg(*overrides(method))
    results = run(cfg)
    run_dir = Path(results["run_dir"])
    written = json.loads((run_dir / "results.json").read_text())
    assert (written["method"], written["protocol"], written["quirks"]) == (method, cfg.protocol.name, "paper")
    assert written["epochs"] == 2 and 0.0 <= written["metrics"]["test/acc"] <= 1.0
    per_sample = np.load(run_dir / "per_sample.npz")
    assert per_sample["index"].tolist() == list(range(len(per_sample["y"])))
    assert (per_sample["y_true"] >= 0).all() and (per_sample["y"] != per_sample["y_true"]).any()

    checkpoint_path = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    cfg = make_cfg(*overrides(method))
    fresh = build_method(cfg, build_datamodule(cfg))
    assert len(checkpoint["optimizer_states"]) == len(fresh.declare_optimizers())
    for state in checkpoint["optimizer_states"]:  # every optimiser has stepped (plain SGD keeps no state to show it)
        assert state["state"] or all(group.get("momentum", 1) == 0 for group in state["param_groups"])
    restored = type(fresh).load_from_checkpoint(checkpoint_path)
    for name in fresh._per_sample:
        assert torch.equal(getattr(restored, name), checkpoint["state_dict"][name]), name
        assert getattr(restored, name).abs().sum() > 0, name  # state was really kept
        assert np.array_equal(per_sample[name], checkpoint["state_dict"][name].numpy()), name

    reference = network_weights(checkpoint_path)
    shuffle_y_true(monkeypatch)
    shuffled = run(make_cfg(*overrides(method)))
    for name, tensor in network_weights(Path(shuffled["run_dir"]) / "checkpoints" / "last.ckpt").items():
        assert torch.equal(tensor, reference[name]), name
    assert shuffled["metrics"]["test/acc"] == results["metrics"]["test/acc"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_refuses_an_unknown_setting(make_cfg, method):
    cfg = make_cfg(*overrides(method, "+method.co_lamda=0.9"))
    with pytest.raises(ConfigError, match=r"method\.co_lamda is not a setting of method=" + method):
        build_method(cfg, build_datamodule(cfg))


@pytest.mark.parametrize("method", METHODS)
def test_every_default_lives_in_the_method_config(make_cfg, method):
    """The constructor has no defaults of its own; its config names every setting."""
    import inspect

    from omegaconf import OmegaConf

    from noisylab.methods.contract import DESCRIPTIVE_KEYS
    from noisylab.train import method_class

    cfg = make_cfg(f"method={method}")
    cls = method_class(cfg)
    configured = set(OmegaConf.to_container(cfg.method)) - set(DESCRIPTIVE_KEYS)
    assert configured == set(accepted_settings(cls)) - {"schedule"}  # the schedule is its own group
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__ and klass.__module__.startswith("noisylab.methods"):
            for name, parameter in inspect.signature(klass.__init__).parameters.items():
                if name in configured:
                    assert parameter.default is inspect.Parameter.empty, (klass.__name__, name)


def test_the_refusal_lists_the_accepted_settings(make_cfg):
    cfg = make_cfg("method=jocor", "+method.co_lamda=0.9")
    with pytest.raises(ConfigError, match="its settings are: schedule, co_lambda, fused.") as error:
        build_method(cfg, build_datamodule(cfg))
    assert "\n" not in str(error.value)


class StopAfter:
    """A 'kill' after ``epochs`` epochs: the run stops as if pre-empted (its last.ckpt stays)."""

    def __init__(self, epochs: int):
        from pytorch_lightning import Callback

        class _Stop(Callback):
            def on_train_epoch_end(inner, trainer, module):  # noqa: N805
                if trainer.current_epoch + 1 >= epochs:
                    trainer.should_stop = True

        self.callback = _Stop()


def stop_after(epochs: int):
    return StopAfter(epochs).callback


def stopped_run(cfg) -> dict:
    """Runs ``cfg`` (with the ``stop_after`` callback) to its stop. The run is not finished
    (no results.json: ``StoppedEarly``); returns its folder, the epochs its last.ckpt holds and
    the metrics of its last epoch, as kept in that checkpoint."""
    from noisylab.interrupts import StoppedEarly

    with pytest.raises(StoppedEarly) as stop:
        run(cfg)
    folder = Path(cfg.paths.output_dir)
    assert not (folder / "results.json").exists()
    held = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    state = next(value for key, value in held.items() if "LastCheckpoint" in key)
    assert state["epochs"] == stop.value.epochs
    return {"run_dir": str(folder), "epochs": state["epochs"], "metrics": state["metrics"]}


# Every method, with its stages shortened so that 4 epochs reach the last one.
STOPPED_INSIDE_A_STAGE = [
    ("coteaching_plus", ["method.init_epoch=1"]), ("jocor", []), ("coteaching", []), ("decoupling", []),
    ("ce", ["data.augment=crop_flip", "model=cnn6"]), ("mixup", []), ("sce", []), ("apl", []), ("cdr", []),
    ("forward", ["method.estimate_epochs=2"]), ("backward", ["method.estimate_epochs=2"]),
    ("t_revision", ["method.estimate_epochs=1", "method.reweight_epochs=2"]), ("volminnet", []),
    ("l2rw", []), ("mwnet", []), ("ieg", []), ("mslg", ["method.warmup_epochs=2"]), ("soseleto", []),
    ("pencil", ["method.stage1=1", "method.stage2=2"]),
    ("joint_opt", ["method.begin=1", "method.average_epochs=1", "method.joint_epochs=3"]),
    ("pes", ["method.early_epochs=1", "method.refine_epochs=2", "method.head_epochs=0"]),
    ("cores", ["method.sieve_start=1", "method.beta_warmup=0", "method.beta_ramp=2"]),
    ("dividemix", ["method.warmup_epochs=2"]), ("elr", []), ("elr_plus", []), ("sop", []), ("sop_plus", []),
    ("dyr_h", ["method.warmup_epochs=2"]),
    ("dyr_sh", ["method.warmup_epochs=1", "method.guided_epochs=1", "method.temperature_epochs=2"]),
    ("gce", ["method.truncated=true", "method.start_prune=1", "method.prune_every=1"]),
    ("bootstrap_hard", []), ("bootstrap_soft", []), ("selfpaced", []),
]


def test_every_method_is_stopped_and_resumed_below():
    shipped = {p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "method").glob("*.yaml")}
    assert shipped - {method for method, _ in STOPPED_INSIDE_A_STAGE} == set()


@pytest.mark.parametrize("method,extra", STOPPED_INSIDE_A_STAGE)
def test_a_run_stopped_inside_a_later_stage_resumes_as_if_never_stopped(make_cfg, one_thread, method, extra):
    base = [*FAST, f"method={method}", *extra, "protocol.epochs=4"]
    if method == "ce":  # augmentation and dropout: the random streams must continue exactly
        base += ["+data.padding=1", "protocol.augment=null"]
    whole = run(make_cfg(*base))
    stopped = stopped_run(make_cfg(*base, "+callbacks.stop._target_=tests.test_method_contract.stop_after",
                           "+callbacks.stop.epochs=3"))
    assert stopped["epochs"] == 3
    resumed = run(make_cfg(*base, f"ckpt_path={stopped['run_dir']}/checkpoints/last.ckpt"))
    assert resumed["epochs"] == 4
    assert resumed["metrics"].keys() == whole["metrics"].keys()  # no earlier stage's statistics in one only
    assert resumed["stages"] == whole["stages"] and whole["stages_not_run"] == []  # the last stage is reached
    for key, value in whole["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert network_weights(Path(whole["run_dir"]) / "checkpoints" / "last.ckpt").keys()
    for name, tensor in network_weights(Path(whole["run_dir"]) / "checkpoints" / "last.ckpt").items():
        assert torch.allclose(tensor, network_weights(Path(resumed["run_dir"]) / "checkpoints" / "last.ckpt")[name])


def test_detection_auc_is_the_auroc_of_the_clean_score(make_cfg, one_thread):
    results = run(make_cfg(*FAST, "method=coteaching", "protocol.epochs=3"))
    per_sample = np.load(Path(results["run_dir"]) / "per_sample.npz")
    clean = per_sample["y"] == per_sample["y_true"]
    expected = roc_auc_score(clean, per_sample["clean_score"])
    assert results["metrics"]["train/detection_auc"] == pytest.approx(expected, abs=1e-5)
    assert per_sample["clean_score"].min() < 1.0  # forget rate > 0 from epoch 1: some samples dropped


# --------------------------------------------------------------- the pieces, on small methods
class WithMetaOptimizer(CrossEntropy):
    """A weighting network with its own optimiser, as Meta-Weight-Net declares."""

    def __init__(self, meta_lr: float = 0.5, **settings):
        super().__init__(**settings)
        self.weighting = torch.nn.Linear(1, 1)
        self.meta_lr = meta_lr

    def declare_optimizers(self):
        return {**super().declare_optimizers(), "meta": (self.weighting.parameters(), {"name": "sgd", "lr": self.meta_lr})}

    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)
        self.step(self.weighting(torch.ones(1, 1)).sum(), "meta")


def test_declared_optimisers_are_separate_and_the_epoch_plan_touches_only_net(make_cfg, one_thread):
    results = run(make_cfg(*FAST, "method=ce", "+method.meta_lr=0.25",
                           "method._target_=tests.test_method_contract.WithMetaOptimizer",
                           "protocol.lr_schedule.decay_start=0"))  # the net's lr decays from epoch 0
    checkpoint = torch.load(Path(results["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
    net_state, meta_state = checkpoint["optimizer_states"]
    assert net_state["param_groups"][0]["lr"] == pytest.approx(0.001 * 1 / 2)  # epoch 1 of 2: (2 - 1) / 2
    assert meta_state["param_groups"][0]["lr"] == 0.25  # untouched by the plan
    assert len(meta_state["param_groups"][0]["params"]) == 2  # weight, bias of the weighting net only
    assert accepted_settings(WithMetaOptimizer) == ["meta_lr"]


class StrayParameter(CrossEntropy):
    def __init__(self, **settings):
        super().__init__(**settings)
        self.label_logits = torch.nn.Parameter(torch.zeros(3))


def test_a_parameter_in_no_declared_optimiser_is_refused():
    from tests.conftest import tiny_method

    with pytest.raises(ConfigError, match="label_logits belongs to no declared optimiser"):
        tiny_method(StrayParameter).configure_optimizers()


class TwoStages(CrossEntropy):
    """warm-up for 1 epoch, then retraining from scratch with the stage's own lr."""

    def __init__(self, **settings):
        super().__init__(**settings)
        self.seen = []

    def stages(self):
        return [Stage("warmup", epochs=1), Stage("retrain", reinit=True, lr=0.01,
                                                  lr_schedule={"name": "multistep", "milestones": [1]})]

    def on_train_epoch_start(self):
        before = self.net.classifier.weight.detach().clone()
        super().on_train_epoch_start()
        self.seen.append({"stage": self.stage.name, "changed": not torch.equal(before, self.net.classifier.weight),
                          "lr": self.optimizer().param_groups[0]["lr"], "state": len(self.optimizer().state)})


def test_stages_reinitialise_reset_and_follow_their_own_lr_plan(make_cfg, one_thread, monkeypatch):
    seen = []
    original = TwoStages.__init__

    def keep(self, **settings):
        original(self, **settings)
        self.seen = seen

    monkeypatch.setattr(TwoStages, "__init__", keep)
    results = run(make_cfg(*FAST, "method=ce", "protocol.epochs=3",
                           "method._target_=tests.test_method_contract.TwoStages"))
    assert [s["stage"] for s in seen] == ["warmup", "retrain", "retrain"]
    assert [s["changed"] for s in seen] == [False, True, False]  # re-built at the stage's start only
    assert seen[1]["state"] == 0 and seen[2]["state"] > 0  # optimiser state cleared, then rebuilt
    assert [s["lr"] for s in seen] == pytest.approx([0.001, 0.01, 0.001])  # stage lr, x0.1 at its epoch 1
    assert results["metrics"]["train/stage"] == 1.0


def test_stages_past_the_run_are_cut_and_a_middle_open_stage_is_refused():
    from noisylab.methods.contract import plan_stages

    spans = plan_stages([Stage("a", 3), Stage("b", 5), Stage("c")], max_epochs=4)
    assert [(s.stage.name, s.start, s.end) for s in spans] == [("a", 0, 3), ("b", 3, 4)]
    assert [s.stage.name for s in plan_stages([Stage("a", 0), Stage("b")], 4)] == ["b"]
    with pytest.raises(ConfigError, match="only the last stage"):
        plan_stages([Stage("a"), Stage("b", 2)], 4)


class Probe(CrossEntropy):
    """Records what the training-set pass and the raw batches give."""

    raw_batches = True
    record: dict = {}

    def training_step(self, batch, batch_idx):
        dm = self.trainer.datamodule
        if batch_idx == 0 and self.current_epoch == 0:
            Probe.record["raw_equal"] = torch.equal(batch["x"], dm.train["x"][batch["index"]])
            torch.manual_seed(5)
            first = self.view(batch["x"])
            torch.manual_seed(5)
            Probe.record["view_equal"] = torch.equal(first, dm.transform(batch["x"], True))
            Probe.record["views_differ"] = not torch.equal(self.view(batch["x"]), self.view(batch["x"]))
        return super().training_step({**batch, "x": self.view(batch["x"])}, batch_idx)

    def on_train_end(self):
        dm = self.trainer.datamodule
        self.net.train()
        logits, losses = self.training_set_pass()
        Probe.record["mode_restored"] = self.net.training  # back in train mode after the eval-mode pass
        plain_x = dm.transform(dm.train["x"], False)
        self.net.eval()
        with torch.no_grad():
            expected = self.net(plain_x)
        Probe.record["logits_close"] = torch.allclose(logits, expected, atol=1e-5)
        Probe.record["losses_close"] = torch.allclose(
            losses, torch.nn.functional.cross_entropy(expected, dm.train["y"], reduction="none"), atol=1e-5)
        augmented, _ = self.training_set_pass(augment=True)
        Probe.record["augment_changes"] = not torch.allclose(augmented, logits)


def test_views_of_raw_batches_and_the_training_set_pass(make_cfg, one_thread):
    Probe.record.clear()
    run(make_cfg(*FAST, "method=ce", "protocol.epochs=1", "model=cnn6", "data.augment=crop_flip", "+data.padding=1",
                 "protocol.augment=null", "method._target_=tests.test_method_contract.Probe"))
    assert Probe.record == {"raw_equal": True, "view_equal": True, "views_differ": True, "logits_close": True,
                            "losses_close": True, "mode_restored": True, "augment_changes": True}


def test_jocor_forgets_half_the_rate_under_asymmetric_noise_unless_tau_is_set():
    from noisylab.methods.jocor import JoCoR
    from tests.conftest import tiny_method

    schedule = {"name": "coteaching", "tau": None, "num_gradual": 10, "exponent": 1}
    assert tiny_method(JoCoR, noise_kind="asymmetric", schedule=schedule).forget_rate(50) == pytest.approx(0.25)
    assert tiny_method(JoCoR, noise_kind="pair", schedule=schedule).forget_rate(50) == pytest.approx(0.5)
    fixed = {**schedule, "tau": 0.4}
    assert tiny_method(JoCoR, noise_kind="asymmetric", schedule=fixed).forget_rate(50) == pytest.approx(0.4)


# ------------------------------------------------------------------------------ configs
def test_the_papers_command_composes_the_published_protocol(make_cfg):
    cfg = make_cfg("method=coteaching", "data=cifar10", "noise=pair45")
    assert cfg.protocol.name == "coteaching" and cfg.trainer.max_epochs == 200 and cfg.model.name == "cnn9"
    assert cfg.protocol.optimizer._target_ == "torch.optim.Adam" and cfg.protocol.lr_schedule.decay_start == 80
    other = make_cfg("method=ce", "protocol=arazo", "data=cifar10")
    assert other.trainer.max_epochs == 300 and other.protocol.optimizer._target_ == "torch.optim.SGD"


@pytest.mark.parametrize("method,data,key,value", [
    ("jocor", "mnist", "model.name", "mlp"), ("coteaching_plus", "mnist", "model.name", "mlp"),
    ("coteaching_plus", "mnist", "method.init_epoch", 0), ("coteaching_plus", "cifar10", "method.init_epoch", 20),
    ("coteaching_plus", "cifar100", "method.init_epoch", 5), ("jocor", "cifar100", "protocol.lr_schedule.decay_start", 100),
    ("jocor", "cifar10", "protocol.lr_schedule.decay_start", 80), ("jocor", "cifar10", "model.name", "cnn6"),
])
def test_per_dataset_values_come_from_method_data(make_cfg, method, data, key, value):
    from omegaconf import OmegaConf

    assert OmegaConf.select(make_cfg(f"method={method}", f"data={data}"), key) == value


def test_a_users_override_beats_the_per_dataset_value(make_cfg):
    assert make_cfg("method=coteaching_plus", "data=mnist", "method.init_epoch=3").method.init_epoch == 3


def test_the_old_recipe_keys_still_work_on_the_command_line():
    assert rewrite_overrides(["method.epochs=3", "+method.optimizer.lr=0.1", "method.co_lambda=0.5",
                              "method=ce", "~method.last_k", "+method.x=1"]) == [
        "protocol.epochs=3", "+protocol.optimizer.lr=0.1", "++method.co_lambda=0.5", "method=ce",
        "~protocol.last_k", "+method.x=1"]


class LookAheadProbe(CrossEntropy):
    """The plain optimiser goes into ``higher`` inside a real run (what the bilevel methods need)."""

    grads: list = []

    def training_step(self, batch, batch_idx):
        import higher

        weights = torch.zeros(len(batch["y"]), requires_grad=True)
        with higher.innerloop_ctx(self.net, self.optimizer("net"), copy_initial_weights=True) as (net, opt):
            opt.step((F.cross_entropy(net(batch["x"]), batch["y"], reduction="none") * weights).sum())
            outer = F.cross_entropy(net(batch["x"]), batch["y"])
            LookAheadProbe.grads.append(torch.autograd.grad(outer, weights)[0])
        return super().training_step(batch, batch_idx)


def test_the_plain_optimiser_serves_a_higher_look_ahead(make_cfg, one_thread):
    LookAheadProbe.grads.clear()
    run(make_cfg(*FAST, "method=ce", "protocol.epochs=1", "method._target_=tests.test_method_contract.LookAheadProbe"))
    assert LookAheadProbe.grads and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in LookAheadProbe.grads)
