"""Framework overhead: the time of one ``ce`` training step through noisylab (Lightning
Trainer, datamodule, batch transform, logging) against a plain PyTorch loop on the same
model, data, batch size and optimizer. Reported as a ratio measured in one run.

    python -m noisylab.benchmarks.overhead [--model cnn6] [--data digits] [--epochs 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from noisylab.data.batches import TensorBatches


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (no validation runs in the benchmark)."""

    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.times.append(time.perf_counter() - self.started)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from noisylab.train import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def noisylab_step_time(cfg) -> tuple[float, int]:
    from hydra.utils import instantiate

    from noisylab.train import build_datamodule, build_method

    pl.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.prepare()
    method = build_method(cfg, datamodule)
    timer = EpochTimer()
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[timer], limit_val_batches=0,
                          enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(method, datamodule=datamodule)
    steps = len(datamodule.train_dataloader())
    return statistics.median(timer.times[1:]) / steps, steps


def plain_step_time(cfg, epochs: int) -> float:
    """The reference: the loop a researcher would write by hand."""
    from noisylab.data.datamodule import NoisyDataModule
    from noisylab.models import build_model
    from noisylab.train import build_datamodule

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(bool(cfg.trainer.get("deterministic", False)))  # as the Trainer does
    datamodule: NoisyDataModule = build_datamodule(cfg)
    datamodule.prepare()
    model_settings = {k: v for k, v in cfg.model.items() if k != "name"}
    model = build_model(cfg.model.name, datamodule.input_shape, datamodule.num_classes, **model_settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.protocol.optimizer.lr))
    batches = TensorBatches(datamodule.train, int(cfg.protocol.batch_size), shuffle=True, seed=0)
    model.train()
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        for batch in batches:
            x = batch["x"].float() if batch["x"].dtype == torch.uint8 else batch["x"]
            loss = F.cross_entropy(model(x), batch["y"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) / len(batches)


def measure(model: str = "cnn6", data: str = "digits", epochs: int = 6, batch_size: int = 128) -> dict:
    overrides = ["method=ce", f"data={data}", f"model={model}", f"protocol.epochs={epochs}",
                 f"protocol.batch_size={batch_size}", "data.val_fraction=0", "logger=none", "callbacks=none",
                 f"trainer.default_root_dir={tempfile.gettempdir()}/noisylab-bench"]
    cfg = compose(overrides)
    torch.set_num_threads(torch.get_num_threads())
    # alternate the two, twice, so that machine noise hits both alike
    framework, plain = [], []
    for _ in range(2):
        plain.append(plain_step_time(cfg, epochs))
        step, steps = noisylab_step_time(cfg)
        framework.append(step)
    result = {"model": model, "data": data, "batch_size": batch_size, "steps_per_epoch": steps,
              "plain_ms": 1000 * min(plain), "noisylab_ms": 1000 * min(framework)}
    result["ratio"] = result["noisylab_ms"] / result["plain_ms"]
    return result


def report(result: dict) -> None:
    print(f"ce step, {result['model']} on {result['data']}, batch {result['batch_size']} "
          f"({result['steps_per_epoch']} steps/epoch, CPU threads {torch.get_num_threads()}):")
    print(f"  plain PyTorch loop   {result['plain_ms']:8.2f} ms/step")
    print(f"  noisylab (Lightning) {result['noisylab_ms']:8.2f} ms/step")
    print(f"  overhead ratio       {result['ratio']:8.3f}x   (goal <= 1.10x)")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model(s) to measure (default: cnn6 and mlp)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args(argv)
    results = []
    for model in args.model or ["cnn6", "mlp"]:
        results.append(measure(model, args.data, args.epochs))
        report(results[-1])
    return results


if __name__ == "__main__":
    main()
