"""Runs killed at any point resume to exactly the uninterrupted run (CPU): SIGKILL in the
middle of a checkpoint save and SIGTERM in the middle of an epoch (through the command line,
resumed with the command the run prints), SIGINT while testing after the last epoch; the
checkpoint folder holds one whole last.ckpt; an earlier run in the same folder is replaced."""

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from noisylab.checkpoints import LastCheckpoint, merge_metrics_csv, prepare_run_dir, read_csv_rows
from noisylab.interrupts import Interrupted, interrupted_sentence
from noisylab.train import run, task
from tests.test_cli import noisylab

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = ["method=coteaching_plus", "method.init_epoch=1", "protocol.epochs=4", "trainer.enable_progress_bar=false"]


def signal_at(name: str, epoch: int = 0, batch: int = 0, stage: str = "train"):
    """Sends signal ``name`` to its own process at ``batch`` of ``epoch`` (``stage=test``: at
    the first test batch), never in a resumed run."""

    class Send(Callback):
        def _send(self, trainer, now: bool):
            if now and trainer.ckpt_path is None:
                os.kill(os.getpid(), getattr(signal, name))

        def on_train_batch_start(self, trainer, module, batch_, batch_idx):
            self._send(trainer, stage == "train" and trainer.current_epoch == epoch and batch_idx == batch)

        def on_test_batch_start(self, trainer, module, batch_, batch_idx, dataloader_idx=0):
            self._send(trainer, stage == "test" and batch_idx == 0)

    return Send()


def stop_at(epoch: int, batch: int, resumed: bool = False):
    """Sets ``trainer.should_stop`` at ``batch`` of ``epoch``, as ``trainer.max_time`` does when
    its time is up (a timing-free stand-in for it), in a resumed run only if ``resumed``."""

    class Stop(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch_, batch_idx):
            if (resumed or trainer.ckpt_path is None) and trainer.current_epoch == epoch and batch_idx == batch:
                trainer.should_stop = True

    return Stop()


class KillMidSave(LastCheckpoint):
    """Writes half of epoch ``epoch``'s checkpoint, then SIGKILLs its process (a torn write)."""

    def __init__(self, dirpath: str, epoch: int):
        super().__init__(dirpath)
        self.epoch = epoch

    def save(self, trainer):
        if trainer.current_epoch == self.epoch:
            write = trainer.save_checkpoint

            def torn(path, *args, **kwargs):
                write(path, *args, **kwargs)
                os.truncate(path, os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

            trainer.save_checkpoint = torn
        super().save(trainer)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run."""
    root = tmp_path_factory.mktemp("whole")
    done = noisylab(root, *SETTINGS)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run", done


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
def test_the_run_folder_holds_one_checkpoint_and_files_others_can_read(whole):
    run_dir, done = whole
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 3
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.json", "per_sample.npz", "noisy_labels.npz", "checkpoints/last.ckpt", "csv/metrics.csv"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o666 & ~umask, name
    assert "site-packages" not in done.stderr


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_checkpoint_save_leaves_the_previous_one_whole(tmp_path, whole):
    killed = noisylab(tmp_path / "killed", *SETTINGS, "callbacks.checkpoint._target_=tests.test_resume.KillMidSave",
                      "+callbacks.checkpoint.epoch=2")
    assert killed.returncode == -signal.SIGKILL
    folder = tmp_path / "killed" / "run"
    assert not (folder / "results.json").exists()
    assert (folder / "checkpoints" / ".last.ckpt.partial").stat().st_size > 0  # the torn write
    checkpoint = folder / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1  # epoch 1 (0-based), whole
    resumed = noisylab(tmp_path / "resumed", *SETTINGS, f"ckpt_path={checkpoint}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got, expected = results(tmp_path / "resumed" / "run"), results(whole[0])
    assert got["epochs"] == expected["epochs"] == 4 and got["metrics"] == expected["metrics"]


@pytest.mark.slow
def test_sigterm_mid_epoch_stops_with_the_command_that_resumes_it_exactly(tmp_path, whole):
    """SIGTERM in the middle of epoch 3 of 4: exit 143 and one sentence; the printed command,
    run as printed, resumes into the same folder and ends as the uninterrupted run."""
    stopped = noisylab(tmp_path, *SETTINGS, "+callbacks.stop._target_=tests.test_resume.signal_at",
                       "+callbacks.stop.name=SIGTERM", "+callbacks.stop.epoch=2", "+callbacks.stop.batch=4")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    folder = tmp_path / "run"
    assert not (folder / "results.json").exists()
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("noisylab: stopped by SIGTERM after 2 of 4 epochs; resume with: python -m noisylab ")
    assert (folder / "error.txt").read_text().strip() == last[len("noisylab: "):]
    command = shlex.split(last.split("resume with: ", 1)[1])
    assert command[-2:] == [f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={folder}"]
    resumed = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=300, cwd=ROOT,
                             env={**os.environ, "WANDB_MODE": "offline"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (folder / "error.txt").exists()
    got, expected = results(folder), results(whole[0])
    assert got["epochs"] == expected["epochs"] == 4 and got["metrics"] == expected["metrics"]
    assert read_csv_rows(folder / "csv" / "metrics.csv") == read_csv_rows(whole[0] / "csv" / "metrics.csv")


def test_sigint_while_testing_resumes_from_the_final_checkpoint_with_every_metric(make_cfg, one_thread, capsys):
    """Ctrl-C after the last epoch, during the test: exit 130; resumed (into another folder)
    from the final checkpoint, nothing is trained and the results equal the whole run's,
    fit metrics included; the CSV of the resumed run holds every epoch."""
    base = ["method=coteaching", "protocol.epochs=2", "trainer.enable_progress_bar=false"]
    whole = run(make_cfg(*base))
    cfg = make_cfg(*base, "+callbacks.stop._target_=tests.test_resume.signal_at", "+callbacks.stop.name=SIGINT",
                   "+callbacks.stop.stage=test")
    with pytest.raises(SystemExit) as stopped:
        task(cfg)
    assert stopped.value.code == 130
    folder = Path(cfg.paths.output_dir)
    sentence = capsys.readouterr().err.strip().splitlines()[-1]
    assert sentence.startswith("noisylab: stopped by SIGINT after 2 of 2 epochs; resume with: python -m noisylab ")
    assert not (folder / "results.json").exists() and (folder / "error.txt").is_file()
    resumed = run(make_cfg(*base, f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"))
    assert resumed["epochs"] == whole["epochs"] == 2 and resumed["metrics"] == whole["metrics"]
    assert read_csv_rows(Path(resumed["run_dir"]) / "csv" / "metrics.csv") == \
        read_csv_rows(Path(whole["run_dir"]) / "csv" / "metrics.csv")


def test_the_sentence_without_a_checkpoint_says_there_is_nothing_to_resume(tmp_path):
    stop = Interrupted(signal.SIGTERM)
    assert interrupted_sentence(stop, ["noise=pair45"], tmp_path) == (
        "stopped by SIGTERM before the first epoch ended, so there is no checkpoint to resume from; "
        "run the same command again to start over.")
    assert stop.exit_status == 143 and Interrupted(signal.SIGINT).exit_status == 130
    # a resumed run stopped before its first epoch ended: the checkpoint it came from still resumes it
    sentence = interrupted_sentence(stop, ["noise=pair45", "ckpt_path=old.ckpt", "hydra.run.dir=x"], tmp_path,
                                    resumed_from=tmp_path / "a b.ckpt")
    assert sentence == (f"stopped by SIGTERM; resume with: python -m noisylab noise=pair45 "
                        f"'ckpt_path={tmp_path}/a b.ckpt' hydra.run.dir={tmp_path}")


def test_an_earlier_run_in_the_folder_is_replaced_except_the_checkpoint_resumed_from(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "csv").mkdir()
    for name in ("results.json", "per_sample.npz", "error.txt", "checkpoints/last.ckpt", "checkpoints/epoch=3.ckpt",
                 "checkpoints/last-v1.ckpt", "checkpoints/.last.ckpt.partial", "noisy_labels.npz"):
        (run / name).write_text("old")
    (run / "csv" / "metrics.csv").write_text("epoch,step,val/acc\n0,9,0.5\n1,19,0.6\n2,29,0.7\n")
    (run / "csv" / "hparams.yaml").write_text("seed: 0\n")
    earlier = prepare_run_dir(run, str(run / "checkpoints" / "last.ckpt"))  # resumed in place
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "csv", "noisy_labels.npz"]
    assert [row["epoch"] for row in earlier] == ["0", "1", "2"]
    assert not any((run / "csv").iterdir())  # the CSV logger finds an empty folder (no warning)
    # the resumed run logs epochs 2 and 3 (with a new column): one CSV, epoch 2 from the new run
    (run / "csv" / "metrics.csv").write_text("epoch,step,test/acc,val/acc\n2,29,,0.75\n3,39,0.8,0.9\n")
    merge_metrics_csv(run / "csv" / "metrics.csv", earlier)
    assert (run / "csv" / "metrics.csv").read_text().splitlines() == [
        "epoch,step,test/acc,val/acc", "0,9,,0.5", "1,19,,0.6", "2,29,,0.75", "3,39,0.8,0.9"]
    assert prepare_run_dir(run, None) == []  # a new run: the old checkpoint goes too
    assert not any((run / "checkpoints").iterdir()) and not (run / "csv" / "metrics.csv").exists()


def test_warnings_are_one_line_without_a_path(monkeypatch):
    import warnings

    from noisylab.train import quiet_lightning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    quiet_lightning()  # after Lightning's import, which installs its own format
    text = warnings.formatwarning("The dataloader does not have\n  many workers.", UserWarning,
                                  "/x/site-packages/pytorch_lightning/trainer/connectors/data_connector.py", 425)
    assert text == "UserWarning: The dataloader does not have many workers.\n"
