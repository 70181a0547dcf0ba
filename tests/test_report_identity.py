"""noisylab.report never merges runs that differ in anything but the seed: the resolved configs
in results.json are compared, not only the overrides; failed and crashed jobs are listed;
curves are read from the job folders (a moved sweep keeps them) with a seed band. The sweeps
are hand-written folders."""

import copy
import csv
import json
import shutil

import pytest
import yaml

from noisylab import report as report_module
from noisylab.report import load_jobs, mean_curve, separating_keys

CONFIG = {
    "method": {"_target_": "noisylab.methods.coteaching_plus.CoTeachingPlus", "name": "coteaching_plus",
               "init_epoch": 20, "fused": False},
    "data": {"name": "digits", "root": "data", "val_fraction": 0.1},
    "noise": {"name": "sym50", "kind": "symmetric", "rate": 0.5, "seed": 0, "load_from": None},
    "model": {"name": "mlp"},
    "protocol": {"name": "coteaching", "epochs": 2, "optimizer": {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999]}},
    "trainer": {"max_epochs": 2, "enable_progress_bar": False, "default_root_dir": "/somewhere/job"},
    "paths": {"output_dir": "/somewhere/job"}, "logger": {"csv": {"save_dir": "/somewhere/job"}},
    "seed": 0, "ckpt_path": None, "quirks": "paper",
}


def job(root, name, acc, *, seed=0, overrides=None, curve=None, **changes):
    """A finished job: CONFIG with ``changes`` ({"noise.rate": 0.2, ...}), results.json written
    from another machine (absolute paths elsewhere), optionally csv/metrics.csv."""
    config = copy.deepcopy(CONFIG)
    config["seed"] = seed
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    folder = root / name
    folder.mkdir(parents=True)
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    payload = {"method": config["method"]["name"], "data": config["data"]["name"], "model": "mlp", "seed": seed,
               "noise": {"name": config["noise"]["name"], "rate": config["noise"]["rate"]},
               "metrics": {"test/acc_last10": acc, "test/acc": acc},
               "run_dir": f"/elsewhere/{name}", "config": config}
    (folder / "results.json").write_text(json.dumps(payload))
    if curve is not None:
        (folder / "csv").mkdir()
        rows = ["epoch,step,test/acc_epoch,train/label_precision"]
        rows += [f"{e},{e},{acc},\n{e},{e},,{p}" for e, (acc, p) in enumerate(curve)]
        (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return folder


def table(out):
    return [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]


def test_runs_without_overrides_differing_in_rate_settings_protocol_or_quirks_are_separate(tmp_path, capsys):
    """Same method, data and noise name everywhere (so the old grouping made one cell of all):
    noise.rate, a method setting, the protocol's epochs and quirks each make a row; seeds,
    noise seeds, folders and a resume do not."""
    job(tmp_path, "a0", 0.90, seed=0)
    job(tmp_path, "a1", 0.80, seed=1, **{"noise.seed": 1, "ckpt_path": "/x/last.ckpt",
                                        "paths.output_dir": "/other", "trainer.default_root_dir": "/other"})
    job(tmp_path, "rate", 0.70, **{"noise.rate": 0.2})
    job(tmp_path, "init", 0.60, **{"method.init_epoch": 5})
    job(tmp_path, "epochs", 0.50, **{"protocol.epochs": 3, "trainer.max_epochs": 3})
    job(tmp_path, "quirks", 0.40, quirks="official")
    job(tmp_path, "betas", 0.30, **{"protocol.optimizer.betas": [0.5, 0.999]})
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    keys = ["method.init_epoch", "noise.rate", "protocol.epochs", "protocol.optimizer.betas", "quirks"]
    assert "grouped by: " + ", ".join(keys) + "\n" in out
    rows = table(out)[1:]
    assert len(rows) == 6
    assert "| 20 | 0.5 | 2 | [0.9, 0.999] | paper | 85.00 ± 7.07 | 2 |" in rows
    assert "| 20 | 0.2 | 2 | [0.9, 0.999] | paper | 70.00 | 1 |" in rows
    assert "| 5 | 0.5 | 2 | [0.9, 0.999] | paper | 60.00 | 1 |" in rows
    assert "| 20 | 0.5 | 3 | [0.9, 0.999] | paper | 50.00 | 1 |" in rows
    assert "| 20 | 0.5 | 2 | [0.5, 0.999] | paper | 30.00 | 1 |" in rows
    assert "| 20 | 0.5 | 2 | [0.9, 0.999] | official | 40.00 | 1 |" in rows


def test_an_override_that_hides_a_different_rate_is_split_by_the_config(tmp_path, capsys):
    """``noise=sym50 noise.rate=0.2`` written by an older noisylab without the rate in the
    overrides: the config still tells the runs apart; the swept override keys come first."""
    for seed in (0, 1):
        job(tmp_path, f"m{seed}", 0.9 + seed / 100, seed=seed, overrides=["method=ce", "noise=sym50", f"seed={seed}"],
            **{"method.name": "ce"})
        job(tmp_path, f"c{seed}", 0.8 + seed / 100, seed=seed, overrides=["method=coteaching_plus", "noise=sym50",
                                                                         f"seed={seed}"])
        job(tmp_path, f"r{seed}", 0.7 + seed / 100, seed=seed, overrides=["method=coteaching_plus", "noise=sym50",
                                                                         f"seed={seed}"], **{"noise.rate": 0.2})
    jobs = load_jobs(tmp_path)
    assert separating_keys(jobs, ["method"]) == ["method", "noise.rate"]
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grouped by: method, noise.rate\nfixed: noise=sym50" in out
    assert table(out)[1:] == ["| ce | 0.5 | 90.50 ± 0.71 | 2 |", "| coteaching_plus | 0.2 | 70.50 ± 0.71 | 2 |",
                              "| coteaching_plus | 0.5 | 80.50 ± 0.71 | 2 |"]


def test_resumed_runs_are_seeds_of_their_group_not_a_new_sweep_key(tmp_path, capsys):
    job(tmp_path, "0", 0.9, overrides=["noise=sym50", "seed=0"])
    job(tmp_path, "1", 0.8, seed=1, overrides=["noise=sym50", "seed=1", "ckpt_path=/x/checkpoints/last.ckpt"],
        ckpt_path="/x/checkpoints/last.ckpt")
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ckpt_path" not in out and "| coteaching_plus | 85.00 ± 7.07 | 2 |" in out


def test_failed_and_crashed_jobs_are_listed_by_their_path_in_the_sweep(tmp_path, capsys):
    """Nested sweep folders; a job stopped by a signal (error.txt), one with bad input, and
    one killed outright (only .hydra/, whose config.yaml holds unresolved interpolations):
    each in its own group's failed count and listed with its path below the sweep."""
    job(tmp_path / "sym50", "0_s0", 0.9, overrides=["noise=sym50", "seed=0"])
    job(tmp_path / "sym20", "0_s0", 0.95, overrides=["noise=sym20", "seed=0"], **{"noise.name": "sym20",
                                                                                  "noise.rate": 0.2})
    stopped = tmp_path / "sym50" / "1_s1"
    (stopped / ".hydra").mkdir(parents=True)
    (stopped / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["noise=sym50", "seed=1"]))
    (stopped / "error.txt").write_text("stopped by SIGTERM after 1 of 2 epochs; resume with: python -m noisylab x\n")
    bad = tmp_path / "sym20" / "1_s1"
    (bad / ".hydra").mkdir(parents=True)
    (bad / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["noise=sym20", "seed=1", "noise.rate=1.5"]))
    (bad / "error.txt").write_text("noise.rate must lie in [0, 1), got 1.5.\n")
    killed = tmp_path / "sym20" / "2_s2"
    (killed / ".hydra").mkdir(parents=True)
    config = {**copy.deepcopy(CONFIG), "seed": 2, "paths": {"output_dir": "${hydra:runtime.output_dir}"},
              "trainer": {"max_epochs": "${protocol.epochs}", "default_root_dir": "${paths.output_dir}"}}
    config["noise"].update(name="sym20", rate=0.2)
    (killed / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (killed / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["noise=sym20", "seed=2"]))
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grouped by: noise, noise.rate" in out
    # the stopped and the killed job join their groups; the bad rate is a group of its own
    assert table(out)[1:] == ["| sym50 | 0.5 | 90.00 | 1 | 1 |", "| sym20 | 0.2 | 95.00 | 1 | 1 |",
                              "| sym20 | 1.5 | – | 0 | 1 |"]
    assert "3 job(s) without results.json (2 failed with an error.txt, 1 crashed or killed):" in out
    assert "- sym20/1_s1 (noise=sym20 noise.rate=1.5): noise.rate must lie in [0, 1), got 1.5." in out
    assert "- sym20/2_s2 (noise=sym20): crashed or killed (no results.json, no error.txt)" in out
    assert "- sym50/1_s1 (noise=sym50): stopped by SIGTERM after 1 of 2 epochs; resume with: python -m noisylab x" \
        in out


def test_a_moved_sweep_keeps_its_curves_one_epoch_runs_included(tmp_path, capsys):
    """results.json holds another machine's run_dir; the curves come from the job folders,
    one point per group for 1-epoch runs, the mean and a seed band."""
    first = tmp_path / "first"
    job(first, "0", 0.9, seed=0, overrides=["noise=sym50", "seed=0"], curve=[(0.5, 0.6)])
    job(first, "1", 0.8, seed=1, overrides=["noise=sym50", "seed=1"], curve=[(0.7, 0.8)])
    job(first, "2", 0.7, seed=0, overrides=["noise=sym20", "seed=0"], curve=[(0.9, 0.95)], **{"noise.name": "sym20"})
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    assert report_module.main([str(moved)]) == 0
    assert "Curves: report_curves.png" in capsys.readouterr().out
    assert (moved / "report_curves.png").stat().st_size > 10_000
    cells = {group: cell for group, cell in report_module.summarise(load_jobs(moved), ["noise"], "test/acc", None).items()}
    curves = [report_module.epoch_curves(j.folder)["test/acc_epoch"] for j in cells[("sym50",)]["jobs"]]
    mean, std, seeds = mean_curve(curves)
    assert seeds == 2 and mean.tolist() == pytest.approx([60.0]) and std.tolist() == pytest.approx([14.142136])
    mean, std, seeds = mean_curve([[0.9, 0.8]])
    assert std is None and mean.tolist() == pytest.approx([90.0, 80.0])
    with open(moved / "report.csv") as f:
        assert [row["noise"] for row in csv.DictReader(f)] == ["sym50", "sym20"]


def test_plots_have_a_title_a_legend_markers_and_a_band(tmp_path, monkeypatch):
    """What plot_curves draws, read back from its matplotlib figure."""
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    job(tmp_path, "0", 0.9, seed=0, overrides=["noise=sym50", "seed=0"], curve=[(0.5, 0.6), (0.6, 0.7), (0.7, 0.7)])
    job(tmp_path, "1", 0.8, seed=1, overrides=["noise=sym50", "seed=1"], curve=[(0.7, 0.8), (0.8, 0.9), (0.9, 0.9)])
    job(tmp_path, "2", 0.8, seed=0, overrides=["noise=sym20", "seed=0"], curve=[(0.9, 0.9)], **{"noise.name": "sym20"})
    figures = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), original(self, *a, **k)))
    report_module.report(tmp_path, "test/acc")
    (figure,) = figures
    assert figure._suptitle.get_text() == f"Sweep {tmp_path.name}: per-epoch curves, mean ± std over seeds"
    top = figure.axes[0]
    (legend,) = figure.legends  # one legend for the figure, none per axis
    assert legend.get_texts()[0].get_text() == "coteaching_plus (2 seeds)" and top.get_legend() is None
    (line,) = top.lines
    assert line.get_marker() == "o" and line.get_ydata().tolist() == pytest.approx([60.0, 70.0, 80.0])
    (band,) = top.collections  # the ± std band
    assert isinstance(band, PolyCollection)
    one_epoch = figure.axes[1]  # sym20: one seed of one epoch, a point in the middle of its axis
    assert one_epoch.get_title() == "sym20" and one_epoch.get_xlim() == (-0.5, 0.5)
    assert one_epoch.lines[0].get_ydata().tolist() == [90.0] and not one_epoch.collections
