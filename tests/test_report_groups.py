"""noisylab.report groups a sweep by every swept override except the seed, looks the paper's
numbers up for those groups (both shapes of the ``paper:`` block), lists crashed jobs, and
refuses an unknown metric. The sweeps are fake folders written here: results.json +
.hydra/overrides.yaml, as Hydra and noisylab.train leave them."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from noisylab import report as report_module
from noisylab.report import canonical, paper_value, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
NOISES, TKS, CS = ("pair45", "sym50", "sym20"), (5, 10, 15), (0.5, 1, 2)
# The slides' c x T_k table (Co-teaching tutorial, "Experiments - R(T)"): rows noise x T_k,
# columns c = 0.5, 1, 2.
SLIDE = {
    "pair45": {5: (75.56, 87.59, 87.54), 10: (88.43, 87.56, 87.93), 15: (88.37, 87.29, 88.09)},
    "sym50": {5: (91.75, 91.75, 92.20), 10: (91.70, 91.55, 91.27), 15: (91.74, 91.20, 91.38)},
    "sym20": {5: (97.05, 97.10, 97.41), 10: (97.33, 96.97, 97.48), 15: (97.41, 97.25, 97.51)},
}
CK_PAPER = {"by": ["noise", "schedule.num_gradual", "schedule.exponent"],
            "values": {n: {tk: dict(zip(CS, row)) for tk, row in rows.items()} for n, rows in SLIDE.items()}}


def write_job(root, name, overrides=None, acc=None, *, method="coteaching", noise="sym50", data="digits",
              seed=0, paper=None, config=None, error=None, metrics=None):
    """One job folder; ``acc=None`` and no ``metrics``: a crashed job (no results.json)."""
    folder = root / name
    folder.mkdir(parents=True)
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    if error is not None:
        (folder / "error.txt").write_text(error + "\n")
    if acc is not None or metrics is not None:
        payload = {"method": method, "data": data, "model": "mlp", "seed": seed,
                   "noise": {"name": noise, "kind": "symmetric", "rate": 0.5},
                   "metrics": metrics if metrics is not None else {"test/acc": acc, "test/acc_last10": acc},
                   "config": {"paper": paper or {}, **(config or {})}}
        (folder / "results.json").write_text(json.dumps(payload))
    return folder


def ck_sweep(root, seeds=(0,), paper=CK_PAPER, skip=()):
    """The 27-job c x T_k grid; accuracy encodes the cell: 0.5 + i/100 + seed/1000."""
    job = 0
    for i, (noise, tk, c) in enumerate((n, t, c) for n in NOISES for t in TKS for c in CS):
        for seed in seeds:
            overrides = [f"noise={noise}", f"schedule.num_gradual={tk}", f"schedule.exponent={c}",
                         f"seed={seed}", "+sweep=coteaching_ck_digits", "method.epochs=3"]
            name = f"{job}_{noise}_tk{tk}_c{c}_s{seed}"
            if (noise, tk, c) in skip:
                write_job(root, name, overrides, error=f"ValueError: boom in {name}")
            else:
                write_job(root, name, overrides, 0.5 + i / 100 + seed / 1000, noise=noise, seed=seed, paper=paper,
                          config={"schedule": {"name": "coteaching", "form": "study", "num_gradual": tk, "exponent": c}})
            job += 1


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_parse_overrides_drops_the_seed_hydra_keys_and_the_sweep():
    parsed = parse_overrides(["noise=sym50", "seed=3", "+sweep=x", "hydra.verbose=true", "++trainer.max_epochs=2",
                              "~logger", "schedule.exponent=0.5"])
    assert parsed == {"noise": "sym50", "trainer.max_epochs": "2", "schedule.exponent": "0.5"}
    assert [canonical(v) for v in ("1", "1.0", 1, 0.50, "1e-3", "pair45", True)] == \
        ["1", "1", "1", "0.5", "0.001", "pair45", "true"]


def test_ck_study_gives_27_rows_with_the_slide_numbers_beside_them(tmp_path, capsys):
    ck_sweep(tmp_path, seeds=(0, 1))
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grouped by: noise, schedule.num_gradual, schedule.exponent" in out
    assert "fixed: method.epochs=3" in out
    assert "| noise | schedule.num_gradual | schedule.exponent | ours | paper | runs |" in out
    table = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == 27
    # row order = the slide's: noise, then T_k, then c; the mean over the two seeds; the slide's number
    assert table[0] == "| pair45 | 5 | 0.5 | 50.05 ± 0.07 | 75.56 | 2 |"
    assert table[1] == "| pair45 | 5 | 1 | 51.05 ± 0.07 | 87.59 | 2 |"
    assert table[5] == "| pair45 | 10 | 2 | 55.05 ± 0.07 | 87.93 | 2 |"
    assert table[26] == "| sym20 | 15 | 2 | 76.05 ± 0.07 | 97.51 | 2 |"
    rows = read_csv(tmp_path / "report.csv")
    assert len(rows) == 27 and list(rows[0])[:4] == ["noise", "schedule.num_gradual", "schedule.exponent", "metric"]
    for row in rows:
        tk, c = int(row["schedule.num_gradual"]), float(row["schedule.exponent"])
        assert float(row["paper"]) == SLIDE[row["noise"]][tk][CS.index(c)]
        assert row["n"] == "2" and row["failed"] == "0"
        assert float(row["ours_minus_paper"]) == pytest.approx(float(row["mean"]) - float(row["paper"]))


def test_crashed_jobs_are_listed_as_failed_not_dropped(tmp_path, capsys):
    ck_sweep(tmp_path, skip={("sym50", 10, 2)})
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "26 run(s), 1 failed" in out
    assert "| sym50 | 10 | 2 | – | 91.27 | 0 | 1 |" in out  # the row stays, with the slide's number
    assert "1 job(s) without results.json (1 failed with an error.txt, 0 crashed or killed):" in out
    assert "- 14_sym50_tk10_c2_s0 (noise=sym50 schedule.num_gradual=10 schedule.exponent=2 " in out
    assert "ValueError: boom in 14_sym50_tk10_c2_s0" in out
    failed = [r for r in read_csv(tmp_path / "report.csv") if r["failed"] != "0"]
    assert [(r["noise"], r["schedule.num_gradual"], r["schedule.exponent"], r["n"]) for r in failed] == \
        [("sym50", "10", "2", "0")]


def test_a_crashed_job_without_error_txt_is_failed_too(tmp_path, capsys):
    write_job(tmp_path, "0_ce_sym50_s0", ["method=ce", "noise=sym50", "seed=0"], 0.8, method="ce")
    write_job(tmp_path, "1_coteaching_sym50_s0", ["method=coteaching", "noise=sym50", "seed=0"])  # killed
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| method | sym50 | runs | failed |" in out
    assert "| coteaching | – | 0 | 1 |" in out and "| ce | 80.00 | 1 | 0 |" in out
    assert "1 job(s) without results.json (0 failed with an error.txt, 1 crashed or killed):" in out
    assert "- 1_coteaching_sym50_s0 (method=coteaching noise=sym50): crashed or killed (no results.json, no error.txt)" \
        in out


def test_noise_rates_and_datasets_are_groups_not_seeds(tmp_path, capsys):
    for i, (data, noise, acc) in enumerate([("digits", "sym20", 0.9), ("digits", "sym50", 0.7),
                                            ("mnist1d", "sym20", 0.6), ("mnist1d", "sym50", 0.4)]):
        for seed in (0, 1):
            write_job(tmp_path, f"{i}{seed}", [f"data={data}", f"noise={noise}", f"seed={seed}"],
                      acc + seed / 100, data=data, noise=noise, seed=seed)
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grouped by: data, noise" in out
    assert "| digits | sym50 | 70.50 ± 0.71 | 2 |" in out
    assert "| mnist1d | sym20 | 60.50 ± 0.71 | 2 |" in out
    assert len(read_csv(tmp_path / "report.csv")) == 4


def test_runs_without_overrides_still_group_by_method_and_noise_with_the_old_paper_shape(tmp_path, capsys):
    paper = {"ce": {"sym50": 66.05, "pair45": 56.52}, "coteaching": {"sym50": 91.32, "pair45": 87.63}}
    for i, (method, noise, seed, acc) in enumerate([("ce", "sym50", 0, 0.8), ("ce", "sym50", 1, 0.9),
                                                    ("coteaching", "sym50", 0, 0.95), ("coteaching", "pair45", 0, 0.7),
                                                    ("ce", "pair45", 0, 0.5)]):
        write_job(tmp_path, f"{i}_{method}_{noise}_s{seed}", None, acc, method=method, noise=noise, seed=seed,
                  paper=paper)
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| method | sym50 ours | sym50 paper | pair45 ours | pair45 paper | runs |" in out
    assert "| ce | 85.00 ± 7.07 | 66.05 | 50.00 | 56.52 | 3 |" in out
    assert "| coteaching | 95.00 | 91.32 | 70.00 | 87.63 | 2 |" in out
    rows = read_csv(tmp_path / "report.csv")
    assert list(rows[0])[:7] == ["method", "noise", "metric", "n", "mean", "std", "paper"]


def test_paper_lookup_matches_numbers_by_value_and_reads_unswept_keys_from_the_config(tmp_path):
    folder = write_job(tmp_path, "job", ["schedule.exponent=1.0"], 0.9, noise="pair45",
                       config={"schedule": {"num_gradual": 10, "exponent": 1.0}})
    job = report_module.load_jobs(tmp_path)[0]
    assert job.folder == folder
    assert paper_value(CK_PAPER, job) == 87.56  # "1.0" matches the key 1; T_k and noise from results.json
    as_json = json.loads(json.dumps(CK_PAPER))  # results.json turns the numeric keys into strings
    assert paper_value(as_json, job) == 87.56
    assert paper_value({"coteaching": {"pair45": 87.63}}, job) == 87.63  # the old shape
    assert paper_value({"by": ["noise", "data"], "values": {"pair45": {"mnist": 1.0}}}, job) is None


def test_unknown_metric_stops_with_one_sentence_and_writes_nothing(tmp_path, capsys):
    ck_sweep(tmp_path)
    assert report_module.main([str(tmp_path), "--metric", "test/accuracy"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    message = captured.err.strip()
    assert message.startswith("noisylab.report: error: no run has the metric 'test/accuracy'; the runs have: ")
    assert "test/acc_last10" in message and len(message.splitlines()) == 1
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "report.csv").exists()


def test_a_sweep_where_every_job_failed_is_an_error(tmp_path, capsys):
    write_job(tmp_path, "0_a", ["noise=sym50", "seed=0"], error="boom")
    write_job(tmp_path, "1_b", ["noise=sym20", "seed=0"])
    assert report_module.main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "all 2 job(s)" in error and "0_a (boom); 1_b" in error
    (tmp_path / "1_b" / "results.json").write_text('{"method": "ce", "metr')  # torn by a kill mid-write
    assert report_module.main([str(tmp_path)]) == 2
    assert "1_b (results.json cannot be read (JSONDecodeError" in capsys.readouterr().err
    for text, says in (("[]", "a JSON list, not an object"), ('{"method": "ce"}', "its data is missing"),
                       ('{"method": "ce", "data": "x", "metrics": null, "noise": {}}', "its metrics is null, expected dict"),
                       ('{"method": "ce", "data": "x", "metrics": {"test/acc": "high"}, "noise": {}}',
                        "its metric test/acc is 'high', not a number")):  # another tool's file, a hand edit
        (tmp_path / "1_b" / "results.json").write_text(text)
        assert report_module.main([str(tmp_path)]) == 2
        assert f"1_b (results.json is not a noisylab record ({says}))" in capsys.readouterr().err


def test_ck_sweep_files_hold_the_study_grid_and_the_slide_numbers():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from noisylab.train import config_dir

    for name, data, model, accelerator in (("coteaching_ck_mnist", "mnist", "cnn9", "gpu"),
                                           ("coteaching_ck_digits", "digits", "mlp", "cpu")):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
                cfg = compose("config", overrides=[f"+sweep={name}", "noise=sym20", "schedule.num_gradual=15",
                                                   "schedule.exponent=0.5"], return_hydra_config=True)
        finally:
            GlobalHydra.instance().clear()
        params = cfg.hydra.sweeper.params
        assert params.noise.split(",") == list(NOISES)
        assert params["schedule.num_gradual"].split(",") == ["5", "10", "15"]
        assert params["schedule.exponent"].split(",") == ["0.5", "1", "2"]
        assert str(params.seed) == "0" and "method" not in params
        assert (cfg.data.name, cfg.model.name, cfg.method.name) == (data, model, "coteaching")
        assert cfg.trainer.accelerator == accelerator
        schedule = OmegaConf.to_container(cfg.schedule, resolve=True)
        assert schedule == {"name": "coteaching", "form": "study", "tau": None, "num_gradual": 15, "exponent": 0.5}
        assert cfg.data.val_fraction == 0.0 and "per_method" not in cfg
        paper = OmegaConf.to_container(cfg.paper)
        assert paper == CK_PAPER  # 27 numbers, in the slide's layout
        link = ROOT / "multirun_sweeps" / f"{name}.yaml"
        assert link.is_symlink() and os.readlink(link) == f"../conf/sweep/{name}.yaml"
        text = (ROOT / "conf" / "sweep" / f"{name}.yaml").read_text()
        assert "method.epochs" not in text and "method.optimizer" not in text and "\nmethod:" not in text


@pytest.mark.slow
def test_a_real_ck_multirun_then_the_report(tmp_path):
    """Two jobs of the digits study through the CLI (3 epochs), a third that crashes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "noisylab", "-m", "+sweep=coteaching_ck_digits", "method.epochs=3",
               "noise=sym20", "schedule.num_gradual=5", "schedule.exponent=0.5,2", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0_sym20_tk5_c0.5_s0", "1_sym20_tk5_c2_s0"]
    crashed = sweep / "2_sym20_tk5_c1_s0" / ".hydra"  # as Hydra leaves a job killed before results.json
    crashed.mkdir(parents=True)
    (crashed / "overrides.yaml").write_text(yaml.safe_dump(["noise=sym20", "schedule.num_gradual=5",
                                                            "schedule.exponent=1", "seed=0"]))
    text = report_module.report(sweep)
    assert "grouped by: schedule.exponent" in text and "fixed: noise=sym20 schedule.num_gradual=5" in text
    assert "| 0.5 |" in text and "| 2 |" in text and "| 1 | – | 97.10 | 0 | 1 |" in text
    assert "97.05" in text and "97.41" in text  # the slide's sym20, T_k = 5 cells
    assert "2_sym20_tk5_c1_s0" in text


def test_the_report_says_which_quirks_ran_beside_the_papers_numbers_and_what_coteaching_plus_diagnostics_mean():
    from noisylab.report import caveats

    runs = [{"method": "coteaching", "quirks": "paper"}, {"method": "coteaching_plus", "quirks": ["softmax_input"]}]
    notes = caveats(runs, "test/acc_last10", with_paper=True)
    assert notes[0].startswith("Runs' quirks: [softmax_input], paper. The paper column holds the published numbers")
    assert "disagreement subset" in notes[1]
    assert caveats(runs[:1], "test/acc_last10", with_paper=False) == []


def test_a_run_whose_later_stage_never_ran_is_named_in_the_report_and_its_summary(capsys):
    from noisylab.report import caveats
    from noisylab.train import print_summary

    short = {"method": "forward", "stages": [{"name": "estimate", "epochs": [0, 3]}],
             "stages_not_run": ["corrected"], "epochs": 4, "data": "digits", "model": "mlp", "seed": 0,
             "noise": {"name": "sym50", "rate": 0.5, "actual_rate": 0.5}, "metrics": {}, "run_dir": "x"}
    notes = caveats([short, {"method": "ce", "stages_not_run": []}], "test/acc_last10", with_paper=False)
    assert notes == ["Later stages never ran in the epochs given, so these cells are not the method as published: "
                     "forward (corrected)."]
    print_summary(short)
    assert "stages estimate only: corrected never ran in 4 epochs" in capsys.readouterr().out


def test_a_key_only_some_jobs_set_is_no_fixed_value(tmp_path, capsys):
    """`+trainer.max_time` on one job of three: not "fixed" for the sweep (it was printed so)."""
    trainer = {"trainer": {"max_epochs": 2}}
    write_job(tmp_path, "0", ["method=ce"], 0.5, method="ce", config=trainer)
    write_job(tmp_path, "1", ["method=ce", "seed=1"], 0.6, method="ce", seed=1, config=trainer)
    write_job(tmp_path, "2", ["method=coteaching", "+trainer.max_time=00:00:00:02"], 0.7,
              config={"trainer": {"max_epochs": 2, "max_time": "00:00:00:02"}})
    assert report_module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "grouped by: method, trainer.max_time" in out and "fixed:" not in out
    assert "| ce | unset | 55.00 ± 7.07 | 2 |" in out and "| coteaching | 00:00:00:02 | 70.00 | 1 |" in out
