"""Data sources: where a dataset's clean images and labels come from.

A source is the dataset *before* noise: clean training and test arrays (or a file list for
Clothing1M), the class count, the shape of one input and the dataset's semantic class map
for asymmetric noise. Embedded sources (``digits``, ``mnist1d``) need no files; the others
read the real on-disk formats through :mod:`noisylab.data.readers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisylab.errors import ConfigError


@dataclass
class Source:
    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    x_train: np.ndarray | None = None  # uint8 images (N, C, H, W) or float32 inputs
    y_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    coarse_train: np.ndarray | None = None  # CIFAR-100 superclasses, for asymmetric noise
    asymmetric_map: str | None = None  # "cifar10", "mnist", "superclass" or None
    files: object | None = None  # noisylab.data.readers.Clothing1M for file-backed data
    class_names: list[str] | None = None


def digits(cfg) -> Source:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), split train/test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=float(cfg.get("test_fraction", 0.25)), random_state=0, stratify=y
    )
    return Source("digits", 10, (1, 8, 8), x_train, y_train, x_test, y_test, asymmetric_map="mnist")


def mnist1d(cfg) -> Source:
    """MNIST-1D (Greydanus 2020): 1-D signals of length 40 generated offline from templates."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(cfg.get("num_samples", 5000))
    data = make_dataset(args)
    x_train = data["x"].astype(np.float32)
    x_test = data["x_test"].astype(np.float32)
    return Source(
        "mnist1d", 10, (x_train.shape[1],), x_train, data["y"].astype(np.int64),
        x_test, data["y_test"].astype(np.int64), asymmetric_map="mnist",
    )


def data_root(cfg) -> Path:
    """``data.root`` as an absolute path, so that messages say exactly where files must be."""
    return Path(str(cfg.root)).expanduser().absolute()


def _from_arrays(name, num_classes, arrays, asymmetric_map) -> Source:
    return Source(
        name, num_classes, tuple(arrays.x_train.shape[1:]), arrays.x_train, arrays.y_train,
        arrays.x_test, arrays.y_test, coarse_train=arrays.coarse_train, asymmetric_map=asymmetric_map,
        class_names=arrays.class_names,
    )


def _maybe_download(cfg, name: str) -> None:
    if cfg.get("download", False):
        from noisylab.data import readers

        readers.download(name, data_root(cfg))


def mnist(cfg) -> Source:
    from noisylab.data import readers

    _maybe_download(cfg, "mnist")
    return _from_arrays("mnist", 10, readers.read_mnist(data_root(cfg)), "mnist")


def cifar10(cfg) -> Source:
    from noisylab.data import readers

    _maybe_download(cfg, "cifar10")
    return _from_arrays("cifar10", 10, readers.read_cifar10(data_root(cfg)), "cifar10")


def cifar100(cfg) -> Source:
    from noisylab.data import readers

    _maybe_download(cfg, "cifar100")
    return _from_arrays("cifar100", 100, readers.read_cifar100(data_root(cfg)), "superclass")


def svhn(cfg) -> Source:
    from noisylab.data import readers

    _maybe_download(cfg, "svhn")
    return _from_arrays("svhn", 10, readers.read_svhn(data_root(cfg)), None)


def clothing1m(cfg) -> Source:
    from noisylab.data import readers

    files = readers.read_clothing1m(data_root(cfg))
    size = int(cfg.get("crop_size", 224))
    return Source("clothing1m", 14, (3, size, size), files=files, class_names=files.class_names)


SOURCES = {
    "digits": digits,
    "mnist1d": mnist1d,
    "mnist": mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "svhn": svhn,
    "clothing1m": clothing1m,
}


def load_source(cfg) -> Source:
    """Builds the source named by ``cfg.name`` (the ``data`` config group)."""
    if cfg.name not in SOURCES:
        raise ConfigError(f"Unknown dataset '{cfg.name}'; choose one of: {', '.join(SOURCES)}.")
    return SOURCES[cfg.name](cfg)
