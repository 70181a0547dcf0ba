"""Feature-dependent noise (MSLG): its rules on hand-made probabilities, the exact rate, the
two tie rules, the student file and noisylab's own student."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from noisylab.data.datamodule import NoisyDataModule
from noisylab.data.student import load_student_file, train_student
from noisylab.errors import ConfigError
from noisylab.noise import feature_dependent
from noisylab.train import config_dir

# Six samples, three classes. Rows 0, 2, 4 are misclassified (top-1 1, 2, 0 with confidence
# 0.7, 0.8, 0.5); rows 1, 3, 5 are right, second classes 1, 2, 1 with probability 0.35, 0.3, 0.25.
PROBS = np.array([
    [0.20, 0.70, 0.10],
    [0.60, 0.35, 0.05],
    [0.10, 0.10, 0.80],
    [0.20, 0.50, 0.30],
    [0.50, 0.10, 0.40],
    [0.10, 0.25, 0.65],
])
CLEAN = np.array([0, 0, 1, 1, 2, 2])
DIGITS = {"name": "digits", "test_fraction": 0.25, "val_fraction": 0.1, "augment": "none", "mean": None, "std": None}


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("tie_rule", ["stable", "official"])
def test_more_misclassified_than_needed_takes_the_most_confident_to_their_top_class(tie_rule):
    result = feature_dependent(CLEAN, PROBS, 0.34, rng(), tie_rule)  # int(6 * 0.34) = 2
    assert np.flatnonzero(result.labels != CLEAN).tolist() == [0, 2]  # confidences 0.7, 0.8 beat 0.5
    assert result.labels.tolist() == [1, 0, 2, 1, 2, 2]


@pytest.mark.parametrize("tie_rule", ["stable", "official"])
def test_then_the_highest_second_class_probability_goes_to_its_second_class(tie_rule):
    result = feature_dependent(CLEAN, PROBS, 0.67, rng(), tie_rule)  # int(4.02) = 4: 3 misclassified + 1
    assert np.flatnonzero(result.labels != CLEAN).tolist() == [0, 1, 2, 4]
    assert result.labels.tolist() == [1, 1, 2, 1, 0, 2]
    result = feature_dependent(CLEAN, PROBS, 0.84, rng(), tie_rule)  # 5: rows 1 (0.35) and 3 (0.3)
    assert result.labels.tolist() == [1, 1, 2, 2, 0, 2]
    assert result.actual_rate == pytest.approx(5 / 6)
    assert result.transition[1].tolist() == [0.0, 0.0, 1.0]  # both class-1 samples became 2


def test_the_rate_is_met_exactly_on_both_branches():
    generator = rng(3)
    probs = generator.dirichlet(np.ones(10), size=1000)
    clean = probs.argmax(1)
    clean[:120] = generator.integers(0, 10, 120)  # about 108 misclassified
    misclassified = int((probs.argmax(1) != clean).sum())
    for rate in (0.0, 0.05, 0.2, 0.5, 0.8, 0.95):
        for tie_rule in ("stable", "official"):
            result = feature_dependent(clean, probs, rate, rng(), tie_rule)
            changed = result.labels != clean
            assert changed.sum() == int(1000 * rate)
            if int(1000 * rate) >= misclassified:  # every misclassified sample is among them
                assert changed[probs.argmax(1) != clean].all()


def test_without_ties_the_two_rules_agree():
    probs = rng(5).dirichlet(np.ones(6), size=400)
    clean = rng(6).integers(0, 6, 400)
    clean[:300] = probs[:300].argmax(1)
    for rate in (0.1, 0.5):
        stable = feature_dependent(clean, probs, rate, rng(1), "stable").labels
        assert np.array_equal(stable, feature_dependent(clean, probs, rate, rng(2), "official").labels)


def test_a_tie_for_second_place_official_follows_numpy_stable_spreads_it():
    probs = np.tile([0.4, 0.2, 0.2, 0.2], (3000, 1))  # all correctly classified as class 0
    clean = np.zeros(3000, dtype=np.int64)
    official = feature_dependent(clean, probs, 0.9, rng(), "official").labels
    changed = official != clean
    assert changed.sum() == 2700
    assert np.array_equal(official[changed], np.argsort(probs, axis=1)[changed, -2])  # the official code's rule
    stable = feature_dependent(clean, probs, 0.9, rng(), "stable").labels
    shares = np.bincount(stable[stable != 0], minlength=4)[1:] / 2700
    assert np.all(np.abs(shares - 1 / 3) < 0.05), shares  # uniform over the tied classes
    assert np.array_equal(stable, feature_dependent(clean, probs, 0.9, rng(), "stable").labels)  # seeded
    assert not np.array_equal(stable, feature_dependent(clean, probs, 0.9, rng(1), "stable").labels)


def test_stable_rule_breaks_a_tie_between_samples_by_the_lower_index():
    probs = np.tile([0.1, 0.6, 0.3], (10, 1))
    clean = np.ones(10, dtype=np.int64)  # all right, all with second class 2 at 0.3
    result = feature_dependent(clean, probs, 0.3, rng(), "stable")
    assert np.flatnonzero(result.labels != clean).tolist() == [0, 1, 2]
    assert result.labels[:3].tolist() == [2, 2, 2]
    probs[7, 2], probs[7, 1] = 0.35, 0.55  # a more confident second choice goes first
    result = feature_dependent(clean, probs, 0.3, rng(), "stable")
    assert np.flatnonzero(result.labels != clean).tolist() == [0, 1, 7]


@pytest.mark.parametrize("tie_rule", ["stable", "official"])
def test_a_zero_second_probability_gets_a_random_other_class(tie_rule):
    probs = np.tile([0.0, 1.0, 0.0, 0.0], (400, 1))
    clean = np.ones(400, dtype=np.int64)
    result = feature_dependent(clean, probs, 0.5, rng(), tie_rule)
    changed = result.labels[result.labels != clean]
    assert len(changed) == 200
    assert set(np.unique(changed)) == {0, 2, 3}  # never the true class, spread over the others
    assert np.array_equal(result.labels, feature_dependent(clean, probs, 0.5, rng(), tie_rule).labels)


def test_bad_settings_are_one_sentence():
    with pytest.raises(ConfigError, match="tie_rule must be stable or official"):
        feature_dependent(CLEAN, PROBS, 0.2, rng(), "lowest")
    with pytest.raises(ConfigError, match=r"noise.rate must lie in \[0, 1\)"):
        feature_dependent(CLEAN, PROBS, 1.2, rng())


def test_student_file_shape_and_content_are_checked(tmp_path):
    path = tmp_path / "student.npy"
    np.save(path, np.full((5, 3), 1 / 3))
    with pytest.raises(ConfigError, match=r"holds an array of shape \(5, 3\), but data=digits has 6 training "
                                          r"samples in 3 classes, so it must be \(6, 3\)\.$"):
        load_student_file(path, 6, 3, "digits")
    with pytest.raises(ConfigError, match="does not exist"):
        load_student_file(tmp_path / "missing.npy", 6, 3, "digits")
    np.save(path, np.full((6, 3), np.nan))
    with pytest.raises(ConfigError, match="finite numbers"):
        load_student_file(path, 6, 3, "digits")
    path.write_bytes(b"not numpy")
    with pytest.raises(ConfigError, match="not a readable .npy array"):
        load_student_file(path, 6, 3, "digits")


def feature_module(**noise):
    cfg = OmegaConf.load(Path(config_dir()) / "noise" / "feature_dependent.yaml")
    return NoisyDataModule(OmegaConf.create(DIGITS), OmegaConf.merge(cfg, noise))


def test_the_datamodule_relabels_by_a_student_file(tmp_path):
    reference = feature_module()
    reference.prepare()
    clean = reference.source.y_train
    probs = rng(9).dirichlet(np.ones(10), size=len(clean))
    np.save(tmp_path / "student.npy", probs)
    dm = feature_module(student_file=str(tmp_path / "student.npy"), rate=0.2, seed=4)
    dm.prepare()
    assert np.array_equal(dm.noisy.labels, feature_dependent(clean, probs, 0.2, rng(4)).labels)
    assert dm.noise_summary["actual_rate"] == pytest.approx(int(len(clean) * 0.2) / len(clean), abs=1e-6)
    np.save(tmp_path / "short.npy", probs[:-1])
    with pytest.raises(ConfigError, match=f"must be \\({len(clean)}, 10\\)"):
        feature_module(student_file=str(tmp_path / "short.npy")).prepare()


def test_noisylabs_own_student_is_seeded_and_feeds_the_noise():
    dm = feature_module(rate=0.4)
    dm.prepare()
    x, y = dm.source.x_train, dm.source.y_train
    settings = dict(per_class=10, hidden=64, steps=300, lr=0.01)  # the config's
    probs = train_student(x, y, 10, seed=0, **settings)
    assert probs.shape == (len(y), 10) and np.allclose(probs.sum(1), 1.0)
    assert np.array_equal(probs, train_student(x, y, 10, seed=0, **settings))
    assert not np.array_equal(probs, train_student(x, y, 10, seed=1, **settings))
    assert 0.6 < (probs.argmax(1) == y).mean() < 1.0  # a weak but real classifier from 100 samples
    assert np.array_equal(dm.noisy.labels, feature_dependent(y, probs, 0.4, rng(0)).labels)
    assert dm.noise_summary["actual_rate"] == pytest.approx(int(len(y) * 0.4) / len(y), abs=1e-6)
    with pytest.raises(ConfigError, match="per_class=500 is larger than class 0"):
        train_student(x, y, 10, seed=0, **{**settings, "per_class": 500})
