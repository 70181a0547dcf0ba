"""The "student" network behind feature-dependent noise (``noise=feature_dependent``).

MSLG's official code reads the class probabilities of a distilled student network from a
file (``cifar10/dataset/student_logits.npy``, (50000, 10), in the training set's order):
``noise.student_file`` takes such a file. Without one, noisylab makes its own student: a
small MLP (one hidden ReLU layer) trained, seeded by ``noise.seed``, on
``noise.student.per_class`` clean samples per class of the training set, whose softmax over
every training sample gives the probabilities. With few samples it is a weak classifier, so
most of the noise comes from its confident mistakes (step 1 of
:func:`noisylab.noise.feature_dependent`); more samples per class make a stronger student.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from noisylab.errors import ConfigError


def student_scores(source, noise_cfg) -> np.ndarray:
    """The (N, C) class probabilities of the student for every training sample of ``source``."""
    n, num_classes = len(source.y_train), source.num_classes
    path = noise_cfg.get("student_file")
    if path:
        return load_student_file(Path(str(path)).expanduser(), n, num_classes, source.name)
    settings = noise_cfg.get("student") or {}
    return train_student(
        source.x_train, source.y_train, num_classes, seed=int(noise_cfg.get("seed", 0)),
        per_class=int(settings.get("per_class", 10)), hidden=int(settings.get("hidden", 64)),
        steps=int(settings.get("steps", 300)), lr=float(settings.get("lr", 0.01)),
    )


def load_student_file(path: Path, n: int, num_classes: int, data_name: str) -> np.ndarray:
    """A (n, num_classes) array of finite probabilities from a ``.npy`` file, or a ConfigError."""
    if not path.is_file():
        raise ConfigError(f"noise.student_file={path} does not exist.")
    try:
        scores = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"noise.student_file={path} is not a readable .npy array ({e}).") from e
    if scores.shape != (n, num_classes):
        raise ConfigError(
            f"noise.student_file={path} holds an array of shape {scores.shape}, but data={data_name} has "
            f"{n} training samples in {num_classes} classes, so it must be ({n}, {num_classes})."
        )
    if not np.issubdtype(scores.dtype, np.number) or not np.all(np.isfinite(scores)):
        raise ConfigError(f"noise.student_file={path} must hold finite numbers (class probabilities).")
    return scores.astype(np.float64)


def _flat(x: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(x)).reshape(len(x), -1)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def train_student(x, y, num_classes: int, *, seed: int, per_class: int, hidden: int, steps: int, lr: float,
                  chunk: int = 4096) -> np.ndarray:
    """Trains the MLP ``D -> hidden -> C`` full-batch with Adam for ``steps`` steps on
    ``per_class`` samples per class (drawn with ``seed``; inputs standardised with their
    mean and deviation) and returns its softmax on all of ``x`` (float64)."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        if len(members) < per_class:
            raise ConfigError(
                f"noise.student.per_class={per_class} is larger than class {c}, which has {len(members)} training samples."
            )
        picked.append(rng.choice(members, size=per_class, replace=False))
    picked = np.sort(np.concatenate(picked))
    inputs, targets = _flat(x[picked]), torch.from_numpy(y[picked])
    mean, std = inputs.mean(0), inputs.std(0, unbiased=False) + 1e-6
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(inputs.shape[1], hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, num_classes))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    inputs = (inputs - mean) / std
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(inputs), targets).backward()
        optimizer.step()
    with torch.no_grad():
        parts = [torch.softmax(net((_flat(x[i:i + chunk]) - mean) / std).double(), dim=1)
                 for i in range(0, len(x), chunk)]
    return torch.cat(parts).numpy()
