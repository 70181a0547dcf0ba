"""A sweep's results as one table: ``python -m noisylab.report <sweep_dir> [--metric KEY]``.

Reads every job folder below ``sweep_dir`` (one per job of a Hydra multirun: a folder with
``results.json``, ``error.txt`` or ``.hydra/overrides.yaml``) and groups the jobs by **everything
but the seed**: first the swept overrides (those in each job's ``.hydra/overrides.yaml`` whose
value differs between jobs: ``noise``, ``data``, ``schedule.exponent``, ...; a job without
``overrides.yaml`` stands for its ``method``, ``noise``, ``data`` and ``model``), then every key of
the resolved configs in the jobs' ``results.json`` (``config``) that still differs inside a
group (``noise.rate``, ``protocol.epochs``, ``quirks``, ``method.init_epoch``, ...): two runs whose
configs differ in anything but ``seed``, ``noise.seed`` and the keys in ``NOT_IDENTITY`` (where
files go, loggers, the progress bar, ``ckpt_path``) are never averaged together. Overrides that
are the same in every job are printed once, as "fixed". Each group gets the mean and standard deviation over seeds of ``--metric``
(default ``test/acc_last10``, the mean test accuracy of the last 10 epochs, as the Co-teaching
family reports), in percent.

Layout: when the groups differ only by ``method`` and ``noise``, one row per method and one
column per noise (the papers' tables); otherwise one row per group, a column per swept key
(the c x T_k study of ``conf/sweep/coteaching_ck_*.yaml`` gives 27 rows).

The paper's numbers come from the sweep config's ``paper:`` block (stored in every job's
``results.json`` as ``config.paper``), in one of two shapes:

* ``paper: {method: {noise: accuracy}}`` (the Co-teaching table sweeps);
* ``paper: {by: [key, key, ...], values: {v1: {v2: ... accuracy}}}``: a nesting of the swept
  keys named in ``by``, outermost first, e.g. ``by: [noise, schedule.num_gradual,
  schedule.exponent]`` and ``values: {pair45: {5: {0.5: 75.56, 1: 87.59, 2: 87.54}, ...}}``.
  Keys are matched as numbers where both sides are numbers (``1`` = ``1.0``); a key of ``by``
  that was not swept is read from the job's config (a group name such as ``method`` or
  ``noise`` stands for its ``name``); the key ``metric`` stands for ``--metric``, for tables
  that report several numbers per cell (Arazo et al.'s best and last:
  ``by: [metric, method, noise.rate]``, ``values: {test/acc_best: {...}, test/acc_last: {...}}``).

A job folder without ``results.json`` counts as failed: it is listed, with its overrides and
the first line of its ``error.txt`` (a failed job: bad input, a crash, a signal) or as
"crashed or killed" when it has no ``error.txt`` either, and the table gets a ``failed`` column.
An ``--metric`` that no run has stops the report with one sentence listing the metrics the
runs have, exit status 2, nothing written.

Writes ``report.md``, ``report.csv`` (one row per group) and ``report_curves.png`` (per-epoch
test accuracy and label precision, mean ± std over seeds, one column per noise: the figures of
the Co-teaching paper; ``--format pdf|svg``, ``--dpi``) into ``sweep_dir`` and prints the
Markdown; ``--wandb`` also logs the table and the curves to W&B (noisylab/wandb_dashboard.py). Everything is read relative
to the job folders found below ``sweep_dir``, never from the absolute paths inside
``results.json``, so a moved or copied sweep folder reports the same.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from noisylab.results import not_a_record, unwritable, write_bytes_atomic

# Order of the values when the sweep has no ``paper`` block to take it from.
METHOD_ORDER = ("ce", "selfpaced", "decoupling", "coteaching", "coteaching_plus", "jocor")
NOISE_ORDER = ("pair45", "sym50", "sym20")
DEFAULT_METRIC = "test/acc_last10"
# Fields a job without .hydra/overrides.yaml is grouped by (read from results.json).
RESULT_KEYS = ("method", "noise", "data", "model")
# Seeds: the runs of one group differ in them. Config keys (and everything below them) that do
# not change what is trained: where files go, loggers, checkpoints, the progress bar, resuming.
SEED_KEYS = ("seed", "noise.seed")
NOT_IDENTITY = ("paths", "logger", "callbacks", "hydra", "ckpt_path", "optimized_metric", "task_name", "paper",
                "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.default_root_dir",
                "trainer.log_every_n_steps", "data.root", "data.download", "data.num_workers")


class ReportError(Exception):
    """A report that cannot be made; the message is one sentence for the user."""


@dataclass
class Job:
    folder: Path
    run: dict | None  # results.json, None when the job failed
    overrides: dict[str, str] = field(default_factory=dict)  # swept key -> value, seed left out
    has_overrides: bool = False
    error: str | None = None  # first line of error.txt
    hydra_config: dict | None = None  # .hydra/config.yaml, for jobs without results.json

    @property
    def failed(self) -> bool:
        return self.run is None

    @property
    def config(self) -> dict:
        if self.run is not None and isinstance(self.run.get("config"), dict):
            return self.run["config"]
        return self.hydra_config or {}


# ---------------------------------------------------------------------------- reading jobs


def parse_overrides(lines) -> dict[str, str]:
    """``["noise=sym50", "+sweep=x", "seed=1", ...]`` -> ``{"noise": "sym50", ...}``, without the
    seed, Hydra's own keys and the ``sweep`` selection itself."""
    parsed = {}
    for line in lines or ():
        key, sep, value = str(line).strip().partition("=")
        key = key.lstrip("+~")
        if not sep or key == "sweep" or not identity_key(key):
            continue
        parsed[key] = value
    return parsed


def identity_key(key: str) -> bool:
    """Whether a config key can make two runs different experiments (not a seed, not where
    files go): ``noise.rate`` yes, ``seed`` and ``paths.output_dir`` no."""
    return not any(key == k or key.startswith(k + ".") for k in (*SEED_KEYS, *NOT_IDENTITY))


def flatten(node, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"noise.rate": "0.5", ...}``, values made comparable (canonical)."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(node) if isinstance(node, list) else node
    return {} if value is None else {prefix[:-1]: canonical(value)}  # null = absent


def _resolved_yaml(path: Path, folder: Path) -> dict | None:
    """A job's ``.hydra/config.yaml`` (written unresolved), resolved as far as it goes; the run
    folder stands in for ``${hydra:runtime.output_dir}``."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
        if OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False) is None \
                and "paths" in cfg:
            cfg.paths.output_dir = str(folder)
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that needs Hydra: fall back to the raw values
        loaded = _read_yaml(path)
        return loaded if isinstance(loaded, dict) else None


def _read_yaml(path: Path):
    import yaml

    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None


def job_folders(sweep_dir: Path) -> list[Path]:
    folders = {p.parent for p in sweep_dir.rglob("results.json")}
    folders |= {p.parent for p in sweep_dir.rglob("error.txt")}
    folders |= {p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    return sorted(folders)


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder below ``sweep_dir``, with its results (or None) and overrides."""
    jobs = []
    for folder in job_folders(sweep_dir):
        run = None
        unreadable = None
        if (folder / "results.json").is_file():
            try:
                with open(folder / "results.json") as f:
                    run = json.load(f)
            except (OSError, ValueError) as error:  # truncated or foreign: the job is listed as failed
                unreadable = f"results.json cannot be read ({type(error).__name__}: {error})"
            else:
                wrong = not_a_record(run)
                if wrong:
                    run, unreadable = None, f"results.json is not a noisylab record ({wrong})"
        overrides_file = folder / ".hydra" / "overrides.yaml"
        job = Job(folder, run, has_overrides=overrides_file.is_file())
        if job.has_overrides:
            job.overrides = parse_overrides(_read_yaml(overrides_file))
        if (folder / "error.txt").is_file():
            job.error = ((folder / "error.txt").read_text().strip().splitlines() or [""])[0]
        if unreadable:
            job.error = unreadable
        if run is None and (folder / ".hydra" / "config.yaml").is_file():
            job.hydra_config = _resolved_yaml(folder / ".hydra" / "config.yaml", folder)
        jobs.append(job)
    return jobs


def load_runs(sweep_dir: Path) -> tuple[list[dict], list[Path]]:
    """Every ``results.json`` below ``sweep_dir`` (sorted), and the folders of failed jobs."""
    jobs = load_jobs(Path(sweep_dir))
    return [j.run for j in jobs if not j.failed], [j.folder for j in jobs if j.failed]


# ---------------------------------------------------------------------------- values and keys


def canonical(value) -> str:
    """A value as a string that compares equal across spellings: 1, 1.0 and "1" -> "1"."""
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and any(ch.isdigit() for ch in text):
        return format(number, "g") if number != int(number) else str(int(number))
    return text


def _from_config(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):  # a config group: stands for its name
        return node.get("name")
    return node


def job_value(job: Job, key: str) -> str | None:
    """The job's value of ``key``: its override, else its config (results.json or .hydra)."""
    if key in job.overrides:
        return canonical(job.overrides[key])
    if job.run is not None and key in RESULT_KEYS:
        value = job.run.get(key)
        value = value.get("name") if isinstance(value, dict) else value
        if value is not None:
            return canonical(value)
    value = _from_config(job.config, key)
    if value is None and job.config and job.has_overrides and key.split(".")[0] in job.config:
        return "unset"  # a `+key` other jobs set and this one did not (its config is known): not the same value
    return None if value is None else canonical(value)


def swept_keys(jobs: list[Job]) -> tuple[list[str], dict[str, str]]:
    """(keys whose value differs between jobs, in first-seen order; keys fixed for all jobs).
    A job that cannot tell a key's value (crashed before writing its config) does not make
    the key vary."""
    candidates: dict[str, None] = {}
    for job in jobs:
        names = job.overrides if job.has_overrides else {k: None for k in RESULT_KEYS}
        for key in names:
            candidates.setdefault(key)
    swept, fixed = [], {}
    for key in candidates:
        values = {job_value(job, key) for job in jobs} - {None}  # None: unknown (a crashed job)
        if len(values) > 1:
            swept.append(key)
        elif values and any(key in job.overrides for job in jobs):
            fixed[key] = next(iter(values))
    return swept, fixed


def separating_keys(jobs: list[Job], keys: list[str]) -> list[str]:
    """``keys`` and, in config order, every config key (``identity_key``) whose value still
    differs between two finished jobs that ``keys`` put in one group: afterwards jobs of one
    group differ in their seeds only."""
    keys = list(keys)
    finished = [job for job in jobs if not job.failed and isinstance(job.run.get("config"), dict)]
    flat = [flatten(job.run["config"]) for job in finished]
    candidates = dict.fromkeys(key for config in flat for key in config if identity_key(key))
    for key in candidates:
        if key in keys:
            continue
        seen: dict[tuple, str | None] = {}
        for job, config in zip(finished, flat):
            group = tuple(job_value(job, k) for k in keys)
            if seen.setdefault(group, config.get(key)) != config.get(key):
                keys.append(key)
                break
    return keys


# ---------------------------------------------------------------------------- the paper block


def paper_block(jobs: list[Job]) -> dict | None:
    for job in jobs:
        paper = job.config.get("paper")
        if paper:
            return paper
    return None


def paper_shape(paper: dict | None) -> tuple[list[str], dict]:
    """(the keys the numbers are indexed by, outermost first; the nested numbers)."""
    if not paper:
        return [], {}
    if "by" in paper and "values" in paper:
        return [str(k) for k in paper["by"]], paper["values"] or {}
    return ["method", "noise"], paper


def paper_orders(paper: dict | None) -> dict[str, list[str]]:
    """The order in which the paper block lists each key's values (its table's order)."""
    by, values = paper_shape(paper)
    orders: dict[str, list[str]] = {key: [] for key in by}
    level = [values]
    for key in by:
        below = []
        for node in level:
            if isinstance(node, dict):
                for name, child in node.items():
                    if canonical(name) not in orders[key]:
                        orders[key].append(canonical(name))
                    below.append(child)
        level = below
    return orders


def paper_value(paper: dict | None, job: Job, metric: str = DEFAULT_METRIC) -> float | None:
    """The paper's number for the group ``job`` belongs to (and ``metric``), or None."""
    by, node = paper_shape(paper)
    if not by:
        return None
    for key in by:
        value = canonical(metric) if key == "metric" else job_value(job, key)
        if not isinstance(node, dict) or value is None:
            return None
        node = next((child for name, child in node.items() if canonical(name) == value), None)
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


# ---------------------------------------------------------------------------- summary


def metric_value(run: dict, metric: str) -> float | None:
    value = (run.get("metrics") or {}).get(metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return 100.0 * float(value)


def check_metric(jobs: list[Job], metric: str) -> None:
    known = set()
    for job in jobs:
        if not job.failed:
            known |= set(job.run.get("metrics") or {})
    if metric not in known:
        raise ReportError(f"no run has the metric '{metric}'; the runs have: {', '.join(sorted(known)) or 'no metrics'}.")


def summarise(jobs: list[Job], keys: list[str], metric: str, paper: dict | None) -> dict[tuple, dict]:
    """``{group: {"values", "seeds", "missing", "failed", "mean", "std", "paper"}}`` with the
    group = the jobs' values of ``keys``; accuracies in percent. A failed job that cannot tell
    some values (no config written) joins the one group its known values match, if one does."""
    cells: dict[tuple, dict] = {}
    known = {tuple(job_value(job, key) for key in keys) for job in jobs if not job.failed}
    for job in sorted(jobs, key=lambda j: j.failed):
        group = tuple(job_value(job, key) for key in keys)
        if job.failed and None in group:
            matches = [g for g in known if all(v is None or v == w for v, w in zip(group, g))]
            group = matches[0] if len(matches) == 1 else group
        group = tuple(v or "–" for v in group)
        cell = cells.setdefault(group, {"values": [], "seeds": [], "missing": 0, "failed": [], "paper": None,
                                        "jobs": []})
        cell["jobs"].append(job)
        if job.failed:
            cell["failed"].append(job)
        else:
            value = metric_value(job.run, metric)
            if value is None:
                cell["missing"] += 1
            else:
                cell["values"].append(value)
                cell["seeds"].append(job.run.get("seed"))
        if cell["paper"] is None:
            cell["paper"] = paper_value(paper, job, metric)
    for cell in cells.values():
        values = cell["values"]
        cell["mean"] = statistics.fmean(values) if values else None
        cell["std"] = statistics.stdev(values) if len(values) > 1 else None
    return cells


def value_order(key: str, values, preferred: dict[str, list[str]]) -> list[str]:
    """The paper's order, then METHOD/NOISE_ORDER, then numbers ascending, then by name."""
    first = list(preferred.get(key, []))
    first += {"method": list(METHOD_ORDER), "noise": list(NOISE_ORDER)}.get(key, [])

    def sort_key(value: str):
        try:
            number = float(value)
        except ValueError:
            number = math.inf
        return (first.index(value) if value in first else len(first), number, value)

    return sorted(set(values), key=sort_key)


def sorted_groups(cells: dict, keys: list[str], preferred: dict[str, list[str]]) -> list[tuple]:
    orders = [value_order(key, [g[i] for g in cells], preferred) for i, key in enumerate(keys)]
    return sorted(cells, key=lambda g: tuple(orders[i].index(v) for i, v in enumerate(g)))


# ---------------------------------------------------------------------------- output


def _fmt(cell: dict | None) -> str:
    if cell is None or cell["mean"] is None:
        return "–"
    text = f"{cell['mean']:.2f}"
    if cell["std"] is not None:
        text += f" ± {cell['std']:.2f}"
    return text


def _fmt_paper(cell: dict | None) -> str:
    return "–" if cell is None or cell["paper"] is None else f"{cell['paper']:.2f}"


def pivot_table(cells: dict, methods: list[str], noises: list[str], with_paper: bool, with_failed: bool) -> list[str]:
    """Rows = methods, columns = noises (ours and the paper's): the papers' layout."""
    header = ["method"]
    for noise in noises:
        header += [f"{noise} ours", f"{noise} paper"] if with_paper else [noise]
    header += ["runs"] + (["failed"] if with_failed else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        row, runs, failed = [method], 0, 0
        for noise in noises:
            cell = cells.get((method, noise))
            row.append(_fmt(cell))
            if with_paper:
                row.append(_fmt_paper(cell))
            runs += 0 if cell is None else len(cell["values"])
            failed += 0 if cell is None else len(cell["failed"])
        row += [str(runs)] + ([str(failed)] if with_failed else [])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def long_table(cells: dict, groups: list[tuple], keys: list[str], with_paper: bool, with_failed: bool) -> list[str]:
    """One row per group, one column per swept key."""
    header = [*keys, "ours"] + (["paper"] if with_paper else []) + ["runs"] + (["failed"] if with_failed else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        cell = cells[group]
        row = [*group, _fmt(cell)] + ([_fmt_paper(cell)] if with_paper else []) + [str(len(cell["values"]))]
        row += [str(len(cell["failed"]))] if with_failed else []
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_csv(path: Path, cells: dict, groups: list[tuple], keys: list[str], metric: str) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow([*keys, "metric", "n", "mean", "std", "paper", "ours_minus_paper", "values", "failed"])
    for group in groups:
        cell = cells[group]
        mean, std, paper = cell["mean"], cell["std"], cell["paper"]
        delta = None if mean is None or paper is None else mean - paper
        writer.writerow([*group, metric, len(cell["values"]),
                         "" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}",
                         "" if paper is None else f"{paper:.2f}", "" if delta is None else f"{delta:.4f}",
                         " ".join(f"{v:.4f}" for v in cell["values"]), len(cell["failed"])])
    write_bytes_atomic(path, buffer.getvalue().encode())


def epoch_curves(folder: Path) -> dict[str, list[float]]:
    """Per-epoch test accuracy and label precision from the job folder's ``csv/metrics.csv``
    (Lightning writes validation and training values of one epoch on separate rows)."""
    path = Path(folder) / "csv" / "metrics.csv"
    curves: dict[str, dict[int, float]] = {"test/acc_epoch": {}, "train/label_precision": {}}
    if not path.is_file():
        return {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, values in curves.items():
                if row.get(key):
                    values[int(row["epoch"])] = float(row[key])
    return {key: [values[e] for e in sorted(values)] for key, values in curves.items() if values}


def mean_curve(series: list[list[float]]):
    """(mean, std or None, number of seeds) per epoch in percent, over the epochs every seed
    has; None without any series."""
    import numpy as np

    if not series:
        return None
    length = min(map(len, series))
    values = 100 * np.array([s[:length] for s in series], dtype=float)
    return values.mean(axis=0), values.std(axis=0, ddof=1) if len(series) > 1 else None, len(series)


def plot_curves(path: Path, title: str, cells: dict, groups: list[tuple], keys: list[str], dpi: int = 110) -> bool:
    """``report_curves.<png|pdf|svg>`` (the suffix of ``path``): rows = test accuracy, label
    precision; one column per value of ``noise`` (else of the first swept key); one line per
    group, the mean over its seeds with a band of ± one standard deviation where there are
    several; markers on short runs (a 1-epoch run is one point); the paper's number as a star
    beside the group's last epoch, in its colour; one legend for the figure, the sweep's name
    in the title."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from noisylab.results import write_bytes_atomic

    split = keys.index("noise") if "noise" in keys else (0 if keys else None)
    columns = list(dict.fromkeys(g[split] for g in groups)) if split is not None else [""]
    lines = list(dict.fromkeys(tuple(v for i, v in enumerate(g) if i != split) for g in groups))
    other_keys = [k.rsplit(".", 1)[-1] for i, k in enumerate(keys) if i != split]
    metrics = (("test/acc_epoch", "test accuracy"), ("train/label_precision", "label precision"))
    figure = Figure(figsize=(4.5 * len(columns) + 1, 7))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(columns), squeeze=False)
    drawn, papers = False, any(cells[group]["paper"] is not None for group in groups)
    for group in groups:
        column = columns.index(group[split]) if split is not None else 0
        rest = tuple(v for i, v in enumerate(group) if i != split)
        if other_keys == ["method"]:
            label = rest[0]
        else:
            label = ", ".join(f"{k}={v}" for k, v in zip(other_keys, rest)) or "all runs"
        per_seed = [epoch_curves(job.folder) for job in cells[group]["jobs"] if not job.failed]
        for row, (key, _) in enumerate(metrics):
            curve = mean_curve([c[key] for c in per_seed if key in c])
            if curve is None:
                continue
            mean, std, seeds = curve
            epochs, color = np.arange(len(mean), dtype=float), f"C{lines.index(rest) % 10}"
            if len(mean) <= 2:  # short runs: the groups side by side at each epoch, not on top of each other
                epochs += 0.1 * (lines.index(rest) - (len(lines) - 1) / 2) / max(len(lines) / 4, 1)
            axis = axes[row][column]
            axis.plot(epochs, mean, color=color, marker="o" if len(mean) <= 30 else None, markersize=4,
                      label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
            if std is not None and len(mean) > 2:
                axis.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
            elif std is not None:  # a band over one or two epochs is too thin to see
                axis.errorbar(epochs, mean, yerr=std, fmt="none", ecolor=color, capsize=4)
            if row == 0 and cells[group]["paper"] is not None:  # the paper's final number, beside ours
                axis.plot([epochs[-1] + 0.25], [cells[group]["paper"]], linestyle="none", marker="*", markersize=11,
                          color=color, markeredgecolor="black", markeredgewidth=0.5)
            drawn = True
    if not drawn:
        return False
    for column, value in enumerate(columns):
        axes[0][column].set_title(value if split is None or keys[split] == "noise" else f"{keys[split]}={value}")
        axes[1][column].set_xlabel("epoch")
        for row, (_, name) in enumerate(metrics):
            axis = axes[row][column]
            axis.set_ylabel(f"{name} (%)")
            longest = max((len(line.get_xdata()) for line in axis.lines), default=1)
            axis.set_xlim(-0.5, longest - 0.5 + (0.5 if row == 0 and papers else 0))
            if longest <= 15:
                axis.set_xticks(range(longest))
            else:
                axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
    handles = {line.get_label(): line for axis in figure.axes for line in axis.lines
               if not line.get_label().startswith("_")}
    if papers:
        from matplotlib.lines import Line2D

        handles["the paper's number (★, in its group's colour)"] = Line2D(
            [], [], linestyle="none", marker="*", markersize=11, color="white", markeredgecolor="black")
    columns_of_legend = min(len(handles), 3)
    rows_of_legend = -(-len(handles) // columns_of_legend)
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=columns_of_legend,
                  fontsize=7 if len(handles) > 6 else 8, frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, min(0.04 + 0.035 * rows_of_legend, 0.5), 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip("."), dpi=dpi)
    write_bytes_atomic(path, buffer.getvalue())
    return True


def _describe(job: Job, sweep_dir: Path) -> str:
    overrides = " ".join(f"{k}={v}" for k, v in job.overrides.items())
    why = job.error or "crashed or killed (no results.json, no error.txt)"
    return f"- {job.folder.relative_to(sweep_dir)}" + (f" ({overrides})" if overrides else "") + f": {why}"


def caveats(runs: list[dict], metric: str, with_paper: bool) -> list[str]:
    """The report's sentences on what its numbers mean: which quirks mode ran beside the
    papers' numbers, stages a run never reached, and Co-teaching+'s disagreement-subset
    diagnostics."""
    notes = []
    if with_paper:
        named = [run.get("quirks", "paper") for run in runs]
        modes = sorted({mode if isinstance(mode, str) else f"[{','.join(map(str, mode))}]" for mode in named})
        notes.append(f"Runs' quirks: {', '.join(modes)}. The paper column holds the published numbers, made with each "
                     "paper's official code: a quirks=paper cell beside it compares the paper's algorithm with the "
                     "official code's behaviour (docs/reproduction-mnist.md measures the difference).")
    short = sorted({f"{run.get('method')} ({', '.join(run['stages_not_run'])})" for run in runs
                    if run.get("stages_not_run")})
    if short:
        notes.append(f"Later stages never ran in the epochs given, so these cells are not the method as published: "
                     f"{'; '.join(short)}.")
    if any(run.get("method") == "coteaching_plus" for run in runs):
        notes.append("Co-teaching+'s train/label_precision and train/detection_auc describe the disagreement subset it "
                     "selects from (where its two networks disagree, mostly noisy), not a clean set as the other "
                     "methods': they are not comparable with theirs.")
    return notes



def report(sweep_dir: str | Path, metric: str = DEFAULT_METRIC, fmt: str = "png", dpi: int = 110) -> str:
    """Builds the table for ``sweep_dir``, writes report.md, report.csv and the curves
    (``report_curves.<fmt>``) there, returns it."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no such sweep directory: {sweep_dir}")
    jobs = load_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no results.json below {sweep_dir}: has the sweep run?")
    failed = [job for job in jobs if job.failed]
    if len(failed) == len(jobs):
        raise ReportError(f"all {len(jobs)} job(s) below {sweep_dir} failed (no readable results.json): "
                          + "; ".join(f"{job.folder.relative_to(sweep_dir)}"
                                      + (f" ({job.error})" if job.error else "") for job in failed) + ".")
    check_metric(jobs, metric)

    keys, fixed = swept_keys(jobs)
    keys = separating_keys(jobs, keys)
    pivot = set(keys) <= {"method", "noise"}
    if pivot:
        keys = ["method", "noise"]
    paper = paper_block(jobs)
    if not pivot:  # the paper's nesting order first: the reproduced table's rows
        by = [key for key in paper_shape(paper)[0] if key in keys]
        keys = by + [key for key in keys if key not in by]
    cells = summarise(jobs, keys, metric, paper)
    preferred = paper_orders(paper)
    groups = sorted_groups(cells, keys, preferred)
    with_paper = any(cell["paper"] is not None for cell in cells.values())
    with_failed = bool(failed)
    if pivot:
        methods = value_order("method", [g[0] for g in groups], preferred)
        noises = value_order("noise", [g[1] for g in groups], preferred)
        lines = pivot_table(cells, methods, noises, with_paper, with_failed)
    else:
        lines = long_table(cells, groups, keys, with_paper, with_failed)

    runs = [job.run for job in jobs if not job.failed]
    data = sorted({str(run.get("data")) for run in runs})
    models = sorted({str(run.get("model")) for run in runs})
    title = f"{metric} in %, mean ± std over seeds" + ("; paper = the reproduced table" if with_paper else "")
    text = (f"# Sweep {sweep_dir.name}\n\ndata {', '.join(data)} | model {', '.join(models)} | "
            f"{len(runs)} run(s)" + (f", {len(failed)} failed" if failed else "") + "\n\n")
    text += f"grouped by: {', '.join(keys)}\n"
    if fixed:
        text += "fixed: " + " ".join(f"{k}={v}" for k, v in fixed.items()) + "\n"
    text += f"\n{title}\n\n" + "\n".join(lines) + "\n"
    notes = caveats(runs, metric, with_paper)
    missing = sum(cell["missing"] for cell in cells.values())
    if missing:
        notes.append(f"{missing} run(s) without {metric} left out.")
    if failed:
        crashed = sum(job.error is None for job in failed)
        notes.append(f"{len(failed)} job(s) without results.json ({len(failed) - crashed} failed with an error.txt, "
                     f"{crashed} crashed or killed):")
        notes += [_describe(job, sweep_dir) for job in failed]
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    curves = f"Sweep {sweep_dir.name}: per-epoch curves, mean ± std over seeds"
    if plot_curves(sweep_dir / f"report_curves.{fmt}", curves, cells, groups, keys, dpi):
        text += f"\nCurves: report_curves.{fmt}\n"
    write_bytes_atomic(sweep_dir / "report.md", text.encode())
    write_csv(sweep_dir / "report.csv", cells, groups, keys, metric)
    return text


MAX_DPI = 1200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m noisylab.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="the multirun directory (holds one folder per job)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help="metric from results.json (default: %(default)s)")
    parser.add_argument("--format", default="png", choices=("png", "pdf", "svg"), dest="fmt",
                        help="the curves' file format (default: %(default)s)")
    parser.add_argument("--dpi", default=110, type=int, help="the curves' resolution (default: %(default)s)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and the curves to W&B as one "
                        "run of the sweep's group (offline without a key; docs/wandb.md)")
    parser.add_argument("--wandb-project", default="noisylab", help="the W&B project (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.dpi <= MAX_DPI:  # a larger canvas would not fit in memory
        parser.error(f"--dpi must be a number of dots per inch from 1 to {MAX_DPI}, got {args.dpi}.")
    try:
        text = report(args.sweep_dir, args.metric, args.fmt, args.dpi)
    except (FileNotFoundError, ReportError) as error:
        print(f"noisylab.report: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a read-only sweep folder, a folder named report.md
        print(f"noisylab.report: error: {unwritable(error, args.sweep_dir)}", file=sys.stderr)
        return 2
    print(text, end="")
    print(f"written: report.md and report.csv in {args.sweep_dir}")
    if args.wandb:
        from noisylab.wandb_dashboard import publish_report

        sweep_dir = Path(args.sweep_dir)
        where = publish_report(sweep_dir, sweep_dir / "report.csv", sorted(sweep_dir.glob("report_curves.*")),
                               args.wandb_project)
        print(f"W&B: the table and the curves in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
