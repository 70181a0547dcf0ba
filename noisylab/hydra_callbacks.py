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
        failures = sorted(sweep_dir.glob("*/error*.txt"))  # error-<time>.txt: a refusal beside an earlier run
        if not failures:
            return
        print(f"noisylab: error: {len(failures)} job(s) of the multirun failed:", file=sys.stderr)
        for path in failures:
            print(f"  {path.parent.name}: {path.read_text().strip()}", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(2)


class DeviceShare(Callback):
    """Each job's share of one machine when a launcher runs several at once
    (``hydra/launcher=joblib_share``): ``cpu_threads`` torch threads per job (null: torch's
    default), ``gpu_memory_fraction`` of the GPU's memory per job through
    ``torch.cuda.set_per_process_memory_fraction`` (null: no cap). All jobs see the same
    GPU (CUDA_VISIBLE_DEVICES is left as it is). Applied in the job's own process, before
    the run starts."""

    def __init__(self, cpu_threads: int | None = None, gpu_memory_fraction: float | None = None):
        self.cpu_threads, self.gpu_memory_fraction = cpu_threads, gpu_memory_fraction

    def on_job_start(self, config, **kwargs) -> None:
        import os

        import torch

        if self.cpu_threads:
            os.environ["OMP_NUM_THREADS"] = str(int(self.cpu_threads))
            torch.set_num_threads(int(self.cpu_threads))
        if self.gpu_memory_fraction and torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(float(self.gpu_memory_fraction))
