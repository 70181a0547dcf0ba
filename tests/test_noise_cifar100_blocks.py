"""CIFAR-100 asymmetric noise, ``noise.cifar100_groups``: ``superclass`` (default, the true
superclasses) and ``blocks`` (JoCoR's official code: blocks of 5 consecutive class indices,
cyclic next-class flip inside each block)."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from noisylab.errors import ConfigError
from noisylab.noise import block_mapping, make_noisy_labels

ROOT = Path(__file__).resolve().parents[1]
C, N, RATE = 100, 50_000, 0.4


@pytest.fixture(scope="module")
def clean():
    return np.random.default_rng(7).integers(0, C, N)


def asym(rate=RATE, seed=0, groups=None):
    cfg = {"name": "asym40", "kind": "asymmetric", "rate": rate, "seed": seed}
    if groups is not None:
        cfg["cifar100_groups"] = groups
    return OmegaConf.create(cfg)


def blocks(clean, **kw):
    return make_noisy_labels(clean, C, asym(groups="blocks", **kw), asymmetric_map="superclass", data_name="cifar100")


def expected_matrix(rate):
    """Block-diagonal: 20 copies of the 5x5 pair-flip matrix (1-r) I + r * (cyclic shift)."""
    inner = (1 - rate) * np.eye(5) + rate * np.roll(np.eye(5), 1, axis=1)
    return np.kron(np.eye(20), inner)


def test_block_mapping_is_the_next_index_inside_each_block_of_five():
    mapping = block_mapping(100)
    assert [mapping[c] for c in range(10)] == [1, 2, 3, 4, 0, 6, 7, 8, 9, 5]
    assert mapping[95] == 96 and mapping[99] == 95 and len(mapping) == 100
    assert all(c // 5 == mapping[c] // 5 and mapping[c] != c for c in range(100))
    assert expected_matrix(0.4)[4, 0] == pytest.approx(0.4) and expected_matrix(0.4)[4, 5] == 0.0
    with pytest.raises(ConfigError, match="multiple of 5"):
        block_mapping(12)


def test_block_noise_transition_is_block_diagonal_with_the_pair_flip_entries(clean):
    result = blocks(clean)
    transition = result.transition
    block_mask = np.kron(np.eye(20), np.ones((5, 5))).astype(bool)
    assert np.all(transition[~block_mask] == 0.0)  # nothing leaves its block of 5
    target = expected_matrix(RATE)
    assert np.all(transition[target == 0.0] == 0.0)  # inside a block: only stay or go to next
    # ~500 samples per class: binomial sd ~0.022, so 0.08 is > 3.5 sd
    np.testing.assert_allclose(transition, target, atol=0.08)
    assert abs(np.diag(transition).mean() - (1 - RATE)) < 0.01


def test_block_noise_flip_count_matches_the_rate(clean):
    result = blocks(clean)
    flipped = result.labels != clean
    assert abs(flipped.mean() - RATE) < 0.01  # 50k draws: sd ~0.0022
    assert result.actual_rate == pytest.approx(flipped.mean())
    nxt = (clean // 5) * 5 + (clean % 5 + 1) % 5
    assert np.all(result.labels[flipped] == nxt[flipped])
    for rate in (0.2, 0.45):
        assert abs(blocks(clean, rate=rate).actual_rate - rate) < 0.01


def test_block_noise_same_seed_same_labels(clean):
    first, again, other = blocks(clean, seed=3), blocks(clean, seed=3), blocks(clean, seed=4)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert np.mean(first.labels != other.labels) > 0.3


def test_blocks_need_no_superclass_labels_and_superclass_stays_the_default(clean):
    # a coarse labelling unlike the index blocks: superclass = class mod 20
    coarse = clean % 20
    default = make_noisy_labels(clean, C, asym(), asymmetric_map="superclass", coarse=coarse, data_name="cifar100")
    moved = default.labels != clean
    assert np.all(default.labels[moved] % 20 == clean[moved] % 20)  # within the true superclass
    named = make_noisy_labels(clean, C, asym(groups="superclass"), asymmetric_map="superclass",
                              coarse=coarse, data_name="cifar100")
    np.testing.assert_array_equal(named.labels, default.labels)
    block = make_noisy_labels(clean, C, asym(groups="blocks"), asymmetric_map="superclass",
                              coarse=coarse, data_name="cifar100")
    flipped = block.labels != clean
    assert np.all(block.labels[flipped] // 5 == clean[flipped] // 5)  # the coarse labels are ignored
    with pytest.raises(ConfigError, match="superclass labels"):
        make_noisy_labels(clean, C, asym(), asymmetric_map="superclass", data_name="cifar100")
    with pytest.raises(ConfigError, match="cifar100_groups"):
        make_noisy_labels(clean, C, asym(groups="pairs"), asymmetric_map="superclass", data_name="cifar100")


def test_other_datasets_ignore_the_cifar100_option():
    clean10 = np.random.default_rng(1).integers(0, 10, 5000)
    plain = make_noisy_labels(clean10, 10, asym(), asymmetric_map="cifar10", data_name="cifar10")
    with_option = make_noisy_labels(clean10, 10, asym(groups="blocks"), asymmetric_map="cifar10", data_name="cifar10")
    np.testing.assert_array_equal(plain.labels, with_option.labels)


@pytest.mark.parametrize("name", ["asym20", "asym40"])
def test_noise_configs_offer_the_option_with_superclass_as_default(name):
    text = (ROOT / "conf" / "noise" / f"{name}.yaml").read_text()
    assert yaml.safe_load(text)["cifar100_groups"] == "superclass"
    assert "blocks" in text and "JoCoR" in text
