"""``make bench``: noisylab's speed goals, each measured as a ratio against a reference
timed in the same run (never as absolute numbers in tests).

1. framework overhead: a ``ce`` step through noisylab vs a plain PyTorch loop (goal <= 1.10x);
2. two networks in one step: fused (vmapped) vs plain pair vs one network (goal on GPU:
   fused pair <= 1.3x one network);
3. the beta-mixture methods' pass over the training set + fit vs one training epoch (``dyr_h``);
4. the bilevel methods' iteration (L2RW, Meta-Weight-Net; look-ahead with ``higher`` and
   ``torch.func``) vs a plain step on the same model and batch (goal on GPU <= 2.5x);
5. one CIFAR-10-shaped epoch (synthetic data of the real size) of ``ce``/``cnn9``,
   ``coteaching``/``cnn9`` and ``ce``/``preact_resnet18``: time, FLOPs and MFU against the
   device's matmul peak measured in the same run (on the CPU: a few steps, extrapolated).

Every result is also written as JSON (``--json``, default ``bench.json`` in the current
folder; ``--json ''`` writes none) with the device's name, the torch version and the date, so
that two runs can be compared: ``python -m noisylab.bench --compare old.json new.json``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import platform
import warnings

import torch

MODULES = {"overhead": "overhead", "fused": "fused", "bmm": "bmm_pass", "meta": "meta", "epoch": "epoch"}
BENCHMARKS = tuple(MODULES)  # in the order they run


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model from /proc/cpuinfo (the platform's name elsewhere)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    """What a result was measured on: the device, torch, the date (UTC) and the CPU threads."""
    return {"device": device, "device_name": device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_json(path: str | None, result) -> None:
    """A benchmark's result as JSON at ``path`` (none when ``path`` is empty)."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2, default=str)


def numbers(tree, prefix: str = "") -> dict[str, float]:
    """Every number of a (nested) result as ``path -> value`` (lists by position)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    flat = {}
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            flat[path] = float(value)
        else:
            flat.update(numbers(value, path))
    return flat


def compared(path: str) -> bool:
    """Whether ``--compare`` shows a number: times, ratios, FLOPs, MFUs, runs per hour."""
    last = path.rsplit(".", 1)[-1]
    return (last.endswith(("_ms", "_s")) or last.startswith(("ratio", "mfu")) or "/" in last
            or "flops" in path or last.endswith("per_hour") or last == "speedup")


def compare(old_path: str, new_path: str) -> dict[str, tuple[float, float]]:
    """Prints the times, ratios and MFUs of two JSON results side by side (new/old)."""
    with open(old_path) as f:
        old = json.load(f)
    with open(new_path) as f:
        new = json.load(f)
    for label, run in (("old", old), ("new", new)):
        env = run.get("environment", {})
        print(f"{label}: {env.get('device_name', '?')}, torch {env.get('torch', '?')}, {env.get('date', '?')}")
    names = {run.get("environment", {}).get("device_name") for run in (old, new)}
    if len(names) > 1:
        print("  (different devices: read the ratios, not the times)")
    a, b = numbers(old.get("results", old)), numbers(new.get("results", new))
    shown = {k: (a[k], b[k]) for k in a if k in b and compared(k)}
    for key, (x, y) in shown.items():
        change = f"{y / x:8.3f}x" if x else "       -"
        print(f"  {key:60s} {x:12.4g} {y:12.4g} {change}")
    return shown


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="noisylab benchmarks (ratios measured in one run)")
    parser.add_argument("--only", choices=BENCHMARKS, help="run one benchmark")
    parser.add_argument("--json", default="bench.json", help="also write the numbers to this file "
                        "(default bench.json; '' for none)")
    parser.add_argument("--speed", nargs="+", default=["default"],
                        help="speed settings (conf/speed) the epoch benchmark runs each case under, e.g. default gpu")
    parser.add_argument("--models", nargs="+", default=None,
                        help="the overhead benchmark's models (default: mlp cnn9 preact_resnet18)")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two JSON results and exit")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    from noisylab.train import quiet_lightning

    quiet_lightning()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    env = environment(device)
    print(f"noisylab bench on {device} ({env['device_name']}), torch {env['torch']}, {env['date']}"
          + ("" if device == "cuda" else "\n(CPU run: these are CPU figures, not GPU ones; the big models' plans are cut)")
          + "\n")
    results: dict = {}
    report = {"environment": env, "results": results}
    for name in BENCHMARKS:
        if args.only in (None, name):
            module = importlib.import_module(f"noisylab.benchmarks.{MODULES[name]}")
            if name == "overhead":
                results[name] = module.main([f"--model={m}" for m in args.models or ()], device)
            elif name == "bmm":
                results[name] = module.main([], device)
            else:
                results[name] = module.main(device, speeds=args.speed) if name == "epoch" else module.main(device)
            print()
            if args.json:  # after every benchmark: a later failure keeps the earlier numbers
                with open(args.json, "w") as f:
                    json.dump(report, f, indent=2, default=str)
    if args.json:
        print(f"written to {args.json}")
    return report


if __name__ == "__main__":
    main()
