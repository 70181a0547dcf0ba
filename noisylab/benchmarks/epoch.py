"""One CIFAR-10-shaped training epoch through noisylab: its time, its FLOP count and the
fraction of the device's measured peak it reaches (MFU).

    python -m noisylab.benchmarks.epoch [--device cpu|cuda] [--steps N] [--speed default gpu]

Cases: ``ce``/``cnn9``, ``coteaching``/``cnn9`` (two networks) and ``ce``/``preact_resnet18``,
each with its method's protocol (batch 128, Adam) on synthetic uint8 data of CIFAR-10's real
size (50,000 x 3 x 32 x 32, 10 classes; made in memory, no download), no validation.

* Time: two epochs through the Lightning Trainer; the second is timed (the first warms up
  cuDNN and the allocator). On CUDA both epochs are whole, with the data resident on the GPU
  (``data.on_device``). On the CPU a step of ``cnn9`` at batch 128 takes seconds, so each
  epoch is cut to ``--steps`` steps (default 1) and the epoch time is extrapolated from the
  time per step; the output and the JSON (``extrapolated``) say so.
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` around the first training step counts
  the step as dispatched (forward + backward of every network; optimiser updates and
  element-wise work are not counted; not counted under ``speed.compile``). ``model_flops``
  follows the usual convention, 3 x the forward count of the method's (eager) networks on
  one batch (performance.md); MFU uses it.
* Speed settings: each case runs under every ``--speed`` option given (the ``speed``
  config group: ``default``, ``gpu`` = bf16 + channels_last + compile + fused, ``none``),
  applied as ``noisylab.train`` does; results of other options than ``default`` are keyed
  ``<method>/<model>@<speed>``.
* Peak: a large matrix product timed in the same run (bf16 and fp32 on CUDA, 8192^2;
  fp32 on the CPU, 1024^2). MFU = model FLOP/s / measured peak: on CUDA against the bf16
  peak (the convention) and the fp32 peak; on the CPU against the fp32 peak.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

from noisylab.benchmarks.overhead import EpochTimer, compose, datamodule_for, sync, trainer_overrides

CIFAR_TRAIN_SIZE = 50_000
CASES = (("ce", "cnn9"), ("coteaching", "cnn9"), ("ce", "preact_resnet18"))


@dataclass(frozen=True)
class EpochPlan:
    train_size: int = CIFAR_TRAIN_SIZE
    steps: int | None = None  # steps run per epoch; None: the whole epoch
    batch_size: int | None = None  # None: the method's protocol's


CUDA_PLAN = EpochPlan()
CPU_PLAN = EpochPlan(steps=1)


def count_flops(function) -> int:
    """FLOPs dispatched while ``function()`` runs (matrix products and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        function()
    return int(counter.get_total_flops())


def matmul_peak(device, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of an ``n x n`` matrix product in ``dtype`` on ``device``, best of ``repeats``."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def measured_peaks(device) -> dict[str, float]:
    """The device's measured matrix-product peak, FLOP/s, per dtype."""
    if torch.device(device).type == "cuda":
        return {"bf16": matmul_peak(device, torch.bfloat16), "fp32": matmul_peak(device, torch.float32)}
    return {"fp32": matmul_peak(device, torch.float32)}


class FirstStepFlops(pl.Callback):
    """Counts the FLOPs of the first training step with FlopCounterMode (that step is in
    the untimed first epoch, so the counting does not slow the timed one)."""

    def __init__(self):
        self.flops: int | None = None
        self.counter: FlopCounterMode | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.flops is None and self.counter is None:
            self.counter = FlopCounterMode(display=False)
            self.counter.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
            self.flops, self.counter = int(self.counter.get_total_flops()), None


def forward_flops(method, x: torch.Tensor) -> int:
    """One forward of each of the method's networks on the input batch ``x``."""
    with torch.no_grad():
        return sum(count_flops(lambda net=net: net(x)) for net in method.networks().values())


def measure(method: str, model: str, device="cpu", plan: EpochPlan | None = None, speed: str = "default") -> dict:
    from hydra.utils import instantiate

    from noisylab import speed as speed_settings
    from noisylab.train import build_method, method_class

    device = torch.device(device)
    plan = plan or (CUDA_PLAN if device.type == "cuda" else CPU_PLAN)
    overrides = [f"method={method}", "data=cifar10", f"model={model}", "protocol.epochs=2", "data.val_fraction=0",
                 "logger=none", "callbacks=none", f"speed={speed}", *trainer_overrides(device),
                 f"trainer.default_root_dir={tempfile.gettempdir()}/noisylab-bench"]
    if plan.batch_size is not None:
        overrides.append(f"protocol.batch_size={plan.batch_size}")
    cfg = compose(overrides)
    settings = speed_settings.settings(cfg)
    speed_settings.check(settings, method_class(cfg), method)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    pl.seed_everything(0, verbose=False)
    datamodule = datamodule_for(cfg, plan.train_size)
    module = build_method(cfg, datamodule)
    batch = int(cfg.protocol.batch_size)
    forward = forward_flops(module, torch.rand(batch, *datamodule.input_shape))  # eager, before any setting
    epoch_steps = len(datamodule._batches(datamodule.train, datamodule.batch_size, shuffle=False,
                                          drop_last=bool(datamodule.data_cfg.get("drop_last", False))))
    steps = epoch_steps if plan.steps is None else min(plan.steps, epoch_steps)
    timer, flops = EpochTimer(), FirstStepFlops()
    callbacks = [timer] if settings["compile"] else [timer, flops]  # no dispatch-mode counting of compiled code
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks, limit_val_batches=0,
                          limit_train_batches=steps, enable_checkpointing=False, enable_progress_bar=False,
                          **speed_settings.trainer_overrides(settings, cfg.trainer))
    speed_settings.apply(settings, module, datamodule, trainer)
    trainer.fit(module, datamodule=datamodule)
    step_s = timer.times[-1] / steps
    samples_per_step = datamodule.train_size / epoch_steps
    result = {
        "method": method, "model": model, "speed": speed, "precision": str(trainer.precision),
        "device": str(device), "train_size": datamodule.train_size,
        "batch_size": batch, "steps_per_epoch": epoch_steps, "steps_timed": steps,
        "extrapolated": steps < epoch_steps,
        "epoch_s": step_s * epoch_steps,
        "step_ms": 1000 * step_s,
        # FLOPs per epoch: per sample of the counted (full) batch x the samples of an epoch
        "measured_flops_per_epoch": None if flops.flops is None else flops.flops / batch * datamodule.train_size,
        "model_flops_per_epoch": 3 * forward / batch * datamodule.train_size,
    }
    result["images_per_s"] = samples_per_step / step_s
    result["achieved_flops"] = result["model_flops_per_epoch"] / result["epoch_s"]
    return result


def add_mfu(result: dict, peaks: dict[str, float]) -> dict:
    for dtype, peak in peaks.items():
        result[f"mfu_vs_{dtype}"] = result["achieved_flops"] / peak
    return result


def report(result: dict) -> None:
    cuda = result["device"].startswith("cuda")
    how = (f"{result['steps_timed']} of {result['steps_per_epoch']} steps timed, extrapolated to the epoch"
           if result["extrapolated"] else f"whole epoch of {result['steps_per_epoch']} steps")
    where = "GPU" if cuda else f"CPU, {torch.get_num_threads()} threads; not a GPU figure"
    print(f"{result['method']}/{result['model']}, speed={result['speed']} ({result['precision']}), "
          f"{result['train_size']} images, batch {result['batch_size']} ({how}; {where}):")
    print(f"  epoch                {result['epoch_s']:10.2f} s   ({result['step_ms']:.1f} ms/step, "
          f"{result['images_per_s']:.0f} images/s)")
    counted = result["measured_flops_per_epoch"]
    counted = "not counted under compile" if counted is None else f"counted fwd+bwd {counted / 1e12:.2f}"
    print(f"  FLOPs per epoch      {result['model_flops_per_epoch'] / 1e12:10.2f} TFLOP (3 x forward; {counted})")
    mfu = "   ".join(f"MFU vs {k[7:]} peak {v:.1%}" for k, v in result.items() if k.startswith("mfu_vs_"))
    print(f"  achieved             {result['achieved_flops'] / 1e12:10.3f} TFLOP/s   {mfu}")


def main(device=None, plan: EpochPlan | None = None, cases=None, speeds=("default",)) -> dict:
    """Measures the peak and each case (default: ``CASES``) on ``device`` (default: CUDA
    when available), prints them and returns ``{"peak_flops": {...}, "<method>/<model>": {...}}``."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    plan = plan or (CUDA_PLAN if device.type == "cuda" else CPU_PLAN)
    peaks = measured_peaks(device)
    print(f"One CIFAR-10-shaped epoch (synthetic data) on {device}; measured matmul peak: "
          + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s" for k, v in peaks.items()))
    results: dict = {"peak_flops": peaks}
    for speed in speeds:
        for method, model in cases or CASES:
            result = add_mfu(measure(method, model, device, plan, speed), peaks)
            results[f"{method}/{model}" + ("" if speed == "default" else f"@{speed}")] = result
            report(result)
    return results


def cli(argv=None) -> dict:
    from noisylab.train import quiet_lightning

    quiet_lightning()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch to run (default: all on CUDA, 1 on CPU)")
    parser.add_argument("--speed", nargs="+", default=["default"], help="speed settings to run each case under")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    plan = CUDA_PLAN if device.type == "cuda" else CPU_PLAN
    if args.steps is not None:
        plan = EpochPlan(plan.train_size, args.steps, plan.batch_size)
    return main(device, plan, speeds=args.speed)


if __name__ == "__main__":
    cli()
