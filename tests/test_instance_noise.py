"""Instance-dependent noise (Xia et al. 2020, the IDN of CORES² and PES): the flip rates'
distribution, the rows' closed form, the realised rate, instance (not class) dependence, the
seed, and a noise file that repeats the labels."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.special import softmax

from noisylab.data.datamodule import NoisyDataModule
from noisylab.errors import ConfigError
from noisylab.noise import instance_dependent, instance_flip_probabilities
from noisylab.train import config_dir

DIGITS = {"name": "digits", "test_fraction": 0.25, "val_fraction": 0.1, "augment": "none", "mean": None, "std": None}


def rng(seed=0):
    return np.random.default_rng(seed)


def synthetic(n=4000, classes=10, dim=20, seed=1):
    generator = rng(seed)
    return generator.integers(0, classes, n), generator.random((n, dim))


def test_each_row_is_the_projection_softmax_scaled_by_the_flip_rate():
    clean, x = synthetic(n=50, classes=4, dim=3)
    p = instance_flip_probabilities(clean, x, 4, 0.4, rng(7))
    generator = rng(7)  # the documented draw order: flip rates, then W_0 ... W_3
    from scipy.stats import truncnorm

    flip = truncnorm.rvs(-4.0, 6.0, loc=0.4, scale=0.1, size=50, random_state=generator)
    projections = [generator.standard_normal((3, 4)) for _ in range(4)]
    for n in (0, 17, 49):
        y = clean[n]
        scores = x[n] @ projections[y]
        others = np.delete(np.arange(4), y)
        expected = np.zeros(4)
        expected[others] = flip[n] * softmax(scores[others])
        expected[y] = 1 - flip[n]
        assert np.allclose(p[n], expected)
    assert np.allclose(p.sum(1), 1.0) and (p >= 0).all()


def test_the_flip_rates_follow_the_truncated_normal_and_the_realised_rate_is_the_nominal_one():
    clean, x = synthetic()
    for rate in (0.2, 0.4, 0.5):
        p = instance_flip_probabilities(clean, x, 10, rate, rng())
        flip = 1 - p[np.arange(len(clean)), clean]
        assert flip.min() >= 0 and flip.max() <= 1
        assert abs(flip.mean() - rate) < 0.01 and 0.08 < flip.std() < 0.11  # truncation narrows it a little
        result = instance_dependent(clean, x, 10, rate, rng())
        assert abs(result.actual_rate - rate) < 0.025, (rate, result.actual_rate)


def test_flips_depend_on_the_instance_not_only_on_the_class():
    # two inputs of the same class, each repeated 3000 times, the same flip rate (a tiny spread):
    # class-conditional noise would give both the same distribution of observed labels
    x = np.concatenate([np.tile([1.0, 0.0, 0.0], (3000, 1)), np.tile([0.0, 0.0, 1.0], (3000, 1))])
    clean = np.zeros(6000, dtype=np.int64)
    p = instance_flip_probabilities(clean, x, 5, 0.4, rng(3), flip_std=1e-6)
    assert np.allclose(p[:, 0], 0.6, atol=1e-4)
    assert 0.5 * np.abs(p[0] - p[-1]).sum() > 0.1  # different rows for the two inputs
    labels = instance_dependent(clean, x, 5, 0.4, rng(3), flip_std=1e-6).labels
    first, second = (np.bincount(part, minlength=5) / 3000 for part in (labels[:3000], labels[3000:]))
    assert np.abs(first - p[0]).max() < 0.03 and np.abs(second - p[-1]).max() < 0.03  # each follows its row
    assert 0.5 * np.abs(first - second).sum() > 0.1


def test_the_seed_decides_the_labels():
    clean, x = synthetic(n=500)
    same = [instance_dependent(clean, x, 10, 0.4, rng(4)).labels for _ in range(2)]
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], instance_dependent(clean, x, 10, 0.4, rng(5)).labels)
    with pytest.raises(ConfigError, match="flip_std must be > 0"):
        instance_dependent(clean, x, 10, 0.4, rng(), flip_std=0.0)
    with pytest.raises(ConfigError, match=r"noise.rate must lie in \[0, 1\)"):
        instance_dependent(clean, x, 10, 1.5, rng())


def idn_module(**settings):
    cfg = OmegaConf.load(Path(config_dir()) / "noise" / "idn40.yaml")
    return NoisyDataModule(OmegaConf.create(DIGITS), OmegaConf.merge(cfg, settings))


def test_the_datamodule_applies_it_reports_it_and_a_noise_file_repeats_it(tmp_path):
    first = idn_module(seed=3)
    path = first.save_noisy_labels(tmp_path)
    summary = first.noise_summary
    assert (summary["name"], summary["kind"], summary["convention"]) == ("idn40", "instance_dependent", "flip_std 0.1")
    assert summary["actual_rate"] == pytest.approx(float(np.mean(first.noisy.labels != first.source.y_train)))
    assert abs(summary["actual_rate"] - 0.4) < 0.05
    x = first.source.x_train
    assert np.array_equal(first.noisy.labels, instance_dependent(first.source.y_train, x, 10, 0.4, rng(3)).labels)
    again = idn_module(seed=8, load_from=str(path))
    again.prepare()
    assert np.array_equal(again.noisy.labels, first.noisy.labels) and again.noise_summary["seed"] == 3
    with pytest.raises(ConfigError, match="holds instance_dependent noise at rate 0.4"):
        idn_module(rate=0.2, load_from=str(path)).prepare()
