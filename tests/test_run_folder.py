"""The run folder's life (noisylab.run_folder): the decision as a table, and what it means
for real runs — a finished run survives every refused rerun byte for byte, a rerun of the
same run skips or resumes, a resume that would change the trajectory is refused."""

import os
import signal
from pathlib import Path

import pytest
import torch

from noisylab.errors import ConfigError
from noisylab.run_folder import RESUME, SKIP, START, FolderState, contents, decide, difference, identity
from noisylab.train import run, task

MINE = {"seed": 0, "method.name": "ce", "protocol.epochs": 2}
OTHER = {**MINE, "seed": 1}
CKPT = Path("/runs/a/checkpoints/last.ckpt")

# (folder state, its identity, resume, ckpt_path) -> (action, resumes from, replaces, notice contains)
TABLE = [
    (FolderState("empty"), True, None, (START, None, False, None)),
    (FolderState("failed"), True, None, (START, None, True, None)),
    (FolderState("finished", MINE), True, None, (SKIP, None, False, "already holds this run's results")),
    (FolderState("finished", OTHER), True, None, (START, None, True, "seed=1, this run seed=0")),
    (FolderState("finished", None), True, None, (START, None, True, "unknown settings")),
    (FolderState("unfinished", MINE, CKPT, 1), True, None, (RESUME, CKPT, False, "after 1 epochs")),
    (FolderState("unfinished", OTHER, CKPT, 1), True, None, (START, None, True, "another run")),
    (FolderState("unfinished", None, CKPT), True, None, (START, None, True, "unknown settings")),
    (FolderState("finished", MINE), False, None, (START, None, True, "resume=false")),
    (FolderState("unfinished", MINE, CKPT, 1), False, None, (START, None, True, "resume=false")),
    (FolderState("empty"), True, "last", (START, None, False, "nothing to resume")),
    (FolderState("unfinished", MINE, CKPT, 1), True, "auto", (RESUME, CKPT, False, "resuming")),
    (FolderState("finished", MINE), True, "/x/last.ckpt", (RESUME, Path("/x/last.ckpt"), True, "replaced")),
    (FolderState("empty"), True, "/x/last.ckpt", (RESUME, Path("/x/last.ckpt"), False, None)),
]


@pytest.mark.parametrize("state", [FolderState("unfinished", OTHER, CKPT, 1), FolderState("finished", OTHER),
                                   FolderState("unfinished", None, CKPT)])
def test_a_named_resume_never_replaces_another_run(state):
    with pytest.raises(ConfigError, match="ckpt_path=last: the run folder holds another run"):
        decide(state, MINE, True, "last")


@pytest.mark.parametrize(("state", "resume", "ckpt_path", "expected"), TABLE)
def test_the_decision_table(state, resume, ckpt_path, expected):
    decision = decide(state, MINE, resume, ckpt_path)
    action, checkpoint, replace, notice = expected
    assert (decision.action, decision.checkpoint, decision.replace) == (action, checkpoint, replace)
    assert (decision.notice is None) if notice is None else (notice in decision.notice)


def test_identity_leaves_out_only_what_cannot_change_the_training():
    values = {"seed": 3, "logger": {"csv": {"save_dir": "x"}}, "paths": {"output_dir": "o"},
              "trainer": {"max_epochs": 5, "enable_progress_bar": False, "accelerator": "gpu", "precision": "32"},
              "data": {"root": "/d", "name": "cifar10", "eval_batch_size": 9, "augment": "crop_flip"},
              "speed": {"bf16": True, "data_on_device": "auto"}, "protocol": {"optimizer": {"lr": 0.1}}}
    assert identity(values) == {"seed": 3, "trainer.max_epochs": 5, "trainer.precision": "32", "data.name": "cifar10",
                                "data.augment": "crop_flip", "speed.bf16": True, "protocol.optimizer.lr": 0.1}
    assert difference({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3]}) == ("b=[1, 2]", "b=[1, 3]")
    # a key set on one side only (+trainer.limit_train_batches=2): unset on the other
    assert difference({"a": 1}, {"a": 1, "trainer.limit_train_batches": 2}) == (
        "trainer.limit_train_batches=unset", "trainer.limit_train_batches=2")
    assert difference({"protocol.optimizer.momentum": 0.9}, {}) == ("protocol.optimizer.momentum=0.9",
                                                                     "protocol.optimizer.momentum=unset")
    # ... except the model of model=auto (checked at load), a method's unread groups, the files' hashes
    assert difference({"a": 1}, {"a": 1, "model.hidden": [8], "schedule.tau": 0.2, "data.trusted_list": "t",
                                 "data.file:sha256": "ab"}) is None


@pytest.mark.parametrize(("overrides", "kept"), [
    (["method=ce", "quirks=official"], {"quirks": "paper"}),  # ce has no official-code behaviours
    (["method=coteaching", "quirks=official"], {"quirks": "official", "schedule.tau": None}),
    (["method=coteaching", "quirks=[drop_last]"], {"quirks": ["drop_last"]}),
    (["method=l2rw"], {"data.trusted_per_class": 10}),
])
def test_the_identity_holds_what_the_method_reads(make_cfg, overrides, kept):
    from omegaconf import OmegaConf

    from noisylab.train import method_identity

    cfg = make_cfg(*overrides)
    mine = method_identity(cfg, identity(OmegaConf.to_container(cfg, resolve=True)))
    assert {key: mine.get(key) for key in kept} == kept
    if overrides[0] == "method=ce":  # neither a trusted set nor a forget-rate schedule
        assert not [key for key in mine if key.startswith(("schedule.", "data.trusted_"))]


def test_an_edited_label_file_or_image_folder_is_another_run(tmp_path):
    """The files a config names are part of the run's identity by content: labels fixed after
    `noisylab.suspects` and the same command again is a new run, not a skip (nor a resume)."""
    from tests.fixtures_web import write_image_folder

    table, noise = tmp_path / "labels.csv", tmp_path / "noise.npz"
    table.write_text("path,label\na.png,cat\nb.png,dog\n")
    noise.write_bytes(b"one")
    config = {"data": {"name": "table", "file": str(table), "trusted_list": None},
              "noise": {"load_from": str(noise), "file": str(tmp_path / "absent.pt")}}
    first = contents(config)
    assert sorted(first) == ["data.file:sha256", "noise.load_from:sha256"]  # named and present files only
    table.write_text("path,label\na.png,dog\nb.png,dog\n")  # one label fixed
    edited = contents(config)
    assert edited["data.file:sha256"] != first["data.file:sha256"]
    assert edited["noise.load_from:sha256"] == first["noise.load_from:sha256"]
    state = FolderState("finished", {**MINE, **first})
    decision = decide(state, {**MINE, **edited})
    assert decision.action == START and decision.replace and "data.file:sha256=" in decision.notice
    with pytest.raises(ConfigError, match="data.file:sha256="):
        decide(FolderState("unfinished", {**MINE, **first}, CKPT, 1), {**MINE, **edited}, ckpt_path="last")
    assert decide(FolderState("finished", MINE), {**MINE, **edited}).action == SKIP  # a record from before: kept
    from noisylab.run_folder import check_resume  # an explicit ckpt_path: compared by content too

    saved = tmp_path / "last.ckpt"
    torch.save({"pytorch-lightning_version": "2.4.0", "state_dict": {}, "epoch": 0,
                "noisylab_identity": {**MINE, **first}}, saved)
    check_resume(saved, {**MINE, **first})
    with pytest.raises(ConfigError, match=r"was trained with data.file:sha256=\w+, but this run has data.file:sha256="):
        check_resume(saved, {**MINE, **edited})
    # data=folder: an image moved to another class folder changes it; a hidden file does not
    write_image_folder(tmp_path / "mine", per_class=2)
    folder = {"data": {"name": "folder", "root": str(tmp_path / "mine")}}
    listed = contents(folder)["data.root:images"]
    (tmp_path / "mine" / ".DS_Store").write_bytes(b"x")
    assert contents(folder)["data.root:images"] == listed
    (tmp_path / "mine" / "cat" / "img000.jpg").rename(tmp_path / "mine" / "dog" / "img000.jpg")
    assert contents(folder)["data.root:images"] != listed


FAST = ["method=ce", "debug=fast", "trainer.enable_progress_bar=false"]


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_finished_run_survives_refused_reruns_and_skips_a_repeat(make_cfg, one_thread, tmp_path, capsys):
    folder = tmp_path / "run"
    first = run(make_cfg(*FAST, f"paths.output_dir={folder}"))
    before = files(folder)
    assert "results.json" in before and ".hydra/overrides.yaml" in before
    for bad in (["method=gce", "method.q=nan"], ["data=cifar10", f"data.root={tmp_path}/none"],
                ["noise.load_from=/nonexistent.npz"], ["seed=1", "trainer.strategy=bogus"],
                ["seed=1", "trainer.devices=0"]):  # another run, refused by Lightning: the folder stays
        with pytest.raises(SystemExit) as refused:
            task(make_cfg(*FAST, f"paths.output_dir={folder}", *bad))
        assert refused.value.code == 2
        after = files(folder)
        beside = [k for k in after if k.startswith("error-")]
        assert {k: v for k, v in after.items() if not k.startswith("error-")} == before, bad
        for name in beside:
            (folder / name).unlink()
    again = run(make_cfg(*FAST, f"paths.output_dir={folder}"))
    assert again.get("skipped") and again["metrics"] == first["metrics"] and files(folder) == before
    # a setting this method ignores (ce takes no trusted set) is no part of the run: skipped too
    assert run(make_cfg(*FAST, f"paths.output_dir={folder}", "data.trusted_per_class=3")).get("skipped")
    # nor is a forget-rate schedule it has none of, or quirks=official for a method without quirks
    assert run(make_cfg(*FAST, f"paths.output_dir={folder}", "schedule.tau=0.4", "quirks=official")).get("skipped")
    assert "already holds this run's results: skipped" in capsys.readouterr().out


def test_an_unfinished_run_resumes_by_itself_and_a_changed_trajectory_is_refused(make_cfg, one_thread, tmp_path):
    base = [*FAST, "method=coteaching", "protocol.epochs=3"]
    whole = run(make_cfg(*base))
    folder = tmp_path / "stopped"
    stop = ["+callbacks.stop._target_=tests.test_resume.signal_at", "+callbacks.stop.name=SIGTERM",
            "+callbacks.stop.epoch=1", "+callbacks.stop.batch=1"]
    with pytest.raises(SystemExit) as stopped:
        task(make_cfg(*base, f"paths.output_dir={folder}", *stop))
    assert stopped.value.code == 128 + signal.SIGTERM
    checkpoint = folder / "checkpoints" / "last.ckpt"
    error = (folder / "error.txt").read_bytes()
    for changed, key in ((["seed=1"], "seed=0"), (["protocol.batch_size=64"], "protocol.batch_size=128"),
                         (["protocol.optimizer.lr=0.01"], "protocol.optimizer.lr=0.001"),
                         (["+trainer.limit_train_batches=2"], "trainer.limit_train_batches=unset"),  # set one side only
                         (["+protocol.optimizer.amsgrad=true"], "protocol.optimizer.amsgrad=unset")):
        with pytest.raises(ConfigError, match=f"was trained with {key}"):
            run(make_cfg(*base, *changed, f"ckpt_path={checkpoint}"))
        with pytest.raises(ConfigError, match=f"ckpt_path=last: the run folder holds another run .{key}"):
            run(make_cfg(*base, *changed, "ckpt_path=last", f"paths.output_dir={folder}"))
    assert (folder / "error.txt").read_bytes() == error and checkpoint.is_file()
    with pytest.raises(ConfigError, match="trainer.max_epochs=5 differs from protocol.epochs=3"):
        run(make_cfg(*base, "trainer.max_epochs=5"))
    resumed = run(make_cfg(*base, f"paths.output_dir={folder}"))  # started again, as a requeue does
    assert resumed["resumed_from"] == str(checkpoint)
    assert resumed["epochs"] == whole["epochs"] == 3 and resumed["metrics"] == whole["metrics"]
    assert not (folder / "error.txt").exists()


def test_a_run_cut_short_is_not_finished_and_resumes_to_the_same_end(make_cfg, one_thread, tmp_path, capsys):
    """trainer.max_time (here a callback that stops as it does, in the middle of an epoch):
    no results.json, the cut epoch is no checkpoint, and the same command finishes the run as
    if it had never stopped."""
    base = [*FAST, "method=coteaching", "protocol.epochs=3"]
    whole = run(make_cfg(*base))
    folder = tmp_path / "cut"
    stop = ["+callbacks.stop._target_=tests.test_resume.stop_at", "+callbacks.stop.epoch=1",
            "+callbacks.stop.batch=2"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        task(make_cfg(*base, f"paths.output_dir={folder}", *stop, "+trainer.max_time=00:01:00:00"))
    assert stopped.value.code == 3 and not (folder / "results.json").exists()
    printed = capsys.readouterr().out  # one line per whole epoch, none for the cut one
    assert "epoch 1/3 |" in printed and "epoch 2/3 |" not in printed
    assert (folder / "error.txt").read_text().startswith("stopped by trainer.max_time=00:01:00:00 after 1 of 3 epochs")
    checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    state = next(value for key, value in checkpoint["callbacks"].items() if "LastCheckpoint" in key)
    assert 0 < state["seconds"] < 600
    state["seconds"] = 1000.0  # as if the earlier process had trained for 1000 s: the record counts it
    timer = next(key for key in checkpoint["callbacks"] if key.startswith("Timer"))
    checkpoint["callbacks"][timer]["time_elapsed"] = {"train": 7200.0, "sanity_check": 0.0, "validate": 0.0,
                                                      "test": 0.0, "predict": 0.0}  # ... and spent 2 h of max_time
    torch.save(checkpoint, folder / "checkpoints" / "last.ckpt")
    # max_time is each process's budget (a requeued job's time limit): the same command finishes the run
    resumed = run(make_cfg(*base, f"paths.output_dir={folder}", "+trainer.max_time=00:01:00:00"))
    assert resumed["resumed_from"] and resumed["metrics"] == whole["metrics"] and resumed["epochs"] == 3
    assert 1000 < resumed["wall_time_s"] < 1600
    # without a checkpoint callback Lightning counts the cut epoch as done: still not finished
    with pytest.raises(SystemExit):
        task(make_cfg(*base, f"paths.output_dir={tmp_path / 'none'}", "callbacks=none", *stop))
    assert (tmp_path / "none" / "error.txt").read_text().startswith(
        "stopped by a callback after 1 of 3 epochs; it kept no checkpoint (callbacks=none), so the same command "
        "starts it over")


def test_a_run_stopped_twice_keeps_every_epoch_in_its_csv(make_cfg, one_thread, tmp_path):
    """Each resumed process starts its CSV from the rows of the epochs its checkpoint holds (the
    rows of a cut epoch are trained and logged again): stopped twice, the CSV ends as the
    uninterrupted run's, row for row (it had lost the first process's epochs)."""
    import csv

    base = [*FAST, "method=coteaching", "protocol.epochs=4", "logger=csv"]
    whole = run(make_cfg(*base))

    def rows(folder):
        with open(folder / "csv" / "metrics.csv", newline="") as f:
            return sorted(tuple(sorted(row.items())) for row in csv.DictReader(f))

    folder = tmp_path / "twice"
    for epoch in (1, 2):
        stop = ["+callbacks.stop._target_=tests.test_resume.stop_at", f"+callbacks.stop.epoch={epoch}",
                "+callbacks.stop.batch=2", "+callbacks.stop.resumed=true"]
        with pytest.raises(SystemExit):
            task(make_cfg(*base, f"paths.output_dir={folder}", *stop, "+trainer.max_time=00:01:00:00"))
        assert "0" in {dict(row)["epoch"] for row in rows(folder)}  # the first process's epochs kept
    resumed = run(make_cfg(*base, f"paths.output_dir={folder}"))
    assert resumed["metrics"] == whole["metrics"]
    assert rows(folder) == rows(Path(whole["run_dir"]))


def test_a_file_backed_run_with_loader_workers_resumes_to_the_same_end(make_cfg, one_thread, tmp_path):
    """Images decoded and augmented in DataLoader worker processes: each pass's order and each
    image's augmentation have seeds of (seed, epoch, pass, index) alone, so neither the number
    of workers nor a resume changes the run (persistent workers carried their own streams
    across epochs, and a resume differed; workers fetch before Lightning moves current_epoch
    past a resumed checkpoint's)."""
    from tests.fixtures_web import write_image_folder

    write_image_folder(tmp_path / "mine", per_class=12)
    base = [*FAST, "method=coteaching", "protocol.epochs=3", "data=folder", f"data.root={tmp_path / 'mine'}",
            "model=mlp", "data.resize=8", "data.crop_size=8", "data.num_workers=1", "protocol.batch_size=8",
            "noise=sym20"]
    whole = run(make_cfg(*base, f"paths.output_dir={tmp_path / 'whole'}"))
    in_process = run(make_cfg(*base, "data.num_workers=0", f"paths.output_dir={tmp_path / 'no_workers'}"))
    assert in_process["metrics"] == whole["metrics"]
    stop = ["+callbacks.stop._target_=tests.test_resume.stop_at", "+callbacks.stop.epoch=1", "+callbacks.stop.batch=1"]
    with pytest.raises(SystemExit):
        task(make_cfg(*base, f"paths.output_dir={tmp_path / 'cut'}", *stop))
    resumed = run(make_cfg(*base, f"paths.output_dir={tmp_path / 'cut'}"))
    assert resumed["resumed_from"] and resumed["metrics"] == whole["metrics"]


@pytest.mark.parametrize("key,value,fine", [("max_steps", 5, -1), ("check_val_every_n_epoch", 2, 1),
                                            ("val_check_interval", 0.5, 1.0), ("min_steps", 1, "null"),
                                            ("accumulate_grad_batches", 4, 1), ("gradient_clip_val", 1.0, 0)])
def test_trainer_arguments_that_would_make_the_record_false_or_cannot_apply_are_refused(make_cfg, key, value, fine):
    from noisylab.schema import check_config

    with pytest.raises(ConfigError, match=f"trainer.{key}={value} is not supported: "):
        check_config(make_cfg(*FAST, f"+trainer.{key}={value}"))
    check_config(make_cfg(*FAST, f"+trainer.{key}={fine}"))


def test_an_impossible_run_folder_is_one_sentence(make_cfg, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot be written"):
        run(make_cfg(*FAST, f"paths.output_dir={tmp_path / 'file' / 'run'}"))
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "checkpoints").write_text("a file where the checkpoints go")
    with pytest.raises(ConfigError, match="blocked holds a file checkpoints where a run makes a folder"):
        run(make_cfg(*FAST, f"paths.output_dir={tmp_path / 'blocked'}"))
    from noisylab.run_folder import RUN_FILES, misshapen

    for name in RUN_FILES:  # a folder where a file goes: refused before training, not a traceback after it
        folder = tmp_path / name.replace("/", "_")
        (folder / name).mkdir(parents=True)
        with pytest.raises(ConfigError, match=f"holds a folder {name} where a run writes a file"):
            run(make_cfg(*FAST, f"paths.output_dir={folder}"))
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == sorted(
            Path(name).as_posix() for name in [name, *[str(q) for q in Path(name).parents][:-1]])  # untouched
    assert misshapen(tmp_path / "file") is None and misshapen(tmp_path / "absent") is None
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="cannot be written"):
            run(make_cfg(*FAST, f"paths.output_dir={locked / 'run'}"))


@pytest.mark.slow
def test_a_sweep_launched_again_finishes_only_what_is_unfinished(tmp_path):
    """-m twice into the same sweep folder: the second launch skips the finished job, resumes
    the one whose results a pre-emption kept it from writing (ending as the first launch's
    job did)."""
    from tests.test_cli import noisylab

    sweep = ["method=ce", "protocol.epochs=2", "seed=0,1"]  # into tmp_path/sweep both times
    first = noisylab(tmp_path, *sweep, multirun=True)
    assert first.returncode == 0, first.stderr[-2000:]
    jobs = sorted((tmp_path / "sweep").glob("*_s*"))
    finished = (jobs[0] / "results.json").read_bytes()
    expected = (jobs[1] / "results.json").read_text()
    (jobs[1] / "results.json").unlink()  # job 1 as a pre-emption after its last checkpoint leaves it
    again = noisylab(tmp_path, *sweep, multirun=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already holds this run's results: skipped" in again.stdout
    assert (jobs[0] / "results.json").read_bytes() == finished
    import json

    resumed, whole = json.loads((jobs[1] / "results.json").read_text()), json.loads(expected)
    assert resumed["resumed_from"] and resumed["metrics"] == whole["metrics"]


@pytest.mark.parametrize(("argv", "sentence"), [
    (["-m", "model=mlp,bogus"], "model=bogus is not an option of model"),
    (["-m", "hydra/sweeper=bogus"], "hydra/sweeper=bogus is not an option of hydra/sweeper"),
    (["-m", "seed=0,1", "data.foo=1"], "data.foo is not a setting of data"),
    (["-m", "seed=0,1", "trainer.detect_anomaly=true"], "trainer.detect_anomaly is not a key of the config"),
    (["-m", "method=ce,coteaching", "noise=sym20,sym50"], None),
])
def test_hydra_refusals_inside_a_multirun_are_one_sentence_before_any_job(argv, sentence):
    from noisylab.train import multirun_error

    found = multirun_error(argv)
    assert (found is None) if sentence is None else found.startswith(sentence)


LONG = "x" * 300  # longer than a file name may be


@pytest.mark.parametrize(("argv", "sentence"), [
    (["hydra.run.dir=/tmp/${oops}"], "hydra.run.dir=/tmp/${oops}: Interpolation key 'oops' not found."),
    ([f"hydra.run.dir=/tmp/{LONG}"], f"the run folder /tmp/{LONG} cannot be made (File name too long)"),
    (["-m", "seed=0,1", "hydra.sweep.dir=/tmp/${oops}"], "hydra.sweep.dir=/tmp/${oops}: Interpolation key"),
    (["-m", "seed=0,1", "hydra.sweep.subdir=${nope}_x"], "hydra.sweep.subdir=${nope}_x: Interpolation key"),
    (["-m", "seed=0,1", f"hydra.sweep.subdir={LONG}"], "the run folder /"),
    (["-m", "seed=0,1", "hydra.sweep.dir=/dev/null/sweep"], "the run folder /dev/null/sweep cannot be made: /dev/null is"),
])
def test_a_run_or_sweep_folder_hydra_cannot_make_is_one_sentence(argv, sentence):
    from noisylab.train import composition_error, multirun_error

    found = multirun_error(argv) if "-m" in argv else composition_error(argv)
    assert found is not None and found.startswith(sentence), found
    assert len(found.splitlines()) == 1


def test_a_home_folder_is_expanded_not_made_as_a_folder_named_tilde():
    from noisylab.train import rewrite_overrides

    home = str(Path.home())
    assert rewrite_overrides(["hydra.run.dir=~/runs/a", 'data.root="~/data"', "noise.file=~", "seed=1",
                              "hydra.job.name=a~b", "+x=~nobody_such_user_xyz/a"]) == [
        f"hydra.run.dir={home}/runs/a", f'data.root="{home}/data"', f"noise.file={home}", "seed=1",
        "hydra.job.name=a~b", "+x=~nobody_such_user_xyz/a"]


@pytest.mark.parametrize(("argv", "said"), [(["-m", "seed=0,1"], "between the jobs of a multirun; run the same command"),
                                            (["seed=1"], "outside a run; nothing to resume")])
def test_a_signal_outside_a_run_says_what_is_left(monkeypatch, capsys, argv, said):
    from noisylab.interrupts import Interrupted, exit_when_interrupted

    monkeypatch.setattr("sys.argv", ["noisylab", *argv])
    with pytest.raises(SystemExit) as stopped, exit_when_interrupted():
        raise Interrupted(signal.SIGTERM)
    assert stopped.value.code == 143 and said in capsys.readouterr().err


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_signal_after_the_last_epoch_names_the_checkpoint(make_cfg, one_thread, tmp_path, monkeypatch, wrapped):
    """SIGTERM after fit (before or while testing): the run's checkpoint holds every epoch and
    the sentence says so; a library that turns the interruption into an error of its own
    (OmegaConf) does not make it a crash."""
    import noisylab.train as train_module

    def signal_now(cfg, trainer):
        if not wrapped:
            os.kill(os.getpid(), signal.SIGTERM)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException:  # as OmegaConf, interrupted in the middle of an update
            raise ValueError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None

    monkeypatch.setattr(train_module, "check_finished", signal_now)
    folder = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        task(make_cfg(*FAST, f"paths.output_dir={folder}", "protocol.epochs=2"))
    assert stopped.value.code == 128 + signal.SIGTERM
    said = (folder / "error.txt").read_text()
    assert said.startswith("stopped by SIGTERM after 2 of 2 epochs; resume with: python -m noisylab"), said
    assert f"ckpt_path={(folder / 'checkpoints' / 'last.ckpt').resolve()}" in said


def test_the_run_log_is_held_until_the_run_owns_its_folder(tmp_path):
    import logging

    from noisylab.run_log import HeldFileHandler

    log = tmp_path / "train.log"
    log.write_text("the earlier run's line\n")
    handler = HeldFileHandler(str(log))
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("noisylab", logging.INFO, __file__, 1, "checking", None, None)
    handler.handle(record)
    assert log.read_text() == "the earlier run's line\n"  # nothing written before open()
    handler.open(fresh=True)  # the earlier run is replaced: so is its log
    handler.handle(logging.LogRecord("noisylab", logging.INFO, __file__, 2, "training", None, None))
    handler.close()
    assert log.read_text() == "checking\ntraining\n"


def lightning_checkpoint(path: Path, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"pytorch-lightning_version": "2.4.0", "state_dict": {}, "epoch": 41, **extra}, path)
    return path


@pytest.mark.parametrize("resume", [True, False])
@pytest.mark.parametrize("ckpt_path", [None, "last", "/x/last.ckpt"])
def test_a_folder_of_another_tools_files_is_refused_whatever_the_settings(tmp_path, resume, ckpt_path):
    state = FolderState("foreign", foreign=(tmp_path, tmp_path / "results.json", tmp_path / "checkpoints" / "last.ckpt"))
    with pytest.raises(ConfigError, match=f"{tmp_path} holds files no noisylab run wrote "
                                          r"\(results.json, checkpoints/last.ckpt\)"):
        decide(state, MINE, resume, ckpt_path)


def test_which_files_are_another_tools(tmp_path):
    """A file a run would replace is another tool's unless something shows noisylab wrote there."""
    from noisylab.run_folder import LOCK, foreign_files, read_state

    def kind(setup) -> str:
        folder = tmp_path / setup.__name__
        folder.mkdir()
        setup(folder)
        return read_state(folder).kind

    def own_results(folder):  # a results.json of some other program
        (folder / "results.json").write_text('{"accuracy": 0.93}')

    def own_lightning_checkpoints(folder):  # a Lightning project's ModelCheckpoint(save_last=True)
        lightning_checkpoint(folder / "checkpoints" / "last.ckpt", callbacks={"ModelCheckpoint{}": {}})

    def other_checkpoint_name(folder):
        lightning_checkpoint(folder / "checkpoints" / "epoch=3-step=400.ckpt")

    def other_hydra_app(folder):
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text("db:\n  driver: mysql\n")

    def notes(folder):  # files a run neither writes nor removes: no concern
        (folder / "notes.txt").write_text("mine")
        (folder / "my_app.log").write_text("mine")

    def noisylab_record_without_lock(folder):  # a run older than the lock
        (folder / "results.json").write_text('{"method": "ce", "data": "digits", "metrics": {}, "noise": {}}')

    def noisylab_checkpoint_without_lock(folder):
        lightning_checkpoint(folder / "checkpoints" / "last.ckpt", noisylab_identity=MINE)

    def noisylab_hydra_record_without_lock(folder):
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text("method: {name: ce}\ndata: {name: digits}\nnoise: {rate: 0.5}\n")
        (folder / "error.txt").write_text("noisylab's sentence")

    def locked(folder):
        own_results(folder)
        (folder / LOCK).write_text("123\n")

    assert [kind(f) for f in (own_results, own_lightning_checkpoints, other_checkpoint_name, other_hydra_app)] == \
        ["foreign"] * 4
    assert kind(notes) == "empty" and kind(locked) == "finished"
    assert kind(noisylab_record_without_lock) == "finished"
    assert kind(noisylab_checkpoint_without_lock) == "unfinished"
    assert kind(noisylab_hydra_record_without_lock) == "failed"
    assert foreign_files(tmp_path / "absent") == []
    edited = tmp_path / "edited"  # a noisylab record edited by hand: no run to skip to (it was, then crashed)
    edited.mkdir()
    (edited / LOCK).write_text("")
    (edited / "results.json").write_text('{"method": "ce", "data": "d", "metrics": "x", "noise": {}, "identity": {}}')
    assert read_state(edited) == FolderState("finished", None)


def test_another_tools_files_survive_a_run_pointed_at_their_folder(make_cfg, one_thread, tmp_path, capsys):
    folder = tmp_path / "theirs"
    lightning_checkpoint(folder / "checkpoints" / "last.ckpt")
    (folder / "results.json").write_text('{"accuracy": 0.93}')
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text("epoch,loss\n0,1.5\n")
    before = files(folder)
    for extra in ([], ["resume=false"], ["ckpt_path=last"]):
        with pytest.raises(SystemExit) as refused:
            task(make_cfg(*FAST, f"paths.output_dir={folder}", *extra))
        assert refused.value.code == 2
        assert "holds files no noisylab run wrote" in capsys.readouterr().err
        after = files(folder)
        assert {k: v for k, v in after.items() if not k.startswith("error-")} == before, extra


def test_a_run_refused_in_a_new_folder_leaves_it_to_the_corrected_run(make_cfg, one_thread, tmp_path):
    from noisylab.run_folder import LOCK

    folder = tmp_path / "new"
    folder.mkdir()  # as Hydra makes it
    with pytest.raises(SystemExit):
        task(make_cfg(*FAST, f"paths.output_dir={folder}", "method=gce", "method.q=nan"))
    assert (folder / "error.txt").is_file() and (folder / LOCK).is_file()
    assert run(make_cfg(*FAST, f"paths.output_dir={folder}"))["metrics"]
    assert not (folder / "error.txt").exists()


def test_a_folder_another_process_runs_in_is_refused_untouched(make_cfg, one_thread, tmp_path):
    import fcntl

    from noisylab.run_folder import LOCK, release_locks

    folder = tmp_path / "run"
    run(make_cfg(*FAST, f"paths.output_dir={folder}", "protocol.epochs=2"))
    release_locks()
    before = files(folder)
    with open(folder / LOCK, "r+") as other:  # another process's run holds the folder (a requeued copy)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="is in use by another noisylab process"):
            run(make_cfg(*FAST, f"paths.output_dir={folder}", "protocol.epochs=3"))  # would replace it
        assert files(folder) == before
    resumed = run(make_cfg(*FAST, f"paths.output_dir={folder}", "protocol.epochs=3"))  # the lock is free again
    assert resumed["epochs"] == 3


def test_a_run_whose_folder_changed_while_it_was_checked_is_refused(make_cfg, one_thread, tmp_path):
    """Two commands into one folder, the first finishing while the second checks its config:
    the second decided on an empty folder, so it must not train over the first's results."""
    from noisylab.run_folder import LOCK, release_locks
    from noisylab.train import CLAIMED, claim_run_dir

    folder = tmp_path / "race"
    run(make_cfg(*FAST, f"paths.output_dir={folder}", "protocol.epochs=1"))
    release_locks()
    CLAIMED.discard(str(folder.resolve()))
    before = {name: data for name, data in files(folder).items() if name != LOCK}
    with pytest.raises(ConfigError, match="race changed while this run was being checked"):
        claim_run_dir(folder, FolderState("empty"))  # what the second run saw before the first finished
    assert {name: data for name, data in files(folder).items() if name != LOCK} == before
    assert str(folder.resolve()) not in CLAIMED
    import fcntl

    with open(folder / LOCK, "r+") as other:  # let go of
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_finished_task_lets_go_of_its_folder(make_cfg, one_thread, tmp_path):
    """A joblib worker lives on after its job: the folder must not stay locked by it."""
    import fcntl

    from noisylab.run_folder import LOCK

    folder = tmp_path / "run"
    task(make_cfg(*FAST, f"paths.output_dir={folder}", "protocol.epochs=1"))
    with open(folder / LOCK, "r+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError while still held
