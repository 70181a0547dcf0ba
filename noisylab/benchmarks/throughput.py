"""A sweep's throughput on one machine: its jobs one at a time (Hydra's basic launcher)
against ``n_jobs`` at once (``hydra/launcher=joblib_share``: Hydra's joblib launcher with a
per-job share of the device). Prints runs per hour for both and their ratio.

    python -m noisylab.benchmarks.throughput [--n-jobs 2] [--threads-per-job 1] [--] [sweep overrides...]

The default sweep is tiny (``method=ce data=digits debug=fast protocol.epochs=10 seed=0,1,2,3``: four 10-epoch runs on
the CPU). For a GPU sweep give its overrides, e.g. ``-- method=coteaching data=cifar10
trainer=gpu data.on_device=true protocol.epochs=5 seed=0,1,2,3 --gpu-memory-fraction 0.24``.
Both multiruns go to a temporary folder. Needs ``pip install -e ".[cluster]"``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SWEEP = ["method=ce", "data=digits", "debug=fast", "protocol.epochs=10", "seed=0,1,2,3"]


def run_sweep(overrides: list[str], launcher: list[str], folder: Path) -> tuple[float, int]:
    """Wall time of ``python -m noisylab -m <overrides> <launcher>`` and the runs it finished."""
    command = [sys.executable, "-m", "noisylab", "-m", *overrides, *launcher, f"hydra.sweep.dir={folder}",
               "logger=none"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the sweep failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return seconds, len(list(folder.glob("*/results.json")))


def measure(overrides: list[str], n_jobs: int = 2, threads: int | None = 1,
            gpu_memory_fraction: float | None = None) -> dict:
    share = ["hydra/launcher=joblib_share", f"hydra.launcher.n_jobs={n_jobs}",
             f"hydra.callbacks.device_share.cpu_threads={threads if threads else 'null'}",
             f"hydra.callbacks.device_share.gpu_memory_fraction={gpu_memory_fraction or 'null'}"]
    with tempfile.TemporaryDirectory(prefix="noisylab-throughput-") as tmp:
        serial_s, serial_runs = run_sweep(overrides, [], Path(tmp) / "serial")
        parallel_s, parallel_runs = run_sweep(overrides, share, Path(tmp) / "parallel")
    result = {"overrides": overrides, "n_jobs": n_jobs, "threads_per_job": threads,
              "gpu_memory_fraction": gpu_memory_fraction, "runs": serial_runs,
              "one_at_a_time_s": serial_s, "parallel_s": parallel_s,
              "one_at_a_time_runs_per_hour": 3600 * serial_runs / serial_s,
              "parallel_runs_per_hour": 3600 * parallel_runs / parallel_s}
    result["speedup"] = result["parallel_runs_per_hour"] / result["one_at_a_time_runs_per_hour"]
    return result


def report(result: dict) -> None:
    print(f"sweep {' '.join(result['overrides'])} ({result['runs']} runs):")
    print(f"  one at a time          {result['one_at_a_time_s']:8.1f} s   "
          f"{result['one_at_a_time_runs_per_hour']:8.0f} runs/hour")
    print(f"  {result['n_jobs']} at once (joblib)    {result['parallel_s']:8.1f} s   "
          f"{result['parallel_runs_per_hour']:8.0f} runs/hour   ({result['speedup']:.2f}x)")


def main(argv=None) -> dict:
    from noisylab.bench import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2, help="jobs at once (default 2)")
    parser.add_argument("--threads-per-job", type=int, default=1, help="torch CPU threads per job (0: default)")
    parser.add_argument("--gpu-memory-fraction", type=float, default=None, help="each job's cap on GPU memory")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    parser.add_argument("overrides", nargs="*", help=f"the sweep (default: {' '.join(DEFAULT_SWEEP)})")
    args = parser.parse_args(argv)
    result = measure(args.overrides or DEFAULT_SWEEP, args.n_jobs, args.threads_per_job or None,
                     args.gpu_memory_fraction)
    report(result)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
