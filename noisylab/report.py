"""A sweep's results as one table: ``python -m noisylab.report <sweep_dir> [--metric KEY]``.

Reads every ``results.json`` below ``sweep_dir`` (one per job of a Hydra multirun), groups
the runs by (method, noise), and gives the mean and standard deviation over seeds of
``--metric`` (default ``test/acc_last10``, the mean test accuracy of the last 10 epochs, as
the Co-teaching family reports), in percent. Where the sweep config carries a ``paper:``
block (``method -> noise -> accuracy in percent``, see ``conf/sweep/``), the paper's number
is printed beside ours. Prints a Markdown table and writes ``report.md``, ``report.csv`` and
``report_curves.png`` (per-epoch test accuracy and label precision of every method, mean
over seeds, one column per noise: the figures of the Co-teaching paper) into ``sweep_dir``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

# Order of the rows when the sweep has no ``paper`` block to take it from.
METHOD_ORDER = ("ce", "selfpaced", "decoupling", "coteaching", "coteaching_plus", "jocor")
NOISE_ORDER = ("pair45", "sym50", "sym20")


def load_runs(sweep_dir: Path) -> tuple[list[dict], list[Path]]:
    """Every ``results.json`` below ``sweep_dir`` (sorted), and the jobs that failed."""
    runs = []
    for path in sorted(sweep_dir.rglob("results.json")):
        with open(path) as f:
            runs.append(json.load(f))
    return runs, sorted(sweep_dir.rglob("error.txt"))


def _ordered(names, preferred) -> list[str]:
    names = set(names)
    first = [n for n in preferred if n in names]
    return first + sorted(names - set(first))


def summarise(runs: list[dict], metric: str) -> dict:
    """``{(method, noise): {"values": [...], "mean", "std", "paper"}}`` with accuracies in
    percent; runs without the metric are left out (and counted in ``missing``)."""
    cells: dict[tuple[str, str], dict] = {}
    for run in runs:
        key = (run["method"], run["noise"]["name"])
        cell = cells.setdefault(key, {"values": [], "seeds": [], "missing": 0, "paper": None})
        value = run.get("metrics", {}).get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            cell["missing"] += 1
        else:
            cell["values"].append(100.0 * float(value))
            cell["seeds"].append(run.get("seed"))
        paper = ((run.get("config") or {}).get("paper") or {}).get(key[0], {}) or {}
        if paper.get(key[1]) is not None:
            cell["paper"] = float(paper[key[1]])
    for cell in cells.values():
        values = cell["values"]
        cell["mean"] = statistics.fmean(values) if values else None
        cell["std"] = statistics.stdev(values) if len(values) > 1 else None
    return cells


def paper_order(runs: list[dict]) -> tuple[list[str], list[str]]:
    """Method and noise order of the first ``paper`` block found, else the defaults."""
    for run in runs:
        paper = (run.get("config") or {}).get("paper")
        if paper:
            noises = [n for block in paper.values() for n in (block or {})]
            return list(paper), list(dict.fromkeys(noises))
    return list(METHOD_ORDER), list(NOISE_ORDER)


def _fmt(cell: dict | None) -> str:
    if cell is None or cell["mean"] is None:
        return "–"
    text = f"{cell['mean']:.2f}"
    if cell["std"] is not None:
        text += f" ± {cell['std']:.2f}"
    return text


def markdown_table(cells: dict, methods: list[str], noises: list[str], metric: str) -> str:
    with_paper = any(cell["paper"] is not None for cell in cells.values())
    header = ["method"]
    for noise in noises:
        header += [f"{noise} ours", f"{noise} paper"] if with_paper else [noise]
    header.append("runs")
    lines = [f"{metric} in %, mean ± std over seeds" + ("; paper = the reproduced table" if with_paper else ""),
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        row, runs = [method], 0
        for noise in noises:
            cell = cells.get((method, noise))
            row.append(_fmt(cell))
            if with_paper:
                paper = None if cell is None else cell["paper"]
                row.append("–" if paper is None else f"{paper:.2f}")
            runs += 0 if cell is None else len(cell["values"])
        row.append(str(runs))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, cells: dict, methods: list[str], noises: list[str], metric: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "noise", "metric", "n", "mean", "std", "paper", "ours_minus_paper", "values"])
        for method in methods:
            for noise in noises:
                cell = cells.get((method, noise))
                if cell is None:
                    continue
                mean, std, paper = cell["mean"], cell["std"], cell["paper"]
                delta = None if mean is None or paper is None else mean - paper
                writer.writerow([method, noise, metric, len(cell["values"]),
                                 "" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}",
                                 "" if paper is None else f"{paper:.2f}", "" if delta is None else f"{delta:.4f}",
                                 " ".join(f"{v:.4f}" for v in cell["values"])])


def epoch_curves(run: dict) -> dict[str, list[float]]:
    """Per-epoch test accuracy and label precision from a run's ``csv/metrics.csv``
    (Lightning writes validation and training values of one epoch on separate rows)."""
    path = Path(run.get("run_dir", "")) / "csv" / "metrics.csv"
    curves: dict[str, dict[int, float]] = {"test/acc_epoch": {}, "train/label_precision": {}}
    if not path.is_file():
        return {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, values in curves.items():
                if row.get(key):
                    values[int(row["epoch"])] = float(row[key])
    return {key: [values[e] for e in sorted(values)] for key, values in curves.items() if values}


def plot_curves(path: Path, runs: list[dict], methods: list[str], noises: list[str]) -> bool:
    """``report_curves.png``: rows = test accuracy, label precision; columns = noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("test/acc_epoch", "test accuracy"), ("train/label_precision", "label precision"))
    figure, axes = plt.subplots(2, len(noises), figsize=(4.5 * len(noises), 6.5), squeeze=False)
    drawn = False
    for column, noise in enumerate(noises):
        for method in methods:
            per_seed = [epoch_curves(r) for r in runs if r["method"] == method and r["noise"]["name"] == noise]
            for row, (key, label) in enumerate(keys):
                series = [c[key] for c in per_seed if key in c]
                if not series:
                    continue
                length = min(map(len, series))
                mean = [100 * statistics.fmean(s[e] for s in series) for e in range(length)]
                axes[row][column].plot(range(length), mean, label=method, color=f"C{methods.index(method) % 10}")
                axes[row][column].set_ylabel(f"{label} (%)")
                drawn = True
        axes[0][column].set_title(noise)
        axes[1][column].set_xlabel("epoch")
    if not drawn:
        plt.close(figure)
        return False
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def report(sweep_dir: str | Path, metric: str = "test/acc_last10") -> str:
    """Builds the table for ``sweep_dir``, writes report.md and report.csv there, returns it."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no such sweep directory: {sweep_dir}")
    runs, failures = load_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no results.json below {sweep_dir}: has the sweep run?")
    cells = summarise(runs, metric)
    preferred_methods, preferred_noises = paper_order(runs)
    methods = _ordered({m for m, _ in cells}, preferred_methods)
    noises = _ordered({n for _, n in cells}, preferred_noises)
    table = markdown_table(cells, methods, noises, metric)
    missing = sum(cell["missing"] for cell in cells.values())
    notes = []
    if missing:
        notes.append(f"{missing} run(s) without {metric} left out.")
    if failures:
        notes.append(f"{len(failures)} job(s) failed: " + ", ".join(p.parent.name for p in failures) + ".")
    data = sorted({run["data"] for run in runs})
    models = sorted({run["model"] for run in runs})
    text = (f"# Sweep {sweep_dir.name}\n\ndata {', '.join(data)} | model {', '.join(models)} | "
            f"{len(runs)} run(s)\n\n{table}" + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    (sweep_dir / "report.md").write_text(text)
    write_csv(sweep_dir / "report.csv", cells, methods, noises, metric)
    if plot_curves(sweep_dir / "report_curves.png", runs, methods, noises):
        text += "\nCurves: report_curves.png\n"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m noisylab.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="the multirun directory (holds one folder per job)")
    parser.add_argument("--metric", default="test/acc_last10", help="metric from results.json (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        text = report(args.sweep_dir, args.metric)
    except FileNotFoundError as error:
        print(f"noisylab.report: error: {error}", file=sys.stderr)
        return 2
    print(text, end="")
    print(f"written: report.md and report.csv in {args.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
