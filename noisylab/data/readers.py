"""Readers of the real on-disk dataset formats, offline and without torchvision.

Each reader takes the folder the user points ``data.root`` at, checks the files the official
archives contain (same names, same layout) and returns numpy arrays or file lists. A missing
or corrupt file raises :class:`~noisylab.errors.DatasetError` with one sentence that names the
expected path and says how to get the data. Only :func:`download` touches the network, and
only when the user asks for it (``data.download=true``).
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from noisylab.errors import DatasetError

log = logging.getLogger("noisylab")

OFFLINE_HINT = "or pass data.download=true on a machine with internet."
CIFAR10_HINT = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and extract it into {root}, " + OFFLINE_HINT
)
CIFAR100_HINT = (
    "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and extract it into {root}, " + OFFLINE_HINT
)
MNIST_HINT = (
    "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
    "and t10k-labels-idx1-ubyte.gz (e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/) "
    "into {root}/MNIST/raw, " + OFFLINE_HINT
)
SVHN_HINT = (
    "download train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ "
    "into {root}, " + OFFLINE_HINT
)
CLOTHING1M_HINT = (
    "request the images and annotations.zip from the Clothing1M authors "
    "(https://github.com/Cysu/noisy_label) and extract both into {root}."
)
CIFAR_N_HINT = (
    "download CIFAR-10_human.pt or CIFAR-100_human.pt from "
    "https://github.com/UCSC-REAL/cifar-10-100n (folder data/) and set noise.file to its path."
)

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
CLOTHING1M_MEAN = (0.6959, 0.6537, 0.6371)
CLOTHING1M_STD = (0.3113, 0.3192, 0.3214)
CLOTHING1M_CLASSES = [
    "T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
    "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear",
]


@dataclass
class ImageArrays:
    """Clean images and labels of one dataset: uint8 (N, C, H, W) images, int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    coarse_train: np.ndarray | None = None  # CIFAR-100 superclass labels (0..19), else None
    coarse_test: np.ndarray | None = None
    class_names: list[str] | None = None


# ----------------------------------------------------------------------------- helpers


def _missing(dataset: str, path: Path, hint: str) -> DatasetError:
    return DatasetError(f"{dataset} not found: expected {path}; {hint}")


def _corrupt(dataset: str, path: Path, what: str, hint: str) -> DatasetError:
    return DatasetError(f"{dataset} file {path} is corrupt ({what}); {hint}")


def _need_file(dataset: str, path: Path, hint: str) -> Path:
    if not path.is_file():
        raise _missing(dataset, path, hint)
    return path


def _labels(values, dataset: str, path: Path, hint: str, num_classes: int | None, what="labels"):
    """``values`` as an int64 vector in ``[0, num_classes)`` (any integer when None), or a
    DatasetError. Floats holding whole numbers (MATLAB's default type) are labels too."""
    array = np.asarray(values)
    if array.dtype.kind == "f":  # 3.0 is class 3; 3.5 or nan is no class
        flat = array.reshape(-1)
        fractional = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
        if fractional.size:
            i = int(fractional[0])
            problem = f"the value {flat[i]} at index {i} of {what} is not a whole number"
            raise _corrupt(dataset, path, problem, hint)
        array = np.clip(flat, -(2**62), 2**62).astype(np.int64)  # huge: refused by the range check, not the cast
    try:
        labels = array.astype(np.int64, casting="same_kind").reshape(-1)
    except (TypeError, ValueError) as e:
        raise _corrupt(dataset, path, f"{what} are not integers: {e}", hint) from e
    if num_classes is not None and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        found = f"{labels.min()}..{labels.max()}"
        raise _corrupt(dataset, path, f"{what} span {found}, expected 0..{num_classes - 1}", hint)
    return labels


# ----------------------------------------------------------------------------- CIFAR


def _load_cifar_pickle(dataset: str, path: Path, hint: str) -> dict:
    """A CIFAR batch (Python-2 pickle of a dict) with its keys as ``str``."""
    _need_file(dataset, path, hint)
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # UnpicklingError, EOFError (truncated), ValueError, ...
        raise _corrupt(dataset, path, f"cannot unpickle it: {type(e).__name__}: {e}", hint) from e
    if not isinstance(obj, dict):
        raise _corrupt(dataset, path, f"expected a pickled dict, found {type(obj).__name__}", hint)
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _get(batch: dict, key: str, dataset: str, path: Path, hint: str):
    if key not in batch:
        raise _corrupt(dataset, path, f"missing key '{key}'", hint)
    return batch[key]


def _cifar_batch(dataset, path, hint, label_keys, num_classes):
    """Images (N, 3, 32, 32) and one label vector per key in ``label_keys`` from one batch."""
    batch = _load_cifar_pickle(dataset, path, hint)
    data = np.asarray(_get(batch, "data", dataset, path, hint))
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        what = f"'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
        raise _corrupt(dataset, path, what, hint)
    labels = []
    for key, classes in zip(label_keys, num_classes, strict=True):
        y = _labels(_get(batch, key, dataset, path, hint), dataset, path, hint, classes, f"'{key}'")
        if len(y) != len(data):
            what = f"'{key}' has {len(y)} entries for {len(data)} images"
            raise _corrupt(dataset, path, what, hint)
        labels.append(y)
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_names(dataset, path, hint, key, num_classes):
    """Class names from a CIFAR meta file; None when the (optional) file is absent."""
    if not path.is_file():
        return None
    names = _get(_load_cifar_pickle(dataset, path, hint), key, dataset, path, hint)
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != num_classes:  # a name per class: another count would misname every report
        raise _corrupt(dataset, path, f"'{key}' holds {len(names)} names, expected {num_classes}", hint)
    return names


def read_cifar10(root) -> ImageArrays:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (python version of the archive)."""
    root = Path(root).expanduser()
    folder = root / "cifar-10-batches-py"
    hint = CIFAR10_HINT.format(root=root)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _need_file("CIFAR-10", folder / name, hint)
    parts = [
        _cifar_batch("CIFAR-10", folder / f"data_batch_{i}", hint, ["labels"], [10])
        for i in range(1, 6)
    ]
    x_test, (y_test,) = _cifar_batch("CIFAR-10", folder / "test_batch", hint, ["labels"], [10])
    names = _cifar_names("CIFAR-10", folder / "batches.meta", hint, "label_names", 10)
    return ImageArrays(
        x_train=np.concatenate([x for x, _ in parts]),
        y_train=np.concatenate([y for _, (y,) in parts]),
        x_test=x_test,
        y_test=y_test,
        class_names=names or list(CIFAR10_CLASSES),
    )


def read_cifar100(root) -> ImageArrays:
    """CIFAR-100 from ``<root>/cifar-100-python``: fine labels plus coarse (superclass) labels."""
    root = Path(root).expanduser()
    folder = root / "cifar-100-python"
    hint = CIFAR100_HINT.format(root=root)
    for name in ("train", "test"):
        _need_file("CIFAR-100", folder / name, hint)
    keys, classes = ["fine_labels", "coarse_labels"], [100, 20]
    x_train, (y_train, coarse_train) = _cifar_batch(
        "CIFAR-100", folder / "train", hint, keys, classes
    )
    x_test, (y_test, coarse_test) = _cifar_batch("CIFAR-100", folder / "test", hint, keys, classes)
    names = _cifar_names("CIFAR-100", folder / "meta", hint, "fine_label_names", 100)
    return ImageArrays(x_train, y_train, x_test, y_test, coarse_train, coarse_test, names)


# ----------------------------------------------------------------------------- MNIST

MNIST_FILES = {
    "x_train": ("train-images-idx3-ubyte", 2051),
    "y_train": ("train-labels-idx1-ubyte", 2049),
    "x_test": ("t10k-images-idx3-ubyte", 2051),
    "y_test": ("t10k-labels-idx1-ubyte", 2049),
}


def _read_idx(path: Path, magic: int, hint: str) -> np.ndarray:
    """One IDX file (raw or gzipped) of unsigned bytes, checked against ``magic``."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError
        raise _corrupt("MNIST", path, f"cannot read it: {e}", hint) from e
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else "none"
        kind = "images" if magic == 2051 else "labels"
        what = f"magic number {found}, expected {magic} for IDX ubyte {kind}"
        raise _corrupt("MNIST", path, what, hint)
    ndim = magic % 256
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt("MNIST", path, "header is truncated", hint)
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(dims))
    if len(raw) - header != size:
        what = f"{len(raw) - header} data bytes, header {dims} promises {size}"
        raise _corrupt("MNIST", path, what, hint)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_mnist(root) -> ImageArrays:
    """MNIST from ``<root>/MNIST/raw`` (torchvision's layout); each file raw or ``.gz``."""
    root = Path(root).expanduser()
    folder = root / "MNIST" / "raw"
    hint = MNIST_HINT.format(root=root)
    arrays, paths = {}, {}
    for field_name, (name, magic) in MNIST_FILES.items():
        path = folder / name
        if not path.is_file():
            path = folder / f"{name}.gz"
        if not path.is_file():
            raise DatasetError(f"MNIST not found: expected {folder / name} (or .gz); {hint}")
        arrays[field_name], paths[field_name] = _read_idx(path, magic, hint), path
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            what = f"{len(y)} labels for {len(x)} images in {paths[f'x_{split}'].name}"
            raise _corrupt("MNIST", paths[f"y_{split}"], what, hint)
        arrays[f"x_{split}"] = x[:, None].copy()
        arrays[f"y_{split}"] = _labels(y, "MNIST", paths[f"y_{split}"], hint, 10)
    return ImageArrays(**arrays, class_names=[str(d) for d in range(10)])


# ----------------------------------------------------------------------------- SVHN


def _read_svhn_split(path: Path, hint: str):
    """Images (N, 3, 32, 32) and digits 0..9 (label 10 means digit 0) from one .mat file."""
    from scipy.io import loadmat

    _need_file("SVHN", path, hint)
    try:
        mat = loadmat(str(path))
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5)
        raise _corrupt("SVHN", path, f"not a MATLAB v5 file: {e}", hint) from e
    except Exception as e:  # truncated or not a .mat file at all
        raise _corrupt("SVHN", path, f"cannot read it: {type(e).__name__}: {e}", hint) from e
    for key in ("X", "y"):
        if key not in mat:
            raise _corrupt("SVHN", path, f"missing variable '{key}'", hint)
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        what = f"X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)"
        raise _corrupt("SVHN", path, what, hint)
    if len(y) != x.shape[3]:
        raise _corrupt("SVHN", path, f"y has {len(y)} labels for {x.shape[3]} images", hint)
    y = _labels(y, "SVHN", path, hint, 11)
    if y.size and y.min() < 1:
        raise _corrupt("SVHN", path, f"y holds {y.min()}, expected labels 1..10", hint)
    y[y == 10] = 0  # SVHN writes digit 0 as label 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def read_svhn(root) -> ImageArrays:
    """SVHN cropped digits from ``<root>/train_32x32.mat`` and ``<root>/test_32x32.mat``."""
    root = Path(root).expanduser()
    hint = SVHN_HINT.format(root=root)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        _need_file("SVHN", root / name, hint)
    x_train, y_train = read_svhn_split(root, "train")
    x_test, y_test = read_svhn_split(root, "test")
    return ImageArrays(x_train, y_train, x_test, y_test, class_names=[str(d) for d in range(10)])


def read_svhn_split(root, split: str):
    """One SVHN split, ``<root>/<split>_32x32.mat``: uint8 images (N, 3, 32, 32), digits 0..9."""
    root = Path(root).expanduser()
    return _read_svhn_split(root / f"{split}_32x32.mat", SVHN_HINT.format(root=root))


# ----------------------------------------------------------------------------- Clothing1M


def clean_labels_for(keys, clean_kv: dict[str, int]) -> np.ndarray:
    """Clean label of each key where ``clean_kv`` knows it, else -1."""
    return np.fromiter((clean_kv.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))


@dataclass
class Clothing1M:
    """Clothing1M file lists: (relative image paths, int64 labels) per split."""

    root: Path  # folder holding images/ and the annotation txt files
    noisy_train: tuple[list[str], np.ndarray]
    clean_train: tuple[list[str], np.ndarray]
    clean_val: tuple[list[str], np.ndarray]
    clean_test: tuple[list[str], np.ndarray]
    class_names: list[str]
    clean_kv: dict[str, int] = field(default_factory=dict, repr=False)

    def clean_label_of(self, paths) -> np.ndarray:
        """Clean labels of ``paths`` where the clean annotation covers them, else -1."""
        return clean_labels_for(list(paths), self.clean_kv)

    def image_list(self):
        """As the file-backed datamodule reads every image dataset: noisy train (with the clean
        labels the annotation has), clean val and test, the clean training images as trusted pool."""
        from noisylab.data.image_lists import ImageList

        return ImageList("Clothing1M", self.root, CLOTHING1M_HINT, self.noisy_train, self.clean_test,
                         self.class_names, train_clean=self.clean_label_of(self.noisy_train[0]),
                         val=self.clean_val, trusted=self.clean_train, mean=CLOTHING1M_MEAN, std=CLOTHING1M_STD)


def _numbered_lines(path: Path, hint: str) -> list[tuple[int, str]]:
    """The non-empty lines of a text file with their line numbers (as an editor shows them)."""
    _need_file("Clothing1M", path, hint)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise _corrupt("Clothing1M", path, f"cannot read it as text: {e}", hint) from e
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _read_lines(path: Path, hint: str) -> list[str]:
    return [line for _, line in _numbered_lines(path, hint)]


def _read_kv(path: Path, hint: str, num_classes: int) -> dict[str, int]:
    """``images/<d>/<dd>/<name>.jpg <label>`` lines as a dict. The key lists say which images
    are trained, so a key listed twice is still one image; listed with two labels, the later
    wins, as in the official loaders (a dict), with one line saying so."""
    kv, conflicts = {}, []
    for number, line in _numbered_lines(path, hint):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= num_classes:
            expected = f"'<image path> <label 0..{num_classes - 1}>'"
            what = f"line {number} is '{line}', expected {expected}"
            raise _corrupt("Clothing1M", path, what, hint)
        if kv.get(parts[0], int(parts[1])) != int(parts[1]):
            conflicts.append((number, parts[0], kv[parts[0]], int(parts[1])))
        kv[parts[0]] = int(parts[1])
    if conflicts:
        number, key, before, after = conflicts[0]
        log.warning("Clothing1M: %s lists %d key(s) again with another label, the later label kept as the official "
                    "loaders do (the first: %s, %d then %d at line %d).", path, len(conflicts), key, before, after, number)
    return kv


def _split(keys_path: Path, kv: dict[str, int], kv_path: Path, hint: str):
    keys = _read_lines(keys_path, hint)
    missing = [k for k in keys if k not in kv]
    if missing:
        what = f"{len(missing)} keys such as {missing[0]} have no label in {kv_path.name}"
        raise _corrupt("Clothing1M", keys_path, what, hint)
    return keys, np.fromiter((kv[k] for k in keys), dtype=np.int64, count=len(keys))


def read_clothing1m(root) -> Clothing1M:
    """Clothing1M annotation files (kv label files and key lists) from ``root``."""
    root = Path(root).expanduser()
    hint = CLOTHING1M_HINT.format(root=root)
    names_path = root / "category_names_eng.txt"
    names = _read_lines(names_path, hint) if names_path.is_file() else list(CLOTHING1M_CLASSES)
    if len(names) != len(CLOTHING1M_CLASSES):  # checked first: the label ranges below follow from it
        what = f"it names {len(names)} categories, expected {len(CLOTHING1M_CLASSES)} (one per line)"
        raise _corrupt("Clothing1M", names_path, what, hint)
    noisy_kv = _read_kv(root / "noisy_label_kv.txt", hint, len(names))
    clean_kv = _read_kv(root / "clean_label_kv.txt", hint, len(names))
    if not (root / "images").is_dir():
        images = root / "images"
        raise DatasetError(f"Clothing1M images not found: expected folder {images}; {hint}")
    noisy_path, clean_path = root / "noisy_label_kv.txt", root / "clean_label_kv.txt"
    return Clothing1M(
        root=root,
        noisy_train=_split(root / "noisy_train_key_list.txt", noisy_kv, noisy_path, hint),
        clean_train=_split(root / "clean_train_key_list.txt", clean_kv, clean_path, hint),
        clean_val=_split(root / "clean_val_key_list.txt", clean_kv, clean_path, hint),
        clean_test=_split(root / "clean_test_key_list.txt", clean_kv, clean_path, hint),
        class_names=names,
        clean_kv=clean_kv,
    )


def load_image(root, rel_path, dataset: str = "Clothing1M", hint: str = CLOTHING1M_HINT):
    """The image ``<root>/<rel_path>`` (``rel_path`` may be absolute) as an RGB ``PIL.Image``."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root).expanduser()
    path = root / rel_path
    hint = hint.format(root=root)
    _need_file(f"{dataset} image", path, hint)
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16") or image.mode in ("I", "F"):  # 16-bit (or float) grey levels:
                image = eight_bit(image, path)  # convert("RGB") would clip every level above 255 to white
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise _corrupt(f"{dataset} image", path, f"cannot decode it: {e}", hint) from e


def eight_bit(image, path):
    """A 16-bit (``I;16``, ``I``) image scaled to 0..255 as 8-bit grey (65535 -> 255), and a
    float image (``F``) in 0..1 likewise; other ranges are refused: no scale is known for them."""
    from PIL import Image

    levels = np.asarray(image, dtype=np.float64)
    top = 1.0 if image.mode == "F" else 65535.0
    if levels.size and (levels.min() < 0 or levels.max() > top):
        raise OSError(f"its {image.mode} pixel values span {levels.min():g}..{levels.max():g}, outside 0..{top:g}")
    return Image.fromarray(np.round(levels * (255.0 / top)).astype(np.uint8), mode="L")


load_clothing1m_image = load_image


# ----------------------------------------------------------------------------- CIFAR-N


def _load_cifar_n(path: Path) -> dict:
    """The dict inside a CIFAR-N ``.pt`` file: zip + pickle first, torch.load as a fallback."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if members:
                return pickle.load(io.BytesIO(archive.read(members[0])))
    except Exception:  # not a zip, or a legacy / tensor-holding torch file: let torch try
        pass
    try:
        import torch

        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        what = f"neither a zip with */data.pkl nor a torch file: {type(e).__name__}: {e}"
        raise _corrupt("CIFAR-N", path, what, CIFAR_N_HINT) from e


def _cifar_n_dict(path: Path) -> dict:
    _need_file("CIFAR-N label file", path, CIFAR_N_HINT)
    data = _load_cifar_n(path)
    if not isinstance(data, dict):
        what = f"expected a dict of label arrays, found {type(data).__name__}"
        raise _corrupt("CIFAR-N", path, what, CIFAR_N_HINT)
    return data


def _cifar_n_labels(data: dict, path: Path, key: str) -> np.ndarray:
    values = data[key]
    if hasattr(values, "numpy"):  # a torch tensor
        values = values.numpy()
    if np.ndim(values) != 1:
        what = f"'{key}' has shape {np.shape(values)}, expected (N,)"
        raise _corrupt("CIFAR-N", path, what, CIFAR_N_HINT)
    return _labels(values, "CIFAR-N", path, CIFAR_N_HINT, None, f"'{key}'")


def read_cifar_n(path, key) -> np.ndarray:
    """One label set (e.g. ``worse_label``) of a CIFAR-10N/100N file, as int64 (N,). The range
    depends on the dataset: :func:`check_cifar_n` checks it."""
    path = Path(path).expanduser()
    data = _cifar_n_dict(path)
    if key not in data:
        present = ", ".join(sorted(map(str, data)))
        raise DatasetError(
            f"CIFAR-N file {path} has no key '{key}'; the keys present are: {present}."
        )
    return _cifar_n_labels(data, path, key)


def check_cifar_n(path, key: str, labels, clean, num_classes: int, dataset: str) -> None:
    """Refuses human labels ``labels`` (read from ``key`` of the CIFAR-N file ``path``; None:
    no file) outside the dataset's classes, and a file whose ``clean_label`` is not the
    dataset's training labels ``clean`` in the same order (the official loader asserts the
    same); a file without ``clean_label`` cannot be checked and is used as it is."""
    labels, clean = np.asarray(labels), np.asarray(clean)
    source = f"CIFAR-N file {Path(path).expanduser()}" if path else "the human label file"
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:  # would index past the transition matrix, or count as another class
        i = int(outside[0])
        raise DatasetError(f"{source} is corrupt ('{key}' holds label {labels[i]} at index {i}, outside "
                           f"data={dataset}'s classes 0..{num_classes - 1}); {CIFAR_N_HINT}")
    if not path:
        return
    path = Path(path).expanduser()
    data = _cifar_n_dict(path)
    if "clean_label" not in data:
        return
    truth = _cifar_n_labels(data, path, "clean_label")
    if truth.shape != clean.shape:
        raise DatasetError(f"{source} does not match data={dataset}: its 'clean_label' has {len(truth)} labels "
                           f"for {len(clean)} training images; {CIFAR_N_HINT}")
    differ = np.flatnonzero(truth != clean)
    if differ.size:  # the human labels belong to other images, or to these in another order
        i = int(differ[0])
        raise DatasetError(f"{source} does not match data={dataset}: its 'clean_label' differs from the "
                           f"dataset's training labels at {differ.size} of {len(clean)} positions (the first at "
                           f"index {i}: {truth[i]} in the file, {clean[i]} in the dataset), so its labels belong "
                           f"to other images or another order; use the official training batches and the "
                           f"CIFAR-N file made for them.")


# ----------------------------------------------------------------------------- download


def _remove_new(top: Path, before: set) -> None:
    """What a failed download made under ``top`` (empty folders, partial files), deepest first;
    what was there before stays."""
    import contextlib

    made = ({top} if top.exists() else set()) | (set(top.rglob("*")) if top.is_dir() else set())
    for path in sorted(made - before, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()


def download(name: str, root) -> None:
    """Fetch cifar10/cifar100/mnist/svhn into ``root`` with torchvision (needs internet)."""
    root = Path(root).expanduser()
    classes = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "svhn": "SVHN"}
    if name not in classes:
        raise DatasetError(
            f"data.download=true works only for {', '.join(classes)}, not {name}; "
            f"place the {name} files under {root} by hand."
        )
    top = next(p for p in (root, *root.parents) if p.parent.exists())  # the highest folder to be made
    before = set(top.rglob("*")) | {top} if top.exists() else set()
    try:
        import torchvision.datasets as tv_datasets

        dataset = getattr(tv_datasets, classes[name])
        root.mkdir(parents=True, exist_ok=True)
        if name == "svhn":
            for split in ("train", "test"):
                dataset(str(root), split=split, download=True)
        else:
            for train in (True, False):
                dataset(str(root), train=train, download=True)
    except Exception as e:  # torchvision's message lists every mirror it tried: the first line says why
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".:")
        _remove_new(top, before)
        raise DatasetError(f"could not download {name} into {root} ({first}); without internet, place the "
                           f"files there by hand (data.download=false).") from None
