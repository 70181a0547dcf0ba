"""Noise models: realised rates and transition structure on 50k labels, determinism."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from noisylab.errors import ConfigError
from noisylab.noise import make_noisy_labels, superclass_mapping

N, C = 50_000, 10


@pytest.fixture(scope="module")
def clean():
    return np.random.default_rng(123).integers(0, C, N)


def noise(kind, rate, seed=0, **extra):
    return OmegaConf.create({"name": f"{kind}{rate}", "kind": kind, "rate": rate, "seed": seed, **extra})


def test_pair_flips_go_to_the_next_class(clean):
    result = make_noisy_labels(clean, C, noise("pair", 0.45))
    flipped = result.labels != clean
    assert np.all(result.labels[flipped] == (clean[flipped] + 1) % C)
    assert abs(flipped.mean() - 0.45) < 0.01
    assert result.actual_rate == pytest.approx(flipped.mean())
    off = result.transition.copy()
    np.fill_diagonal(off, 0)
    for c in range(C):  # all off-diagonal mass sits on c+1
        assert off[c].sum() == pytest.approx(off[c, (c + 1) % C])


def test_symmetric_flips_spread_evenly_over_the_other_classes(clean):
    result = make_noisy_labels(clean, C, noise("symmetric", 0.5))
    flipped = result.labels != clean
    assert abs(flipped.mean() - 0.5) < 0.01
    for c in range(C):
        row = result.transition[c]
        others = np.delete(row, c)
        assert np.all(np.abs(others - 0.5 / (C - 1)) < 0.01)  # ~0.0556 each, +-0.01
        assert abs(row[c] - 0.5) < 0.015


def test_symmetric_including_true_class_flips_exactly_rate_n(clean):
    result = make_noisy_labels(clean, C, noise("symmetric", 0.8, include_true_class=True))
    # int(0.8 N) samples are redrawn over all classes: about 0.8 * 9/10 end up wrong
    assert abs(result.actual_rate - 0.8 * (C - 1) / C) < 0.01


def test_asymmetric_cifar10_map(clean):
    result = make_noisy_labels(clean, C, noise("asymmetric", 0.4), asymmetric_map="cifar10", data_name="cifar10")
    moved = result.labels != clean
    pairs = set(zip(clean[moved].tolist(), result.labels[moved].tolist()))
    assert pairs == {(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}
    for c in (0, 1, 6, 7, 8):
        assert result.transition[c, c] == 1.0
    assert abs(result.transition[9, 1] - 0.4) < 0.02


def test_asymmetric_mnist_map(clean):
    result = make_noisy_labels(clean, C, noise("asymmetric", 0.2), asymmetric_map="mnist", data_name="digits")
    moved = result.labels != clean
    assert set(zip(clean[moved].tolist(), result.labels[moved].tolist())) == {(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)}


def test_cifar100_asymmetric_follows_true_superclasses_not_index_blocks():
    fine = np.arange(100)
    coarse = np.random.default_rng(0).permutation(np.repeat(np.arange(20), 5))  # scattered groups
    mapping = superclass_mapping(fine, coarse)
    for source, target in mapping.items():
        assert coarse[source] == coarse[target] and source != target
    members = np.flatnonzero(coarse == coarse[0])
    assert sorted(mapping[m] for m in members) == sorted(members)  # a cycle inside the group


def test_same_seed_same_labels_other_seed_other_labels(clean):
    a = make_noisy_labels(clean, C, noise("symmetric", 0.2, seed=7)).labels
    b = make_noisy_labels(clean, C, noise("symmetric", 0.2, seed=7)).labels
    c = make_noisy_labels(clean, C, noise("symmetric", 0.2, seed=8)).labels
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_known_labels_for_a_fixed_seed():
    """The draw is pinned: a change of RNG use would change every user's noisy labels."""
    clean = np.arange(10) % 10
    labels = make_noisy_labels(clean, 10, noise("pair", 0.4, seed=0)).labels
    again = make_noisy_labels(clean, 10, noise("pair", 0.4, seed=0)).labels
    assert np.array_equal(labels, again)
    u = np.random.default_rng(0).random(10)  # one uniform per sample, inverse CDF over the row
    expected = []
    for c, draw in zip(clean, u):
        row = np.zeros(10)
        row[c], row[(c + 1) % 10] = 0.6, 0.4
        expected.append(int(np.searchsorted(np.cumsum(row), draw, side="right")))
    assert labels.tolist() == expected


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rate_outside_unit_interval_is_refused(clean, rate):
    with pytest.raises(ConfigError, match="noise.rate"):
        make_noisy_labels(clean, C, noise("symmetric", rate))


def test_asymmetric_noise_without_a_map_is_refused(clean):
    with pytest.raises(ConfigError, match="has none"):
        make_noisy_labels(clean, C, noise("asymmetric", 0.4), asymmetric_map=None, data_name="svhn")


def test_human_noise_for_another_dataset_is_refused(clean):
    cfg = OmegaConf.create({"name": "cifar10n_worst", "kind": "human", "rate": 0.4, "seed": 0})
    with pytest.raises(ConfigError, match="not for data=digits"):
        make_noisy_labels(clean, C, cfg, data_name="digits", human_labels=lambda key: clean)
