"""make bench's pieces (issue #9): the FLOP counter against hand counts, the CIFAR-shaped
epoch benchmark on a tiny plan, the JSON report (device, ratios) and its comparison, and
the joblib launcher with a per-job share of the device."""

import json

import pytest
import torch
from torch import nn

from noisylab import bench
from noisylab.benchmarks import epoch
from noisylab.benchmarks.overhead import synthetic_source

B, IN, OUT = 8, 12, 5


def test_flop_counter_matches_hand_count_for_a_linear_layer():
    layer = nn.Linear(IN, OUT)
    x = torch.randn(B, IN)
    assert epoch.count_flops(lambda: layer(x)) == 2 * B * IN * OUT  # forward: one (B x IN) @ (IN x OUT)
    # backward without an input gradient: the weight gradient only, another 2*B*IN*OUT
    assert epoch.count_flops(lambda: layer(x).sum().backward()) == 4 * B * IN * OUT
    x.requires_grad_(True)  # plus the input gradient: the usual 3 x forward
    assert epoch.count_flops(lambda: layer(x).sum().backward()) == 6 * B * IN * OUT


def test_synthetic_source_has_cifar10_shape():
    source = synthetic_source(5, test_size=3)
    assert source.x_train.shape == (5, 3, 32, 32) and source.x_train.dtype.name == "uint8"
    assert source.x_test.shape == (3, 3, 32, 32) and source.num_classes == 10


TINY = epoch.EpochPlan(train_size=64, steps=2, batch_size=16)


def mlp_hand_counts(train_size: int) -> tuple[int, int]:
    """The default mlp (3072-256-10) on CIFAR-shaped data: 3 x forward, and forward+backward
    as dispatched (the first layer has no input gradient), per epoch."""
    first, second = 3072 * 256, 256 * 10
    forward = 2 * (first + second)
    return 3 * forward * train_size, (4 * first + 6 * second) * train_size


def test_epoch_benchmark_on_a_tiny_plan(one_thread):
    result = epoch.measure("ce", "mlp", "cpu", TINY)
    assert result["train_size"] == 64 and result["batch_size"] == 16
    assert result["steps_per_epoch"] == 4 and result["steps_timed"] == 2 and result["extrapolated"]
    model_flops, dispatched = mlp_hand_counts(64)
    assert result["model_flops_per_epoch"] == model_flops
    assert result["measured_flops_per_epoch"] == dispatched
    assert result["epoch_s"] == pytest.approx(4 * result["step_ms"] / 1000)
    assert result["achieved_flops"] == pytest.approx(model_flops / result["epoch_s"])
    assert epoch.add_mfu(dict(result), {"fp32": 2 * result["achieved_flops"]})["mfu_vs_fp32"] == pytest.approx(0.5)
    assert result["speed"] == "default" and result["precision"] == "32-true"


def test_epoch_benchmark_applies_speed_settings(one_thread):
    result = epoch.measure("ce", "mlp", "cpu", TINY, speed="none")
    assert result["speed"] == "none" and result["model_flops_per_epoch"] == mlp_hand_counts(64)[0]


def test_json_has_device_name_and_ratios_and_compares(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(epoch, "CASES", (("ce", "mlp"),))
    monkeypatch.setattr(epoch, "CPU_PLAN", TINY)
    monkeypatch.setattr(epoch, "measured_peaks", lambda device: {"fp32": 1e12})
    path = tmp_path / "bench.json"
    bench.main(["--only", "epoch", "--json", str(path)])
    report = json.loads(path.read_text())
    env = report["environment"]
    assert env["device"] == "cpu" and env["device_name"] == bench.device_name("cpu") and env["device_name"]
    assert env["torch"] == torch.__version__ and env["date"][:2] == "20"
    run = report["results"]["epoch"]["ce/mlp"]
    assert run["mfu_vs_fp32"] == pytest.approx(run["achieved_flops"] / 1e12)
    newer = json.loads(path.read_text())
    newer["results"]["epoch"]["ce/mlp"]["epoch_s"] *= 2
    (tmp_path / "new.json").write_text(json.dumps(newer))
    shown = bench.compare(str(path), str(tmp_path / "new.json"))
    old_s, new_s = shown["epoch.ce/mlp.epoch_s"]
    assert new_s == pytest.approx(2 * old_s)
    assert "epoch.ce/mlp.train_size" not in shown and "epoch.ce/mlp.mfu_vs_fp32" in shown


def test_numbers_flattens_nested_results():
    assert bench.numbers({"a": {"x": 1, "flag": True, "name": "n"}, "b": [2.5]}) == {"a.x": 1.0, "b.0": 2.5}


def test_joblib_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[cluster]'")
    from hydra import compose, initialize_config_dir

    from noisylab.train import config_dir

    overrides = ["hydra/launcher=joblib_share", "hydra.launcher.n_jobs=3",
                 "hydra.callbacks.device_share.gpu_memory_fraction=0.3"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 3
    share = cfg.hydra.callbacks.device_share
    assert share._target_ == "noisylab.hydra_callbacks.DeviceShare"
    assert share.cpu_threads == 1 and share.gpu_memory_fraction == 0.3


def test_device_share_sets_the_job_threads(monkeypatch):
    from noisylab.hydra_callbacks import DeviceShare

    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    try:
        DeviceShare(cpu_threads=1, gpu_memory_fraction=None).on_job_start(config=None)
        assert torch.get_num_threads() == 1
        import os

        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("data", ["cifar10", "digits"])
def test_gpu_plan_composes_with_the_data_on_the_device(data):
    from noisylab.benchmarks.overhead import compose, trainer_overrides

    cfg = compose(["method=ce", f"data={data}", "model=mlp", *trainer_overrides("cuda")])
    assert cfg.trainer.accelerator == "gpu" and cfg.data.on_device is True
    assert compose(["method=ce", f"data={data}", *trainer_overrides("cpu")]).trainer.accelerator == "cpu"
