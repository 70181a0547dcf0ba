"""Progress in a log file: when stdout is not a terminal (a SLURM ``.out``, ``> run.log``), one
line per epoch instead of Lightning's progress bar, which a file shows as one line at the end:

    epoch 3/200 | train/loss 1.2345 | val/acc 61.20% | test/acc 60.85% | 0:00:41 elapsed, ETA 0:44:02
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from pytorch_lightning.callbacks import Callback


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def epoch_line(epoch: int, max_epochs: int, metrics: dict, elapsed: float, done_here: int) -> str:
    """The line after ``epoch`` (0-based); ``done_here``: epochs trained in this process (the
    ETA counts those, not the epochs restored from a checkpoint)."""
    parts = [f"epoch {epoch + 1}/{max_epochs}"]
    for key, percent in (("train/loss", False), ("val/acc", True), ("test/acc_epoch", True)):
        if key in metrics:
            value = float(metrics[key])
            parts.append(f"{key.replace('_epoch', '')} " + (f"{100 * value:.2f}%" if percent else f"{value:.4f}"))
    left = max_epochs - epoch - 1
    eta = _clock(elapsed / done_here * left) if done_here > 0 else "?"
    parts.append(f"{_clock(elapsed)} elapsed, ETA {eta}")
    return " | ".join(parts)


class EpochLines(Callback):
    """One line per epoch on stdout (rank 0) when ``when`` is ``always``, or ``auto`` and stdout
    is not a terminal; then ``noisylab.train`` turns the progress bar off."""

    def __init__(self, when: str = "auto") -> None:
        if when not in ("auto", "always", "never"):
            from noisylab.errors import ConfigError

            raise ConfigError(f"callbacks.progress.when must be auto, always or never, got {when!r}.")
        self.when = when
        self.started: float | None = None
        self.first_epoch = 0

    @property
    def replaces_progress_bar(self) -> bool:
        return self.when == "always" or (self.when == "auto" and not sys.stdout.isatty())

    def on_train_start(self, trainer, pl_module) -> None:
        self.started, self.first_epoch = time.time(), trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning validates before this hook: val/acc and test/acc of this epoch are in
        if not self.replaces_progress_bar or not trainer.is_global_zero or self.started is None:
            return
        from noisylab.checkpoints import whole_epoch

        if not whole_epoch(trainer):  # cut short (trainer.max_time): the stop sentence says so
            return
        epoch = trainer.current_epoch
        line = epoch_line(epoch, int(trainer.max_epochs), trainer.callback_metrics, time.time() - self.started,
                          epoch + 1 - self.first_epoch)
        print(line, flush=True)
