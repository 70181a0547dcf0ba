"""Where a training step's time goes: ``torch.profiler`` over a few steps of a noisylab run
(after a warm-up epoch), to find the cause of a missed speed goal.

    python -m noisylab.benchmarks.profile_step [--method ce] [--model cnn9] [--steps 20] [--json out.json]

Prints the operators with the most host (CPU) time, the host-device synchronisations per
step (``aten::item``/``_local_scalar_dense``, ``cudaStreamSynchronize``, device-to-host
copies: each one stalls the host until the GPU catches up, exposing the framework's host
time), and the host and device time per step. Synthetic CIFAR-10-shaped data, batch 128,
the dataset on the device (as the overhead benchmark).
"""

from __future__ import annotations

import argparse
import tempfile

import pytorch_lightning as pl
import torch

from noisylab.benchmarks.overhead import compose, datamodule_for, trainer_overrides

SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize",
            "cudaMemcpy", "Memcpy DtoH")


class Profile(pl.Callback):
    """Profiles ``steps`` training steps of epoch 1 (epoch 0 warms up)."""

    def __init__(self, steps: int):
        self.steps, self.profiler, self.done = steps, None, False

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 5 and self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.profiler is not None and not self.done and batch_idx == 5 + self.steps - 1:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            self.done = True


def measure(method: str = "ce", model: str = "cnn9", steps: int = 20, device: str | None = None) -> dict:
    from hydra.utils import instantiate

    from noisylab.train import build_method

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = compose([f"method={method}", "data=cifar10", f"model={model}", "protocol.epochs=2",
                   "protocol.batch_size=128", "data.val_fraction=0", "logger=none", "callbacks=none",
                   *trainer_overrides(device), f"trainer.default_root_dir={tempfile.gettempdir()}/noisylab-bench"])
    pl.seed_everything(0, verbose=False)
    datamodule = datamodule_for(cfg, 128 * (steps + 10))
    module = build_method(cfg, datamodule)
    profile = Profile(steps)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[profile], limit_val_batches=0,
                          enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=datamodule)
    events = profile.profiler.key_averages()
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    syncs = {e.key: e.count / steps for e in events if any(s in e.key for s in SYNC_OPS)}
    host_ms = sum(e.self_cpu_time_total for e in events) / 1000 / steps
    device_ms = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1000 / steps
    return {"method": method, "model": model, "device": device, "steps": steps,
            "host_ms_per_step": host_ms, "device_ms_per_step": device_ms, "syncs_per_step": syncs,
            "top_host_ops": [{"op": e.key, "count_per_step": e.count / steps,
                              "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / steps} for e in top]}


def main(argv=None) -> dict:
    from noisylab.bench import write_json
    from noisylab.train import quiet_lightning

    quiet_lightning()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="ce")
    parser.add_argument("--model", default="cnn9")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    result = measure(args.method, args.model, args.steps)
    print(f"{args.method}/{args.model} on {result['device']}: host {result['host_ms_per_step']:.2f} ms/step, "
          f"device {result['device_ms_per_step']:.2f} ms/step")
    print("syncs per step:", result["syncs_per_step"] or "none")
    for row in result["top_host_ops"]:
        print(f"  {row['self_cpu_ms_per_step']:8.3f} ms  x{row['count_per_step']:6.1f}  {row['op']}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
