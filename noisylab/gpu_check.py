"""``make gpu-check``: the whole GPU check in one command, sized for a short loan of a GPU
machine (at most 8 minutes on one H100/H200-class GPU), and its dry run on the CPU.

    python -m noisylab.gpu_check [OUT_DIR] [--dry-run] [--budget SECONDS]

Three phases, each a subprocess with its own time limit, so a hang or a crash in one still
leaves the others' results (and the JSON is rewritten after every phase):

1. ``tests``: the ``gpu``-marked tests (``tests/test_gpu.py``): every method config on the
   device under ``speed=default`` and ``speed=gpu``, bf16 vs fp32, exact resume, DDP on one
   process; pass/fail per test from pytest's JUnit XML (``pytest-xdist`` workers when
   installed: the compilations run side by side);
2. ``bench``: ``python -m noisylab.bench --speed default gpu`` (overhead, fused pair, meta step,
   the CIFAR-10 epoch with FLOPs and MFU);
3. ``throughput``: a small Co-teaching sweep one job at a time against several jobs at once
   on the device (``hydra/launcher=joblib_share``).

It writes ``gpu_check.json`` (everything, and the speed goals met or missed) and
``gpu_check.md`` (a short summary) into ``OUT_DIR`` (default ``$OUT`` when set, else
``gpu-check/``), plus the raw ``bench.json``, ``throughput.json``, ``gpu_tests.xml`` and
``gpu_check.log``. Without CUDA (or with ``--dry-run``) it is a dry run on the CPU in under a
minute: the same phases on a few methods and cut plans, their numbers CPU figures and
labelled so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {  # the speed goals of issue #17, each a ratio measured in one run
    "overhead cnn9 batch 128 (noisylab / plain loop)": 1.05,
    "fused two-network step (fused pair / one network)": 1.30,
    "meta step (look-ahead / plain step)": 2.5,
}
COTEACHING_SWEEP_RUNS, COTEACHING_EPOCHS = 54, 200  # +sweep=coteaching_cifar10


def run_phase(name: str, command: list[str], timeout: float, log, env: dict) -> dict:
    """Runs one phase in its own process group (a timeout stops its workers too); returns
    its status and seconds."""
    started = time.perf_counter()
    log.write(f"\n===== {name}: {' '.join(command)} (limit {timeout:.0f} s)\n")
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                               start_new_session=True)
    try:
        code = process.wait(timeout=max(timeout, 1))
        status = "passed" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        status = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - started
    log.write(f"===== {name}: {status} in {seconds:.1f} s\n")
    log.flush()
    print(f"gpu-check: {name} {status} in {seconds:.1f} s", flush=True)
    return {"status": status, "seconds": round(seconds, 1)}


def log_results(path: Path) -> dict:
    """Per test from pytest's verbose lines (``PASSED tests/...::name``): what finished
    before a timeout, when no JUnit XML was written."""
    tests = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            for outcome in ("PASSED", "FAILED", "ERROR", "SKIPPED"):
                marker = f"{outcome} tests/test_gpu.py::"
                if marker in line:
                    name = line.split(marker, 1)[1].split()[0]
                    tests[name] = {"outcome": outcome.lower().replace("error", "error"), "seconds": None,
                                   "message": "(from the log: the phase did not finish)"}
    return tests


def junit_results(path: Path) -> dict:
    """Per test: passed / failed / skipped / error, its seconds and the failure's first line."""
    if not path.is_file():
        return {}
    tests = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = "skipped" if tag == "skipped" else ("failed" if tag == "failure" else "error")
                message = (found.get("message") or "").strip().splitlines()[0][:300] if found.get("message") else ""
        tests[name] = {"outcome": outcome, "seconds": round(float(case.get("time", 0)), 1), "message": message}
    return tests


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def goals(bench: dict | None) -> dict:
    """Each speed goal: the measured ratio, the goal, met or not (None: not measured)."""
    results = (bench or {}).get("results", {})
    measured: dict[str, float | None] = dict.fromkeys(GOALS)
    for row in results.get("overhead") or []:
        if row.get("model") == "cnn9" and row.get("batch_size") == 128:
            measured["overhead cnn9 batch 128 (noisylab / plain loop)"] = row["ratio"]
    fused = (results.get("fused") or {}).get("cnn9") or {}
    measured["fused two-network step (fused pair / one network)"] = fused.get("fused/single")
    meta = [v for k, v in (results.get("meta") or {}).items() if isinstance(v, dict)]
    ratios = [value for row in meta for key, value in row.items() if key.endswith("/plain")]
    measured["meta step (look-ahead / plain step)"] = min(ratios) if ratios else None
    return {name: {"measured": value, "goal": GOALS[name], "met": None if value is None else value <= GOALS[name]}
            for name, value in measured.items()}


def projection(bench: dict | None, throughput: dict | None) -> dict:
    """The +sweep=coteaching_cifar10 grid (54 runs x 200 epochs) on one device, from the
    measured Co-teaching/cnn9 epoch (the faster of the speed settings) and the throughput."""
    epochs = ((bench or {}).get("results", {}).get("epoch") or {})
    candidates = {k: v["epoch_s"] for k, v in epochs.items()
                  if k.startswith("coteaching/cnn9") and isinstance(v, dict) and "epoch_s" in v}
    if not candidates:
        return {}
    case = min(candidates, key=candidates.get)
    hours = COTEACHING_SWEEP_RUNS * COTEACHING_EPOCHS * candidates[case] / 3600
    out = {"epoch_case": case, "epoch_s": round(candidates[case], 3), "one_at_a_time_hours": round(hours, 2),
           "extrapolated": bool(epochs[case].get("extrapolated")), "mfu": {k: v for k, v in epochs[case].items()
                                                                          if k.startswith("mfu")}}
    if throughput and throughput.get("speedup"):
        jobs, speedup = throughput["n_jobs"], throughput["speedup"]
        out["jobs_per_device"] = jobs if speedup > 1 else 1
        out["best_hours"] = round(hours / max(speedup, 1.0), 2)
        out["throughput_speedup"] = round(speedup, 3)
    return out


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# noisylab gpu-check — {env['device_name']} ({'DRY RUN on the CPU: not GPU figures' if report['dry_run'] else 'GPU'})",
             "", f"torch {env['torch']}, CUDA {env['cuda']}, {env['date']}, {report['total_s']:.0f} s in all", ""]
    lines += ["| phase | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {name} | {p['status']} | {p['seconds']} |" for name, p in report["phases"].items()]
    tests = report.get("tests", {})
    if tests:
        counts = {o: sum(t["outcome"] == o for t in tests.values()) for o in ("passed", "failed", "error", "skipped")}
        lines += ["", "Tests: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n)]
        lines += [f"- FAILED {name}: {t['message']}" for name, t in tests.items() if t["outcome"] in ("failed", "error")]
    lines += ["", "| speed goal | measured | goal | met |", "| --- | --- | --- | --- |"]
    for name, g in report["goals"].items():
        value = "-" if g["measured"] is None else f"{g['measured']:.3f}x"
        lines.append(f"| {name} | {value} | <= {g['goal']}x | {'-' if g['met'] is None else ('yes' if g['met'] else 'NO')} |")
    p = report.get("projection") or {}
    if p:
        lines += ["", f"Co-teaching/cnn9 CIFAR-10 epoch ({p['epoch_case']}): {p['epoch_s']} s"
                  + (" (extrapolated)" if p["extrapolated"] else "")
                  + ", " + ", ".join(f"{k} {v:.1%}" for k, v in p["mfu"].items()),
                  f"+sweep=coteaching_cifar10 (54 runs x 200 epochs): {p['one_at_a_time_hours']} device-hours one at a time"
                  + (f"; {p['best_hours']} h with {p['jobs_per_device']} jobs per device "
                     f"(throughput x{p['throughput_speedup']})" if "best_hours" in p else "")]
    t = report.get("throughput") or {}
    if t.get("speedup"):
        lines += [f"Throughput: {t['one_at_a_time_runs_per_hour']:.0f} runs/hour one at a time, "
                  f"{t['parallel_runs_per_hour']:.0f} with {t['n_jobs']} at once ({t['speedup']:.2f}x)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.environ.get("OUT") or "gpu-check",
                        help="folder for gpu_check.json/.md (default $OUT when set, else gpu-check/)")
    parser.add_argument("--dry-run", action="store_true", help="the CPU dry run (the default without CUDA)")
    parser.add_argument("--budget", type=float, default=420, help="seconds for all phases (default 420)")
    args = parser.parse_args(argv)
    import torch

    from noisylab.bench import environment

    dry = args.dry_run or not torch.cuda.is_available()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if dry:
        env.update(NOISYLAB_GPU_DRY="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    started = time.perf_counter()
    report: dict = {"dry_run": dry, "environment": environment("cpu" if dry else "cuda"), "phases": {},
                    "argv": sys.argv[1:]}
    if not dry and shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        report["environment"]["nvidia_smi"] = smi.stdout.strip()
    python = sys.executable
    # (name, command, share of the budget): the tests first (pass/fail per method matters most)
    xdist = ["-n", str(min(8, os.cpu_count() or 1))] if not dry and find_spec("xdist") else []
    if find_spec("pytest_timeout"):
        xdist.append("--timeout=150")  # a hung test fails alone; the others still report
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "2")  # several test workers compile at once
    data = Path(tempfile.mkdtemp(prefix="noisylab-gpu-check-"))
    phases = [
        ("tests", [python, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-v", "-p", "no:cacheprovider",
                   "-o", "addopts=", f"--junitxml={out / 'gpu_tests.xml'}", *xdist], 0.42 if not dry else 0.6),
        ("bench", [python, "-m", "noisylab.bench", "--json", str(out / "bench.json"),
                   *(["--only", "overhead", "--models", "mlp"] if dry else ["--speed", "default", "gpu"])], 0.40 if not dry else 0.2),
        ("throughput", [python, "-m", "noisylab.benchmarks.throughput", "--json", str(out / "throughput.json"),
                        *(["--n-jobs", "2"] if dry else ["--n-jobs", "4", "--gpu-memory-fraction", "0.2"]), "--",
                        *throughput_sweep(data, dry)], 0.18 if not dry else 0.2),
    ]
    with open(out / "gpu_check.log", "w") as log:
        for name, command, share in phases:
            left = args.budget - (time.perf_counter() - started)
            if left < 10:
                report["phases"][name] = {"status": "skipped: the time budget is spent", "seconds": 0}
                continue
            if name == "throughput":
                if find_spec("hydra_plugins.hydra_joblib_launcher") is None:
                    report["phases"][name] = {"status": "skipped: hydra-joblib-launcher is not installed", "seconds": 0}
                    continue
                from tests.fixtures import write_cifar10

                write_cifar10(data, n_train=64 if dry else 8192, n_test=32 if dry else 1024, learnable=True)
            report["phases"][name] = run_phase(name, command, min(share * args.budget + 30, left), log, env)
            finish(report, out, started)
    shutil.rmtree(data, ignore_errors=True)
    print(markdown(report))
    return report


def throughput_sweep(data: Path, dry: bool) -> list[str]:
    base = ["method=coteaching", "data=cifar10", f"data.root={data}", "data.val_fraction=0", "model=cnn9"]
    if dry:
        return [*base, "model=mlp", "protocol.epochs=1", "protocol.batch_size=32", "seed=0,1", "trainer=cpu"]
    return [*base, "protocol.epochs=3", "seed=0,1,2,3", "trainer=gpu", "++data.on_device=true"]


def finish(report: dict, out: Path, started: float) -> None:
    """Collects what the phases wrote and rewrites gpu_check.json and gpu_check.md."""
    report["tests"] = junit_results(out / "gpu_tests.xml") or log_results(out / "gpu_check.log")
    bench, throughput = read_json(out / "bench.json"), read_json(out / "throughput.json")
    report["bench"] = bench
    report["throughput"] = throughput
    report["goals"] = goals(bench)
    report["projection"] = projection(bench, throughput)
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["written"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
