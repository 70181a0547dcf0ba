"""Weights & Biases (and TensorBoard) as a sweep's dashboard (docs/wandb.md).

* ``wandb_mode``: online or offline, decided by asking wandb itself for an API key for its
  server (``WANDB_BASE_URL`` or the SaaS host, the key from ``WANDB_API_KEY`` or the netrc
  entry of that host) and trying that server for 3 s; says in one printed line which it chose.
* ``logger_arguments``: what ``logger=wandb`` gets beside its config: the run's W&B ``id``
  (kept in ``<run dir>/wandb_run_id``, and read from the folder of ``ckpt_path`` when resuming,
  so a resumed or requeued run continues the same W&B run, ``resume="allow"``), and in a
  multirun the sweep id as a tag and the group built from the job's overrides by the report's
  rule (every identity key but the seed: ``noisylab.report.parse_overrides``), prefixed with
  the sweep id: seeds aggregate, two sweeps never merge.
* ``DashboardLogger``: Lightning's WandbLogger less the realised transition matrix in the
  config (C x C numbers; it is logged as an image instead).
* ``publish``: at the end of a run, the headline metrics (the papers' numbers, the realised
  noise rate, the fingerprint, the wall time) into the W&B summary and TensorBoard's
  ``hp_metric``s; the transition matrix as an image, the clean score's histogram for clean vs
  noisy samples, ``results.json`` and ``noisy_labels.npz`` as an artifact.
* ``publish_report``: ``python -m noisylab.report <sweep> --wandb``: the report's table as a
  ``wandb.Table`` and its figures, in one W&B run of the sweep's group.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import socket
from pathlib import Path
from urllib.parse import urlparse

from pytorch_lightning.loggers import WandbLogger

from noisylab.interrupts import rank_zero

HEADLINE = ("test/acc", "test/acc_last10", "test/acc_best", "test/acc_at_best_val", "val/acc", "val/acc_best",
            "train/label_precision", "train/detection_auc")
RUN_ID_FILE = "wandb_run_id"
OFFLINE_MODES = ("offline", "dryrun", "disabled")


# ---------------------------------------------------------------------------- online or offline
def wandb_mode(offline_setting=None, announce: bool = True) -> bool:
    """True for offline. ``offline_setting`` true/false is obeyed; ``auto``/None asks wandb:
    ``WANDB_MODE``, an API key for its server, the server reachable within 3 s."""
    if offline_setting is not None and offline_setting != "auto":
        offline, why = bool(offline_setting), "logger.wandb.offline=" + str(bool(offline_setting)).lower()
    else:
        offline, why = _ask_wandb()
    if announce:
        where = "writing the run under <run dir>/wandb/offline-run-*; upload it later with `wandb sync <that folder>`"
        print(f"noisylab: W&B {'offline' if offline else 'online'} ({why})" + (f"; {where}." if offline else "."),
              flush=True)
    return offline


def _ask_wandb() -> tuple[bool, str]:
    mode = os.environ.get("WANDB_MODE", "")
    if mode in OFFLINE_MODES:
        return True, f"WANDB_MODE={mode}"
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings  # the environment and wandb's settings files
        base_url = settings.base_url
        key = os.environ.get("WANDB_API_KEY") or wbauth.read_netrc_auth(host=base_url) or settings.api_key
    except Exception as error:  # noqa: BLE001 - an unknown wandb: offline, and say why
        return True, f"wandb could not tell its server and key: {type(error).__name__}"
    if not key:
        return True, f"no API key for {base_url}: `wandb login` or WANDB_API_KEY"
    url = urlparse(base_url)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError:
        return True, f"{base_url} unreachable"
    return False, f"{base_url}"


# ---------------------------------------------------------------------------- the run's identity
def sweep_facts() -> dict | None:
    """In a Hydra multirun: the sweep id (the ``+sweep=`` name, else ``multirun``, and the
    sweep folder's last two parts: ``coteaching_cifar10-2026-12-04_18-00-00``), the job's
    overrides, and its group; None in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    sweep = sweep_id(hydra_cfg.runtime.choices.get("sweep"), hydra_cfg.sweep.dir)
    return {"sweep_id": sweep, "overrides": overrides, "group": group_name(sweep, overrides)}


def sweep_id(name: str | None, sweep_dir: str | Path) -> str:
    parts = [part for part in Path(sweep_dir).parts[-2:] if part != name]
    return "-".join([name or "multirun", *parts])[:64]  # W&B's limit for a tag


def group_name(sweep: str, overrides: list[str]) -> str:
    """``<sweep id>/key=value ...`` over the job's identity overrides (the report's rule: no
    seed, no file locations); over W&B's 128 characters, its end is replaced by a hash."""
    from noisylab.report import parse_overrides

    keys = " ".join(f"{k}={v}" for k, v in sorted(parse_overrides(overrides).items()))
    name = f"{sweep}/{keys}" if keys else sweep
    if len(name) > 128:
        name = name[:119] + "~" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def run_id(output_dir: Path, ckpt_path: str | None) -> str:
    """The W&B run id of this run: the one stored beside the checkpoint it resumes from, else
    a new one; stored in ``<run dir>/wandb_run_id``."""
    stored = Path(ckpt_path).resolve().parent.parent / RUN_ID_FILE if ckpt_path else None
    found = stored.read_text().strip() if stored is not None and stored.is_file() else ""
    identifier = found or secrets.token_hex(4)  # W&B's ids: 8 characters [a-z0-9]
    if rank_zero():  # under DDP only rank 0 has a W&B run
        (output_dir / RUN_ID_FILE).write_text(identifier + "\n")
    return identifier


def logger_arguments(logger_cfg, output_dir: Path, ckpt_path: str | None) -> dict:
    """Keys merged into ``logger.wandb`` before it is instantiated."""
    offline = wandb_mode(logger_cfg.get("offline"), announce=rank_zero())
    # mode too: Lightning says offline through WANDB_MODE, which wandb read when it was asked above
    arguments = {"offline": offline, "mode": "offline" if offline else "online", "id": run_id(output_dir, ckpt_path),
                 "resume": "allow"}
    facts = sweep_facts()
    if facts:
        arguments.update(group=facts["group"], tags=[*(logger_cfg.get("tags") or []), facts["sweep_id"]])
    return arguments


def extra_config() -> dict:
    """Config keys beside the resolved config: the sweep id and the command line's overrides."""
    from hydra.core.hydra_config import HydraConfig

    facts = sweep_facts()
    overrides = [str(o) for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []
    return {"sweep_id": facts["sweep_id"] if facts else None, "hydra_overrides": overrides}


def _without_transition(node):
    if isinstance(node, dict):
        return {k: _without_transition(v) for k, v in node.items() if k != "transition"}
    return node


class DashboardLogger(WandbLogger):
    """WandbLogger whose config leaves out the realised transition matrix (an image instead)."""

    def log_hyperparams(self, params) -> None:
        from lightning_fabric.utilities.logger import _convert_params

        super().log_hyperparams(_without_transition(_convert_params(params)))


# ---------------------------------------------------------------------------- the end of a run
def headline(results: dict) -> dict:
    metrics = results["metrics"]
    values = {key: metrics[key] for key in HEADLINE if metrics.get(key) is not None}
    values.update({"noise/actual_rate": results["noise"]["actual_rate"], "noise/rate": results["noise"]["rate"],
                   "noise/fingerprint": results["noise"]["fingerprint"], "wall_time_s": results["wall_time_s"],
                   "epochs": results["epochs"],
                   # what ran, as results.json says it: a dashboard column per run
                   "quirks_applied": ",".join(results.get("quirks_applied", [])),
                   "stages_not_run": ",".join(results.get("stages_not_run", []))})
    return values


def publish(loggers, results: dict, output_dir: Path) -> None:
    """The run's end on its dashboards (rank 0): W&B summary, media and artifact; TensorBoard's
    hparams with the headline metrics."""
    from pytorch_lightning.loggers import TensorBoardLogger

    values = headline(results)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            _publish_wandb(logger.experiment, values, output_dir)
        elif isinstance(logger, TensorBoardLogger):
            numbers = {f"hp/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
            if "test/acc_last10" in values:
                numbers["hp_metric"] = values["test/acc_last10"]
            logger.log_hyperparams(results["config"], metrics=numbers)


def _publish_wandb(run, values: dict, output_dir: Path) -> None:
    import numpy as np
    import wandb

    run.summary.update(values)
    media = {}
    noisy_file, per_sample = output_dir / "noisy_labels.npz", output_dir / "per_sample.npz"
    if noisy_file.is_file():
        with np.load(noisy_file) as saved:
            transition = saved["transition"]
        media["noise/transition"] = wandb.Image(_png(transition_figure(transition)),
                                                caption="realised P(observed j | true i)")
    if per_sample.is_file():
        with np.load(per_sample) as arrays:
            figure = clean_score_figure(dict(arrays))
        if figure is not None:
            media["train/clean_score_histogram"] = wandb.Image(_png(figure), caption="clean vs noisy samples")
    if media:
        run.log(media)
    artifact = wandb.Artifact(f"results-{run.id}", type="run-results")
    for path in (output_dir / "results.json", noisy_file):
        if path.is_file():
            artifact.add_file(str(path))
    run.log_artifact(artifact)


def _png(figure):
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    buffer.seek(0)
    return Image.open(buffer)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def transition_figure(transition):
    size = len(transition)
    figure = _figure(5, 4.3)
    axis = figure.subplots()
    image = axis.imshow(transition, vmin=0, vmax=1, cmap="viridis")
    figure.colorbar(image, ax=axis)
    axis.set_xlabel("observed label j")
    axis.set_ylabel("true label i")
    if size <= 10:
        for i in range(size):
            for j in range(size):
                if transition[i][j] > 0:
                    axis.text(j, i, f"{transition[i][j]:.2f}", ha="center", va="center", fontsize=7,
                              color="black" if transition[i][j] > 0.5 else "white")
    axis.set_title("realised transition matrix")
    figure.tight_layout()
    return figure


def clean_score_figure(arrays: dict):
    """Histogram of the method's per-sample clean score, clean vs noisy labels (None without a
    score or without clean labels)."""
    import numpy as np

    if "clean_score" not in arrays or "y_true" not in arrays:
        return None
    known = arrays["y_true"] >= 0
    score, clean = arrays["clean_score"][known], (arrays["y"] == arrays["y_true"])[known]
    figure = _figure(5, 3.5)
    axis = figure.subplots()
    bins = np.histogram_bin_edges(score, bins=40)
    axis.hist(score[clean], bins=bins, alpha=0.6, label=f"clean labels ({int(clean.sum())})")
    axis.hist(score[~clean], bins=bins, alpha=0.6, label=f"noisy labels ({int((~clean).sum())})")
    axis.set_xlabel("clean score (higher: believed clean)")
    axis.set_ylabel("samples")
    axis.legend()
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------- the end of a sweep
def publish_report(sweep_dir: Path, csv_path: Path, figures: list[Path], project: str = "noisylab") -> str:
    """One W&B run (job_type report) in the sweep's group: the report's table and figures.
    Returns the W&B run's folder."""
    import csv

    import wandb

    from noisylab.report import _read_yaml, job_folders

    name, directory = None, sweep_dir
    for folder in job_folders(sweep_dir):
        hydra_yaml = folder / ".hydra" / "hydra.yaml"
        if hydra_yaml.is_file():
            hydra = (_read_yaml(hydra_yaml) or {}).get("hydra", {})
            name = (hydra.get("runtime", {}).get("choices") or {}).get("sweep")
            directory = hydra.get("sweep", {}).get("dir") or sweep_dir
            break
    sweep = sweep_id(name, directory)
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    offline = wandb_mode("auto")
    run = wandb.init(project=project, group=sweep, job_type="report", name=f"report-{sweep}", tags=[sweep],
                     dir=str(sweep_dir), mode="offline" if offline else "online", config={"sweep_id": sweep},
                     reinit="finish_previous")
    try:
        run.log({"report/table": wandb.Table(columns=rows[0], data=rows[1:]),
                 **{f"report/{p.stem}": wandb.Image(str(p)) for p in figures if p.suffix == ".png"}})
        return str(Path(run.dir).parent)
    finally:
        run.finish()
