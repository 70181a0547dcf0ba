"""Issue 14: a sweep from a user's own folder (the installed command, the S2E sweeper), its W&B
runs read back from the offline run files (the protobuf records of ``run-*.wandb``, parsed with
the ``wandb.proto`` classes wandb ships), the launcher presets, optimisers as objects, the
progress lines of a log file, TensorBoard's hp_metric."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noisylab import report as report_module
from noisylab.wandb_dashboard import group_name, run_id

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- reading W&B's run files
def wandb_records(run_file: Path) -> list:
    """The records of a ``run-*.wandb`` file: a ``:W&B`` header (7 bytes), then 32 KiB blocks
    of chunks (crc32 4 bytes, length 2, type 1: full, first, middle, last), each record one
    ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data, block, records, pending = run_file.read_bytes(), 32 * 1024, [], b""
    assert data[:4] == b":W&B"
    position = 7
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(folder: Path) -> dict:
    """A W&B offline run below ``folder`` as plain values: run id, group, tags, config,
    summary, the keys logged to the history, the artifacts' files."""
    (run_file,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    found = {"config": {}, "summary": {}, "history": set(), "artifacts": {}}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found.update(id=record.run.run_id, group=record.run.run_group, tags=list(record.run.tags))
        elif kind == "config":
            found["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            found["summary"].update({item.key: json.loads(item.value_json) for item in record.summary.update
                                     if item.key})
        elif kind == "history":
            found["history"] |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "artifact":
            found["artifacts"][record.artifact.name] = sorted(e.path for e in record.artifact.manifest.contents)
    return found


def command() -> list[str]:
    """The installed ``noisylab`` command beside this Python (``pip install -e .`` makes it)."""
    installed = Path(sys.executable).parent / "noisylab"
    return [str(installed)] if installed.is_file() else [sys.executable, "-m", "noisylab"]


# ---------------------------------------------------------------------------- a sweep from the user's folder
@pytest.mark.slow
def test_a_sweep_from_a_users_folder_is_a_wandb_dashboard(tmp_path):
    """From a folder outside the checkout: the S2E sweeper (a Hydra plugin) runs two 1-epoch jobs
    logged offline to W&B; each run carries the sweep id (tag and config key), the overrides, the
    group by the report's rule, the headline metrics in its summary, the transition matrix as an
    image and not in the config, the clean-score histogram and an artifact; the log has one line
    per epoch; ``report --wandb`` adds the table."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command(), "-m", "hydra/sweeper=s2e", "hydra.sweeper.iterations=1",
                           "hydra.sweeper.samples_per_iteration=2", "debug=fast", "logger=wandb", "protocol.epochs=1",
                           "noise.rate=0.3", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("noisylab: W&B offline (WANDB_MODE=") == 2  # (wandb itself sets dryrun after a run)
    assert done.stdout.count("epoch 1/1 | train/loss ") == 2  # stdout is a pipe: one line per epoch
    jobs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert len(jobs) == 2
    runs = [wandb_run(job) for job in jobs]
    sweep_id = f"multirun-{tmp_path.name}-sweep"
    for job, run in zip(jobs, runs):
        results = json.loads((job / "results.json").read_text())
        assert run["id"] == (job / "wandb_run_id").read_text().strip()
        assert sweep_id in run["tags"] and run["config"]["sweep_id"] == sweep_id
        overrides = run["config"]["hydra_overrides"]
        assert "noise.rate=0.3" in overrides and "logger=wandb" in overrides
        assert run["group"] == group_name(sweep_id, overrides) and run["group"].startswith(sweep_id + "/")
        for key in ("test/acc_last10", "test/acc_best", "test/acc_at_best_val", "val/acc_best"):
            assert run["summary"][key] == pytest.approx(results["metrics"][key])
        assert run["summary"]["noise/actual_rate"] == pytest.approx(results["noise"]["actual_rate"])
        assert run["summary"]["noise/fingerprint"] == results["noise"]["fingerprint"]
        assert run["summary"]["wall_time_s"] == pytest.approx(results["wall_time_s"])
        assert run["summary"]["stages_not_run"] == "" and run["summary"]["quirks_applied"] == ""
        assert "transition" not in json.dumps(run["config"]) and "noise_fingerprint" in json.dumps(run["config"])
        assert {"noise/transition/path", "train/clean_score_histogram/path"} <= run["history"]
        assert run["artifacts"] == {f"results-{run['id']}": ["noisy_labels.npz", "results.json"]}
    assert runs[0]["id"] != runs[1]["id"]

    assert report_module.main([str(sweep), "--metric", "test/acc", "--wandb"]) == 0
    report_run = wandb_run(sweep)
    assert report_run["group"] == sweep_id and report_run["tags"] == [sweep_id]
    assert {"report/table/path", "report/report_curves/path"} <= report_run["history"]
    assert list(report_run["artifacts"].values()) == [["report/table.table.json"]]  # the table's rows


def test_the_group_is_the_sweep_and_every_identity_override_but_the_seed():
    one = group_name("sw-a", ["+sweep=x", "noise=sym50", "seed=0", "method=coteaching", "hydra.job.chdir=false"])
    assert one == "sw-a/method=coteaching noise=sym50"
    assert group_name("sw-a", ["seed=3", "method=coteaching", "noise=sym50"]) == one  # seeds aggregate
    assert group_name("sw-b", ["method=coteaching", "noise=sym50", "seed=0"]) != one  # sweeps never merge
    long = group_name("sw-a", [f"method.setting_{i}={i}" for i in range(30)])
    assert len(long) == 128 and long.startswith("sw-a/")


def test_a_resumed_run_keeps_its_wandb_id_a_new_one_gets_another(tmp_path):
    first = run_id(tmp_path, None)
    assert (tmp_path / "wandb_run_id").read_text().strip() == first and len(first) == 8
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    assert run_id(tmp_path, str(checkpoint)) == first  # resumed (requeued): the same W&B run
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert run_id(other, str(checkpoint)) == first  # resumed into another folder: still that run
    assert run_id(tmp_path, None) != first  # a new run in the folder: a new W&B run


@pytest.mark.parametrize("environment, sentence", [
    ({"WANDB_MODE": "offline"}, "noisylab: W&B offline (WANDB_MODE=offline); writing the run under"),
    ({"WANDB_BASE_URL": "http://127.0.0.1:9"}, "noisylab: W&B offline (no API key for http://127.0.0.1:9: "),
    ({"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40},
     "noisylab: W&B offline (http://127.0.0.1:9 unreachable); "),
])
def test_online_or_offline_is_asked_of_wandb_and_said_in_one_line(tmp_path, monkeypatch, capsys, environment,
                                                                  sentence):
    """A self-hosted server (WANDB_BASE_URL) is asked for; no key, or a key and no server, is
    offline, at once and without a prompt. (A fresh wandb setup reads this test's environment.)"""
    from wandb.sdk import wandb_setup

    from noisylab.wandb_dashboard import wandb_mode

    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path), **environment}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(wandb_setup, "_singleton", None)
    assert wandb_mode("auto") is True
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(sentence)


def test_tensorboard_gets_the_headline_metrics_as_hp_metrics(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from noisylab.wandb_dashboard import publish

    logger = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    results = {"metrics": {"test/acc_last10": 0.8125, "test/acc_best": 0.875, "val/acc_best": 0.5},
               "noise": {"actual_rate": 0.4959, "rate": 0.5, "fingerprint": "ab"}, "wall_time_s": 3.5,
               "epochs": 2, "config": {"method": {"name": "ce"}, "seed": 0}}
    publish([logger], results, tmp_path)
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    assert scalars["hp_metric"] == pytest.approx(0.8125)
    assert scalars["hp/test/acc_best"] == pytest.approx(0.875) and scalars["hp/noise/actual_rate"] == pytest.approx(0.4959)


# ---------------------------------------------------------------------------- launchers, optimisers, progress
@pytest.mark.parametrize("launcher", ["slurm", "slurm_bundle"])
def test_the_slurm_presets_ask_for_one_gpu_and_requeue(launcher):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[cluster]'")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="pip install -e '.[cluster]'")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from noisylab.train import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        hydra = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True).hydra
    GlobalHydra.instance().clear()
    if launcher == "slurm":
        assert hydra.launcher._target_.endswith("SlurmLauncher")
        assert (hydra.launcher.gpus_per_node, hydra.launcher.tasks_per_node) == (1, 1)
        assert hydra.launcher.max_num_timeout > 0 and hydra.launcher.signal_delay_s > 0
        assert hydra.launcher.cpus_per_task >= 1 and hydra.launcher.mem_gb >= 1 and hydra.launcher.timeout_min >= 60
        assert hydra.launcher.setup == [f"export OMP_NUM_THREADS={hydra.launcher.cpus_per_task}"]
    else:  # k jobs share one GPU: threads and memory per job from DeviceShare
        assert hydra.launcher._target_.endswith("JoblibLauncher") and hydra.launcher.n_jobs == 4
        share = hydra.callbacks.device_share
        assert share.gpu_memory_fraction * hydra.launcher.n_jobs <= 1 and share.cpu_threads >= 1


def test_any_torch_optimiser_is_a_target_node(capsys):
    from noisylab.methods.base import build_optimizer
    from noisylab.train import rewrite_overrides

    weights = [torch.nn.Parameter(torch.zeros(3))]
    adamw = build_optimizer(weights, {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.002,
                                      "weight_decay": 0.05, "betas": [0.8, 0.9]})
    assert type(adamw) is torch.optim.AdamW
    assert (adamw.defaults["lr"], adamw.defaults["weight_decay"], adamw.defaults["betas"]) == (0.002, 0.05, (0.8, 0.9))
    old = build_optimizer(weights, {"name": "sgd", "lr": 0.1})  # the old shorthand keeps its momentum default
    assert type(old) is torch.optim.SGD and old.defaults["momentum"] == 0.9
    assert rewrite_overrides(["method.optimizer.name=adamw", "protocol.optimizer.lr=0.1"]) == [
        "protocol.optimizer._target_=torch.optim.AdamW", "protocol.optimizer.lr=0.1"]
    assert capsys.readouterr().err == ("noisylab: protocol.optimizer.name=adamw is now written "
                                       "protocol.optimizer._target_=torch.optim.AdamW (any torch optimiser).\n")


def test_a_log_file_gets_one_line_per_epoch():
    from noisylab.progress import epoch_line

    metrics = {"train/loss": torch.tensor(1.23456), "val/acc": torch.tensor(0.612), "test/acc_epoch": 0.6085}
    # 3 epochs trained here in 30 s: 10 s each, 7 left -> 70 s
    assert epoch_line(2, 10, metrics, 30.0, 3) == ("epoch 3/10 | train/loss 1.2346 | val/acc 61.20% | "
                                                   "test/acc 60.85% | 0:00:30 elapsed, ETA 0:01:10")
    assert epoch_line(0, 5, {}, 0.0, 0).endswith("| 0:00:00 elapsed, ETA ?")


def test_the_report_draws_the_papers_number_in_the_chosen_format(tmp_path, monkeypatch):
    """``--format svg --dpi 50``: one figure legend, the paper's number as a star at its value."""
    from matplotlib.figure import Figure

    for index, (seed, accuracy) in enumerate([(0, 0.5), (1, 0.7)]):
        folder = tmp_path / str(index)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- method=coteaching\n- noise=sym50\n- seed={seed}\n")
        (folder / "csv").mkdir()
        (folder / "csv" / "metrics.csv").write_text(f"epoch,test/acc_epoch\n0,{accuracy}\n1,{accuracy}\n")
        (folder / "results.json").write_text(json.dumps({
            "method": "coteaching", "data": "digits", "model": "mlp", "seed": seed, "metrics": {"test/acc": accuracy},
            "noise": {"name": "sym50"}, "config": {"paper": {"coteaching": {"sym50": 74.02}}, "seed": seed}}))
    figures = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append((self, k)), original(self, *a, **k)))
    assert report_module.main([str(tmp_path), "--metric", "test/acc", "--format", "svg", "--dpi", "50"]) == 0
    (figure, options), = figures
    assert options == {"format": "svg", "dpi": 50} and (tmp_path / "report_curves.svg").read_text().startswith("<?xml")
    assert figure._suptitle.get_text().startswith(f"Sweep {tmp_path.name}:")
    with pytest.raises(SystemExit):  # a canvas too large for memory: argparse's sentence, not bad_alloc
        report_module.main([str(tmp_path), "--dpi", "100000"])
    (tmp_path / "report.md").unlink()
    (tmp_path / "report.md").mkdir()  # the report cannot be written: one sentence
    assert report_module.main([str(tmp_path), "--metric", "test/acc"]) == 2
    assert len(figure.legends) == 1 and all(axis.get_legend() is None for axis in figure.axes)
    star = [line for line in figure.axes[0].lines if line.get_marker() == "*"]
    assert len(star) == 1 and star[0].get_ydata().tolist() == [74.02]
    assert "the paper's number" in " ".join(t.get_text() for t in figure.legends[0].get_texts())


def test_the_makefile_runs_with_one_thread():
    run = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "python -m noisylab $(ARGS)" in line)
    assert "OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}" in run


def test_a_launcher_preset_without_its_plugin_is_one_sentence(monkeypatch):
    from noisylab import train

    assert train.missing_launcher(["-m", "hydra/launcher=basic", "seed=0,1"]) is None
    monkeypatch.setitem(train.LAUNCHER_PLUGINS, "slurm", "hydra_not_installed_launcher")
    assert train.missing_launcher(["-m", "hydra/launcher=slurm"]) == (
        "hydra/launcher=slurm needs Hydra's hydra-not-installed-launcher plugin: pip install -e \".[cluster]\" "
        "(docs/cluster.md).")
