"""The command line as a user types it: results files, multiruns, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import write_cifar10, write_svhn

FAST = ["protocol.epochs=3", "trainer.enable_progress_bar=false", "callbacks=none"]


def noisylab(tmp_path, *overrides, multirun=False):
    command = [sys.executable, "-m", "noisylab"] + (["-m"] if multirun else []) + list(overrides)
    command += [f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])


def test_a_run_writes_valid_results(tmp_path):
    done = noisylab(tmp_path, *FAST, "noise=pair45")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (results["method"], results["data"], results["model"]) == ("coteaching", "digits", "mlp")
    assert results["noise"]["name"] == "pair45" and results["noise"]["kind"] == "pair"
    assert abs(results["noise"]["actual_rate"] - 0.45) < 0.05
    assert results["epochs"] == 3 and results["wall_time_s"] > 0 and results["seed"] == 0
    metrics = results["metrics"]
    for key in ("test/acc", "test/acc_net2", "test/acc_last10", "val/acc", "train/label_precision"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert results["config"]["noise"]["rate"] == 0.45
    assert (tmp_path / "run" / "csv" / "metrics.csv").read_text().count("\n") >= 3
    assert "test accuracy" in done.stdout and "realised" in done.stdout


def test_multirun_writes_one_results_file_per_job(tmp_path):
    done = noisylab(tmp_path, *FAST, "method=ce,coteaching", "noise=sym20,sym50", multirun=True)
    assert done.returncode == 0, done.stderr[-2000:]
    files = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert len(files) == 4
    seen = {(r["method"], r["noise"]["name"]) for r in map(lambda f: json.loads(f.read_text()), files)}
    assert seen == {("ce", "sym20"), ("ce", "sym50"), ("coteaching", "sym20"), ("coteaching", "sym50")}


@pytest.mark.parametrize("overrides,sentence", [
    (["model=cnn9"], "model cnn9 needs"),  # value checks before any import: tests/test_bad_input.py
    # a trusted set larger than a class: in-process in tests/test_datamodule.py
])
def test_bad_input_is_one_sentence_and_a_nonzero_exit(tmp_path, overrides, sentence):
    done = noisylab(tmp_path, *FAST, *overrides)
    assert done.returncode == 2
    assert sentence in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "run" / "results.json").exists()


def test_missing_cifar_files_name_the_expected_path(tmp_path):
    done = noisylab(tmp_path, "method=coteaching", "data=cifar10", "noise=pair45", f"data.root={tmp_path}/nothing")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path}/nothing/cifar-10-batches-py" in done.stderr
    error = (tmp_path / "run" / "error.txt").read_text()  # a failed single run keeps its reason, like a job
    assert error.count("\n") == 1 and f"{tmp_path}/nothing/cifar-10-batches-py" in error


def test_asymmetric_noise_without_a_class_map_is_refused(tmp_path):
    write_svhn(tmp_path / "svhn")
    done = noisylab(tmp_path, *FAST, "data=svhn", f"data.root={tmp_path}/svhn", "noise=asym40", "model=mlp")
    assert done.returncode == 2 and "noise=asym40 needs a class map" in done.stderr


def test_the_papers_setup_trains_on_cifar_files(tmp_path):
    """The card's command on (tiny) CIFAR-10 files: the 9-layer CNN, pair-45% noise."""
    write_cifar10(tmp_path / "cifar", n_train=40, n_test=20)
    done = noisylab(tmp_path, "method=coteaching", "data=cifar10", "noise=pair45", f"data.root={tmp_path}/cifar",
                    "protocol.epochs=1", "trainer.enable_progress_bar=false", "callbacks=none")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["model"] == "cnn9" and results["data"] == "cifar10"


def test_a_failing_job_does_not_stop_the_multirun(tmp_path):
    done = noisylab(tmp_path, *FAST, "method=ce", "noise.rate=0.2,1.5", multirun=True)
    assert done.returncode == 2
    assert len(list((tmp_path / "sweep").glob("*/results.json"))) == 1
    assert "noise.rate must lie in [0, 1)" in done.stderr


def test_unknown_method_lists_the_choices(tmp_path):
    done = noisylab(tmp_path, "method=nonexistent")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "method=nonexistent is not an option of method; the options are: " in done.stderr
    assert "coteaching" in done.stderr


def test_ddp_on_two_cpu_processes_writes_one_results_file(tmp_path):
    done = noisylab(tmp_path, *FAST, "trainer.strategy=ddp", "trainer.devices=2", "protocol.epochs=2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("test accuracy") == 1  # rank 0 reports, the other rank is silent
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0 and "rank" not in results
    # per-sample state is gathered: each sample lives on one process per epoch, and rank 0's
    # file counts every sample's selections (2 networks x 2 epochs), not only its own half
    import numpy as np

    per_sample = np.load(tmp_path / "run" / "per_sample.npz")
    assert (per_sample["times_offered"] == 4).all()
    assert results["metrics"]["train/detection_auc"] is not None


@pytest.mark.parametrize("overrides,sentence", [
    # a method's own settings: in-process in tests/test_method_contract.py and test_method_settings.py
    (["+protocol.optimizer.momentm=0.9"], "weight_decay, amsgrad, foreach, maximize, capturable, differentiable, "
                                          "fused, decoupled_weight_decay (~protocol.optimizer.momentm removes it)."),
])
def test_a_misspelled_setting_is_one_sentence(tmp_path, overrides, sentence):
    done = noisylab(tmp_path, *FAST, *overrides)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().endswith(sentence) and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_the_old_recipe_keys_and_the_protocol_are_in_results(tmp_path):
    done = noisylab(tmp_path, "method.epochs=1", "trainer.enable_progress_bar=false", "callbacks=none",
                    "method.fused=true")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["epochs"] == 1 and results["protocol"] == "coteaching" and results["config"]["method"]["fused"]
    assert 0.0 <= results["metrics"]["train/detection_auc"] <= 1.0 and (tmp_path / "run" / "per_sample.npz").is_file()



def test_a_refused_rerun_leaves_every_file_of_the_finished_run_as_it_was(tmp_path):
    """Hydra's job log included (noisylab/run_log.py): a refused run appends nothing to it."""
    done = noisylab(tmp_path, *FAST, "method=ce")
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path / "run"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert "realised rate" in (folder / "train.log").read_text()
    for bad, sentence in ((["method=gce", "method.q=nan"], "method.q must be a finite number"),
                          (["method=ce", "method.forget_rate=2"], "method.forget_rate is not a setting")):
        refused = noisylab(tmp_path, *FAST, *bad)  # the second is the same run but for a typo: not skipped
        assert refused.returncode == 2 and sentence in refused.stderr, refused.stdout[-500:]
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.name.startswith("error-")}
    assert after == before


def test_hydras_own_job_logging_choices_still_work(tmp_path):
    done = noisylab(tmp_path, *FAST, "method=ce", "protocol.epochs=1", "hydra/job_logging=disabled")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "results.json").is_file() and not (tmp_path / "run" / "train.log").exists()
