"""The beta-mixture methods' per-epoch extra work: one pass over the training set (eval mode,
per-sample losses) plus the beta-mixture fit, against one training epoch of the same run on
the same data. ``dyr_h`` trains a few epochs of mixup warm-up, then a few of bootstrapping (three
forwards per step); the pass and the fit are timed inside the run, the epochs by a callback.
Reported as ratios: (pass + fit) / warm-up epoch and (pass + fit) / bootstrapping epoch.

    python -m noisylab.benchmarks.bmm_pass [--data mnist1d] [--model auto] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pytorch_lightning as pl

from noisylab.benchmarks.overhead import EpochTimer, compose


def timed(record: list[float], function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record.append(time.perf_counter() - started)

    return wrapper


def measure(data: str = "mnist1d", model: str = "auto", epochs: int = 3, device: str = "cpu") -> dict:
    """``epochs`` warm-up epochs, then ``epochs`` bootstrapping epochs of ``dyr_h``; medians
    without each phase's first epoch."""
    from hydra.utils import instantiate

    from noisylab.train import build_datamodule, build_method

    overrides = ["method=dyr_h", f"data={data}", f"model={model}", f"protocol.epochs={2 * epochs}",
                 f"method.warmup_epochs={epochs}", "data.val_fraction=0", "logger=none", "callbacks=none",
                 f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
                 f"trainer.default_root_dir={tempfile.gettempdir()}/noisylab-bench"]
    cfg = compose(overrides)
    pl.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.prepare()
    method = build_method(cfg, datamodule)
    passes, updates = [], []
    method.training_set_pass = timed(passes, method.training_set_pass)
    method.update_noise_model = timed(updates, method.update_noise_model)
    timer = EpochTimer()
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[timer], limit_val_batches=0,
                          enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(method, datamodule=datamodule)
    training = [epoch - update for epoch, update in zip(timer.times, updates)]  # the epoch without its fit
    warmup, bootstrap = training[1:epochs], training[epochs + 1:]
    pass_s, fit_s = statistics.median(passes[1:]), statistics.median(u - p for u, p in zip(updates[1:], passes[1:]))
    result = {"data": data, "model": cfg.model.name, "train_size": datamodule.train_size,
              "warmup_epoch_s": statistics.median(warmup), "bootstrap_epoch_s": statistics.median(bootstrap),
              "pass_s": pass_s, "fit_s": fit_s}
    result["ratio_warmup"] = (pass_s + fit_s) / result["warmup_epoch_s"]
    result["ratio_bootstrap"] = (pass_s + fit_s) / result["bootstrap_epoch_s"]
    return result


def report(result: dict) -> None:
    print(f"dyr_h on {result['data']} ({result['train_size']} training samples), {result['model']}:")
    print(f"  training epoch, mixup warm-up      {1000 * result['warmup_epoch_s']:9.1f} ms")
    print(f"  training epoch, bootstrapping      {1000 * result['bootstrap_epoch_s']:9.1f} ms   (3 forwards per step)")
    print(f"  training-set pass (eval mode)      {1000 * result['pass_s']:9.1f} ms")
    print(f"  beta-mixture fit (10 EM steps)     {1000 * result['fit_s']:9.1f} ms")
    print(f"  (pass + fit) / warm-up epoch       {result['ratio_warmup']:9.3f}x")
    print(f"  (pass + fit) / bootstrapping epoch {result['ratio_bootstrap']:9.3f}x")


def main(argv=None, device: str = "cpu") -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist1d")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each phase (the first is not timed)")
    args = parser.parse_args(argv)
    result = measure(args.data, args.model, args.epochs, device)
    report(result)
    return result


if __name__ == "__main__":
    main()
