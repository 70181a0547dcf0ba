"""Readers of image-file datasets: WebVision (full and mini), Food-101N, Animal-10N, and the
user's own images (``folder``: an ImageFolder tree; ``table``: a CSV/TSV of paths and labels).

Each reader checks the files of the official release (same names, same layout; see
``docs/datasets.md``) and returns an :class:`ImageList`: relative image paths and labels per
split, read lazily later by DataLoader workers (:mod:`noisylab.data.files`). A missing or
corrupt file raises :class:`~noisylab.errors.DatasetError` with one sentence naming the file,
what was expected and where to get it.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisylab.data.readers import _corrupt, _missing, _need_file
from noisylab.errors import DatasetError

log = logging.getLogger("noisylab")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

WEBVISION_HINT = ("download WebVision 1.0 (the resized images and info/ lists) from "
                  "https://data.vision.ee.ethz.ch/cvl/webvision/download.html and extract it into {root}.")
IMAGENET_HINT = ("put the ILSVRC-2012 validation images and LOC_val_solution.csv (Kaggle's "
                 "imagenet-object-localization-challenge) or the devkit's ground truth into {root} "
                 "(https://image-net.org/download), or set data.imagenet_val=false.")
FOOD101N_HINT = ("download Food-101N_release.zip from https://kuanghuei.github.io/Food-101N/ "
                 "and extract it into {root}.")
FOOD101_HINT = ("download food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ "
                "and extract it into {root} (its meta/test.txt is Food-101N's test set).")
ANIMAL10N_HINT = ("request Animal-10N from https://dm.kaist.ac.kr/datasets/animal-10n/ and extract "
                  "its training/ and testing/ folders into {root}.")
# Animal-10N's label order (its README): five pairs of look-alike animals.
ANIMAL10N_CLASSES = ["cat", "lynx", "wolf", "coyote", "cheetah", "jaguar", "chimpanzee", "orangutan",
                     "hamster", "guinea pig"]


@dataclass
class ImageList:
    """A file-backed dataset. Paths are relative to ``root`` (or absolute); labels int64."""

    name: str                       # for messages ("WebVision")
    root: Path
    hint: str                       # where to get the files
    train: tuple[list[str], np.ndarray]
    test: tuple[list[str], np.ndarray] | None  # None: the datamodule takes data.test_fraction of train
    class_names: list[str]
    train_clean: np.ndarray | None = None     # clean label of each training image, -1 unknown
    train_verified: np.ndarray | None = None  # 1: label checked right, 0: checked wrong, -1: unchecked
    val: tuple[list[str], np.ndarray] | None = None      # a clean validation split of its own
    trusted: tuple[list[str], np.ndarray] | None = None  # the clean pool trusted sets come from
    real_noise: bool = True         # the labels are already noisy: synthetic noise is refused
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def clean_flags(self) -> np.ndarray:
        """Per training image: 1 its label is known right, 0 known wrong, -1 unknown."""
        labels = self.train[1]
        flags = np.full(len(labels), -1, dtype=np.int64)
        if self.train_clean is not None:
            known = self.train_clean >= 0
            flags[known] = (self.train_clean[known] == labels[known]).astype(np.int64)
        if self.train_verified is not None:
            flags = np.where(self.train_verified >= 0, self.train_verified, flags)
        return flags


def _text_lines(dataset: str, path: Path, hint: str, header: str | None = None) -> list[str]:
    """The non-empty lines of a text file, less ``header`` (checked) when given."""
    _need_file(dataset, path, hint)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise _corrupt(dataset, path, f"cannot read it as text: {e}", hint) from e
    if header is not None:
        if not lines or lines[0].split() != header.split():
            found = lines[0] if lines else "an empty file"
            raise _corrupt(dataset, path, f"the first line is '{found}', expected the header '{header}'", hint)
        lines = lines[1:]
    return lines


def _numbered_lines(dataset: str, path: Path, hint: str) -> list[tuple[int, str]]:
    """The non-empty lines of a text file with their numbers as an editor shows them."""
    _need_file(dataset, path, hint)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise _corrupt(dataset, path, f"cannot read it as text: {e}", hint) from e
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _path_label_lines(dataset, path, hint, num_classes=None):
    """``<relative path> <integer label>`` lines as (paths, labels)."""
    paths, labels = [], []
    for number, line in _numbered_lines(dataset, path, hint):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or (num_classes and int(parts[1]) >= num_classes):
            bound = f" 0..{num_classes - 1}" if num_classes else ""
            raise _corrupt(dataset, path, f"line {number} is '{line}', expected '<image path> <label{bound}>'", hint)
        paths.append(parts[0])
        labels.append(int(parts[1]))
    return paths, np.asarray(labels, dtype=np.int64)


def _need_dir(dataset: str, path: Path, hint: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{dataset} not found: expected folder {path}; {hint}")
    return path


# ----------------------------------------------------------------------------- WebVision


def _synsets(root: Path, hint: str) -> list[str] | None:
    """WNIDs of info/synsets.txt (``n01440764 tench, ...``: line i is label i), or None."""
    path = root / "info" / "synsets.txt"
    if not path.is_file():
        return None
    return [line.split()[0] for line in _text_lines("WebVision", path, hint)]


WEBVISION_CLASSES = 1000  # a list's label beyond them is an error of the file, not a class to leave out


def read_webvision(root, num_classes: int = 1000, flickr: bool = True, val_folder: str = "val_images_256",
                   imagenet_root=None) -> ImageList:
    """WebVision 1.0 (Li et al. 2017). Training: ``info/train_filelist_google.txt`` (and
    ``_flickr.txt`` when ``flickr``), lines ``google/q0001/000000.jpg 0``, images under
    ``root``; labels below ``num_classes`` only (mini-WebVision, as MentorNet / DivideMix: the
    first 50 classes of the Google images). Validation: ``info/val_filelist.txt`` (lines
    ``val000001.jpg 0``), images under ``root/<val_folder>``. With ``imagenet_root``: the
    ILSVRC-2012 validation images of the same classes become the test set (and WebVision's
    val the validation split), labels matched by WNID through ``info/synsets.txt``."""
    root = Path(root).expanduser()
    hint = WEBVISION_HINT.format(root=root)
    sources = ["google", "flickr"] if flickr else ["google"]
    paths, labels = [], []
    for source in sources:
        p, y = _path_label_lines("WebVision", root / "info" / f"train_filelist_{source}.txt", hint, WEBVISION_CLASSES)
        keep = y < num_classes
        paths += [p[i] for i in np.flatnonzero(keep)]
        labels.append(y[keep])
    val_paths, val_labels = _path_label_lines("WebVision", root / "info" / "val_filelist.txt", hint, WEBVISION_CLASSES)
    keep = np.flatnonzero(val_labels < num_classes)
    _need_dir("WebVision", root / val_folder, hint)
    val = ([f"{val_folder}/{val_paths[i]}" for i in keep], val_labels[keep])
    wnids = _synsets(root, hint)
    names = [str(c) for c in range(num_classes)] if wnids is None else wnids[:num_classes]
    train = (paths, np.concatenate(labels))
    if imagenet_root is None:
        return ImageList("WebVision", root, hint, train, val, names)
    if wnids is None:
        raise _missing("WebVision", root / "info" / "synsets.txt",
                       "it maps labels to the ImageNet WNIDs of the second test set; " + hint)
    test = read_imagenet_val(imagenet_root, wnids[:num_classes])
    return ImageList("WebVision", root, hint, train, test, names, val=val)


def read_imagenet_val(root, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    """ILSVRC-2012 validation images of the classes ``wnids`` (label = position there), as
    absolute paths. Either Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``,
    the first WNID of the string) with images in ``ILSVRC/Data/CLS-LOC/val/<ImageId>.JPEG``,
    or the devkit: ``ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt`` (one
    ILSVRC2012_ID per image) and ``data/meta.mat`` (ID -> WNID), images in
    ``val/ILSVRC2012_val_%08d.JPEG``."""
    root = Path(root).expanduser()
    hint = IMAGENET_HINT.format(root=root)
    position = {w: i for i, w in enumerate(wnids)}
    solution = root / "LOC_val_solution.csv"
    pairs = []
    if solution.is_file():
        folder = _need_dir("ImageNet val", root / "ILSVRC" / "Data" / "CLS-LOC" / "val", hint)
        for number, line in enumerate(_text_lines("ImageNet val", solution, hint, "ImageId,PredictionString"), 2):
            image, _, boxes = line.partition(",")
            if not boxes.split():
                raise _corrupt("ImageNet val", solution, f"line {number} is '{line}', expected "
                               "'<ImageId>,<WNID> <box> ...'", hint)
            pairs.append((str(folder / f"{image}.JPEG"), boxes.split()[0]))
    else:
        devkit = root / "ILSVRC2012_devkit_t12" / "data"
        truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
        if not truth.is_file():
            raise DatasetError(f"ImageNet val not found: expected {solution} or {truth}; {hint}")
        ids = _imagenet_ids(devkit / "meta.mat", hint)
        folder = _need_dir("ImageNet val", root / "val", hint)
        for number, line in enumerate(_text_lines("ImageNet val", truth, hint), start=1):
            if not line.isdigit() or int(line) not in ids:
                raise _corrupt("ImageNet val", truth, f"line {number} is '{line}', expected an ILSVRC2012_ID", hint)
            pairs.append((str(folder / f"ILSVRC2012_val_{number:08d}.JPEG"), ids[int(line)]))
    kept = [(p, position[w]) for p, w in sorted(pairs) if w in position]
    return [p for p, _ in kept], np.asarray([y for _, y in kept], dtype=np.int64)


def _imagenet_ids(path: Path, hint: str) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID from the devkit's meta.mat (struct array ``synsets``)."""
    from scipy.io import loadmat

    _need_file("ImageNet devkit", path, hint)
    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in np.atleast_1d(synsets)}
    except Exception as e:  # not a .mat, no synsets, other fields
        raise _corrupt("ImageNet devkit", path, f"no synsets with ILSVRC2012_ID and WNID: {e}", hint) from e


# ----------------------------------------------------------------------------- Food-101N


def read_food101n(root, food101_root) -> ImageList:
    """Food-101N (Lee et al., CVPR 2018, CleanNet): ``meta/classes.txt`` (header
    ``class_name``), ``meta/imagelist.tsv`` (header ``class_name/key``; the class folder is the
    noisy label), ``meta/verified_train.tsv`` / ``verified_val.tsv`` (header
    ``class_name/key	verification_label``: 1 the label is right, 0 wrong), images in
    ``images/<class>/<key>``. Test set: Food-101's ``meta/test.txt`` (``apple_pie/1011328``)
    with images ``images/<class>/<id>.jpg`` under ``food101_root``. The verified-right images
    form the trusted pool; every verification is ground truth for the detection AUC."""
    root, food101_root = Path(root).expanduser(), Path(food101_root).expanduser()
    hint = FOOD101N_HINT.format(root=root)
    names = _text_lines("Food-101N", root / "meta" / "classes.txt", hint, "class_name")
    index = {name: i for i, name in enumerate(names)}

    def label_of(path: Path, number: int, key: str) -> int:
        cls = key.split("/")[0]
        if "/" not in key or cls not in index:
            raise _corrupt("Food-101N", path, f"line {number} names '{key}', expected '<class>/<file>' with a "
                           "class of meta/classes.txt", hint)
        return index[cls]

    listing = root / "meta" / "imagelist.tsv"
    keys = _text_lines("Food-101N", listing, hint, "class_name/key")
    labels = np.asarray([label_of(listing, n, k) for n, k in enumerate(keys, 2)], dtype=np.int64)
    position = {k: i for i, k in enumerate(keys)}
    verified = np.full(len(keys), -1, dtype=np.int64)
    trusted_paths, trusted_labels = [], []
    for split in ("verified_train", "verified_val"):
        path = root / "meta" / f"{split}.tsv"
        for number, line in enumerate(_text_lines("Food-101N", path, hint, "class_name/key verification_label"), 2):
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1"):
                raise _corrupt("Food-101N", path, f"line {number} is '{line}', expected '<class>/<file>\\t<0 or 1>'",
                               hint)
            key, flag = parts[0], int(parts[1])
            label = label_of(path, number, key)
            if key in position and labels[position[key]] == label:  # a few keys are listed under another class
                verified[position[key]] = flag
            if flag == 1 and split == "verified_train":
                trusted_paths.append(f"images/{key}")
                trusted_labels.append(label)
    food_hint = FOOD101_HINT.format(root=food101_root)
    test_list = food101_root / "meta" / "test.txt"
    test_keys = _text_lines("Food-101", test_list, food_hint)
    test_labels = []
    for number, key in enumerate(test_keys, 1):
        if key.split("/")[0] not in index:
            raise _corrupt("Food-101", test_list, f"line {number} names '{key}', expected '<class>/<id>' with a "
                           "class of Food-101N's meta/classes.txt", food_hint)
        test_labels.append(index[key.split("/")[0]])
    test = ([str(food101_root / "images" / f"{k}.jpg") for k in test_keys], np.asarray(test_labels, dtype=np.int64))
    return ImageList("Food-101N", root, hint, ([f"images/{k}" for k in keys], labels), test, names,
                     train_verified=verified, trusted=(trusted_paths, np.asarray(trusted_labels, dtype=np.int64)))


# ----------------------------------------------------------------------------- Animal-10N


def _animal_split(root: Path, split: str, hint: str):
    folder = _need_dir("Animal-10N", root / split, hint)
    paths = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DatasetError(f"Animal-10N folder {folder} holds no images; {hint}")
    bad = next((p for p in paths if not p[0].isdigit()), None)
    if bad is not None:
        raise _corrupt("Animal-10N", folder / bad, "its name does not start with the label digit 0..9 "
                       "(as 3_01234.jpg)", hint)
    return [f"{split}/{p}" for p in paths], np.asarray([int(p[0]) for p in paths], dtype=np.int64)


def read_animal10n(root) -> ImageList:
    """Animal-10N (Song et al., ICML 2019, SELFIE): ``training/`` (50,000) and ``testing/``
    (5,000) 64x64 images, the label the first character of the file name (``<label>_<id>.jpg``)."""
    root = Path(root).expanduser()
    hint = ANIMAL10N_HINT.format(root=root)
    return ImageList("Animal-10N", root, hint, _animal_split(root, "training", hint),
                     _animal_split(root, "testing", hint), list(ANIMAL10N_CLASSES))


# ----------------------------------------------------------------------------- the user's own data

OWN_HINT = "see docs/datasets.md (your own data)."


def _hidden(path: Path, root: Path) -> bool:
    """A name starting with "." below ``root``: .ipynb_checkpoints, macOS's ._photo.jpg copies."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _images_in(folder: Path) -> list[Path]:
    """Every image below ``folder``, hidden names left out, links to folders followed as a
    link to a class folder is (each real folder once: a link loop ends)."""
    found, seen = [], set()
    for current, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        folders[:] = [] if real in seen else sorted(d for d in folders if not d.startswith("."))
        if real not in seen:
            seen.add(real)
            found += [Path(current) / name for name in files
                      if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(p for p in found if p.is_file())


# <root>/train/<class>/... beside val/ or test/ (ImageNet's layout has train/ and val/)
SPLIT_FOLDERS = ("train", "val", "test")


def read_folder(root) -> ImageList:
    """An ImageFolder tree ``<root>/<class>/<image>`` (classes: the sorted folder names), or
    split folders ``<root>/train/<class>/...`` with ``test/`` (the test set) and/or ``val/``
    (beside ``test/``: a clean validation set; alone, as ImageNet's, the test set)."""
    root = Path(root).expanduser()
    _need_dir("data=folder", root, "set data.root to a folder of class folders; " + OWN_HINT)
    tops = {p.name for p in root.iterdir() if p.is_dir() and not _hidden(p, root)}
    splits = "train" in tops and len(tops) > 1 and tops <= set(SPLIT_FOLDERS)
    top = root / "train" if splits else root
    names = sorted(p.name for p in top.iterdir() if p.is_dir() and not _hidden(p, top))
    if len(names) < 2:
        raise DatasetError(f"data=folder needs at least two class folders in {top} (<class>/<image>), "
                           f"found {len(names)}; " + OWN_HINT)
    broken = [p for p in sorted(root.rglob("*")) if p.is_symlink() and not p.exists() and not _hidden(p, root)]
    if broken:  # an image linked from elsewhere that is gone: not left out in silence
        raise DatasetError(f"data=folder: {len(broken)} link(s) below {root} point nowhere, the first {broken[0]} "
                           f"(to {os.readlink(broken[0])}); restore or remove them; " + OWN_HINT)
    empty = [name for name in names if not _images_in(top / name)]
    if empty:  # a class no training image shows: an output the network could never learn
        raise DatasetError(f"data=folder: the class folder {top / empty[0]} holds no images "
                           f"({', '.join(IMAGE_EXTENSIONS)}); add some or move it out of {top}; " + OWN_HINT)
    loose = [p for p in top.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not _hidden(p, top)]
    if loose:  # an image's class is its folder: one outside every class folder has none
        log.warning("data=folder: %d image(s) directly in %s, outside the class folders, are left out (the first %s).",
                    len(loose), top, sorted(loose)[0].name)

    def split(folder: Path):
        unknown = sorted({p.name for p in folder.iterdir() if p.is_dir() and not _hidden(p, folder)} - set(names))
        if unknown:  # a test class the network never trained on: its images would vanish from the score
            raise DatasetError(f"data=folder: {folder} has the class folder {unknown[0]}, which {top} lacks; every "
                               "class to test needs training images; " + OWN_HINT)
        paths, labels = [], []
        for label, name in enumerate(names):
            found = _images_in(folder / name) if (folder / name).is_dir() else []
            paths += [str(p.relative_to(root)) for p in found]
            labels += [label] * len(found)
        if not paths:
            raise DatasetError(f"data=folder found no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders "
                               f"of {folder}; " + OWN_HINT)
        return paths, np.asarray(labels, dtype=np.int64)

    test_folder = "test" if "test" in tops else "val"
    test = split(root / test_folder) if splits else None
    val = split(root / "val") if splits and {"val", "test"} <= tops else None
    return ImageList("data=folder", root, OWN_HINT, split(top), test, names, val=val, real_noise=False)


TABLE_COLUMNS = ("path", "label", "split", "clean_label")


def read_table(path, root=None) -> ImageList:
    """A CSV or TSV (by extension; ``.tsv``/``.tab`` tab-separated) with a header naming
    ``path,label`` and optionally ``split`` (train/val/test) and ``clean_label`` (empty or -1
    where unknown). Labels are class names or integers (``3``, ``03`` and ``3.0``, as pandas
    writes them, are class 3); paths are relative to ``root`` (default: the table's folder) or
    absolute."""
    path = Path(path).expanduser()
    hint = "a table with the header path,label[,split][,clean_label]; " + OWN_HINT
    _need_file("data=table", path, hint)
    base = Path(root).expanduser() if root else path.parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: the byte-order mark spreadsheets write
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
            rows, lines = [], []
            for row in reader:  # the line a row ends on, blank lines counted, as an editor shows it
                rows.append(row)
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _corrupt("data=table", path, f"cannot read it: {e}", hint) from e
    columns = [c.strip() for c in (rows[0].keys() if rows else [])]
    if not rows or "path" not in columns or "label" not in columns:
        raise _corrupt("data=table", path, f"its header is {columns or 'missing'}, expected path,label", hint)
    rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in rows]
    for number, row in zip(lines, rows, strict=True):
        if not row["path"] or not row["label"]:
            raise _corrupt("data=table", path, f"line {number} has no path or no label", hint)
        if row.get("split", "") not in ("", "train", "val", "test"):
            raise _corrupt("data=table", path, f"line {number} has split '{row['split']}', expected train, val "
                           "or test", hint)
        if re.fullmatch(r"-\d+(\.0*)?", row["label"]):
            raise _corrupt("data=table", path, f"line {number} has label {row['label']}, a negative class; write an "
                           "unknown clean label as empty or -1 in clean_label, never as the label", hint)
        if re.fullmatch(r"-\d+(\.0*)?", row.get("clean_label", "")):
            row["clean_label"] = ""  # -1: the usual mark of an unknown clean label
    first_line = {}
    for number, row in zip(lines, rows, strict=True):  # one row per image: a second is a vote or a leak
        key = os.path.normpath(base / row["path"])  # a relative and an absolute path to one image are one key
        if key in first_line:
            earlier_number, earlier = first_line[key]
            what = (f"in split {earlier.get('split') or 'train'} and {row.get('split') or 'train'}"
                    if (earlier.get("split") or "train") != (row.get("split") or "train") else
                    f"with labels {earlier['label']} and {row['label']}" if earlier["label"] != row["label"]
                    else "twice")
            raise _corrupt("data=table", path, f"lines {earlier_number} and {number} list {row['path']} {what}; give "
                           "each image one row (one label, one split)", hint)
        first_line[key] = number, row
    names_seen = {row["label"] for row in rows} | {row["clean_label"] for row in rows if row.get("clean_label")}
    if all(re.fullmatch(r"\d+(\.0*)?", n) for n in names_seen):
        index = {n: int(float(n)) for n in names_seen}  # "03", "3", "3.0": class 3
        names = [str(c) for c in range(max(index.values()) + 1)]
        absent = sorted(set(range(len(names))) - set(index.values()))
        if absent:  # a class no row names: noise would flip labels into it, the network would predict it
            shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
            raise _corrupt("data=table", path, f"its integer labels name classes 0..{len(names) - 1}, but no row has "
                           f"class {shown}; number the classes 0..C-1 without gaps, or give class names", hint)
    else:
        names = sorted(names_seen)
        index = {n: i for i, n in enumerate(names)}
    if len(names) < 2:
        raise _corrupt("data=table", path, f"it names {len(names)} class, expected at least two", hint)
    trained = {index[row["label"]] for row in rows if (row.get("split") or "train") == "train"}
    untrained = [names[c] for c in range(len(names)) if c not in trained]
    if trained and untrained:  # an output the network never sees a training label for, yet is scored on
        raise _corrupt("data=table", path, f"class {untrained[0]} has no training row (only val/test rows or clean "
                       "labels name it); every class needs training images", hint)

    def part(kind):
        chosen = [r for r in rows if (r.get("split") or "train") == kind]
        if not chosen:
            return None, None
        clean = np.asarray([index[r["clean_label"]] if r.get("clean_label") else -1 for r in chosen], dtype=np.int64)
        return ([r["path"] for r in chosen], np.asarray([index[r["label"]] for r in chosen], dtype=np.int64)), clean

    train, clean = part("train")
    if train is None:
        raise _corrupt("data=table", path, "it has no training rows (split empty or train)", hint)
    return ImageList("data=table", base, hint, train, part("test")[0], names,
                     train_clean=clean if (clean >= 0).any() else None, val=part("val")[0], real_noise=False)

