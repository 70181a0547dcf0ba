"""A user's mistakes in a method's settings stop the run with one sentence (ConfigError, exit 2)
that names the key, the value and what is allowed; settings that only look odd still run.
The ranges are checked by the constructors (tiny methods here), the types by
``contract.check_settings`` on the way from the command line."""

import logging
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from noisylab.errors import ConfigError, NoisyLabError
from noisylab.methods.bootstrap import Bootstrap
from noisylab.methods.contract import RunFacts, check_settings
from noisylab.methods.coteaching_plus import CoTeachingPlus
from noisylab.methods.dynamic_bootstrapping import HardBootstrapping, SoftToHardBootstrapping
from noisylab.methods.gce import GeneralizedCrossEntropy
from noisylab.methods.ieg import IEG
from noisylab.methods.joint_opt import JointOptimization
from noisylab.methods.l2rw import LearningToReweight
from noisylab.methods.loss_correction import LossCorrection
from noisylab.methods.mixup import Mixup
from noisylab.methods.mslg import MetaSoftLabels
from noisylab.methods.mwnet import MetaWeightNet
from noisylab.methods.pencil import PENCIL
from noisylab.methods.sce import SymmetricCrossEntropy
from noisylab.methods.soseleto import Soseleto
from noisylab.train import build_datamodule, build_method, rewrite_overrides, run
from tests.conftest import method_defaults, tiny_method
from tests.test_cli import noisylab
from tests.test_quirks import SCHEDULE

NAN = float("nan")
LOOKAHEAD = {"backend": "higher", "step": "sgd", "lr": None, "batchnorm": "batch"}

REFUSED = [  # class, settings, the sentence (a regular expression)
    (Bootstrap, {"beta": -1}, r"method\.beta must lie in \[0, 1\], got -1\."),
    (SymmetricCrossEntropy, {"alpha": -1}, r"method\.alpha must be >= 0 \(the weight of CE\), got -1\."),
    (SymmetricCrossEntropy, {"beta": -0.5}, r"method\.beta must be >= 0 \(the weight of RCE\), got -0\.5\."),
    (SymmetricCrossEntropy, {"alpha": 0, "beta": 0}, r"method\.alpha \+ method\.beta must be > 0 \(with both 0"),
    (SymmetricCrossEntropy, {"log_zero": 4}, r"method\.log_zero must be < 0 \(A, .*got 4\."),
    (GeneralizedCrossEntropy, {"q": 0}, r"method\.q must lie in \(0, 1\], got 0\."),
    (GeneralizedCrossEntropy, {"k": 2}, r"method\.k must lie in \(0, 1\) \(samples with p_y <= k are pruned\), got 2\."),
    (GeneralizedCrossEntropy, {"k": 0, "truncated": True}, r"method\.k must lie in \(0, 1\)"),
    (GeneralizedCrossEntropy, {"start_prune": -3}, r"method\.start_prune must be >= 0 .*got -3\."),
    (LossCorrection, {"direction": "forward", "transition": "bogus"},
     r"method\.transition must be estimated or oracle, got 'bogus'\."),
    (LossCorrection, {"direction": "forward", "estimate_epochs": 0},
     r"method\.estimate_epochs must be >= 1 with method\.transition=estimated .*got 0\."),
    (LossCorrection, {"direction": "backward", "percentile": 150}, r"method\.percentile must lie in \(0, 100\], got 150\."),
    (Mixup, {"alpha": -2}, r"method\.alpha must be > 0, got -2\."),
    (Mixup, {"alpha": NAN}, r"method\.alpha must be > 0, got nan\."),
    (HardBootstrapping, {"alpha": NAN}, r"method\.alpha must be > 0, got nan\."),
    (HardBootstrapping, {"reg_weight": -1}, r"method\.reg_weight must be >= 0 .*got -1\."),
    (SoftToHardBootstrapping, {"temperature_end": NAN}, r"method\.temperature_end must be > 0, got nan\."),
    (CoTeachingPlus, {"init_epoch": -1, "schedule": SCHEDULE}, r"method\.init_epoch must be >= 0 \(epochs of plain Co-teaching first\), got -1\."),
    (CoTeachingPlus, {"warmup_steps": -5, "schedule": SCHEDULE}, r"method\.warmup_steps must be >= 0, got -5\."),
    (JointOptimization, {"alpha": -1.2}, r"method\.alpha must be >= 0 \(the weight of the prior term\), got -1\.2\."),
    (JointOptimization, {"joint_epochs": 0}, r"method\.joint_epochs must be null \(no retraining\) or >= 1 .*got 0\."),
    (JointOptimization, {"begin": 70, "joint_epochs": 50}, r"method\.begin must be <= method\.joint_epochs \(50\) .*got 70\."),
    (JointOptimization, {"retrain_lr": 0}, r"method\.retrain_lr must be null \(the protocol's\) or > 0, got 0\."),
    (PENCIL, {"stage1": 200, "stage2": 70}, r"method\.stage1 and method\.stage2 need 1 <= stage1 <= stage2 .*got 200 and 70\."),
    (PENCIL, {"label_lr": 0}, r"method\.label_lr must be > 0 \(lambda, the label logits' step size\), got 0\."),
    (PENCIL, {"k": -10}, r"method\.k must be > 0 .*got -10\."),
    (PENCIL, {"beta": -0.4}, r"method\.beta must be >= 0 \(the weight of the entropy loss\), got -0\.4\."),
    (PENCIL, {"lr2": 0}, r"method\.lr2 must be null \(the protocol's lr plan\) or > 0, got 0\."),
    (MetaSoftLabels, {"beta": 0}, r"method\.beta must be > 0 \(the label logits' step size\), got 0\."),
    (MetaSoftLabels, {"gamma": -1}, r"method\.gamma must be >= 0 .*got -1\."),
    (IEG, {"temperature": 0}, r"method\.temperature must be > 0 \(the sharpening T\), got 0\."),
    (IEG, {"mixup_beta": -1}, r"method\.mixup_beta must be > 0, got -1\."),
    (IEG, {"consistency_factor": -20}, r"method\.consistency_factor must be >= 0 .*got -20\."),
    (IEG, {"ema_decay": 1}, r"method\.ema_decay must lie in \[0, 1\) .*got 1\."),
    (Soseleto, {"lr_alpha": 0}, r"method\.lr_alpha must be > 0, got 0\."),
    (LearningToReweight, {"lookahead": {**LOOKAHEAD, "backend": "jax"}},
     r"method\.lookahead\.backend=jax is not one of higher, func\."),
    (LearningToReweight, {"lookahead": {**LOOKAHEAD, "lr": -1}}, r"method\.lookahead\.lr must be null .* or > 0, got -1\."),
    (LearningToReweight, {"lookahead": {**LOOKAHEAD, "lr": "fast"}}, r"method\.lookahead\.lr must be null .* or > 0, got fast\."),
    (LearningToReweight, {"lookahead": "higher"}, r"method\.lookahead must be a block of look-ahead settings .*got 'higher'\."),
    (LearningToReweight, {"lookahead": {**LOOKAHEAD, "step": "optimizer"}},
     r"method\.lookahead\.step=optimizer needs method\.gradient=lookahead; method\.gradient=alignment takes no"),
    (Soseleto, {"lookahead": {**LOOKAHEAD, "step": "optimizer"}},
     r"method\.lookahead\.step=optimizer needs method\.gradient=lookahead; method\.gradient=first_order takes no"),
    (MetaWeightNet, {"meta_optimizer": {"name": "sgd", "lr": -1}}, r"method\.meta_optimizer=.* is not a valid optimiser: its lr must be > 0\."),
    (MetaWeightNet, {"meta_optimizer": {"name": "rmsprop", "lr": 1e-3}}, r"not a valid optimiser: optimizer.name must be one of 'adam', 'sgd', 'adamw', got 'rmsprop'"),
    (MetaWeightNet, {"meta_optimizer": {"name": "sgd", "lr": 0.1, "momentum": -1}}, r"not a valid optimiser: optimizer.momentum must be a number in \[0, 1\), got -1"),
    (MetaWeightNet, {"meta_optimizer": {"lr": 0.01}}, r"method\.meta_optimizer=\{'lr': 0\.01\} is not a valid optimiser: "
                                                      r"it names no optimiser .*protocol\.meta\.optimizer\.lr=\.\.\."),
]

ACCEPTED = [  # edge values that are legal
    (SymmetricCrossEntropy, {"alpha": 0, "beta": 1}),
    (GeneralizedCrossEntropy, {"k": 0.1, "truncated": True, "start_prune": 0}),
    (LossCorrection, {"direction": "forward", "transition": "estimated", "estimate_epochs": 1, "percentile": 100}),
    (HardBootstrapping, {"warmup_epochs": 0, "reg_weight": 0}),
    (JointOptimization, {"begin": 5, "joint_epochs": 5, "retrain_lr": None}),
    (JointOptimization, {"begin": 70, "joint_epochs": 50, "label_update": "none"}),
    (JointOptimization, {"begin": 70, "joint_epochs": None}),
    (PENCIL, {"stage1": 1, "stage2": 1, "lr2": None, "alpha": 0, "beta": 0}),
    (IEG, {"ema_decay": 0, "ce_factor": 0, "consistency_factor": 0}),
    (LearningToReweight, {"gradient": "lookahead", "lookahead": {**LOOKAHEAD, "step": "optimizer", "lr": 0.1}}),
    (Soseleto, {"gradient": "lookahead", "lookahead": {**LOOKAHEAD, "step": "optimizer"}}),
    (MetaWeightNet, {"meta_optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4}}),
]


@pytest.mark.parametrize("cls,settings,sentence", REFUSED, ids=lambda v: getattr(v, "__name__", None))
def test_a_bad_setting_is_one_sentence_naming_it(cls, settings, sentence):
    with pytest.raises(ConfigError, match=sentence):
        tiny_method(cls, **settings)


@pytest.mark.parametrize("cls,settings", ACCEPTED, ids=lambda v: getattr(v, "__name__", None))
def test_edge_values_that_are_legal_still_build(cls, settings):
    tiny_method(cls, **settings)


TYPES = [  # class, setting, value, the sentence
    (Bootstrap, "beta", "abc", "method.beta must be a finite number, got 'abc'."),
    (Bootstrap, "detach_target", "maybe", "method.detach_target must be true or false, got 'maybe'."),
    (Bootstrap, "variant", 1, "method.variant must be a word, got 1."),
    (Mixup, "alpha", NAN, "method.alpha must be a finite number, got nan."),
    (Mixup, "alpha", math.inf, "method.alpha must be a finite number, got inf."),
    (Mixup, "alpha", True, "method.alpha must be a finite number, got True."),
    (IEG, "views", 2.7, "method.views must be a whole number, got 2.7."),
    (GeneralizedCrossEntropy, "start_prune", True, "method.start_prune must be a whole number, got True."),
    (JointOptimization, "joint_epochs", "all", "method.joint_epochs must be a whole number or null, got 'all'."),
    (PENCIL, "lr2", [0.2], "method.lr2 must be a finite number or null, got [0.2]."),
]


@pytest.mark.parametrize("cls,key,value,sentence", TYPES, ids=lambda v: getattr(v, "__name__", None))
def test_a_value_of_the_wrong_type_is_one_sentence(cls, key, value, sentence):
    settings = {**method_defaults(cls), key: value}
    with pytest.raises(ConfigError) as refused:
        check_settings("x", cls, settings)
    assert str(refused.value) == sentence
    check_settings("x", cls, method_defaults(cls))  # the config's own values pass


@pytest.mark.parametrize("cls,key,value", [(IEG, "views", 3.0), (JointOptimization, "joint_epochs", None),
                                           (Mixup, "alpha", 8), (PENCIL, "lr2", None)])
def test_values_a_config_may_spell_differently_pass(cls, key, value):
    check_settings("x", cls, {**method_defaults(cls), key: value})


# ---------------------------------------------------------------- backward correction needs T^-1
def test_backward_correction_refuses_a_singular_transition_matrix():
    tie = ((0.5, 0.5), (0.5, 0.5))
    facts = RunFacts(num_classes=2, input_shape=(8,), train_size=8, max_epochs=2, transition=tie)
    settings = {**method_defaults(LossCorrection), "transition": "oracle", "model": {"name": "mlp", "hidden": [4]},
                "protocol": {"optimizer": {"name": "sgd", "lr": 0.1}}, "quirks": "paper", "facts": facts}
    with pytest.raises(ConfigError, match=r"method\.direction=backward needs an invertible T, but the realised noise "
                                          r"matrix is singular .*; use method=forward\."):
        LossCorrection(**{**settings, "direction": "backward"})
    assert LossCorrection(**{**settings, "direction": "forward"}).transition.tolist() == [[0.5, 0.5], [0.5, 0.5]]

    method = tiny_method(LossCorrection, direction="backward", transition="estimated", num_classes=3)
    with pytest.raises(ConfigError, match=r"but the one estimated after 20 epochs is singular"):
        method.use_transition(np.array([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0]]), "the one estimated after 20 epochs")
    regular = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]])
    method.use_transition(regular, "the estimate")
    assert np.allclose(method.transition.numpy(), regular)


# ---------------------------------------------------------------- through the command line's path
def build(make_cfg, *overrides):
    cfg = make_cfg(*rewrite_overrides(["data=digits", *overrides]))
    return build_method(cfg, build_datamodule(cfg))


@pytest.mark.parametrize("overrides,sentence", [
    (["method=l2rw", "data.trusted_per_class=abc"],
     r"data\.trusted_per_class must be a whole number of clean samples per class, got 'abc'\."),
    (["method=mwnet", "data.trusted_per_class=2.5"], r"data\.trusted_per_class must be a whole number .*got 2\.5\."),
    (["method=l2rw", "data.trusted_per_class=0"], r"method=l2rw needs a trusted clean set: set data\.trusted_per_class > 0\."),
    (["method=ieg", "data.trusted_per_class=100000"], r"data\.trusted_per_class=100000 is larger than class 0"),
    (["method=soseleto", "+data.trusted_batch_size=0"],
     r"data\.trusted_batch_size must be null \(the batch size\) or a whole number >= 1, got 0\."),
    (["method=mwnet", "method.meta_optimizer.lr=0.01"], r"method\.meta_optimizer=\{'lr': 0\.01\} is not a valid optimiser"),
    (["method=gce", "method.k=2"], r"method\.k must lie in \(0, 1\)"),
    (["method=pencil", "method.truncated=true"], r"method\.truncated is not a setting of method=pencil"),
])
def test_the_command_line_path_refuses_with_one_sentence(make_cfg, overrides, sentence):
    with pytest.raises(NoisyLabError, match=sentence):
        build(make_cfg, *overrides)


def test_one_trusted_sample_per_class_and_a_changed_protocol_meta_optimizer_build(make_cfg):
    assert build(make_cfg, "method=ieg", "data.trusted_per_class=1").facts.trusted_size == 10
    method = build(make_cfg, "method=mwnet", "protocol.meta.optimizer.lr=0.01")
    assert method.meta_optimizer_cfg == {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9, "nesterov": True,
                                         "weight_decay": 0.0005}


def test_ieg_warns_when_the_data_has_no_augmentation(make_cfg, caplog):
    method = tiny_method(IEG)
    for augment, warned in (("none", True), ("crop", False)):
        method._trainer = SimpleNamespace(datamodule=SimpleNamespace(transform=SimpleNamespace(augment=augment)))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="noisylab"):
            method.on_fit_start()
        assert ("views are identical" in caplog.text) == warned


def test_a_bilevel_run_logs_without_lightnings_batch_size_guess(make_cfg, one_thread):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(make_cfg("debug=fast", "data=digits", "method=l2rw", "protocol.epochs=1", "callbacks=none"))
    assert not [w for w in caught if "ambiguous collection" in str(w.message)]


def test_the_cli_exits_2_with_the_sentence_and_no_traceback(tmp_path):
    done = noisylab(tmp_path, "method=bootstrap_hard", "method.beta=abc", "logger=none")
    assert done.returncode == 2
    assert done.stderr.strip() == "noisylab: error: method.beta must be a finite number, got 'abc'."
