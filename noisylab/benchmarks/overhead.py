"""Framework overhead: the time of one ``ce`` training step through noisylab (Lightning
Trainer, datamodule, batch transform, logging) against a plain PyTorch loop on the same
model, data, batch size, optimizer and device. Reported as a ratio measured in one run.

    python -m noisylab.benchmarks.overhead [--model mlp --model cnn9] [--data synthetic] [--device cuda]

``--data synthetic`` (the default): CIFAR-10-shaped random uint8 images (3x32x32, 10
classes), made in memory, so no download is needed. On CUDA: 10,240 images (80 steps of
128 per epoch), 6 epochs, data resident on the GPU (``data.on_device``) for both loops. On
the CPU the plan is cut (few steps, smaller batch for the big models; the output says so).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from noisylab.data.batches import TensorBatches

SYNTHETIC_SHAPE = (3, 32, 32)  # CIFAR-10
SYNTHETIC_TEST = 1000  # test images of the synthetic source (never evaluated by the benchmarks)


@dataclass(frozen=True)
class OverheadPlan:
    batch_size: int
    train_size: int  # synthetic data only
    epochs: int  # the first is not timed


CUDA_PLAN = OverheadPlan(batch_size=128, train_size=10240, epochs=6)
CPU_PLANS = {"mlp": OverheadPlan(128, 1280, 6), "cnn9": OverheadPlan(8, 24, 3),
             "preact_resnet18": OverheadPlan(8, 24, 3)}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (no validation runs in the benchmark), synchronised
    with the GPU when there is one."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        sync(module.device)
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        sync(module.device)
        self.times.append(time.perf_counter() - self.started)


def synthetic_source(train_size: int, test_size: int = SYNTHETIC_TEST, seed: int = 0):
    """A CIFAR-10-shaped source of random uint8 images and labels (no download)."""
    from noisylab.data.sources import Source

    rng = np.random.default_rng(seed)
    return Source(
        name="cifar10", num_classes=10, input_shape=SYNTHETIC_SHAPE,
        x_train=rng.integers(0, 256, (train_size, *SYNTHETIC_SHAPE), dtype=np.uint8),
        y_train=rng.integers(0, 10, train_size), x_test=rng.integers(0, 256, (test_size, *SYNTHETIC_SHAPE), dtype=np.uint8),
        y_test=rng.integers(0, 10, test_size), asymmetric_map="cifar10",
    )


def datamodule_for(cfg, train_size: int | None = None):
    """The run's datamodule; with ``train_size``, on a synthetic CIFAR-10-shaped source of
    that many training images instead of the configured files."""
    from noisylab.train import build_datamodule

    datamodule = build_datamodule(cfg)
    if train_size is None:
        datamodule.prepare()
    else:
        datamodule.source = synthetic_source(train_size)
        datamodule._prepare_arrays()
    return datamodule


def trainer_overrides(device) -> list[str]:
    """CUDA: the GPU trainer with the data resident on the device; CPU: the CPU trainer."""
    cuda = torch.device(device).type == "cuda"
    return ["trainer=gpu", "++data.on_device=true"] if cuda else ["trainer=cpu"]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from noisylab.train import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def noisylab_step_time(cfg, train_size: int | None = None) -> tuple[float, int]:
    from hydra.utils import instantiate

    from noisylab.train import build_method

    pl.seed_everything(0, verbose=False)
    datamodule = datamodule_for(cfg, train_size)
    method = build_method(cfg, datamodule)
    timer = EpochTimer()
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[timer], limit_val_batches=0,
                          enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(method, datamodule=datamodule)
    steps = len(datamodule.train_dataloader())
    return statistics.median(timer.times[1:]) / steps, steps


def plain_step_time(cfg, epochs: int, train_size: int | None = None, device="cpu") -> float:
    """The reference: the loop a researcher would write by hand (data on ``device`` up front)."""
    from noisylab.models import build_model

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(bool(cfg.trainer.get("deterministic", False)))  # as the Trainer does
    datamodule = datamodule_for(cfg, train_size)
    model_settings = {k: v for k, v in cfg.model.items() if k != "name"}
    model = build_model(cfg.model.name, datamodule.input_shape, datamodule.num_classes, **model_settings).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.protocol.optimizer.lr))
    train = {name: tensor.to(device) for name, tensor in datamodule.train.items()}
    batches = TensorBatches(train, int(cfg.protocol.batch_size), shuffle=True, seed=0)
    model.train()
    times = []
    for _ in range(epochs):
        sync(device)
        started = time.perf_counter()
        for batch in batches:
            x = datamodule.transform(batch["x"], True)  # the same augmentation and normalisation
            loss = F.cross_entropy(model(x), batch["y"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) / len(batches)


def plan_for(model: str, device, data: str) -> OverheadPlan:
    if torch.device(device).type == "cuda":
        return CUDA_PLAN
    return CPU_PLANS.get(model, OverheadPlan(8, 24, 3)) if data == "synthetic" else OverheadPlan(128, 0, 6)


def measure(model: str = "cnn9", data: str = "synthetic", device="cpu", plan: OverheadPlan | None = None) -> dict:
    plan = plan or plan_for(model, device, data)
    synthetic = data == "synthetic"
    overrides = ["method=ce", f"data={'cifar10' if synthetic else data}", f"model={model}",
                 f"protocol.epochs={plan.epochs}", f"protocol.batch_size={plan.batch_size}", "data.val_fraction=0",
                 "logger=none", "callbacks=none", *trainer_overrides(device),
                 f"trainer.default_root_dir={tempfile.gettempdir()}/noisylab-bench"]
    cfg = compose(overrides)
    train_size = plan.train_size if synthetic else None
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    # alternate the two, twice, so that machine noise hits both alike
    framework, plain = [], []
    for _ in range(2):
        plain.append(plain_step_time(cfg, plan.epochs, train_size, device))
        step, steps = noisylab_step_time(cfg, train_size)
        framework.append(step)
    result = {"model": model, "data": "synthetic cifar10-shaped" if synthetic else data, "device": str(device),
              "batch_size": plan.batch_size, "steps_per_epoch": steps, "epochs": plan.epochs,
              "plain_ms": 1000 * min(plain), "noisylab_ms": 1000 * min(framework)}
    result["ratio"] = result["noisylab_ms"] / result["plain_ms"]
    return result


def report(result: dict) -> None:
    where = "GPU" if result["device"].startswith("cuda") else f"CPU threads {torch.get_num_threads()}"
    print(f"ce step, {result['model']} on {result['data']}, batch {result['batch_size']} "
          f"({result['steps_per_epoch']} steps/epoch x {result['epochs']} epochs, {where}):")
    print(f"  plain PyTorch loop   {result['plain_ms']:8.2f} ms/step")
    print(f"  noisylab (Lightning) {result['noisylab_ms']:8.2f} ms/step")
    cpu = "" if result["device"].startswith("cuda") else "; CPU, not a GPU figure"
    print(f"  overhead ratio       {result['ratio']:8.3f}x   (goal on GPU <= 1.05x for cnn9 at batch 128{cpu})")


MODELS = ("mlp", "cnn9", "preact_resnet18")


def main(argv=None, device=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help=f"model(s) to measure (default: {', '.join(MODELS)})")
    parser.add_argument("--data", default="synthetic", help="synthetic (CIFAR-10-shaped, default) or a data config")
    parser.add_argument("--device", default=device, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and args.data == "synthetic":
        print("(CPU: a short plan, batch cut for cnn9/preact_resnet18, few steps; not GPU figures)")
    results = []
    for model in args.model or MODELS:
        results.append(measure(model, args.data, device))
        report(results[-1])
    return results


if __name__ == "__main__":
    main()
