"""SIGTERM and SIGINT (Ctrl-C) stop a run with the command that resumes it.

``stop_on_signals``: within it both signals raise ``Interrupted`` wherever the program is; no
results are written, and ``noisylab.train.task`` prints one sentence with the command that
resumes the run (from its last finished epoch, ``checkpoints/last.ckpt``, into the same
folder), writes it to the folder's ``error.txt`` and exits with 128 + the signal number (143
for SIGTERM, 130 for SIGINT). The unfinished epoch is trained again on resume, so the resumed
run ends exactly as an uninterrupted one (the batch order is a function of seed and epoch,
the random states are in the checkpoint). ``exit_when_interrupted`` does the same around the
whole command (a signal while starting up: one sentence, no traceback). Standard library
only, so that it is in place before the heavy imports.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from pathlib import Path


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived. A BaseException (like KeyboardInterrupt, which Lightning
    would turn into ``sys.exit(1)``), so no ``except Exception`` swallows it. ``checkpoint``
    and ``epochs``: what the run can be resumed from, filled in by ``LastCheckpoint``."""

    def __init__(self, signum: int) -> None:
        self.name = signal.Signals(signum).name
        super().__init__(self.name)
        self.signum = int(signum)
        self.checkpoint: Path | None = None
        self.epochs: int | None = None

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StoppedEarly(Exception):
    """Training ended before its last epoch without a signal (``trainer.max_time``, a callback
    that set ``should_stop``): no results.json (the run is not finished); the same command
    resumes it from its last finished epoch."""

    exit_status = 3

    def __init__(self, epochs: int, max_epochs: int, why: str, resumable: bool = True) -> None:
        super().__init__(f"stopped by {why} after {epochs} of {max_epochs} epochs")
        self.epochs, self.max_epochs, self.why, self.resumable = epochs, max_epochs, why, resumable

    def sentence(self, sweep_dir: str | None = None) -> str:
        """With what resumes it: the same command (a multirun's with its folder named, since
        its default folder is a new one each time)."""
        again = f"the same command with hydra.sweep.dir={sweep_dir}" if sweep_dir else "the same command"
        if not self.resumable:
            return f"{self}; it kept no checkpoint (callbacks=none), so {again} starts it over"
        return (f"{self}; run {again} again to resume it from its last finished epoch (trainer.max_time may "
                "change)")


@contextlib.contextmanager
def stop_on_signals():
    """Within the block SIGTERM and SIGINT raise ``Interrupted`` (once: a second signal
    during the shutdown is ignored). Lightning chains its own SIGTERM handler before ours."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_IGN)
        RECEIVED.append(signum)
        raise Interrupted(signum)

    RECEIVED.clear()

    previous = {number: signal.signal(number, handler) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


RECEIVED: list[int] = []  # the signal stop_on_signals raised Interrupted for, if any


def signal_behind(error: Exception) -> Interrupted | None:
    """The ``Interrupted`` a library turned into an error of its own (OmegaConf re-raises
    whatever interrupts it as a ConfigKeyError): a stop, not a crash."""
    return Interrupted(RECEIVED[0]) if RECEIVED and not isinstance(error, Interrupted) else None


def resume_command(overrides: list[str], checkpoint: Path, output_dir: Path) -> str:
    """The command line that resumes a run from ``checkpoint`` into its own folder."""
    kept = [o for o in overrides if o.lstrip("+~").split("=")[0] != "ckpt_path" and not o.startswith("hydra.")]
    words = ["python", "-m", "noisylab", *kept, f"ckpt_path={Path(checkpoint).resolve()}",
             f"hydra.run.dir={Path(output_dir).resolve()}"]
    return " ".join(shlex.quote(word) for word in words)


def interrupted_sentence(stop: Interrupted, overrides: list[str], output_dir: Path, resumed_from=None,
                         max_epochs: int | None = None) -> str:
    """One sentence: which signal stopped the run, and the command that resumes it."""
    name = stop.name
    checkpoint = stop.checkpoint or (Path(resumed_from) if resumed_from else None)
    if checkpoint is None:
        return (f"stopped by {name} before the first epoch ended, so there is no checkpoint to resume from; "
                "run the same command again to start over.")
    done = "" if stop.epochs is None else f" after {stop.epochs}" + (f" of {max_epochs}" if max_epochs else "") + " epochs"
    return f"stopped by {name}{done}; resume with: {resume_command(overrides, checkpoint, output_dir)}"


@contextlib.contextmanager
def exit_when_interrupted():
    """Around a whole command: a signal outside a run (starting up, between the jobs of a
    multirun) ends it with one sentence and 128 + the signal number."""
    try:
        with stop_on_signals():
            yield
    except Interrupted as stop:
        if {"-m", "--multirun"} & set(sys.argv[1:]):  # between the jobs: the later ones never ran
            sentence = (f"stopped by {stop.name} between the jobs of a multirun; run the same command again with "
                        "hydra.sweep.dir=<its folder> to finish it (finished jobs are skipped, stopped ones resume).")
        else:
            sentence = f"stopped by {stop.name} outside a run; nothing to resume."
        print(f"noisylab: {sentence}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_status)


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # what Lightning reads, in its order


def rank_zero() -> bool:
    """Whether this process is (or will be) global rank 0, before any Trainer exists:
    Lightning's rank once it is imported, else the environment variables it reads (so that an
    error found before the heavy imports is reported without them)."""
    fabric = sys.modules.get("lightning_fabric.utilities.rank_zero")
    if fabric is not None:
        return getattr(fabric.rank_zero_only, "rank", 0) == 0
    return int(next((os.environ[key] for key in RANK_VARIABLES if key in os.environ), "0")) == 0
