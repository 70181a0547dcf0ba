"""Checkpoints that survive kills, and run folders that never mix two runs.

* ``LastCheckpoint`` (conf/callbacks/default.yaml) writes ``<run dir>/checkpoints/last.ckpt``
  at the end of every epoch: the checkpoint goes to ``.last.ckpt.partial`` beside it, is
  flushed to disk and renamed over ``last.ckpt`` in one step, so a run killed at any moment
  (SIGKILL, a pre-emption, a crash in the middle of a save) leaves the previous epoch's whole
  checkpoint or the new whole one, never half of one. It is the run's only checkpoint file.
  (Lightning's ModelCheckpoint with ``save_last: link`` removes the old link before making
  the new one, and a second run in the same folder gets ``last-v1.ckpt`` beside the first
  run's ``last.ckpt``.) The checkpoint also carries the epoch's metrics, so a run resumed
  from its final epoch (killed while testing) reports what the uninterrupted run reports.
* ``noisylab.interrupts``: SIGTERM and SIGINT stop the run; ``LastCheckpoint`` tells the
  ``Interrupted`` exception which checkpoint (and how many epochs) it can resume from.
* ``prepare_run_dir``: once ``noisylab.run_folder`` has decided that a run starts or resumes
  in a folder (after every check), the earlier ``results.json``, ``per_sample.npz``,
  ``error.txt``, checkpoints and metrics CSV are removed, except the checkpoint it resumes from. A run resumed
  from a checkpoint keeps the CSV rows of the epochs before the resume (``merge_metrics_csv``).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

from pytorch_lightning.callbacks import Checkpoint

from noisylab.interrupts import Interrupted
from noisylab.results import commit, write_bytes_atomic

log = logging.getLogger("noisylab")

LAST = "last.ckpt"
PARTIAL = ".last.ckpt.partial"
METRICS_CSV = Path("csv") / "metrics.csv"
STALE_FILES = ("results.json", "per_sample.npz", "error.txt", str(METRICS_CSV), "csv/hparams.yaml", "suspects.csv",
               "suspects.png")


def whole_epoch(trainer) -> bool:
    """Whether the epoch that just ended ran to its last batch (not cut short by
    ``trainer.max_time`` or a callback's stop): only a whole epoch counts as done."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class LastCheckpoint(Checkpoint):
    """``<dirpath>/last.ckpt`` after every training epoch, replaced atomically. A
    ``Checkpoint`` subclass, so Lightning calls it after the method's own epoch-end hook
    (per-sample state synchronised, epoch statistics logged) and adds no ModelCheckpoint."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.saved: Path | None = None  # the checkpoint this run can be resumed from
        self.saved_epochs: int | None = None  # epochs finished in it
        self.restored_metrics: dict[str, float] = {}
        self.trainer = None
        self.earlier_seconds = 0.0  # a resumed run: its earlier processes' time, up to this checkpoint
        self.fit_started = time.time()

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # an epoch cut short (trainer.max_time) is no finished epoch: the resume trains it again
        if not trainer.sanity_checking and not trainer.fast_dev_run and whole_epoch(trainer):
            self.save(trainer)

    def save(self, trainer) -> None:
        partial = self.dirpath / PARTIAL
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        try:
            trainer.save_checkpoint(partial, weights_only=False)  # every rank takes part; rank 0 writes
            if trainer.is_global_zero:
                commit(partial, self.path)
            self.saved, self.saved_epochs = self.path, trainer.current_epoch + 1
        except BaseException:
            if trainer.is_global_zero:
                partial.unlink(missing_ok=True)
            raise
        trainer.strategy.barrier("LastCheckpoint.save")

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.trainer = trainer
        if stage == "fit":
            self.fit_started = time.time()

    def state_dict(self) -> dict:
        """Saved in the checkpoint: the epochs finished, the metrics of the last one and the
        seconds spent on them (over every process of a resumed run)."""
        metrics = {key: float(value) for key, value in self.trainer.callback_metrics.items()}
        return {"epochs": self.trainer.current_epoch + 1, "metrics": metrics,
                "seconds": self.earlier_seconds + time.time() - self.fit_started}

    def load_state_dict(self, state_dict: dict) -> None:
        self.restored_metrics = dict(state_dict.get("metrics") or {})
        self.saved_epochs = state_dict.get("epochs")
        self.earlier_seconds = float(state_dict.get("seconds") or 0.0)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """``trainer.max_time`` is each process's budget (a cluster job's time limit), not the
        run's: Lightning's Timer would restore the time the earlier processes spent, and a
        requeued job with the same command would stop at once, forever."""
        callbacks = checkpoint.get("callbacks") or {}
        for key in [key for key in callbacks if str(key).startswith("Timer")]:
            del callbacks[key]

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Tells an ``Interrupted`` what it can resume from: this run's last.ckpt, else (a
        resumed run stopped before its first epoch ended) the epochs of the checkpoint it
        came from."""
        if isinstance(exception, Interrupted) and exception.checkpoint is None:
            exception.checkpoint, exception.epochs = self.saved, self.saved_epochs


# ---------------------------------------------------------------------------- the run folder


def read_csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def prepare_run_dir(output_dir: Path, ckpt_path: str | None) -> list[dict]:
    """Removes an earlier run's files from ``output_dir`` (all but the checkpoint this run
    resumes from); returns the metrics-CSV rows of the run resumed from (else [])."""
    source = Path(ckpt_path).resolve() if ckpt_path else None
    earlier = read_csv_rows(source.parent.parent / METRICS_CSV) if source is not None else []
    if earlier:  # the epochs the checkpoint holds; a cut epoch after it is trained again
        from noisylab.checkpoint_info import read_checkpoint
        from noisylab.errors import ConfigError

        try:
            last = read_checkpoint(source).get("epoch")
        except ConfigError:  # not readable here (Lightning judges it when it loads): merge_metrics_csv still sorts
            last = None
        if isinstance(last, int):
            earlier = [row for row in earlier if _epoch(row) is not None and _epoch(row) <= last]
    checkpoints = output_dir / "checkpoints"
    stale = [output_dir / name for name in STALE_FILES]
    stale += [p for p in sorted(checkpoints.glob("*.ckpt")) if p.resolve() != source and p != source]
    stale += sorted(checkpoints.glob(".*.partial"))
    found = [p for p in stale if p.is_file() or p.is_symlink()]
    for path in found:  # the run-folder decision (noisylab.run_folder) has said so, after every check
        path.unlink()
    return earlier


def _epoch(row: dict) -> int | None:
    try:
        return int(float(row.get("epoch", "")))
    except ValueError:
        return None


def seed_metrics_csv(loggers, earlier: list[dict]) -> None:
    """A resumed run's CSV logger starts from the rows of the epochs before the resume (Lightning's
    writer removes the file it finds), so that a resumed process stopped again (a second kill,
    another ``trainer.max_time``) still leaves every epoch in ``csv/metrics.csv``."""
    from pytorch_lightning.loggers import CSVLogger

    for logger in loggers:
        if isinstance(logger, CSVLogger) and earlier:
            writer = logger.experiment  # made now: it removes the file it finds, then appends to the one written here
            writer.metrics_keys = sorted(set().union(*earlier))  # the header; new keys make Lightning rewrite it
            buffer = io.StringIO(newline="")
            table = csv.DictWriter(buffer, fieldnames=writer.metrics_keys)
            table.writeheader()
            table.writerows(earlier)
            write_bytes_atomic(writer.metrics_file_path, buffer.getvalue().encode())


def merge_metrics_csv(path: Path, earlier: list[dict]) -> None:
    """Puts the rows of the epochs before the resume (``earlier``, from the checkpoint's run)
    in front of this run's rows in ``path``: one CSV for the whole run, as if never stopped."""
    rows = read_csv_rows(path)
    if not earlier or not rows:
        return
    first = min((e for e in map(_epoch, rows) if e is not None), default=None)
    kept = [r for r in earlier if first is None or (_epoch(r) is not None and _epoch(r) < first)]
    fields = sorted(set().union(*kept, *rows))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(kept + rows)
    write_bytes_atomic(path, buffer.getvalue().encode())
