"""Tiny dataset files in the real on-disk formats and layouts, for tests.

Every ``write_*`` function writes into the folder it is given, exactly where
:mod:`noisylab.data.readers` (and the official archives) put the files, and returns what it
wrote as a dict of numpy arrays so that tests can compare the read-back values.
Images are returned as uint8 (N, C, H, W); labels as int64.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
CIFAR100_FINE = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
CIFAR100_COARSE = """aquatic_mammals fish flowers food_containers fruit_and_vegetables
household_electrical_devices household_furniture insects large_carnivores
large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
vehicles_2""".split()
# superclass of each fine class, as in the real CIFAR-100 (five fine classes per superclass)
CIFAR100_FINE_TO_COARSE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
], dtype=np.int64)
CLOTHING1M_CLASSES = [
    "T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
    "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear",
]


def _labels(rng, n: int, num_classes: int) -> np.ndarray:
    """``n`` labels that cycle through the classes (all present when n >= num_classes)."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _images(rng, n: int, shape) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


# ----------------------------------------------------------------------------- CIFAR


class Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python-2 ``str`` (SHORT_BINSTRING/BINSTRING), like the CIFAR files.

    Such a pickle loads with ``encoding="latin1"`` (str keys) and ``encoding="bytes"`` (bytes
    keys), as the real batches do.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_py2_pickle(path: Path, obj) -> None:
    """``obj`` as a protocol-2 pickle whose ``bytes`` are Python-2 strings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def _cifar_dict(batch_label: str, x: np.ndarray, labels: dict, prefix: str) -> dict:
    """One CIFAR batch: keys and strings as Python-2 str (bytes here), data (N, 3072) uint8."""
    batch = {
        b"batch_label": batch_label.encode(),
        b"data": x.reshape(len(x), 3072),
        b"filenames": [f"{prefix}_{i:05d}.png".encode() for i in range(len(x))],
    }
    batch.update({key.encode(): y.tolist() for key, y in labels.items()})
    return batch


def _learnable_images(rng, labels: np.ndarray, shape) -> np.ndarray:
    """Images whose class shows: a fixed random template per class plus pixel noise."""
    templates = np.random.default_rng(12345).integers(40, 216, size=(int(labels.max()) + 1, *shape))
    noise = rng.integers(-40, 41, size=(len(labels), *shape))
    return np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)


def write_cifar10(root, n_train: int = 50, n_test: int = 20, seed: int = 0, learnable: bool = False) -> dict:
    """``<root>/cifar-10-batches-py`` with 5 training batches, a test batch and batches.meta
    (``learnable``: images that show their class, so that accuracy means something)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    x_train, y_train = _images(rng, n_train, (3, 32, 32)), _labels(rng, n_train, 10)
    x_test, y_test = _images(rng, n_test, (3, 32, 32)), _labels(rng, n_test, 10)
    if learnable:
        x_train, x_test = _learnable_images(rng, y_train, (3, 32, 32)), _learnable_images(rng, y_test, (3, 32, 32))
    chunks = np.array_split(np.arange(n_train), 5)
    for i, rows in enumerate(chunks, start=1):
        batch = _cifar_dict(
            f"training batch {i} of 5", x_train[rows], {"labels": y_train[rows]}, "train"
        )
        write_py2_pickle(folder / f"data_batch_{i}", batch)
    test = _cifar_dict("testing batch 1 of 1", x_test, {"labels": y_test}, "test")
    write_py2_pickle(folder / "test_batch", test)
    meta = {
        b"label_names": [name.encode() for name in CIFAR10_CLASSES],
        b"num_cases_per_batch": max(len(c) for c in chunks),
        b"num_vis": 3072,
    }
    write_py2_pickle(folder / "batches.meta", meta)
    return {
        "folder": folder, "x_train": x_train, "y_train": y_train, "x_test": x_test,
        "y_test": y_test, "class_names": list(CIFAR10_CLASSES),
    }


def write_cifar100(root, n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict:
    """``<root>/cifar-100-python`` with train, test (fine + coarse labels) and meta."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    x_train, y_train = _images(rng, n_train, (3, 32, 32)), _labels(rng, n_train, 100)
    x_test, y_test = _images(rng, n_test, (3, 32, 32)), _labels(rng, n_test, 100)
    coarse_train, coarse_test = CIFAR100_FINE_TO_COARSE[y_train], CIFAR100_FINE_TO_COARSE[y_test]
    for name, x, fine, coarse in [
        ("train", x_train, y_train, coarse_train), ("test", x_test, y_test, coarse_test)
    ]:
        labels = {"fine_labels": fine, "coarse_labels": coarse}
        write_py2_pickle(folder / name, _cifar_dict(name, x, labels, name))
    meta = {
        b"fine_label_names": [n.encode() for n in CIFAR100_FINE],
        b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE],
    }
    write_py2_pickle(folder / "meta", meta)
    return {
        "folder": folder, "x_train": x_train, "y_train": y_train, "x_test": x_test,
        "y_test": y_test, "coarse_train": coarse_train, "coarse_test": coarse_test,
        "class_names": list(CIFAR100_FINE),
    }


# ----------------------------------------------------------------------------- MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: big-endian magic 0x08<ndim>, big-endian dims, data."""
    header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(root, gz: bool = False, n_train: int = 20, n_test: int = 10, seed: int = 0):
    """``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = _images(rng, n_train, (28, 28)), _labels(rng, n_train, 10)
    x_test, y_test = _images(rng, n_test, (28, 28)), _labels(rng, n_test, 10)
    files = {
        "train-images-idx3-ubyte": x_train, "train-labels-idx1-ubyte": y_train,
        "t10k-images-idx3-ubyte": x_test, "t10k-labels-idx1-ubyte": y_test,
    }
    paths = {}
    for name, array in files.items():
        data = idx_bytes(array)
        path = folder / (f"{name}.gz" if gz else name)
        path.write_bytes(gzip.compress(data) if gz else data)
        paths[name] = path
    return {
        "folder": folder, "paths": paths, "x_train": x_train[:, None], "y_train": y_train,
        "x_test": x_test[:, None], "y_test": y_test,
    }


# ----------------------------------------------------------------------------- SVHN


def write_svhn(root, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict:
    """``<root>/{train,test}_32x32.mat``: X uint8 (32, 32, 3, N), y uint8 (N, 1) in 1..10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {"folder": root}
    for split, n in (("train", n_train), ("test", n_test)):
        x = _images(rng, n, (3, 32, 32))  # (N, C, H, W)
        digits = _labels(rng, n, 10)
        raw = np.where(digits == 0, 10, digits).astype(np.uint8)  # SVHN writes 0 as 10
        mat = {"X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)), "y": raw[:, None]}
        savemat(str(root / f"{split}_32x32.mat"), mat)
        out.update({f"x_{split}": x, f"y_{split}": digits, f"y_{split}_raw": raw})
    return out


# ----------------------------------------------------------------------------- Clothing1M


def _clothing_key(index: int) -> str:
    return f"images/{index % 10}/{index % 100:02d}/{index:07d}.jpg"


def write_clothing1m(root, per_class: int = 2, seed: int = 0, size: int = 8) -> dict:
    """Clothing1M's annotation files plus tiny JPEGs under ``<root>/images/<d>/<dd>/``.

    ``per_class`` noisy training keys per class; ``noisy_label_kv.txt`` also lists a few keys
    outside the training list, and half of the noisy keys also have a clean label (the overlap
    of the real annotation), some of which differ from the noisy label.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    n_noisy = 14 * per_class
    noisy_keys = [_clothing_key(i) for i in range(n_noisy)]
    noisy_labels = _labels(rng, n_noisy, 14)
    extra_keys = [_clothing_key(i) for i in range(n_noisy, n_noisy + 3)]  # kv-only entries
    overlap = noisy_keys[::2]
    overlap_clean = noisy_labels[::2].copy()
    overlap_clean[::2] = (overlap_clean[::2] + 1) % 14  # every other overlap key is mislabelled
    start = n_noisy + 3
    splits = {}
    for split, n in (("train", 14), ("val", 7), ("test", 7)):
        keys = [_clothing_key(i) for i in range(start, start + n)]
        splits[split] = (keys, _labels(rng, n, 14))
        start += n
    clean_kv = dict(zip(overlap, overlap_clean.tolist(), strict=True))
    for keys, labels in splits.values():
        clean_kv.update(zip(keys, labels.tolist(), strict=True))

    root.mkdir(parents=True, exist_ok=True)
    noisy_kv = dict(zip(noisy_keys, noisy_labels.tolist(), strict=True))
    noisy_kv.update({k: int(rng.integers(14)) for k in extra_keys})

    def lines(items) -> str:
        return "".join(f"{item}\n" for item in items)

    (root / "noisy_label_kv.txt").write_text(lines(f"{k} {v}" for k, v in noisy_kv.items()))
    (root / "noisy_train_key_list.txt").write_text(lines(noisy_keys))
    (root / "clean_label_kv.txt").write_text(lines(f"{k} {v}" for k, v in clean_kv.items()))
    for split, (keys, _) in splits.items():
        (root / f"clean_{split}_key_list.txt").write_text(lines(keys))
    (root / "category_names_eng.txt").write_text(lines(CLOTHING1M_CLASSES))

    pixels = {}
    for key in [*noisy_keys, *extra_keys, *(k for keys, _ in splits.values() for k in keys)]:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        color = rng.integers(0, 256, size=3, dtype=np.uint8)
        image = np.broadcast_to(color, (size, size, 3)).copy()  # one flat colour survives JPEG
        Image.fromarray(image).save(path, format="JPEG", quality=95)
        pixels[key] = color
    return {
        "root": root, "noisy_train": (noisy_keys, noisy_labels), "clean_train": splits["train"],
        "clean_val": splits["val"], "clean_test": splits["test"], "clean_kv": clean_kv,
        "noisy_kv": noisy_kv, "class_names": list(CLOTHING1M_CLASSES), "colors": pixels,
        "size": size,
    }


# ----------------------------------------------------------------------------- CIFAR-N

CIFAR10N_RATES = {
    "aggre_label": 0.09, "random_label1": 0.17, "random_label2": 0.18, "random_label3": 0.18,
    "worse_label": 0.40,
}


def _flip(rng, clean: np.ndarray, rate: float, num_classes: int) -> np.ndarray:
    """``clean`` with exactly ``round(rate * n)`` labels moved to another class."""
    noisy = clean.copy()
    rows = rng.choice(len(clean), size=round(rate * len(clean)), replace=False)
    noisy[rows] = (clean[rows] + rng.integers(1, num_classes, size=len(rows))) % num_classes
    return noisy


def write_cifar10n(path, clean=None, n: int = 50, seed: int = 0) -> dict:
    """A ``CIFAR-10_human.pt`` (torch.save of a dict of int64 arrays) over ``n`` samples.

    ``clean`` (e.g. a CIFAR-10 fixture's ``y_train``) sets ``clean_label``; each noisy key
    differs from it in exactly ``round(rate * n)`` places, ``rate`` from ``CIFAR10N_RATES``.
    """
    import torch

    rng = np.random.default_rng(seed)
    clean = _labels(rng, n, 10) if clean is None else np.asarray(clean, dtype=np.int64)
    data = {"clean_label": clean}
    data.update({k: _flip(rng, clean, rate, 10) for k, rate in CIFAR10N_RATES.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def write_cifar100n(path, clean=None, n: int = 50, seed: int = 0, rate: float = 0.4) -> dict:
    """A ``CIFAR-100_human.pt``: int64 ``clean_label``/``noisy_label``, list coarse labels."""
    import torch

    rng = np.random.default_rng(seed)
    clean = _labels(rng, n, 100) if clean is None else np.asarray(clean, dtype=np.int64)
    noisy = _flip(rng, clean, rate, 100)
    data = {
        "clean_label": clean,
        "noisy_label": noisy,
        "clean_coarse_label": CIFAR100_FINE_TO_COARSE[clean].tolist(),
        "noisy_coarse_label": CIFAR100_FINE_TO_COARSE[noisy].tolist(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data
