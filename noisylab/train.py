"""The entry point: ``python -m noisylab [overrides]`` composes ``conf/`` and runs one
experiment (or, with ``-m``, one per job of a Hydra multirun).

run(cfg): seed -> datamodule (source + noise) -> method -> Trainer.fit -> Trainer.test ->
results.json (+ metrics.csv from the CSV logger, noisy_labels.npz) in the run directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from noisylab.errors import ConfigError, NoisyLabError
from noisylab.methods.contract import published_model, quirk_request
from noisylab.noise import noise_name

log = logging.getLogger("noisylab")
# ${noise_name:${noise}}: the label of the noise applied (sym20 for noise=sym50 noise.rate=0.2), for folder names
OmegaConf.register_new_resolver("noise_name", noise_name, replace=True)


def config_dir() -> str:
    """``conf/`` ships inside the package when installed, beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError("noisylab's config tree (conf/config.yaml) is missing from the installation.")


def method_class(cfg: DictConfig):
    from hydra.utils import get_class

    return get_class(cfg.method._target_)


def build_datamodule(cfg: DictConfig):
    from noisylab.data.datamodule import NoisyDataModule

    cls, protocol = method_class(cfg), cfg.protocol
    data = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))  # a copy this run may extend
    if protocol.get("augment") is not None:  # the published recipe's pipeline beats the dataset's default
        data = OmegaConf.merge(data, {"augment": protocol.augment})
    if protocol.get("normalize") is False:
        data = OmegaConf.merge(data, {"mean": None, "std": None})
    if "drop_last" in cls.quirks_for(quirk_request(cfg)):
        data = OmegaConf.merge(data, {"drop_last": True})
    trusted = trusted_per_class(cfg, cls)
    return NoisyDataModule(
        data, cfg.noise, batch_size=protocol.batch_size, eval_batch_size=cfg.data.get("eval_batch_size", 512),
        trusted_per_class=trusted, serve_trusted=cls.needs_trusted, seed=cfg.seed, raw_batches=cls.raw_batches,
    )


def trusted_per_class(cfg: DictConfig, cls) -> int:
    """The trusted clean set a method uses, per class: ``data.trusted_per_class``, or when that
    is null the method config's request (its paper's); methods that use none take none out."""
    if not cls.needs_trusted:
        return 0
    from noisylab.methods.contract import fits

    value = cfg.data.get("trusted_per_class")
    if value is None:
        value = cfg.method.get("trusted_per_class", 0)
    if not fits(value, int):
        raise NoisyLabError(f"data.trusted_per_class must be a whole number of clean samples per class, got {value!r}.")
    if int(value) <= 0:
        raise NoisyLabError(f"method={cfg.method.name} needs a trusted clean set: set data.trusted_per_class > 0.")
    return int(value)


def run_facts(cfg: DictConfig, datamodule):
    from noisylab.methods.contract import RunFacts

    noisy, noise = datamodule.noisy, datamodule.noise_summary
    return RunFacts(
        num_classes=datamodule.num_classes, input_shape=tuple(datamodule.input_shape),
        train_size=datamodule.train_size, max_epochs=int(cfg.trainer.max_epochs),
        noise_rate=noise["rate"], noise_kind=noise["kind"], noise_fingerprint=noise["fingerprint"],
        transition=None if noisy is None else tuple(map(tuple, noisy.transition.tolist())),
        class_names=None if datamodule.class_names is None else tuple(datamodule.class_names),
        trusted_size=datamodule.trusted_size,
        target_classes=None if datamodule.target_classes is None else tuple(datamodule.target_classes),
    )


def build_method(cfg: DictConfig, datamodule):
    """The method's class with its settings (``method.*`` less its name, target and model:
    unknown keys are refused), the run's facts, the model and protocol configs, and, for
    methods that take one, the forget-rate ``schedule``."""
    cls, settings = method_class(cfg), method_settings(cfg)
    facts = run_facts(cfg, datamodule)
    if facts.target_classes and not cls.target_head:
        raise NoisyLabError(f"data={cfg.data.name} tests on other classes than it trains on (the target classes "
                            f"{', '.join(facts.target_classes)}), and method={cfg.method.name} has no target head "
                            "for them; use method=soseleto.")
    return cls(facts=facts, model=cfg.model, protocol=cfg.protocol, quirks=quirk_request(cfg), **settings)


def check_batches(cfg: DictConfig, method, datamodule) -> None:
    """Batch sizes the data cannot serve, refused before the run starts, with the way out:
    with ``drop_last`` a batch larger than the training set leaves no batch at all (Lightning
    would run empty epochs), and BatchNorm cannot train on a last batch of one sample
    ("Expected more than 1 value per channel", in the middle of the first epoch)."""
    import torch

    size, batch = datamodule.train_size, datamodule.batch_size
    if datamodule.data_cfg.get("batches_per_epoch"):  # whole batches drawn per class
        return
    if datamodule.data_cfg.get("drop_last"):
        if size < batch:
            raise ConfigError(f"no training batch: {size} training samples, protocol.batch_size {batch}, and drop_last "
                              "(data.drop_last=true, or a method's official quirk) drops the partial batch; choose a "
                              f"batch size of at most {size}.")
        return
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in method.modules()):
        return
    loaders = [("training", size, batch, "protocol.batch_size")]
    if datamodule.serve_trusted and datamodule.trusted is not None:
        loaders.append(("trusted", datamodule.trusted_size, int(datamodule.trusted_batch_size), "the trusted batch size"))
    for what, count, per_batch, key in loaders:
        if count % per_batch == 1:
            raise ConfigError(f"the last {what} batch would hold a single sample ({count} {what} samples, {key} "
                              f"{per_batch}), on which the BatchNorm layers of model={cfg.model.name} cannot train; "
                              "choose another batch size, or +data.drop_last=true.")


def method_identity(cfg: DictConfig, mine: dict) -> dict:
    """The run's identity as this method sees it: less the groups it never reads (the trusted
    set of a method that takes none, the forget-rate ``schedule`` of one without it), and
    ``quirks`` as the behaviours the request turns on (``official`` for a method without quirks
    is ``paper``). A change the method cannot see is the same run, never a replaced one."""
    from noisylab.methods.contract import accepted_settings

    cls = method_class(cfg)
    unread = () if cls.needs_trusted else ("data.trusted_",)
    unread += () if "schedule" in accepted_settings(cls) else ("schedule.",)
    kept = {key: value for key, value in mine.items() if not key.startswith(unread)}
    if "quirks" in kept:
        applied = cls.quirks_for(quirk_request(cfg))
        kept["quirks"] = ("paper" if not applied else "official" if applied == frozenset(cls.official_quirks)
                          else sorted(applied))
    return kept


def method_settings(cfg: DictConfig) -> dict:
    """The method's settings (``method.*`` less its name, target and model, plus the
    forget-rate ``schedule`` for methods that take one), refused with one sentence if the
    method does not accept one of them or its type."""
    from noisylab.methods.contract import DESCRIPTIVE_KEYS, accepted_settings, check_settings

    cls = method_class(cfg)
    settings = {k: v for k, v in cfg.method.items() if k not in DESCRIPTIVE_KEYS}
    if "schedule" in accepted_settings(cls):
        if "schedule" in settings:
            raise NoisyLabError("the forget-rate schedule is its own group: use schedule=... / schedule.tau=..., "
                                "not method.schedule.")
        settings["schedule"] = cfg.schedule
    check_settings(cfg.method.name, cls, settings)
    return settings


def build_loggers(cfg: DictConfig, resume_from: str | None = None) -> list:
    """The run's loggers; ``resume_from``: the checkpoint the run resumes from (W&B then
    continues the run stored beside it)."""
    from hydra.utils import instantiate

    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None or "_target_" not in logger_cfg:
            continue
        arguments = {}
        if name == "wandb":  # online or offline, the run's W&B id, the sweep's group (noisylab/wandb_dashboard.py)
            from noisylab.wandb_dashboard import logger_arguments

            arguments = logger_arguments(logger_cfg, Path(cfg.paths.output_dir), resume_from)
        loggers.append(instantiate(logger_cfg, **arguments))
    return loggers


def build_trainer(cfg: DictConfig, speed):
    """The Lightning Trainer with the run's callbacks, without loggers (added once the run owns
    its folder). A setting Lightning refuses (``trainer.accelerator=gpu`` without a GPU, more
    devices than there are) is one sentence, before the folder is touched."""
    import pytorch_lightning as pl
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from noisylab import speed as speed_settings

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    overrides = speed_settings.trainer_overrides(speed, cfg.trainer)
    if any(getattr(c, "replaces_progress_bar", False) for c in callbacks):  # a log file: one line per epoch
        overrides["enable_progress_bar"] = False
    if not any(isinstance(c, pl.callbacks.Checkpoint) for c in callbacks):  # callbacks=none: no checkpoint at all,
        overrides["enable_checkpointing"] = False  # not Lightning's own in a second place
    try:
        return instantiate(cfg.trainer, logger=False, callbacks=callbacks, **overrides)
    except InstantiationException as error:
        cause = error.__cause__ or error
        settings = ", ".join(f"{k}={v}" for k, v in cfg.trainer.items()
                             if k in ("accelerator", "devices", "num_nodes", "strategy", "precision"))
        raise ConfigError(f"Lightning refuses the trainer settings ({settings}): {str(cause).rstrip('.!')}.") from None


def quiet_lightning() -> None:
    """Lightning's start-up tips and a deprecation notice of its own internals are noise in
    every run's output; real warnings stay."""
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.formatwarning = one_line_warning


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line, without the file path (a site-packages path tells a user nothing)."""
    return f"{category.__name__}: {' '.join(str(message).split())}\n"


def run(cfg: DictConfig) -> dict:
    """Trains and tests one configuration; returns the results written to disk (by rank 0)
    plus ``rank``, this process's global rank under DDP. The run folder's fate (start,
    resume, skip, replace: ``noisylab.run_folder``) is decided, and everything that can be
    checked is checked, before anything in the folder is written or removed."""
    from noisylab import run_folder
    from noisylab.schema import check_config

    published_model(cfg)  # the method's published model settings (L2RW: WRN dropout 0.3)
    check_config(cfg)  # every group's types, ranges and keys, before the heavy imports
    output_dir = Path(cfg.paths.output_dir)
    CLAIMED.discard(str(output_dir.resolve()))  # a new run owns nothing until its checks pass
    run_folder.release_locks()
    values = OmegaConf.to_container(cfg, resolve=True)
    mine = method_identity(cfg, {**run_folder.identity(values), **run_folder.contents(values)})
    state = run_folder.read_state(output_dir)
    decision = run_folder.decide(state, mine, bool(cfg.get("resume", True)), cfg.get("ckpt_path"))
    if cfg.get("ckpt_path") not in (None, "", "last", "auto"):
        run_folder.check_resume(decision.checkpoint, mine)
    if decision.action == run_folder.SKIP:
        method_settings(cfg)  # a setting the method does not know is refused, not skipped over
        return skipped(output_dir, decision.notice)
    import pytorch_lightning as pl

    from noisylab import speed as speed_settings
    from noisylab.checkpoints import METRICS_CSV, merge_metrics_csv, prepare_run_dir, seed_metrics_csv
    from noisylab.interrupts import rank_zero
    from noisylab.results import to_number, write_json_atomic
    from noisylab.run_log import open_run_logs

    started = time.time()
    quiet_lightning()
    speed = speed_settings.settings(cfg)
    speed_settings.check(speed, method_class(cfg), cfg.method.name)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.prepare()  # dataset files and noise: refused here, before the folder is touched
    method = build_method(cfg, datamodule)
    check_batches(cfg, method, datamodule)
    method.run_identity = mine  # kept in every checkpoint: a resume is checked against it
    if decision.checkpoint is not None:
        check_resume_noise(decision.checkpoint, datamodule.noise_summary["fingerprint"])
    trainer = build_trainer(cfg, speed)  # Lightning's refusals (devices, accelerator) come here
    # ---- every check has passed: from here on the folder is this run's
    claim_run_dir(output_dir, state)
    if rank_zero() and decision.notice:
        log.warning("%s: %s.", output_dir, decision.notice)
    earlier_rows = prepare_run_dir(output_dir, decision.checkpoint) if rank_zero() else []
    open_run_logs(fresh=decision.replace)
    write_hydra_record(cfg, output_dir)
    resume_from = str(decision.checkpoint) if decision.checkpoint is not None else None
    trainer.loggers = build_loggers(cfg, resume_from)  # they write into the folder (W&B's run id)
    if rank_zero():
        seed_metrics_csv(trainer.loggers, earlier_rows)
    speed_settings.apply(speed, method, datamodule, trainer)
    if trainer.loggers:
        from noisylab.wandb_dashboard import extra_config, publish

        # the run's facts (noise fingerprint, sizes) beside its config; the C x C noise matrix is an image (W&B)
        facts = {key: value for key, value in method.hparams["facts"].items() if key != "transition"}
        for logger in trainer.loggers:
            logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), **extra_config(), "facts": facts})
    noisy_file = output_dir / "noisy_labels.npz"
    if trainer.is_global_zero:  # under DDP every rank runs this function; rank 0 writes
        datamodule.save_noisy_labels(output_dir)
    try:
        trainer.fit(method, datamodule=datamodule, ckpt_path=resume_from)
        check_finished(cfg, trainer)
        # resumed from the final epoch's checkpoint, fit trains nothing: its metrics come from the checkpoint
        fit_metrics = dict(trainer.callback_metrics) or getattr(trainer.checkpoint_callback, "restored_metrics", {})
        # Lightning keeps a key logged in an earlier stage; the record holds the last epoch's statistics
        # only, so that a resumed run and an uninterrupted one report the same keys
        stale = set(getattr(method, "stale_statistics", []))
        fit_metrics = {k: v for k, v in fit_metrics.items() if k not in stale}
        test_metrics = trainer.test(method, datamodule=datamodule, verbose=False)[0]
        if trainer.is_global_zero:
            merge_metrics_csv(output_dir / METRICS_CSV, earlier_rows)
        metrics = {**fit_metrics, **test_metrics, **method.summary_metrics()}
        metrics = {k: to_number(v) for k, v in sorted(metrics.items()) if "acc_epoch" not in k}
        results = {
            "method": cfg.method.name, "data": cfg.data.name, "model": cfg.model.name,
            "protocol": cfg.protocol.get("name"), "quirks": quirk_request(cfg),
            "quirks_applied": sorted(method.quirks),
            "seed": int(cfg.seed), "noise": datamodule.noise_summary, "metrics": metrics, **method.stage_record(),
            "epochs": int(trainer.current_epoch), "wall_time_s": round(time.time() - started + earlier_seconds(trainer), 3),
            "run_dir": str(output_dir), "noisy_labels": str(noisy_file),
            "resumed_from": resume_from,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "identity": mine,
        }
        if trainer.is_global_zero:
            results["per_sample"] = str(write_per_sample(output_dir, method, datamodule))
            write_json_atomic(output_dir / "results.json", results)
            if trainer.loggers:
                publish(trainer.loggers, results, output_dir)  # summary, media, artifact, hp_metric
        results["rank"] = trainer.global_rank
    finally:
        finish_wandb()
    return results


def earlier_seconds(trainer) -> float:
    """A resumed run's time in its earlier processes (each up to its last checkpoint): its
    ``wall_time_s`` is the whole run's, not the last process's."""
    saver = trainer.checkpoint_callback
    return float(getattr(saver, "earlier_seconds", 0.0) or 0.0)


def check_finished(cfg: DictConfig, trainer) -> None:
    """A fit that returned before its last epoch (``trainer.max_time``, a callback's stop) is
    no finished run: no results.json, and the same command resumes it."""
    from noisylab.checkpoints import whole_epoch
    from noisylab.interrupts import StoppedEarly

    saver = trainer.checkpoint_callback
    if saver is not None and saver.saved_epochs is not None:
        done = saver.saved_epochs  # whole epochs, as the checkpoint holds them
    else:  # callbacks=none: Lightning counts an epoch cut short as completed
        done = trainer.current_epoch - (0 if whole_epoch(trainer) else 1)
    if done < trainer.max_epochs:
        why = f"trainer.max_time={cfg.trainer.max_time}" if cfg.trainer.get("max_time") else "a callback"
        raise StoppedEarly(done, trainer.max_epochs, why, resumable=saver is not None)


def skipped(output_dir: Path, notice: str) -> dict:
    """A finished run of the same identity: its results, untouched, and one line."""
    import json

    from noisylab.interrupts import rank_zero

    if rank_zero():
        print(f"noisylab: {output_dir}: {notice}.", flush=True)
    results = json.loads((output_dir / "results.json").read_text())
    return {**results, "rank": 0 if rank_zero() else 1, "skipped": True}


def check_resume_noise(checkpoint: Path, fingerprint: str) -> None:
    """The checkpoint's noisy labels are this run's (read without loading tensors)."""
    from noisylab.checkpoint_info import read_checkpoint

    facts = ((read_checkpoint(checkpoint).get("hyper_parameters") or {}).get("facts") or {})
    trained_on = facts.get("noise_fingerprint") if isinstance(facts, dict) else None
    if trained_on and trained_on != fingerprint:
        from noisylab.errors import ConfigError

        raise ConfigError(f"ckpt_path={checkpoint} was trained on other noisy labels (fingerprint {trained_on}) "
                            f"than this run's ({fingerprint}); resume it with the noise it was trained on.")


CLAIMED: set[str] = set()  # run folders this process has passed every check for


def claim_run_dir(output_dir: Path, decided_on=None) -> None:
    """Creates the run folder (one sentence when it cannot be), takes its lock (one sentence
    while another process runs in it) and marks it as this run's. ``decided_on``: the folder's
    state the run's decision was made on; another process that wrote the folder since (a run
    that finished while this one was checked) makes that decision stale: refused."""
    from noisylab.errors import ConfigError
    from noisylab.interrupts import rank_zero
    from noisylab.run_folder import lock, misshapen, read_state, release_locks

    wrong = misshapen(output_dir)
    if wrong:
        raise ConfigError(wrong)
    for folder in (output_dir, output_dir / "checkpoints"):  # the checkpoint too: not a late, misleading error
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".noisylab-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"the run folder {folder} cannot be written ({error.strerror or error}); "
                              "choose another with hydra.run.dir=<folder>.") from None
    if rank_zero():  # under DDP the other ranks share rank 0's folder
        lock(output_dir)
        if decided_on is not None and read_state(output_dir) != decided_on:
            release_locks()
            raise ConfigError(f"the run folder {output_dir} changed while this run was being checked (another "
                              "process wrote into it); run the command again to decide afresh.")
    CLAIMED.add(str(output_dir.resolve()))


def write_hydra_record(cfg: DictConfig, output_dir: Path) -> None:
    """``.hydra/``: the composed config, Hydra's settings and the overrides, written once the
    run owns its folder (Hydra's own copy is off, conf/hydra/default.yaml: it would overwrite
    an earlier run's record before any check)."""
    from hydra.core.hydra_config import HydraConfig

    from noisylab.interrupts import rank_zero

    if not rank_zero():
        return
    folder = output_dir / ".hydra"
    folder.mkdir(exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
        OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), folder / "overrides.yaml")


def write_per_sample(output_dir: Path, method, datamodule) -> Path:
    """``per_sample.npz``: index, observed and clean label of every training sample, the
    method's per-sample arrays (its state, its clean score) and final predictions; then
    ``suspects.csv`` (noisylab.suspects) when the method has a clean score."""
    import io

    import numpy as np

    from noisylab import suspects
    from noisylab.results import write_bytes_atomic

    arrays = {"index": np.arange(datamodule.train_size), **datamodule.train_labels(), **method.per_sample_arrays(),
              **suspects.predictions(method, datamodule)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = write_bytes_atomic(output_dir / "per_sample.npz", buffer.getvalue())
    suspects.after_run(output_dir)
    return path


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
        f"label precision {pct('train/label_precision')} | noise detection AUC "
        + ("n/a" if metrics.get("train/detection_auc") is None else f"{metrics['train/detection_auc']:.3f}"),
        f"run files: {results['run_dir']}",
    ]
    if results.get("stages_not_run"):  # the record says so too: a method's later stage was never reached
        lines.insert(1, f"stages {', '.join(s['name'] for s in results['stages'])} only: "
                        f"{', '.join(results['stages_not_run'])} never ran in {results['epochs']} epochs")
    print("\n".join(lines), flush=True)


def task(cfg: DictConfig) -> float | None:
    """The Hydra task: one run. User errors become one sentence and a non-zero exit; in a
    multirun the failing job is recorded and the others go on. Every failure leaves its
    sentence in the run folder's ``error.txt``. SIGTERM/SIGINT stop the run (and a multirun)
    with the command that resumes it, exit status 128 + the signal number. The run folder's
    lock is let go at the end (a launcher's worker process outlives its job)."""
    from noisylab.run_folder import release_locks

    try:
        return one_task(cfg)
    finally:
        release_locks()


def one_task(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from noisylab.interrupts import (
        Interrupted,
        StoppedEarly,
        interrupted_sentence,
        rank_zero,
        signal_behind,
        stop_on_signals,
    )

    with stop_on_signals():  # the handling below runs with further signals ignored
        try:
            try:
                results = run(cfg)
            except Exception as error:  # a signal's Interrupted that a library re-raised as its own error
                stop = signal_behind(error)
                if stop is None:
                    raise
                raise stop from error
        except StoppedEarly as stop:
            multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            sentence = stop.sentence(str(Path(HydraConfig.get().sweep.dir).absolute()) if multirun else None)
            record_error(cfg, sentence)
            if rank_zero():
                print(f"noisylab: {sentence}", file=sys.stderr, flush=True)
            if multirun:
                return float("nan")  # listed with the failures; the sweep launched again resumes it
            sys.exit(stop.exit_status)
        except Interrupted as stop:
            if stop.checkpoint is None:  # stopped outside fit (between fit and test, while testing)
                stop.checkpoint, stop.epochs = own_checkpoint(Path(cfg.paths.output_dir))
            overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
            sentence = interrupted_sentence(stop, overrides, Path(cfg.paths.output_dir), cfg.get("ckpt_path"),
                                            cfg.trainer.get("max_epochs"))
            record_error(cfg, sentence)
            if rank_zero():
                print(f"noisylab: {sentence}", file=sys.stderr, flush=True)
            sys.exit(stop.exit_status)
        except NoisyLabError as error:
            record_error(cfg, str(error))
            multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            if multirun:
                log.error("%s", error)
                return float("nan")
            print(f"noisylab: error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Exception as error:  # a bug: the traceback follows, the folder keeps the reason
            record_error(cfg, f"crashed: {type(error).__name__}: {error}")
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                log.error("crashed: %s: %s", type(error).__name__, error, exc_info=True)
                return float("nan")  # the other jobs go on; the failures are listed at the end
            raise
    if results.pop("rank") == 0 and not results.get("skipped"):
        print_summary(results)
    metric = cfg.get("optimized_metric")
    return results["metrics"].get(metric) if metric else None


def own_checkpoint(output_dir: Path) -> tuple[Path | None, int | None]:
    """The checkpoint this process's run wrote in its folder, and its epochs (None, None: the
    run never owned the folder, or wrote none)."""
    from noisylab.checkpoint_info import read_checkpoint
    from noisylab.errors import ConfigError

    path = output_dir / "checkpoints" / "last.ckpt"
    if str(output_dir.resolve()) not in CLAIMED or not path.is_file():
        return None, None
    try:
        epoch = read_checkpoint(path).get("epoch")
    except ConfigError:
        return None, None
    return path, epoch + 1 if isinstance(epoch, int) else None


def record_error(cfg: DictConfig, sentence: str) -> None:
    """``error.txt`` in the run folder (rank 0 only): why the run has no results.json."""
    from noisylab.interrupts import rank_zero
    from noisylab.results import write_bytes_atomic

    if rank_zero():
        with contextlib.suppress(Exception):  # reporting must not hide the error itself
            path = write_bytes_atomic(error_file(Path(cfg.paths.output_dir)), f"{sentence}\n".encode())
            if path.name == "error.txt":
                from noisylab.run_folder import mark

                mark(path.parent)  # the next run there knows this error.txt as noisylab's


def error_file(output_dir: Path) -> Path:
    """``error.txt`` for a run that owns its folder (or found it empty); a refused run in a
    folder holding an earlier run's files writes ``error-<UTC time>.txt`` beside them."""
    import datetime

    from noisylab.run_folder import LOCK

    held = any((output_dir / name).exists() for name in ("results.json", "error.txt", "checkpoints/last.ckpt", LOCK))
    if str(output_dir.resolve()) in CLAIMED or not held:
        return output_dir / "error.txt"
    return output_dir / f"error-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}.txt"


# The training recipe moved from method.* to the protocol group; the old keys keep working.
MOVED_TO_PROTOCOL = ("epochs", "batch_size", "optimizer", "lr_schedule", "augment", "normalize", "last_k")


def rewrite_overrides(argv: list[str]) -> list[str]:
    """``method.epochs=3`` -> ``protocol.epochs=3`` (likewise the other recipe keys), and
    ``method.<setting>=v`` -> ``++method.<setting>=v``, so that a misspelled setting reaches
    the method's own check (one sentence listing its settings) instead of Hydra's."""
    out = []
    for arg in argv:
        head = arg.lstrip("+~")
        prefix = arg[: len(arg) - len(head)]
        if head.startswith("method."):
            key = head[len("method."):].split("=")[0].split(".")[0]
            if key in MOVED_TO_PROTOCOL:
                arg = prefix + "protocol." + head[len("method."):]
            elif prefix == "" and "=" in head:
                arg = "++" + head
        arg = optimizer_name_override(arg)
        out.append(home_expanded(arg))
    return out


def home_expanded(arg: str) -> str:
    """``key=~/runs`` (the shell leaves a ``~`` after ``=`` as it is) -> ``key=/home/you/runs``:
    Hydra's parser refuses ``~`` unquoted, and quoted would make a folder named ``~`` in the
    current one, which ``rm -rf ~`` later removes the home folder's way."""
    import os

    key, sep, value = arg.partition("=")
    quote = value[:1] if value[:1] in "'\"" and len(value) > 1 and value[-1] == value[0] else ""
    inner = value[1:-1] if quote else value
    if not sep or not (inner == "~" or inner.startswith("~/") or (inner.startswith("~") and "/" in inner)):
        return arg
    expanded = os.path.expanduser(inner)
    return arg if expanded == inner else f"{key}={quote}{expanded}{quote}"


def optimizer_name_override(arg: str) -> str:
    """``protocol.optimizer.name=sgd`` (the old spelling) -> ``protocol.optimizer._target_=torch.optim.SGD``,
    with a one-line notice; likewise ``protocol.meta.optimizer.name``."""
    from noisylab.schema import SHORT_NAMES

    head = arg.lstrip("+~")
    key, sep, value = head.partition("=")
    if not sep or key not in ("protocol.optimizer.name", "protocol.meta.optimizer.name"):
        return arg
    node = key.removesuffix(".name")
    new = f"{node}._target_={SHORT_NAMES.get(value, 'torch.optim.' + value)}"
    print(f"noisylab: {head} is now written {new} (any torch optimiser).", file=sys.stderr, flush=True)
    return new


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    return task(cfg)


def composition_error(argv: list[str], multirun: bool = False) -> str | None:
    """Hydra's own refusals (an unknown key without ``+``, an unknown option of a group, an
    override it cannot parse) as one sentence, found by composing the config once before the
    run; None when it composes, for multirun command lines and Hydra's flags (``--help``...),
    whose composition is Hydra's to judge."""
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException

    if any(arg.startswith("-") for arg in argv):
        return None

    def composed(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=True)

    try:
        return unwritable_run_dir(composed(argv), multirun)
    except MissingConfigException as error:
        missing = re.search(r"Could not find '([^']+)/([^']+)'", str(error))
        options = re.findall(r"^\t(\w+)$", str(error).split("Config search path")[0], flags=re.M)
        if missing and options:
            return f"{missing[1]}={missing[2]} is not an option of {missing[1]}; the options are: {', '.join(options)}."
        return str(error).splitlines()[0]
    except HydraException as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        ambiguous = re.match(r"Ambiguous value for argument '([^=]+)=([^,]*),", lines[0])
        if ambiguous:  # a sweep: fine where the config itself asks for a multirun (a sweep file)
            swept = f"{ambiguous[1]}={ambiguous[2]}"
            firsts = [swept if arg.startswith(ambiguous[1] + "=") else arg for arg in argv]
            try:
                if str(composed(firsts).hydra.mode) == "RunMode.MULTIRUN":
                    return None
            except HydraException:
                return None  # Hydra reports the first value's own problem
            return (f"{lines[0].split('argument ')[1]} sweeps over several values: add -m to run one job "
                    "per value, or write [a,b] for a list.")
        unknown = re.match(r"Could not override '([^']+)'", lines[0])
        if unknown:
            return unknown_key(unknown[1], argv, composed)
        head = lines[0].rstrip(".")
        if re.search(r"mismatched input|extraneous input|no viable alternative|token recognition error", head):
            head = head.split(" (See ")[0] + " (a value holding '=', spaces, brackets or commas must be quoted: " \
                "'key=\"a=b\"' in the shell)"
        return f"{head} ({'; '.join(lines[1:])})." if len(lines) > 1 else f"{head}."
    finally:
        GlobalHydra.instance().clear()


def unknown_key(key: str, argv: list[str], composed) -> str:
    """A key the config lacks: the schema's sentence where ``+key=...`` would be refused too
    (``data.download`` for a dataset that is never downloaded), else how to add it."""
    from hydra.core.hydra_config import HydraConfig

    from noisylab.errors import ConfigError
    from noisylab.schema import check_config

    added = [f"+{arg}" if arg.split("=", 1)[0] == key else arg for arg in argv]
    try:
        cfg = composed(added)
        HydraConfig.instance().set_config(cfg)  # the run folder's interpolations read it
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.paths.output_dir = "."  # Hydra's runtime value: not known outside its run, not judged here
        check_config(cfg)
    except ConfigError as error:
        if str(error).startswith(f"{key} "):
            return str(error)
    except Exception:  # noqa: BLE001 - the plain hint below is still true
        pass
    return f"{key} is not a key of the config; to add a new key write +{argv_value(argv, key)}."


def unwritable_run_dir(cfg, multirun: bool = False) -> str | None:
    """Hydra creates the run folder (a multirun: the sweep folder and each job's) before
    noisylab runs, with a traceback when it cannot: the folder's name must resolve and its
    nearest existing ancestor must be a writable directory."""
    import errno

    from omegaconf.errors import InterpolationKeyError

    keys = ("sweep.dir", "sweep.subdir") if multirun else ("run.dir",)
    parts = []
    for key in keys:
        try:
            parts.append(str(OmegaConf.select(cfg.hydra, key, throw_on_missing=True)))
        except InterpolationKeyError as error:  # ${oops}: Hydra's traceback otherwise
            written = OmegaConf.to_container(cfg.hydra, resolve=False)[key.split(".")[0]][key.split(".")[1]]
            return f"hydra.{key}={written}: {str(error).splitlines()[0]}."
        except Exception:  # an interpolation only Hydra's run can resolve (hydra.job.num): Hydra judges it
            break
    if not parts:
        return None
    folder = Path(*parts).expanduser().absolute()
    ancestor = folder
    try:
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        longest = os.pathconf(ancestor, "PC_NAME_MAX") if ancestor.is_dir() else 255
        if any(len(os.fsencode(name)) > longest for name in folder.relative_to(ancestor).parts):
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    except OSError as error:  # a name longer than the file system allows
        return f"the run folder {folder} cannot be made ({error.strerror}); choose another with {' or '.join('hydra.' + k for k in keys)}=<folder>."
    if not ancestor.is_dir():
        return f"the run folder {folder} cannot be made: {ancestor} is a file, not a folder; choose another with hydra.{keys[0]}=<folder>."
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"the run folder {folder} cannot be made or written: no write permission in {ancestor}; choose another with hydra.{keys[0]}=<folder>."
    from noisylab.run_folder import misshapen

    return misshapen(folder)  # Hydra writes .hydra/ before noisylab runs


def multirun_error(argv: list[str]) -> str | None:
    """A multirun's command line (``-m``) judged as ``composition_error`` judges one run: each
    swept value composed once (the other keys at their first value), so that ``-m
    model=mlp,bogus`` is one sentence before any job runs, not Hydra's block after the first."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    rest = [arg for arg in argv if arg not in ("-m", "--multirun")]
    if len(rest) == len(argv) or any(arg.startswith("-") for arg in rest):
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(rest)
    except HydraException:
        return composition_error(rest)  # the parse error, as one sentence
    choices = []
    for arg, override in zip(rest, parsed, strict=True):
        head = arg[: len(arg) - len(arg.lstrip("+~"))] + arg.lstrip("+~").split("=", 1)[0]
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
        choices.append([f"{head}={v}" for v in values] if values else [arg])
    first = [options[0] for options in choices]
    probes = [first] + [first[:i] + [value] + first[i + 1:] for i, options in enumerate(choices) for value in options[1:]]
    for probe in probes[:64]:
        sentence = composition_error(probe, multirun=True)
        if sentence:
            return sentence
    return None


def argv_value(argv: list[str], key: str) -> str:
    return next((arg.lstrip("+~") for arg in argv if arg.lstrip("+~").startswith(key + "=")), key + "=...")


LAUNCHER_PLUGINS = {"slurm": "hydra_submitit_launcher", "submitit_slurm": "hydra_submitit_launcher",
                    "submitit_local": "hydra_submitit_launcher", "slurm_bundle": "hydra_joblib_launcher",
                    "joblib_share": "hydra_joblib_launcher", "joblib": "hydra_joblib_launcher"}


def missing_launcher(argv: list[str]) -> str | None:
    """``hydra/launcher=slurm`` without Hydra's submitit plugin installed: one sentence."""
    import importlib.util

    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        plugin = LAUNCHER_PLUGINS.get(value) if key == "hydra/launcher" else None
        if plugin and importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
            return (f"hydra/launcher={value} needs Hydra's {plugin.replace('_', '-')} plugin: "
                    'pip install -e ".[cluster]" (docs/cluster.md).')
    return None


def register_plugins() -> None:
    """noisylab's Hydra plugins (the S2E sweeper), registered by hand: Hydra finds plugins by
    scanning the ``hydra_plugins`` namespace, which an editable install does not extend, so
    outside the checkout ``hydra/sweeper=s2e`` would be an unknown plugin."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.noisylab_s2e import S2ESweeper

    Plugins.instance().register(S2ESweeper)


def main() -> float | None:
    from noisylab.interrupts import exit_when_interrupted

    sys.argv[1:] = rewrite_overrides(sys.argv[1:])
    register_plugins()
    with exit_when_interrupted():  # Ctrl-C while starting up: one sentence, no traceback
        sentence = missing_launcher(sys.argv[1:]) or composition_error(sys.argv[1:]) or multirun_error(sys.argv[1:])
        if sentence:
            print(f"noisylab: error: {sentence}", file=sys.stderr, flush=True)
            sys.exit(2)
        return _hydra_main()
