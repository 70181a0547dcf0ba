"""The run folder's log file (``<run dir>/<job name>.log``), written only once the run owns
its folder.

Hydra's own file handler opens the log as the job starts, before any check: a run refused
in a folder holding an earlier run would append its lines to that run's log. This handler
(conf/hydra/job_logging/noisylab.yaml puts it in place of Hydra's) holds the records in memory until
:func:`open_run_logs`, called when every check has passed, and drops them if the run is
refused or skipped.
"""

from __future__ import annotations

import logging
from collections import deque

HELD_RECORDS = 10_000  # a run's records before its checks pass are a few lines; a bound all the same


class HeldFileHandler(logging.Handler):
    """A ``logging.FileHandler`` that opens its file only when told to."""

    def __init__(self, filename: str, encoding: str | None = "utf-8"):
        super().__init__()
        self.filename, self.encoding = filename, encoding
        self.held: deque[logging.LogRecord] = deque(maxlen=HELD_RECORDS)
        self.file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is not None:
            self.file.emit(record)
        else:
            self.held.append(record)

    def open(self, fresh: bool = False) -> None:
        """Opens the file (``fresh``: emptied first, the folder's earlier run being replaced)
        and writes the records held so far."""
        if self.file is None:
            self.file = logging.FileHandler(self.filename, "w" if fresh else "a", encoding=self.encoding)
            self.file.setFormatter(self.formatter)
            self.file.setLevel(self.level)
        while self.held:
            self.file.emit(self.held.popleft())

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.held.clear()
        super().close()


def open_run_logs(fresh: bool = False) -> None:
    """Opens every held log file of the root logger (``fresh``: the folder's earlier run is
    replaced, so is its log)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, HeldFileHandler):
            handler.open(fresh)
