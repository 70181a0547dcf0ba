"""Label-noise models: pure, seeded functions of the clean labels.

Each returns a :class:`NoisyLabels` with the noisy labels, the transition matrix actually
realised (row i = how class i's samples were labelled) and the realised noise rate. The
same (labels, rate, seed) give the same noisy labels on every machine: draws come from a
``numpy.random.Generator(PCG64(seed))`` and are vectorised, never order-dependent.

Conventions (``../shared/methods``, "Cross-cutting conventions"):

* symmetric, ``include_true_class=False`` (Co-teaching family): T[i,i] = 1-r,
  T[i,j] = r/(C-1); one categorical draw per sample; realised rate ~ r.
* symmetric, ``include_true_class=True`` (Arazo et al., DivideMix): exactly int(r*N)
  samples get a label drawn uniformly from all C classes; realised rate ~ r(C-1)/C.
* pair: class c -> c+1 mod C with probability r (Co-teaching's pair flipping).
* asymmetric: a semantic map applied with probability r (Patrini et al.): CIFAR-10
  truck->automobile, bird->airplane, deer->horse, cat<->dog; MNIST 2->7, 3->8, 5<->6, 7->1;
  CIFAR-100, chosen by ``noise.cifar100_groups``:

  - ``superclass`` (default): to the next fine class (by index, cyclic) within the true
    superclass, read from the dataset's coarse labels: a semantic flip, as the Patrini map
    intends.
  - ``blocks``: the official code of JoCoR (``noisify_cifar100_asymmetric`` /
    ``build_for_cifar100`` in hongxin001/JoCoR ``data/utils.py``, from giorgiop/loss-correction):
    20 blocks of 5 *consecutive class indices* {5b, ..., 5b+4}, and inside each block a cyclic
    pair flip, i -> i+1 with 5b+4 -> 5b. The fine labels are alphabetical, so these blocks
    are not the superclasses; use it to compare with JoCoR-style CIFAR-100 numbers.
* human: CIFAR-10N / CIFAR-100N annotations read from the user's label file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisylab.errors import ConfigError

ASYMMETRIC_MAPS = {
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
    "mnist": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
}
HUMAN_KEYS = {  # noise name -> (dataset it belongs to, key in the CIFAR-N file)
    "cifar10n_worst": ("cifar10", "worse_label"),
    "cifar10n_aggre": ("cifar10", "aggre_label"),
    "cifar10n_rand1": ("cifar10", "random_label1"),
    "cifar10n_rand2": ("cifar10", "random_label2"),
    "cifar10n_rand3": ("cifar10", "random_label3"),
    "cifar100n": ("cifar100", "noisy_label"),
}


@dataclass
class NoisyLabels:
    labels: np.ndarray  # int64, the observed (possibly wrong) labels
    transition: np.ndarray  # (C, C) realised: transition[i, j] = P(observed j | true i)
    actual_rate: float  # fraction of labels that differ from the clean ones


def realised(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> NoisyLabels:
    """Wraps noisy labels with the transition matrix and rate they realise."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean, noisy), 1.0)
    rows = counts.sum(axis=1, keepdims=True)
    transition = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    rate = float(np.mean(clean != noisy)) if len(clean) else 0.0
    return NoisyLabels(noisy.astype(np.int64), transition, rate)


def draw_from_rows(labels: np.ndarray, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per sample from row ``matrix[label]``."""
    cumulative = np.cumsum(matrix[labels], axis=1)
    cumulative[:, -1] = 1.0  # guard against rounding
    u = rng.random(len(labels))[:, None]
    return (u >= cumulative).sum(axis=1).astype(np.int64)


def check_rate(rate: float) -> float:
    if not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"noise.rate must lie in [0, 1), got {rate}.")
    return float(rate)


def symmetric_matrix(num_classes: int, rate: float) -> np.ndarray:
    matrix = np.full((num_classes, num_classes), rate / (num_classes - 1))
    np.fill_diagonal(matrix, 1.0 - rate)
    return matrix


def pair_matrix(num_classes: int, rate: float) -> np.ndarray:
    matrix = np.eye(num_classes) * (1.0 - rate)
    matrix[np.arange(num_classes), (np.arange(num_classes) + 1) % num_classes] += rate
    return matrix


def mapping_matrix(num_classes: int, rate: float, mapping: dict[int, int]) -> np.ndarray:
    matrix = np.eye(num_classes)
    for source, target in mapping.items():
        matrix[source, source] = 1.0 - rate
        matrix[source, target] = rate
    return matrix


def superclass_mapping(fine: np.ndarray, coarse: np.ndarray) -> dict[int, int]:
    """Each fine class -> the next fine class (by index, cyclic) of its true superclass."""
    members: dict[int, set[int]] = {}
    for f, c in zip(fine.tolist(), coarse.tolist()):
        members.setdefault(c, set()).add(f)
    mapping = {}
    for group in members.values():
        ordered = sorted(group)
        for k, f in enumerate(ordered):
            if len(ordered) > 1:
                mapping[f] = ordered[(k + 1) % len(ordered)]
    return mapping


def block_mapping(num_classes: int, block: int = 5) -> dict[int, int]:
    """Each class -> the next class (cyclic) of its block of ``block`` consecutive indices."""
    if num_classes % block:
        raise ConfigError(f"noise.cifar100_groups=blocks needs a multiple of {block} classes, got {num_classes}.")
    return {c: (c // block) * block + (c % block + 1) % block for c in range(num_classes)}


CIFAR100_GROUPS = ("superclass", "blocks")


def symmetric(clean, num_classes, rate, rng, include_true_class=False) -> NoisyLabels:
    rate = check_rate(rate)
    if include_true_class:
        noisy = clean.copy()
        chosen = rng.permutation(len(clean))[: int(rate * len(clean))]
        noisy[chosen] = rng.integers(0, num_classes, size=len(chosen))
        return realised(clean, noisy, num_classes)
    return realised(clean, draw_from_rows(clean, symmetric_matrix(num_classes, rate), rng), num_classes)


def pair(clean, num_classes, rate, rng) -> NoisyLabels:
    rate = check_rate(rate)
    return realised(clean, draw_from_rows(clean, pair_matrix(num_classes, rate), rng), num_classes)


def asymmetric(clean, num_classes, rate, rng, mapping: dict[int, int]) -> NoisyLabels:
    rate = check_rate(rate)
    matrix = mapping_matrix(num_classes, rate, mapping)
    return realised(clean, draw_from_rows(clean, matrix, rng), num_classes)


def make_noisy_labels(
    clean: np.ndarray,
    num_classes: int,
    noise_cfg,
    asymmetric_map: str | None = None,
    coarse: np.ndarray | None = None,
    data_name: str = "",
    human_labels=None,
) -> NoisyLabels:
    """Applies the noise model named by ``noise_cfg`` (the ``noise`` config group).

    ``asymmetric_map`` is the dataset's semantic map (``cifar10``, ``mnist`` or
    ``superclass``); for ``superclass`` (CIFAR-100), ``noise_cfg.cifar100_groups`` picks the
    true superclasses (``superclass``, default) or JoCoR's blocks of 5 consecutive indices
    (``blocks``). ``human_labels(key)`` reads a CIFAR-N label array for human noise.
    """
    clean = np.asarray(clean, dtype=np.int64)
    kind = noise_cfg.kind
    rate = noise_cfg.get("rate", 0.0) or 0.0
    rng = np.random.default_rng(int(noise_cfg.get("seed", 0)))
    name = noise_cfg.get("name", kind)
    if kind == "none":
        return realised(clean, clean.copy(), num_classes)
    if kind == "symmetric":
        return symmetric(clean, num_classes, rate, rng, bool(noise_cfg.get("include_true_class", False)))
    if kind == "pair":
        return pair(clean, num_classes, rate, rng)
    if kind == "asymmetric":
        groups = noise_cfg.get("cifar100_groups") or "superclass"
        if groups not in CIFAR100_GROUPS:
            raise ConfigError(f"noise.cifar100_groups must be superclass or blocks, got '{groups}'.")
        if asymmetric_map == "superclass" and groups == "blocks":
            mapping = block_mapping(num_classes)
        elif asymmetric_map == "superclass":
            if coarse is None:
                raise ConfigError(f"noise={name} on {data_name} needs superclass labels, which it lacks.")
            mapping = superclass_mapping(clean, np.asarray(coarse))
        elif asymmetric_map in ASYMMETRIC_MAPS:
            mapping = ASYMMETRIC_MAPS[asymmetric_map]
        else:
            raise ConfigError(
                f"noise={name} needs a class map, and data={data_name} has none; "
                "use symmetric (sym*) or pair (pair*) noise instead."
            )
        return asymmetric(clean, num_classes, rate, rng, mapping)
    if kind == "human":
        dataset, key = HUMAN_KEYS.get(name, (noise_cfg.get("dataset"), noise_cfg.get("key")))
        if dataset != data_name or human_labels is None:
            raise ConfigError(f"noise={name} holds human labels for {dataset}, not for data={data_name}.")
        noisy = np.asarray(human_labels(key), dtype=np.int64)
        if noisy.shape != clean.shape:
            raise ConfigError(
                f"noise={name}: the label file has {len(noisy)} labels but {data_name} has "
                f"{len(clean)} training images."
            )
        return realised(clean, noisy, num_classes)
    raise ConfigError(f"Unknown noise kind '{kind}'; choose none, symmetric, pair, asymmetric or human.")
