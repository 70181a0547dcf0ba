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
* feature_dependent (MSLG, Algan & Ulusoy, ICPR 2020): a "student" network's class
  probabilities pick which samples are mislabelled and to what (:func:`feature_dependent`).
* instance_dependent (Xia et al., NeurIPS 2020, the "IDN" of CORES², CAL, PES): a per-sample
  flip rate from a truncated normal and a random projection of the sample per class decide
  how likely its label is to change, and to what (:func:`instance_dependent`).

Rates that leave no information are refused (:func:`check_rate`): the true label must stay
the most frequent observed label of its class, so symmetric noise over the other classes
needs r <= (C-1)/C, pair and asymmetric flips r < 0.5.

A run's noise is described by what was applied (:func:`describe`, :func:`fingerprint`): kind,
rate, convention, seed, a label ``name`` derived from them (``sym20``, ``pair45``, never the
preset's name), where the labels came from and a hash of the noisy labels. ``noisy_labels.npz``
stores this description; :func:`read_noise_file` reads such a file back for
``noise.load_from`` and :func:`check_file_agrees` refuses one whose kind, rate or convention
differ from the config's (the seed and fingerprint are then the file's).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

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


def check_rate(rate: float, kind: str = "symmetric", num_classes: int | None = None,
               include_true_class: bool = False) -> float:
    """``rate`` if noise of ``kind`` at that rate keeps the true label the most frequent one
    of its class (symmetric over the other classes, feature- and instance-dependent: r < (C-1)/C,
    where every label would be equally likely; pair and asymmetric: r < 0.5); else one sentence
    saying what is allowed."""
    if not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"noise.rate must lie in [0, 1), got {rate}.")
    rate = float(rate)
    if kind == "none" and rate != 0.0:
        raise ConfigError(f"noise.rate must be 0 with noise.kind=none (clean labels), got {rate}; "
                          "choose a noise model (e.g. noise=sym20) for noisy labels.")
    if kind in ("pair", "asymmetric") and rate >= 0.5:
        raise ConfigError(f"noise.rate={rate} is too high for {kind} noise: at 0.5 the flipped label is as "
                          "frequent as the true one and above it the majority; use a rate below 0.5.")
    spread = kind in ("symmetric", "feature_dependent", "instance_dependent") and not include_true_class
    if spread and num_classes and rate >= (num_classes - 1) / num_classes:
        bound = (num_classes - 1) / num_classes
        raise ConfigError(f"noise.rate={rate} is too high for {kind.replace('_', '-')} noise over {num_classes} "
                          f"classes: at (C-1)/C = {bound:.4g} every label is as frequent as the true one (no signal "
                          f"is left) and above it a wrong label is more frequent; use a rate below {bound:.4g}.")
    return rate


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
    rate = check_rate(rate, "symmetric", num_classes, include_true_class)
    if include_true_class:
        noisy = clean.copy()
        chosen = rng.permutation(len(clean))[: int(rate * len(clean))]
        noisy[chosen] = rng.integers(0, num_classes, size=len(chosen))
        return realised(clean, noisy, num_classes)
    return realised(clean, draw_from_rows(clean, symmetric_matrix(num_classes, rate), rng), num_classes)


def pair(clean, num_classes, rate, rng) -> NoisyLabels:
    rate = check_rate(rate, "pair")
    return realised(clean, draw_from_rows(clean, pair_matrix(num_classes, rate), rng), num_classes)


def asymmetric(clean, num_classes, rate, rng, mapping: dict[int, int]) -> NoisyLabels:
    rate = check_rate(rate, "asymmetric")
    matrix = mapping_matrix(num_classes, rate, mapping)
    return realised(clean, draw_from_rows(clean, matrix, rng), num_classes)


FEATURE_TIE_RULES = ("stable", "official")


def _class_ranking(scores: np.ndarray, tie_rule: str, rng: np.random.Generator) -> np.ndarray:
    """Each row's classes from least to most probable. ``official``: ``np.argsort`` with
    numpy's default sort, as MSLG's code (ties follow the sort's implementation, mostly to the
    highest class index); ``stable``: ties broken uniformly at random (seeded)."""
    if tie_rule == "official":
        return np.argsort(scores, axis=1)
    return np.lexsort((rng.random(scores.shape), scores), axis=-1)


def _most_confident(candidates: np.ndarray, confidence: np.ndarray, count: int, tie_rule: str) -> np.ndarray:
    """The ``count`` candidates of highest ``confidence`` (official: the tail of numpy's
    default argsort; stable: among equal confidences the lower sample index first)."""
    if count <= 0:
        return candidates[:0]
    if tie_rule == "official":
        return candidates[np.argsort(confidence[candidates])][-count:]
    return candidates[np.lexsort((candidates, -confidence[candidates]))][:count]


def feature_dependent(clean, scores, rate, rng: np.random.Generator, tie_rule: str = "stable") -> NoisyLabels:
    """MSLG's feature-dependent noise (gorkemalgan/MSLG_noisy_label, ``dataset.py``
    ``noise_featuredependent``): exactly ``int(N * rate)`` labels change, chosen by a student
    network's class probabilities ``scores`` (N, C):

    1. the samples the student misclassifies (top-1 class != clean label) go first, each to
       its top-1 class; if there are more of them than needed, the most confident ones
       (highest top-1 probability) are taken;
    2. if fewer, the rest are the correctly classified samples with the highest
       second-class probability, each relabelled to its second class; one whose second
       probability is exactly 0 gets a uniformly random other class instead.

    ``tie_rule`` decides equal probabilities. ``official`` uses ``np.argsort`` with numpy's
    default (unstable) sort, as the official code: inside a row a tie for second place goes
    (mostly) to the highest class index, so at high rates much of the noise lands on the last
    class (``paper_numbers.md`` §4: 42% of CIFAR-10 labels become "truck" at 80%), and the
    exact labels depend on the numpy version. ``stable`` (default) gives the same labels on
    every machine: a tie between classes is broken uniformly at random (drawn from ``rng``,
    i.e. ``noise.seed``), a tie between samples by the lower sample index. With
    ``int(N * rate) == 0`` nothing changes (the official code would then relabel every
    misclassified sample, as ``array[-0:]`` is the whole array).
    """
    rate = check_rate(rate)
    clean = np.asarray(clean, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if tie_rule not in FEATURE_TIE_RULES:
        raise ConfigError(f"noise.tie_rule must be stable or official, got '{tie_rule}'.")
    if scores.ndim != 2 or scores.shape[0] != len(clean):
        raise ConfigError(f"the student's probabilities have shape {scores.shape}, expected ({len(clean)}, C).")
    num_classes = scores.shape[1]
    count = int(len(clean) * rate)  # as the official code: floor
    ranking = _class_ranking(scores, tie_rule, rng)
    top1, top2 = ranking[:, -1], ranking[:, -2]
    rows = np.arange(len(clean))
    p1, p2 = scores[rows, top1], scores[rows, top2]
    noisy = clean.copy()
    wrong = np.flatnonzero(top1 != clean)
    if len(wrong) >= count:
        chosen = _most_confident(wrong, p1, count, tie_rule)
        noisy[chosen] = top1[chosen]
        return realised(clean, noisy, num_classes)
    noisy[wrong] = top1[wrong]
    right = np.setdiff1d(rows, wrong)
    chosen = _most_confident(right, p2, count - len(wrong), tie_rule)
    noisy[chosen] = top2[chosen]
    blank = chosen[p2[chosen] == 0]  # no information in the second class: a random other class
    noisy[blank] = (clean[blank] + rng.integers(1, num_classes, size=len(blank))) % num_classes
    return realised(clean, noisy, num_classes)


def instance_flip_probabilities(clean, features, num_classes: int, rate, rng: np.random.Generator,
                                flip_std: float = 0.1) -> np.ndarray:
    """Steps 1-3 of :func:`instance_dependent`: each sample's row (N, C) of label probabilities."""
    from scipy.stats import truncnorm

    if not 0.0 <= float(rate) < 1.0:
        raise ConfigError(f"noise.rate must lie in [0, 1), got {rate}.")
    if not float(flip_std) > 0:
        raise ConfigError(f"noise.flip_std must be > 0, got {flip_std}.")
    rate, flip_std = float(rate), float(flip_std)
    clean = np.asarray(clean, dtype=np.int64)
    x = np.asarray(features).reshape(len(clean), -1)  # converted one class at a time (CIFAR: 50k x 3072 uint8)
    flip = truncnorm.rvs(-rate / flip_std, (1.0 - rate) / flip_std, loc=rate, scale=flip_std,
                         size=len(clean), random_state=rng)
    probabilities = np.zeros((len(clean), num_classes))
    for c in range(num_classes):
        projection = rng.standard_normal((x.shape[1], num_classes))
        members = np.flatnonzero(clean == c)
        scores = x[members].astype(np.float64) @ projection
        scores[:, c] = -np.inf
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities[members] = flip[members, None] * scores / scores.sum(axis=1, keepdims=True)
        probabilities[members, c] = 1.0 - flip[members]
    return probabilities


def instance_dependent(clean, features, num_classes: int, rate, rng: np.random.Generator,
                       flip_std: float = 0.1) -> NoisyLabels:
    """Instance-dependent noise of Xia et al., "Part-dependent label noise", NeurIPS 2020, as
    PES (tmllab/PES ``common/NoisyUtil.py::get_instance_noisy_label``) and CORES²
    (UCSC-REAL/cores ``data/utils.py::noisify_instance``) generate it:

    1. a flip rate q_n per sample from N(rate, flip_std²) truncated to [0, 1];
    2. one projection W_c ~ N(0, 1) of shape (D, C) per class c, D = the flattened input size;
    3. for a sample x of class y: scores s = x·W_y, the true class excluded (s_y = -inf), then
       p = q_n · softmax(s), p_y = 1 - q_n;
    4. the observed label is one draw from p.

    Two samples of one class thus flip with different rates and towards different classes:
    the noise is not class-conditional. ``features`` are the training inputs as the dataset
    stores them (N, ...), flattened (the official codes project raw pixels, 0..255 for CIFAR).
    Draws, in this order, from ``rng``: the N flip rates, W_0 ... W_{C-1}, one uniform per
    sample. Deviations: the official codes draw from numpy's global generator (PES truncates
    with scipy as here; CORES² rejects normal draws outside (0, 1) and uses one W for all
    classes), so the same seed gives other labels than theirs; the model is the same.
    """
    clean = np.asarray(clean, dtype=np.int64)
    probabilities = instance_flip_probabilities(clean, features, num_classes, rate, rng, flip_std)
    noisy = draw_from_rows(np.arange(len(clean)), probabilities, rng)
    return realised(clean, noisy, num_classes)


def make_noisy_labels(
    clean: np.ndarray,
    num_classes: int,
    noise_cfg,
    asymmetric_map: str | None = None,
    coarse: np.ndarray | None = None,
    data_name: str = "",
    human_labels=None,
    student_scores=None,
    features=None,
) -> NoisyLabels:
    """Applies the noise model named by ``noise_cfg`` (the ``noise`` config group).

    ``asymmetric_map`` is the dataset's semantic map (``cifar10``, ``mnist`` or
    ``superclass``); for ``superclass`` (CIFAR-100), ``noise_cfg.cifar100_groups`` picks the
    true superclasses (``superclass``, default) or JoCoR's blocks of 5 consecutive indices
    (``blocks``). ``human_labels(key)`` reads a CIFAR-N label array for human noise;
    ``student_scores()`` gives the student's (N, C) probabilities for feature-dependent noise;
    ``features()`` the training inputs for instance-dependent noise.
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
        if dataset is None:  # noise.kind=human on a synthetic noise config
            raise ConfigError("noise.kind=human needs a set of human labels: choose noise=cifar10n_worst, "
                              "cifar10n_aggre or cifar10n_rand1 (CIFAR-10N, for data=cifar10) or noise=cifar100n "
                              "(for data=cifar100).")
        if dataset != data_name or human_labels is None:
            raise ConfigError(f"noise={name} holds human labels for {dataset}, not for data={data_name}.")
        noisy = np.asarray(human_labels(key), dtype=np.int64)
        if noisy.shape != clean.shape:
            raise ConfigError(
                f"noise={name}: the label file has {len(noisy)} labels but {data_name} has "
                f"{len(clean)} training images."
            )
        from noisylab.data.readers import check_cifar_n

        # labels outside 0..C-1 would break the transition matrix; a clean_label unlike the
        # dataset's means the labels are for other images (or another order)
        check_cifar_n(noise_cfg.get("file"), key, noisy, clean, num_classes, data_name)
        return realised(clean, noisy, num_classes)
    if kind == "feature_dependent":
        if student_scores is None:
            raise ConfigError(f"noise={name} needs the training inputs (a student's probabilities), which {data_name} lacks.")
        return feature_dependent(clean, student_scores(), rate, rng, str(noise_cfg.get("tie_rule") or "stable"))
    if kind == "instance_dependent":
        if features is None:
            raise ConfigError(f"noise={name} needs the training inputs, which {data_name} does not hold in memory.")
        return instance_dependent(clean, features(), num_classes, rate, rng, float(noise_cfg.get("flip_std") or 0.1))
    raise ConfigError(
        f"Unknown noise kind '{kind}'; choose none, symmetric, pair, asymmetric, human, feature_dependent or "
        "instance_dependent."
    )


# ------------------------------------------------------------------------- identity
PREFIXES = {"symmetric": "sym", "pair": "pair", "asymmetric": "asym", "feature_dependent": "feat",
            "instance_dependent": "idn"}


def noise_name(noise_cfg) -> str:
    """The label of the noise a config applies, derived from its kind and rate (``sym20``,
    ``pair45``, ``sym80_all`` for symmetric noise over all classes, ``asym40_blocks`` for JoCoR's
    CIFAR-100 blocks, ``feat40`` for feature-dependent noise, ``idn40`` for instance-dependent); human noise keeps its label set's
    name, clean labels are ``none``."""
    kind = str(noise_cfg.get("kind", "none"))
    if kind == "none":
        return "none"
    if kind not in PREFIXES:
        return str(noise_cfg.get("name", kind))
    percent = format(round(100 * float(noise_cfg.get("rate", 0.0) or 0.0), 6), "g")
    suffix = ""
    if kind == "symmetric" and noise_cfg.get("include_true_class"):
        suffix = "_all"
    if kind == "asymmetric" and noise_cfg.get("cifar100_groups") == "blocks":
        suffix = "_blocks"
    return f"{PREFIXES[kind]}{percent}{suffix}"


def describe(noise_cfg, asymmetric_map: str | None = None) -> dict:
    """What the config asks for: ``name`` (:func:`noise_name`), ``kind``, nominal ``rate``,
    ``convention`` (symmetric: ``other_classes`` or ``all_classes``; pair: ``next_class``;
    asymmetric: the class map, ``mnist``, ``cifar10``, ``superclass`` or ``blocks``; human: the
    label set's key; feature-dependent: whose probabilities and the tie rule; instance-dependent:
    the flip rates' spread) and the noise
    ``seed`` (None where nothing is drawn)."""
    kind = str(noise_cfg.get("kind", "none"))
    convention = None
    if kind == "symmetric":
        convention = "all_classes" if noise_cfg.get("include_true_class") else "other_classes"
    elif kind == "pair":
        convention = "next_class"
    elif kind == "asymmetric":
        groups = noise_cfg.get("cifar100_groups") or "superclass"
        convention = groups if asymmetric_map == "superclass" else asymmetric_map
    elif kind == "human":
        convention = HUMAN_KEYS.get(str(noise_cfg.get("name")), (None, noise_cfg.get("key")))[1]
    elif kind == "feature_dependent":  # whose probabilities, and how their ties are broken
        student = "student_file" if noise_cfg.get("student_file") else "own_student"
        convention = f"{student}, ties {noise_cfg.get('tie_rule') or 'stable'}"
    elif kind == "instance_dependent":  # the spread of the per-sample flip rates
        convention = f"flip_std {float(noise_cfg.get('flip_std') or 0.1):g}"
    drawn = kind in PREFIXES
    return {"name": noise_name(noise_cfg), "kind": kind, "rate": float(noise_cfg.get("rate", 0.0) or 0.0),
            "convention": convention, "seed": int(noise_cfg.get("seed", 0) or 0) if drawn else None}


def fingerprint(labels: np.ndarray) -> str:
    """A short hash of a label vector (the noisy labels of a run): equal labels, equal hash."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()[:16]


def describe_text(identity: dict) -> str:
    text = f"{identity.get('kind')} noise at rate {identity.get('rate'):g}"
    return text + (f" ({identity['convention']})" if identity.get("convention") else "")


@dataclass
class NoiseFile:
    """A ``noisy_labels.npz`` read back: the labels and the description stored with them
    (None in files written before descriptions were stored)."""

    path: Path
    noisy: np.ndarray
    clean: np.ndarray
    identity: dict | None


def read_noise_file(path) -> NoiseFile:
    """Reads ``noise.load_from``; any problem is one sentence naming the file."""
    path = Path(str(path)).expanduser().absolute()
    where = f"noise.load_from={path}"
    if not path.exists():
        raise ConfigError(f"{where} does not exist; give the noisy_labels.npz written by an earlier run.")
    if not path.is_file():
        raise ConfigError(f"{where} is not a file; give the noisy_labels.npz written by an earlier run.")
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files if key in ("noisy", "clean", "noise")}
    except Exception as error:  # noqa: BLE001 - any reader failure is the same user error
        raise ConfigError(f"{where} cannot be read as a noisy_labels.npz ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else 'unreadable'}).") from None
    if "noisy" not in arrays or "clean" not in arrays:
        raise ConfigError(f"{where} holds no noisy and clean label arrays; give the noisy_labels.npz of an earlier run.")
    noisy, clean = arrays["noisy"], arrays["clean"]
    if (noisy.ndim != 1 or noisy.shape != clean.shape or not np.issubdtype(noisy.dtype, np.integer)
            or not np.issubdtype(clean.dtype, np.integer)):
        raise ConfigError(f"{where} holds malformed labels (noisy {noisy.dtype}{list(noisy.shape)}, clean "
                          f"{clean.dtype}{list(clean.shape)}); both must be integer vectors of one length.")
    identity = None
    if "noise" in arrays:
        try:
            identity = json.loads(str(arrays["noise"]))
        except ValueError:
            raise ConfigError(f"{where} holds a malformed noise description.") from None
    return NoiseFile(path, noisy.astype(np.int64), clean.astype(np.int64), identity)


def check_file_agrees(saved: NoiseFile, wanted: dict) -> None:
    """Refuses a noise file whose kind, rate or convention differ from the config's."""
    where = f"noise.load_from={saved.path}"
    if saved.identity is None:
        raise ConfigError(f"{where} does not record which noise it holds (an older file), so it cannot be checked "
                          "against the config; re-create it with a run of this version.")
    have = saved.identity
    same = (have.get("kind") == wanted["kind"] and have.get("convention") == wanted["convention"]
            and math.isclose(float(have.get("rate", -1)), wanted["rate"], abs_tol=1e-9))
    if not same:
        raise ConfigError(f"{where} holds {describe_text(have)} but the config asks for {describe_text(wanted)}; "
                          f"match the noise config to the file ({have.get('name')}) or drop noise.load_from.")
