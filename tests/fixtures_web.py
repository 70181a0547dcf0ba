"""Tiny image datasets in the real on-disk layouts of WebVision 1.0 (+ ImageNet val), Food-101N
(+ Food-101's test list), Animal-10N and the user's own folder/table, for tests.

Each ``write_*`` writes into the folder it is given, exactly as the official releases lay the
files out (docs/datasets.md), and returns what it wrote so that tests compare the read-back
values. Images are tiny flat-colour JPEGs/PNGs (a flat colour survives JPEG).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image(path: Path, color, size=(8, 8)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.broadcast_to(np.asarray(color, dtype=np.uint8), (size[1], size[0], 3)).copy()
    Image.fromarray(image).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=95)


def _lines(items) -> str:
    return "".join(f"{item}\n" for item in items)


def wnid(label: int) -> str:
    return f"n{1440764 + label:08d}"


def write_imagenet_devkit(root, labels=(50, 0, 1, 0), seed: int = 0) -> list:
    """ILSVRC-2012 val in the devkit's layout: ``val/ILSVRC2012_val_%08d.JPEG``, the ground
    truth as ILSVRC2012_IDs (one per line) and ``meta.mat`` mapping IDs to WNIDs; the IDs are
    deliberately not the WNIDs' sorted positions (ID = 1000 - label)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    root = Path(root)
    devkit = root / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True, exist_ok=True)
    synsets = np.zeros((1000, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    for label in range(1000):
        synsets[label, 0] = (1000 - label, wnid(label), f"class {label}")
    scipy.io.savemat(devkit / "meta.mat", {"synsets": synsets})
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(_lines(1000 - y for y in labels))
    for i in range(len(labels)):
        write_image(root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", rng.integers(0, 256, 3))
    return list(labels)


def write_webvision(root, imagenet_root=None, seed: int = 0) -> dict:
    """WebVision 1.0: ``info/`` lists, resized Google/Flickr training images, ``val_images_256``;
    labels 0, 1, 49 (mini-WebVision's classes) and 50, 999 (full only). With ``imagenet_root``:
    Kaggle's ``LOC_val_solution.csv`` and ``ILSVRC/Data/CLS-LOC/val/*.JPEG`` (classes 0, 1, 50)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    written = {"google": [], "flickr": [], "val": [], "imagenet": []}
    for source, labels in (("google", [0, 0, 1, 49, 50, 999]), ("flickr", [1, 50, 999])):
        for i, label in enumerate(labels):
            rel = f"{source}/q{label + 1:04d}/{i:06d}.jpg"
            write_image(root / rel, rng.integers(0, 256, 3))
            written[source].append((rel, label))
        (root / "info").mkdir(parents=True, exist_ok=True)
        (root / "info" / f"train_filelist_{source}.txt").write_text(_lines(f"{p} {y}" for p, y in written[source]))
    for i, label in enumerate([0, 1, 49, 50]):
        name = f"val{i + 1:06d}.jpg"
        write_image(root / "val_images_256" / name, rng.integers(0, 256, 3))
        written["val"].append((name, label))
    (root / "info" / "val_filelist.txt").write_text(_lines(f"{p} {y}" for p, y in written["val"]))
    (root / "info" / "synsets.txt").write_text(_lines(f"{wnid(c)} class {c}" for c in range(1000)))
    (root / "info" / "queries_google.txt").write_text(_lines(f"q{c + 1:04d} class {c}" for c in range(1000)))
    if imagenet_root is not None:
        imagenet_root = Path(imagenet_root)
        rows = []
        for i, label in enumerate([50, 0, 1, 0]):
            image_id = f"ILSVRC2012_val_{i + 1:08d}"
            write_image(imagenet_root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"{image_id}.JPEG",
                        rng.integers(0, 256, 3))
            rows.append(f"{image_id},{wnid(label)} 10 20 30 40 {wnid(label)} 1 2 3 4")
            written["imagenet"].append((image_id, label))
        (imagenet_root / "LOC_val_solution.csv").write_text(_lines(["ImageId,PredictionString", *rows]))
    return written


FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "baklava"]


def write_food101n(root, food101_root, seed: int = 0) -> dict:
    """Food-101N_release (``meta/*.tsv``, ``images/<class>/<hash>.jpg``) with three of the 101
    classes, and Food-101's ``meta/test.txt`` + ``images/<class>/<id>.jpg``."""
    rng = np.random.default_rng(seed)
    root, food101_root = Path(root), Path(food101_root)
    keys = [f"{c}/{c[:2]}{i:030x}.jpg" for c in FOOD_CLASSES for i in range(3)]
    for key in keys:
        write_image(root / "images" / key, rng.integers(0, 256, 3))
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "classes.txt").write_text(_lines(["class_name", *FOOD_CLASSES]))
    (root / "meta" / "imagelist.tsv").write_text(_lines(["class_name/key", *keys]))
    train_checks = {keys[0]: 1, keys[1]: 0, keys[3]: 1, keys[6]: 1}  # 1: label right, 0: wrong
    val_checks = {keys[4]: 0}
    for name, checks in (("verified_train", train_checks), ("verified_val", val_checks)):
        (root / "meta" / f"{name}.tsv").write_text(
            _lines(["class_name/key\tverification_label", *(f"{k}\t{v}" for k, v in checks.items())]))
    test = [f"{c}/{100 + i}" for c in FOOD_CLASSES for i in range(2)]
    for key in test:
        write_image(food101_root / "images" / f"{key}.jpg", rng.integers(0, 256, 3))
    (food101_root / "meta").mkdir(parents=True, exist_ok=True)
    (food101_root / "meta" / "test.txt").write_text(_lines(test))
    (food101_root / "meta" / "classes.txt").write_text(_lines(FOOD_CLASSES))
    return {"keys": keys, "train_checks": train_checks, "val_checks": val_checks, "test": test}


def write_animal10n(root, seed: int = 0) -> dict:
    """Animal-10N: ``training/<label>_<id>.jpg`` and ``testing/<label>_<id>.jpg`` (64x64 in the
    real set; 8x8 here)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    written = {}
    for split, n in (("training", 20), ("testing", 10)):
        labels = np.arange(n) % 10
        names = [f"{y}_{i:05d}.jpg" for i, y in enumerate(labels)]
        for name in names:
            write_image(root / split / name, rng.integers(0, 256, 3))
        written[split] = (names, labels)
    return written


def write_image_folder(root, classes=("cat", "dog", "fox"), per_class: int = 10, seed: int = 0,
                       sizes=((12, 9), (7, 15))) -> dict:
    """An ImageFolder tree ``<root>/<class>/<image>``: images of mixed sizes and formats, each
    class a colour of its own (so a network can learn it)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    written = []
    for label, name in enumerate(classes):
        base = np.zeros(3)
        base[label % 3] = 200
        for i in range(per_class):
            path = root / name / f"img{i:03d}.{'png' if i % 2 else 'jpg'}"
            write_image(path, np.clip(base + rng.integers(0, 50, 3), 0, 255), sizes[i % len(sizes)])
            written.append((str(path.relative_to(root)), label))
    return {"images": written, "classes": list(classes)}
