"""Data sources: where a dataset's clean images and labels come from.

A source is the dataset *before* noise: clean training and test arrays (or a file list for
Clothing1M), the class count, the shape of one input and the dataset's semantic class map
for asymmetric noise. Embedded sources (``digits``, ``mnist1d``, ``toy2d``) need no files;
the others read the real on-disk formats through :mod:`noisylab.data.readers`. A source may
bring its own clean target set (``x_target``, ``y_target``: SOSELETO's ``toy2d`` and
``svhn_to_mnist``), from which the datamodule then takes the trusted samples.
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
    files: object | None = None  # readers.Clothing1M or image_lists.ImageList for file-backed data
    class_names: list[str] | None = None
    # A clean target set of its own (SOSELETO): the trusted samples come from it, not from x_train.
    x_target: np.ndarray | None = None
    y_target: np.ndarray | None = None
    # Names of the target and test classes when they are another label space than y_train's (transfer).
    target_class_names: list[str] | None = None


# Per dataset: the number of classes and the semantic class map for asymmetric noise (None: no
# map). Known before any file is read, so that a config can be checked up front
# (svhn_to_mnist: its default source_classes; num_classes() counts the configured ones).
DATASETS: dict[str, tuple[int, str | None]] = {
    "digits": (10, "mnist"), "mnist1d": (10, "mnist"), "mnist": (10, "mnist"), "cifar10": (10, "cifar10"),
    "cifar100": (100, "superclass"), "svhn": (10, None), "clothing1m": (14, None), "toy2d": (2, None),
    "svhn_to_mnist": (5, None), "webvision_mini": (50, None), "webvision": (1000, None), "food101n": (101, None),
    "animal10n": (10, None), "folder": (None, None), "table": (None, None),
}


def num_classes(cfg) -> int | None:
    """The number of training classes the ``data`` config ``cfg`` gives, without reading data
    (None for the user's own data, whose classes are known once read)."""
    if cfg.get("name") == "svhn_to_mnist" and cfg.get("source_classes") is not None:
        return len(cfg.get("source_classes"))
    return DATASETS[cfg.get("name")][0]


def digits(cfg) -> Source:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), split train/test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    fraction = float(cfg.get("test_fraction", 0.25))
    try:
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=fraction, random_state=0, stratify=y)
    except ValueError:
        raise ConfigError(f"data.test_fraction={fraction} leaves fewer than one image per class in the training "
                          f"or the test split of digits ({len(y)} images, 10 classes).") from None
    num_classes, asymmetric_map = DATASETS["digits"]
    return Source("digits", num_classes, (1, 8, 8), x_train, y_train, x_test, y_test, asymmetric_map=asymmetric_map)


def mnist1d(cfg) -> Source:
    """MNIST-1D (Greydanus 2020): 1-D signals of length 40 generated offline from templates."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(cfg.get("num_samples", 5000))
    data = make_dataset(args)
    x_train = data["x"].astype(np.float32)
    x_test = data["x_test"].astype(np.float32)
    num_classes, asymmetric_map = DATASETS["mnist1d"]
    return Source(
        "mnist1d", num_classes, (x_train.shape[1],), x_train, data["y"].astype(np.int64),
        x_test, data["y_test"].astype(np.int64), asymmetric_map=asymmetric_map,
    )


def data_root(cfg) -> Path:
    """``data.root`` as an absolute path, so that messages say exactly where files must be."""
    return Path(str(cfg.root)).expanduser().absolute()


def _from_arrays(name, arrays) -> Source:
    num_classes, asymmetric_map = DATASETS[name]
    return Source(
        name, num_classes, tuple(arrays.x_train.shape[1:]), arrays.x_train, arrays.y_train,
        arrays.x_test, arrays.y_test, coarse_train=arrays.coarse_train, asymmetric_map=asymmetric_map,
        class_names=arrays.class_names,
    )


def _maybe_download(cfg, name: str) -> None:
    """``data.download=true``: fetch the files, unless the reader finds them already (a
    download would then only write extracted copies beside them)."""
    if cfg.get("download", False):
        from noisylab.data import readers

        reader = {"mnist": readers.read_mnist, "cifar10": readers.read_cifar10, "cifar100": readers.read_cifar100}.get(name)
        if reader is not None:
            try:
                reader(data_root(cfg))
                return
            except Exception:  # not there (or unreadable): download
                pass
        readers.download(name, data_root(cfg))


def mnist(cfg) -> Source:
    from noisylab.data import readers

    _maybe_download(cfg, "mnist")
    return _from_arrays("mnist", readers.read_mnist(data_root(cfg)))


def cifar10(cfg) -> Source:
    from noisylab.data import readers

    _maybe_download(cfg, "cifar10")
    return _from_arrays("cifar10", readers.read_cifar10(data_root(cfg)))


def cifar100(cfg) -> Source:
    from noisylab.data import readers

    _maybe_download(cfg, "cifar100")
    return _from_arrays("cifar100", readers.read_cifar100(data_root(cfg)))


def svhn(cfg) -> Source:
    from noisylab.data import readers

    _maybe_download(cfg, "svhn")
    return _from_arrays("svhn", readers.read_svhn(data_root(cfg)))


def toy2d(cfg) -> Source:
    """SOSELETO's synthetic 2-D problem (Litany & Freedman 2018, slides; the orlitany/SOSELETO
    notebook): points uniform on [-1, 1]^2, class 1 where x0 > 0, else 0. ``num_source``
    points are the training (source) set, whose labels the noise group flips (``sym20`` by
    default: 20%); a clean target set of ``target_pool`` points, from which the datamodule
    takes ``trusted_per_class`` per class (25: the slides' 50 target points); ``num_test`` test
    points. All drawn from ``numpy.random.default_rng(data.seed)``."""
    rng = np.random.default_rng(int(cfg.get("seed", 0)))

    def points(key: str, default: int):
        n = int(cfg.get(key, default))
        if n < 1:
            raise ConfigError(f"data.{key} must be a positive number of points, got {n}.")
        x = rng.uniform(-1.0, 1.0, size=(n, 2)).astype(np.float32)
        return x, (x[:, 0] > 0).astype(np.int64)

    x_train, y_train = points("num_source", 500)
    x_target, y_target = points("target_pool", 1000)
    x_test, y_test = points("num_test", 1000)
    return Source("toy2d", DATASETS["toy2d"][0], (2,), x_train, y_train, x_test, y_test, x_target=x_target,
                  y_target=y_target)


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L") / torchvision's Grayscale


def gray_resized(images: np.ndarray, size: tuple[int, int], mean: float, std: float, chunk: int = 4096) -> np.ndarray:
    """uint8 RGB (N, 3, H, W) -> float32 (N, 1, *size): luma, bilinear antialiased resize (as
    torchvision's Resize), scaled to [0, 1], then ``(x - mean) / std``."""
    import torch

    weights = torch.tensor(LUMA).view(1, 3, 1, 1)
    out = np.empty((len(images), 1, *size), dtype=np.float32)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(images[start:start + chunk]).float()
        gray = (x * weights).sum(1, keepdim=True) / 255.0
        if tuple(gray.shape[-2:]) != tuple(size):
            gray = torch.nn.functional.interpolate(gray, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = ((gray - mean) / std).numpy()
    return out


def _digits(cfg, key: str, default: list[int]) -> list[int]:
    digits = [int(d) for d in cfg.get(key, default)]
    if not digits or len(set(digits)) != len(digits) or not all(0 <= d <= 9 for d in digits):
        raise ConfigError(f"data.{key} must be distinct digits 0..9, got {digits}.")
    return digits


def _keep(x: np.ndarray, y: np.ndarray, digits: list[int]):
    """The samples whose digit is in ``digits``, labelled by the digit's position there."""
    position = np.full(10, -1, dtype=np.int64)
    position[digits] = np.arange(len(digits))
    mask = np.isin(y, digits)
    return x[mask], position[y[mask]]


def svhn_to_mnist(cfg) -> Source:
    """SOSELETO's transfer setting (Litany & Freedman 2018): source = SVHN training digits
    ``source_classes`` (0-4) with their own labels, the training set; target = MNIST digits
    ``target_classes`` (5-9): the datamodule takes ``trusted_per_class`` labelled ones per
    class from MNIST's training set (n_t = 5 * trusted_per_class), the test set is MNIST's
    test set of those digits. Each side is labelled by the digit's position in its list
    (MNIST 5..9 -> 0..4), so source and target heads are both 5-way; ``target_class_names``
    names the target digits. As SOSELETO's ``data_loader.py``: SVHN is made grayscale and
    resized to MNIST's 28x28; each domain is normalised with its own mean and deviation
    (SVHN 0.444/0.175, MNIST 0.1307/0.3081); the arrays are stored normalised (float32)."""
    from noisylab.data import readers

    _maybe_download(cfg, "svhn")
    _maybe_download(cfg, "mnist")
    source_digits = _digits(cfg, "source_classes", [0, 1, 2, 3, 4])
    target_digits = _digits(cfg, "target_classes", [5, 6, 7, 8, 9])
    mnist = readers.read_mnist(data_root(cfg))
    svhn_x, svhn_y = readers.read_svhn_split(data_root(cfg), "train")
    x_train, y_train = _keep(svhn_x, svhn_y, source_digits)
    size = tuple(mnist.x_train.shape[-2:])
    x_train = gray_resized(x_train, size, float(cfg.get("source_mean", 0.444)), float(cfg.get("source_std", 0.175)))
    mean, std = float(cfg.get("target_mean", 0.1307)), float(cfg.get("target_std", 0.3081))
    x_target, y_target = _keep(mnist.x_train, mnist.y_train, target_digits)
    x_test, y_test = _keep(mnist.x_test, mnist.y_test, target_digits)
    x_target, x_test = ((x.astype(np.float32) / 255.0 - mean) / std for x in (x_target, x_test))
    return Source(
        "svhn_to_mnist", len(source_digits), (1, *size), x_train, y_train, x_test, y_test,
        class_names=[str(d) for d in source_digits], x_target=x_target, y_target=y_target,
        target_class_names=[str(d) for d in target_digits],
    )


def clothing1m(cfg) -> Source:
    from noisylab.data import readers

    files = readers.read_clothing1m(data_root(cfg))
    size = int(cfg.get("crop_size", 224))
    return Source("clothing1m", DATASETS["clothing1m"][0], (3, size, size), files=files, class_names=files.class_names)


def _image_source(cfg, images) -> Source:
    size = int(cfg.get("crop_size", 224))
    return Source(cfg.name, len(images.class_names), (3, size, size), files=images, class_names=images.class_names)


def webvision(cfg) -> Source:
    """WebVision 1.0, Google + Flickr, 1000 classes (``webvision``), or mini-WebVision, the
    first 50 classes of the Google images (``webvision_mini``); ImageNet val as the test set
    with ``data.imagenet_val`` (WebVision's val then the validation split)."""
    from noisylab.data.image_lists import read_webvision

    imagenet = Path(str(cfg.imagenet_root)).expanduser().absolute() if cfg.get("imagenet_val", True) else None
    images = read_webvision(data_root(cfg), DATASETS[cfg.name][0], cfg.name == "webvision",
                            str(cfg.get("val_folder", "val_images_256")), imagenet)
    return _image_source(cfg, images)


def food101n(cfg) -> Source:
    from noisylab.data.image_lists import read_food101n

    return _image_source(cfg, read_food101n(data_root(cfg), Path(str(cfg.food101_root)).expanduser().absolute()))


def animal10n(cfg) -> Source:
    from noisylab.data.image_lists import read_animal10n

    return _image_source(cfg, read_animal10n(data_root(cfg)))


def folder(cfg) -> Source:
    from noisylab.data.image_lists import read_folder

    if not cfg.get("root"):
        raise ConfigError("data=folder needs data.root, the folder of class folders (<root>/<class>/<image>).")
    return _image_source(cfg, read_folder(data_root(cfg)))


def table(cfg) -> Source:
    from noisylab.data.image_lists import read_table

    if not cfg.get("file"):
        raise ConfigError("data=table needs data.file, the CSV/TSV of path,label[,split][,clean_label].")
    root = data_root(cfg) if cfg.get("root") else None
    return _image_source(cfg, read_table(Path(str(cfg.file)).expanduser().absolute(), root))


SOURCES = {
    "digits": digits,
    "mnist1d": mnist1d,
    "mnist": mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "svhn": svhn,
    "clothing1m": clothing1m,
    "toy2d": toy2d,
    "svhn_to_mnist": svhn_to_mnist,
    "webvision_mini": webvision,
    "webvision": webvision,
    "food101n": food101n,
    "animal10n": animal10n,
    "folder": folder,
    "table": table,
}


def load_source(cfg) -> Source:
    """Builds the source named by ``cfg.name`` (the ``data`` config group)."""
    if cfg.name not in SOURCES:
        raise ConfigError(f"Unknown dataset '{cfg.name}'; choose one of: {', '.join(SOURCES)}.")
    return SOURCES[cfg.name](cfg)
