"""The GPU-path settings (conf/speed, noisylab/speed.py) on the CPU: the presets compose, each
setting that runs on the CPU trains to the same accuracy as the plain run, compile is wired
(and refused by the bilevel methods), fused kernels are asked for on CUDA parameters only."""

import os
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

from noisylab import speed
from noisylab.errors import ConfigError
from noisylab.methods.base import build_optimizer
from noisylab.train import run
from tests.conftest import resolved

# SGD without an lr plan: one step of channels_last is then comparable weight by weight
CNN = ["method=ce", "model=cnn6", "data=digits", "noise=sym20", "debug=fast", "callbacks=none",
       "protocol=mixup", "protocol.lr_schedule.name=none"]
ONE_STEP = ["protocol.epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=0"]
MLP = ["method=ce", "model=mlp", "data=digits", "noise=sym20", "debug=fast", "callbacks=none"]


def trained_weights(method) -> dict:
    return {k: v.detach().clone() for k, v in method.state_dict().items() if k.startswith("net.")}


@pytest.fixture
def capture_method(monkeypatch):
    """The trained method of each run (``run`` returns only its results)."""
    methods = []
    original = speed.apply

    def apply(settings, method, datamodule, trainer):
        methods.append((method, trainer))
        original(settings, method, datamodule, trainer)

    monkeypatch.setattr(speed, "apply", apply)
    return methods


@pytest.mark.parametrize("preset, expected", [
    ("none", dict(bf16=False, channels_last=False, compile=False, fused=False, data_on_device=False)),
    ("default", dict(bf16=False, channels_last=False, compile=False, fused=False, data_on_device="auto")),
    ("gpu", dict(bf16=True, channels_last=True, compile=True, fused=True, data_on_device="auto")),
])
def test_presets_compose(make_cfg, preset, expected):
    cfg = make_cfg(f"speed={preset}")
    assert {k: v for k, v in resolved(cfg)["speed"].items() if k != "name"} == expected
    assert speed.settings(cfg) == {"name": preset, **expected}


def test_the_default_is_the_default_preset_and_bad_values_are_refused(make_cfg):
    from noisylab.schema import check_config

    assert make_cfg().speed.name == "default"
    with pytest.raises(ConfigError, match="speed.bf16"):
        check_config(make_cfg("speed.bf16=maybe"))


def test_channels_last_trains_as_the_plain_run(make_cfg, capture_method, one_thread):
    run(make_cfg(*CNN, *ONE_STEP))
    run(make_cfg(*CNN, *ONE_STEP, "speed.channels_last=true"))
    (plain, _), (fast, _) = capture_method
    conv = next(p for p in fast.net.parameters() if p.dim() == 4 and p.shape[1] > 1)  # (1 channel: both formats)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    a, b = trained_weights(plain), trained_weights(fast)
    assert a.keys() == b.keys()
    for name in a:  # one SGD step: the same numbers up to float rounding
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0, msg=name)
    # over epochs the rounding differences grow (chaotic training), so two epochs agree to a couple of points
    first, second = run(make_cfg(*CNN)), run(make_cfg(*CNN, "speed.channels_last=true"))
    assert first["metrics"]["test/acc"] > 0.5
    assert abs(first["metrics"]["test/acc"] - second["metrics"]["test/acc"]) < 0.03


def test_bf16_autocast_on_the_cpu_trains_to_the_same_accuracy(make_cfg, capture_method, one_thread):
    plain = run(make_cfg(*MLP))
    bf16 = run(make_cfg(*MLP, "speed.bf16=true"))
    (plain_method, plain_trainer), (fast_method, fast_trainer) = capture_method
    assert str(plain_trainer.precision) == "32-true" and str(fast_trainer.precision) == "bf16-mixed"
    a, b = trained_weights(plain_method), trained_weights(fast_method)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # autocast did change the arithmetic
    assert all(b[k].dtype == torch.float32 for k in b)  # master weights stay fp32
    assert plain["metrics"]["test/acc"] > 0.5
    assert abs(plain["metrics"]["test/acc"] - bf16["metrics"]["test/acc"]) < 0.03


def test_compile_is_applied_to_every_training_network(make_cfg, capture_method, monkeypatch, one_thread):
    compiled = []
    # a real torch.compile costs minutes of Inductor's C++ compilation on this CPU: record the call instead
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    run(make_cfg(*MLP, "method=coteaching", "speed.compile=true", "protocol.epochs=1"))
    (method, _), = capture_method
    assert compiled == list(method.networks().values()) and compiled == [method.nets]


@pytest.mark.parametrize("method", ["l2rw", "mwnet"])
def test_bilevel_methods_refuse_compile_up_front(make_cfg, capture_method, method):
    with pytest.raises(ConfigError, match=r"speed.compile=true cannot be used with method=" + method):
        run(make_cfg(f"method={method}", "debug=fast", "speed=gpu"))
    assert capture_method == []  # refused before anything was built


@pytest.mark.skipif(not os.environ.get("NOISYLAB_SLOW_TESTS"), reason=(
    "a real torch.compile costs tens of seconds of C++ compilation on a small CPU (a 2-epoch cnn6 run with "
    "speed=gpu: 140 s); set NOISYLAB_SLOW_TESTS=1 to run it. test_compile_is_applied_to_every_training_network "
    "checks the wiring"))
def test_a_compiled_run_trains_as_the_eager_run(make_cfg, capture_method, one_thread):
    eager = run(make_cfg(*MLP, "protocol.epochs=1"))
    compiled = run(make_cfg(*MLP, "protocol.epochs=1", "speed.compile=true"))
    assert capture_method[1][0].net._compiled_call_impl is not None
    assert abs(eager["metrics"]["test/acc"] - compiled["metrics"]["test/acc"]) < 0.03


def test_fused_kernels_only_for_cuda_parameters():
    params = [nn.Parameter(torch.zeros(3))]
    for cfg in ({"name": "adam", "lr": 0.1}, {"name": "sgd", "lr": 0.1}):
        assert not build_optimizer(params, cfg, fused=True).defaults.get("fused")  # CPU: ignored
    if torch.cuda.is_available():
        cuda = [nn.Parameter(torch.zeros(3, device="cuda"))]
        assert build_optimizer(cuda, {"name": "adam", "lr": 0.1}, fused=True).defaults["fused"]


def test_bf16_is_asked_for_only_where_supported(monkeypatch):
    on = {"bf16": True}
    assert speed.trainer_overrides(on, {"accelerator": "cpu"}) == {"precision": "bf16-mixed"}
    assert speed.trainer_overrides({"bf16": False}, {"accelerator": "cpu"}) == {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert speed.trainer_overrides(on, {"accelerator": "gpu"}) == {}  # e.g. a V100: fp32, with a warning
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert speed.trainer_overrides(on, {"accelerator": "gpu"}) == {"precision": "bf16-mixed"}


@pytest.mark.parametrize("method", ["ce", "coteaching", "l2rw", "ieg"])
def test_no_host_sync_in_the_training_steps(make_cfg, monkeypatch, method, one_thread):
    """No ``.item()``, ``float(t)``, ``bool(t)`` (a Python branch on a tensor) made by noisylab's
    code between a training batch's start and end: on a GPU each would wait for the device.
    (torch's own CPU-side reads, e.g. Adam's step counter, are not device syncs.)"""
    import noisylab
    from noisylab.methods.base import LNLMethod

    PACKAGE = Path(noisylab.__file__).resolve().parent
    inside, calls = [False], []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def read(self, *args, _original=original, _name=name, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            if inside[0] and Path(caller.filename).resolve().is_relative_to(PACKAGE):  # not a path test: the
                # checkout may live in any folder, even one named noisylab holding .venv
                calls.append(f"{_name} at {os.path.basename(caller.filename)}:{caller.lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    start, end = LNLMethod.on_train_batch_start, LNLMethod.on_train_batch_end
    monkeypatch.setattr(LNLMethod, "on_train_batch_start", lambda self, *a: (inside.__setitem__(0, True), start(self, *a))[1])
    # the epoch's last batch end flushes the epoch's statistics: one read per epoch is fine
    monkeypatch.setattr(LNLMethod, "on_train_batch_end", lambda self, *a: (inside.__setitem__(0, False), end(self, *a))[1])
    run(make_cfg(*MLP, f"method={method}", "protocol.epochs=1", "+trainer.limit_train_batches=3",
                 "+trainer.limit_val_batches=0"))
    assert calls == []


@pytest.mark.parametrize("free_bytes, on_device", [(10**9, True), (10**4, False)])
def test_on_a_gpu_the_data_moves_there_when_it_fits_and_optimisers_are_fused(make_cfg, monkeypatch, free_bytes,
                                                                          on_device):
    """The CUDA branch of speed.apply, with the device faked: digits (~0.5 MB) fits in 1 GB of
    free memory, not in 10 kB."""
    from types import SimpleNamespace

    from noisylab.train import build_datamodule, build_method

    cfg = make_cfg(*MLP, "speed=gpu", "speed.compile=false", "speed.channels_last=false")
    datamodule = build_datamodule(cfg)
    datamodule.prepare()
    method = build_method(cfg, datamodule)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free_bytes, 2 * free_bytes))
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    speed.apply(speed.settings(cfg), method, datamodule, trainer)
    assert bool(datamodule.data_cfg.get("on_device", False)) is on_device
    assert method.fused_optimizers
