"""The entry point: ``python -m noisylab [overrides]`` composes ``conf/`` and runs one
experiment (or, with ``-m``, one per job of a Hydra multirun).

run(cfg): seed -> datamodule (source + noise) -> method -> Trainer.fit -> Trainer.test ->
results.json (+ metrics.csv from the CSV logger, noisy_labels.npz) in the run directory.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from noisylab.errors import NoisyLabError

log = logging.getLogger("noisylab")


def config_dir() -> str:
    """``conf/`` ships inside the package when installed, beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError("noisylab's config tree (conf/config.yaml) is missing from the installation.")


def build_datamodule(cfg: DictConfig):
    from noisylab.data.datamodule import NoisyDataModule

    method, data = cfg.method, cfg.data
    if method.get("augment") is not None:  # the method's published pipeline beats the dataset's default
        data = OmegaConf.merge(data, {"augment": method.augment})
    if method.get("normalize") is False:
        data = OmegaConf.merge(data, {"mean": None, "std": None})
    trusted = int(cfg.data.get("trusted_per_class", 0) or 0)
    if method.get("needs_trusted", False) and trusted <= 0:
        raise NoisyLabError(f"method={method.name} needs a trusted clean set: set data.trusted_per_class > 0.")
    return NoisyDataModule(
        data, cfg.noise, batch_size=method.batch_size, eval_batch_size=cfg.data.get("eval_batch_size", 512),
        trusted_per_class=trusted, serve_trusted=bool(method.get("needs_trusted", False)), seed=cfg.seed,
    )


# Keys of a method's config that set up the run around it, not arguments of its class.
RUN_KEYS = ("name", "_target_", "model", "batch_size", "epochs", "augment", "normalize", "needs_trusted",
            "uses_schedule")


def build_method(cfg: DictConfig, datamodule):
    from hydra.utils import get_class

    settings = {k: v for k, v in cfg.method.items() if k not in RUN_KEYS}
    if cfg.method.get("uses_schedule", False):  # small-loss methods: the forget-rate schedule
        settings["schedule"] = cfg.schedule
    cls = get_class(cfg.method._target_)
    return cls(
        model=cfg.model, num_classes=datamodule.num_classes, input_shape=datamodule.input_shape,
        train_size=datamodule.train_size, noise_rate=float(cfg.noise.get("rate", 0.0) or 0.0),
        max_epochs=int(cfg.trainer.max_epochs), **settings,
    )


def build_loggers(cfg: DictConfig) -> list:
    from hydra.utils import instantiate

    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None or "_target_" not in logger_cfg:
            continue
        if name == "wandb":
            logger_cfg = OmegaConf.merge(logger_cfg, {"offline": wandb_offline(logger_cfg)})
        loggers.append(instantiate(logger_cfg))
    return loggers


def wandb_offline(logger_cfg) -> bool:
    """Offline unless asked online and both an API key and the W&B server are reachable."""
    if logger_cfg.get("offline") is not None and logger_cfg.get("offline") != "auto":
        return bool(logger_cfg.offline)
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled"):
        return True
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    if not has_key:
        return True
    import socket

    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=3).close()
        return False
    except OSError:
        return True


def quiet_lightning() -> None:
    """Lightning's start-up tips and a deprecation notice of its own internals are noise in
    every run's output; real warnings stay."""
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def run(cfg: DictConfig) -> dict:
    """Trains and tests one configuration; returns the results written to disk (by rank 0)
    plus ``rank``, this process's global rank under DDP."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from noisylab.results import to_number, write_json_atomic

    started = time.time()
    quiet_lightning()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.prepare()
    method = build_method(cfg, datamodule)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    trainer = instantiate(cfg.trainer, logger=build_loggers(cfg) or False, callbacks=callbacks)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    noisy_file = output_dir / "noisy_labels.npz"
    if trainer.is_global_zero:  # under DDP every rank runs this function; rank 0 writes
        datamodule.save_noisy_labels(output_dir)
    try:
        trainer.fit(method, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_metrics = dict(trainer.callback_metrics)
        test_metrics = trainer.test(method, datamodule=datamodule, verbose=False)[0]
        metrics = {**fit_metrics, **test_metrics, **method.summary_metrics()}
        metrics = {k: to_number(v) for k, v in sorted(metrics.items()) if "acc_epoch" not in k}
        results = {
            "method": cfg.method.name, "data": cfg.data.name, "model": cfg.model.name,
            "seed": int(cfg.seed), "noise": datamodule.noise_summary, "metrics": metrics,
            "epochs": int(trainer.current_epoch), "wall_time_s": round(time.time() - started, 3),
            "run_dir": str(output_dir), "noisy_labels": str(noisy_file),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        if trainer.is_global_zero:
            write_json_atomic(output_dir / "results.json", results)
        results["rank"] = trainer.global_rank
    finally:
        finish_wandb()
    return results


def finish_wandb() -> None:
    """Ends the W&B run so the next multirun job gets its own (Lightning reuses an active run)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def print_summary(results: dict) -> None:
    metrics, noise = results["metrics"], results["noise"]

    def pct(key):
        value = metrics.get(key)
        return "n/a" if value is None else f"{100 * value:.2f}%"

    lines = [
        f"method {results['method']} | data {results['data']} | model {results['model']} | seed {results['seed']}",
        f"noise  {noise['name']} (nominal {noise['rate']:.2f}, realised {noise['actual_rate']:.4f})",
        f"test accuracy {pct('test/acc')} (mean of last 10 epochs {pct('test/acc_last10')})",
        f"label precision {pct('train/label_precision')}",
        f"run files: {results['run_dir']}",
    ]
    print("\n".join(lines), flush=True)


def task(cfg: DictConfig) -> float | None:
    """The Hydra task: one run. User errors become one sentence and a non-zero exit; in a
    multirun the failing job is recorded and the others go on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        results = run(cfg)
    except NoisyLabError as error:
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if multirun:
            log.error("%s", error)
            (Path(cfg.paths.output_dir) / "error.txt").write_text(f"{error}\n")
            return float("nan")
        print(f"noisylab: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    if results.pop("rank") == 0:
        print_summary(results)
    metric = cfg.get("optimized_metric")
    return results["metrics"].get(metric) if metric else None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    return task(cfg)
