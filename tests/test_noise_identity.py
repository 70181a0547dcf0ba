"""A run's noise is described by what was applied, never by the preset's name; noise files and
checkpoints that disagree with the config are refused; impossible rates are refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from noisylab.checkpoint_info import read_checkpoint
from noisylab.data.datamodule import NoisyDataModule
from noisylab.errors import ConfigError
from noisylab.noise import check_rate, describe, fingerprint, noise_name

ROOT = Path(__file__).resolve().parents[1]
DIGITS = {"name": "digits", "test_fraction": 0.25, "val_fraction": 0.1}


def noise(**settings):
    return OmegaConf.create({"name": "sym50", "kind": "symmetric", "rate": 0.5, "seed": 0, **settings})


@pytest.mark.parametrize("settings,name", [
    ({"rate": 0.2}, "sym20"),  # the preset says sym50, the rate applied is 0.2
    ({"rate": 0.333}, "sym33.3"),
    ({"rate": 0.8, "include_true_class": True}, "sym80_all"),
    ({"kind": "pair", "rate": 0.45}, "pair45"),
    ({"kind": "asymmetric", "rate": 0.4, "cifar100_groups": "blocks"}, "asym40_blocks"),
    ({"kind": "none", "rate": 0.0}, "none"),
    ({"kind": "human", "name": "cifar10n_worst", "rate": 0.4021}, "cifar10n_worst"),
])
def test_the_noise_name_is_derived_from_what_is_applied(settings, name):
    assert noise_name(noise(**settings)) == name


def test_the_description_names_the_convention():
    assert describe(noise(rate=0.2)) == {"name": "sym20", "kind": "symmetric", "rate": 0.2,
                                         "convention": "other_classes", "seed": 0}
    assert describe(noise(kind="asymmetric", rate=0.4), "superclass")["convention"] == "superclass"
    assert describe(noise(kind="asymmetric", rate=0.4, cifar100_groups="blocks"), "superclass")["convention"] == "blocks"
    assert describe(noise(kind="asymmetric", rate=0.4), "mnist")["convention"] == "mnist"
    human = describe(noise(kind="human", name="cifar10n_worst", rate=0.4))
    assert (human["convention"], human["seed"]) == ("worse_label", None)


@pytest.mark.parametrize("kind,classes,include,accepted,refused", [
    ("symmetric", 10, False, 0.89, 0.9),   # (C-1)/C: all labels equally likely (no signal); above, a wrong one wins
    ("symmetric", 100, False, 0.98, 0.99),
    ("feature_dependent", 10, False, 0.8, 0.95),  # MSLG's table goes to 0.8
    ("instance_dependent", 10, False, 0.5, 0.9),
    ("symmetric", 10, True, 0.95, 1.0),      # over all classes the true one stays the most likely below 1
    ("pair", 10, False, 0.49, 0.5),
    ("asymmetric", 10, False, 0.49, 0.5),
    ("none", 10, False, 0.0, 0.1),
])
def test_impossible_rates_are_refused(kind, classes, include, accepted, refused):
    assert check_rate(accepted, kind, classes, include) == accepted
    with pytest.raises(ConfigError, match=r"noise\.rate"):
        check_rate(refused, kind, classes, include)


def test_the_fingerprint_changes_with_any_label():
    labels = np.arange(100) % 10
    changed = labels.copy()
    changed[57] = 3
    assert fingerprint(labels) == fingerprint(labels.astype(np.int32)) != fingerprint(changed)


def test_a_noise_file_repeats_its_labels_and_its_description(tmp_path):
    first = NoisyDataModule(OmegaConf.create(DIGITS), noise(rate=0.2, seed=5))
    path = first.save_noisy_labels(tmp_path)
    again = NoisyDataModule(OmegaConf.create(DIGITS), noise(rate=0.2, seed=99, load_from=str(path)))
    again.prepare()
    assert np.array_equal(again.noisy.labels, first.noisy.labels)
    summary = again.noise_summary
    assert summary["source"] == str(path) and summary["seed"] == 5  # the file's seed, not the config's 99
    assert summary["fingerprint"] == first.noise_summary["fingerprint"] == fingerprint(first.noisy.labels)
    assert (summary["name"], summary["kind"], summary["rate"]) == ("sym20", "symmetric", 0.2)
    with pytest.raises(ConfigError, match="holds symmetric noise at rate 0.2 .* asks for symmetric noise at rate 0.5"):
        NoisyDataModule(OmegaConf.create(DIGITS), noise(load_from=str(path))).prepare()
    with pytest.raises(ConfigError, match=r"\(other_classes\) but the config asks for symmetric noise at rate 0.2 "
                                          r"\(all_classes\)"):
        NoisyDataModule(OmegaConf.create(DIGITS), noise(rate=0.2, include_true_class=True, load_from=str(path))).prepare()


def noisylab(*overrides):
    command = [sys.executable, "-m", "noisylab", "method=ce", "data=digits", "debug=limit", *overrides]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_an_overridden_preset_is_named_by_its_rate_and_a_checkpoint_keeps_its_noise(tmp_path):
    done = noisylab("noise=sym50", "noise.rate=0.2", f"paths.log_dir={tmp_path}/outputs")
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert run.name.endswith("_ce_digits_sym20")
    results = json.loads((run / "results.json").read_text())
    labels = np.load(run / "noisy_labels.npz")["noisy"]
    assert results["noise"] == {"name": "sym20", "kind": "symmetric", "rate": 0.2, "convention": "other_classes",
                                "seed": 0, "source": "generated", "actual_rate": results["noise"]["actual_rate"],
                                "fingerprint": fingerprint(labels)}
    assert "noise  sym20 (nominal 0.20" in done.stdout and "sym50" not in done.stdout
    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["hyper_parameters"]["facts"]["noise_fingerprint"] == fingerprint(labels)
    assert checkpoint["noisylab_method"] == "noisylab.methods.ce.CrossEntropy"

    # resumed on other noise (the same rate, another noise seed): refused once the labels are drawn
    resumed = noisylab("noise.rate=0.2", "noise.seed=1", "protocol.epochs=3", f"hydra.run.dir={tmp_path}/resumed",
                       f"ckpt_path={run}/checkpoints/last.ckpt")
    assert resumed.returncode == 2, resumed.stderr[-2000:]
    assert resumed.stderr.strip().splitlines()[-1].startswith(
        f"noisylab: error: ckpt_path={run}/checkpoints/last.ckpt was trained with noise.seed=0, but this run has "
        "noise.seed=1")
    assert "Traceback" not in resumed.stderr and not (tmp_path / "resumed" / "results.json").exists()
