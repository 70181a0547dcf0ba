"""Hydra callbacks. ``ReportFailedJobs``: a multirun keeps going when one job has bad input
(that job writes ``error.txt`` instead of ``results.json``); at the end the failures are
listed, one sentence each, and the process exits non-zero."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback


class ReportFailedJobs(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = sorted(sweep_dir.glob("*/error.txt"))
        if not failures:
            return
        print(f"noisylab: error: {len(failures)} job(s) of the multirun failed:", file=sys.stderr)
        for path in failures:
            print(f"  {path.parent.name}: {path.read_text().strip()}", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(2)
