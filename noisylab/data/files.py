"""File-backed data (Clothing1M, WebVision, Food-101N, Animal-10N, the user's folder or table):
images decoded by DataLoader workers, never held in memory.

Per image: ``Resize(data.resize)`` (short side), then ``RandomCrop(data.crop_size)`` (with
``data.crop_padding``) and a horizontal flip for training, ``CenterCrop(data.crop_size)`` for
evaluation, then the dataset's mean/std (Clothing1M's own, else ImageNet's): Clothing1M's
usual protocol (DivideMix, ELR+) at 256/224. ``data.batches_per_epoch``: each epoch draws
``batches_per_epoch * batch_size`` noisy samples, balanced over the noisy classes.
``data.subset``: a seeded random subset of that many training images, for a quick look.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from noisylab.data.batches import PassSeeds
from noisylab.errors import ConfigError, DatasetError
from noisylab.noise import make_noisy_labels, realised


class ImageFiles(Dataset):
    """(path, label, clean label) triples -> ``{x, y, index, y_true}``. A key is an index, or
    ``(seed, index)`` from :class:`SeededOrder` (the pass's seed): the random transform then
    draws from a stream of its own, seeded by both, so that a sample's augmentation depends
    neither on the number of loader workers nor on which worker decodes it (a resumed run ends
    as an uninterrupted one)."""

    def __init__(self, images, paths, labels, clean, transform, unaugmented=None):
        self.root, self.name, self.hint = images.root, images.name, images.hint
        self.paths, self.transform = list(paths), transform
        self.labels = np.asarray(labels, dtype=np.int64)
        self.clean = np.asarray(clean, dtype=np.int64)
        self.unaugmented_transform = unaugmented  # None: the transform is deterministic already

    def __len__(self) -> int:
        return len(self.paths)

    def unaugmented(self) -> ImageFiles:
        """The same images through the evaluation transform (a pass over the training set)."""
        if self.unaugmented_transform is None:
            return self
        plain = copy.copy(self)
        plain.transform, plain.unaugmented_transform = self.unaugmented_transform, None
        return plain

    def __getitem__(self, key) -> dict:
        from noisylab.data.readers import load_image

        seed, i = key if isinstance(key, tuple) else (None, key)
        image = load_image(self.root, self.paths[i], self.name, self.hint)
        if seed is None:
            x = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):  # the main stream is left as it was (CPU only: 1 us)
                torch.default_generator.manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
                x = self.transform(image)
        return {"x": x, "y": int(self.labels[i]), "index": i, "y_true": int(self.clean[i])}


class SeededOrder(Sampler):
    """Each pass: the order of the samples (shuffled or not) and a seed that goes with each
    (``(seed, index)`` keys), from the pass's seed (:class:`~noisylab.data.batches.PassSeeds`)."""

    def __init__(self, size: int, shuffle: bool, seeds: PassSeeds):
        self.size, self.shuffle, self.seeds = int(size), bool(shuffle), seeds

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        seed = self.seeds.next()
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(seed)).tolist() if self.shuffle \
            else range(self.size)
        return ((seed, i) for i in order)


class BalancedEpochSampler(Sampler):
    """Each pass, ``num_samples`` indices drawn class-balanced (without replacement), as
    ``(seed, index)`` keys drawn like :class:`SeededOrder`'s."""

    def __init__(self, labels: np.ndarray, num_samples: int, seeds: PassSeeds):
        self.labels, self.num_samples, self.seeds = np.asarray(labels), int(num_samples), seeds

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        seed = self.seeds.next()
        rng = np.random.default_rng(seed)
        classes = np.unique(self.labels)
        per_class = -(-self.num_samples // len(classes))
        picked = []
        for c in classes:
            members = np.flatnonzero(self.labels == c)
            picked.append(rng.permutation(members)[:per_class])
        order = rng.permutation(np.concatenate(picked))[: self.num_samples]
        return ((seed, i) for i in order.tolist())


def image_transforms(cfg, mean, std):
    from torchvision import transforms as T

    resize, size = int(cfg.get("resize", 256)), int(cfg.get("crop_size", 224))
    normalize = T.Normalize(mean, std)
    crop = T.RandomCrop(size, padding=int(cfg.get("crop_padding", 0)) or None, pad_if_needed=True)
    train = T.Compose([T.Resize(resize), crop, T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    evaluate = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), normalize])
    return train, evaluate


def _take(part, index):
    paths, labels = part
    return [paths[i] for i in index], np.asarray(labels)[index]


def _held_out(labels: np.ndarray, fraction: float, rng) -> np.ndarray:
    """A class-stratified ``fraction`` of the positions of ``labels`` (at least one per class
    with two or more members)."""
    picked = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(members)))
        picked.append(members[: max(n, 1) if len(members) > 1 else 0])
    return np.sort(np.concatenate(picked))


def _trusted_list(cfg, num_classes):
    """``data.trusted_list``: a file of ``<image path> <label>`` lines (e.g. IEG's 10 ImageNet
    training images per WebVision class), paths relative to the dataset's root or absolute."""
    from noisylab.data.image_lists import _path_label_lines

    path = Path(str(cfg.trusted_list)).expanduser()
    return _path_label_lines("data.trusted_list", path, "give a file of '<image path> <label>' lines.", num_classes)


def missing_images(root, paths) -> list[str]:
    """The listed images that are not files under ``root`` (paths relative to it or absolute).
    Each folder is listed once, not each file stat-ed: a million images in a thousand folders
    (Clothing1M's layout) cost a thousand directory reads, also on a cluster's network disk."""
    import os
    from collections import defaultdict

    base, by_folder = os.path.expanduser(str(root)), defaultdict(list)
    for rel in paths:
        full = os.path.join(base, rel)
        by_folder[os.path.dirname(full)].append((rel, os.path.basename(full)))
    missing = []
    for folder, members in by_folder.items():
        try:
            with os.scandir(folder) as entries:
                files = {e.name for e in entries if e.is_file()}  # follows links, as opening does
        except OSError:
            files = set()
        missing.extend(rel for rel, name in members if name not in files)
    return missing


def unreadable_images(root, paths) -> list[tuple[str, str]]:
    """The listed images whose header no image format recognises (an empty file, a web page
    saved as .jpg, a file cut off before its header), with the reason. Only the first bytes of
    each are read, by threads (a network disk answers many requests at once); a file cut off
    later in its pixels is still found only when decoded."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    base = os.path.expanduser(str(root))

    def fault(rel):
        try:
            with Image.open(os.path.join(base, rel)):
                return None
        except Exception as error:  # noqa: BLE001 - every reader failure is the same user error
            return rel, f"{type(error).__name__}: {(str(error).splitlines() or ['unreadable'])[0]}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [found for found in pool.map(fault, paths, chunksize=256) if found]


def check_images(images, parts) -> None:
    """Every image a run will read exists and has an image header, checked before the run
    folder is touched: an image found missing or empty in the middle of training would fail a
    run that has already replaced the folder's earlier one."""
    paths = [p for part in parts if part is not None for p in part.paths]
    missing = missing_images(images.root, paths)
    if missing:
        first = Path(images.root).expanduser() / missing[0]
        raise DatasetError(f"{images.name}: {len(missing)} of the {len(paths)} images it lists are missing, the first "
                           f"{first}; {images.hint.format(root=images.root)}")
    unreadable = unreadable_images(images.root, sorted(set(paths)))
    if unreadable:
        (first, why), count = unreadable[0], len(unreadable)
        raise DatasetError(f"{images.name}: {count} of the {len(paths)} images it lists are not readable images, the "
                           f"first {Path(images.root).expanduser() / first} ({why}); replace or remove them.")


def file_splits(source, cfg, noise_cfg, trusted_per_class: int, epoch_of=None):
    """(train, val, trusted, test) loader factories, the noisy labels realised on the images
    whose clean label is known, and each training image's clean flag (1/0/-1). ``epoch_of``
    tells the current epoch (each pass's order and augmentation seeds: ``PassSeeds``)."""
    images = source.files
    images = images.image_list() if hasattr(images, "image_list") else images
    rng = np.random.default_rng(int(cfg.get("split_seed", 0)))
    train, clean = images.train, images.train_clean
    clean = np.full(len(train[1]), -1, np.int64) if clean is None else clean
    flags = images.clean_flags()
    subset = cfg.get("subset")
    if subset is not None and int(subset) < len(train[1]):
        keep = np.sort(rng.permutation(len(train[1]))[: int(subset)])
        train, clean, flags = _take(train, keep), clean[keep], flags[keep]
    test = images.test
    if test is None:  # the user's data without a test split: a stratified part of it
        held = _held_out(train[1], float(cfg.get("test_fraction", 0.2)), rng)
        rest = np.setdiff1d(np.arange(len(train[1])), held)
        test = _take(train, held)
        test = (test[0], np.where(clean[held] >= 0, clean[held], test[1]))
        train, clean, flags = _take(train, rest), clean[rest], flags[rest]
    labels = np.asarray(train[1])
    if noise_cfg.get("kind") != "none":
        if images.real_noise:
            raise ConfigError(f"{images.name} labels are already noisy (real noise): use noise=none with it.")
        clean = labels  # the user's labels taken as clean, the noise drawn on them
        labels = make_noisy_labels(labels, source.num_classes, noise_cfg).labels
        flags = (labels == clean).astype(np.int64)
    paths = train[0]
    val, val_clean = images.val, None if images.val is None else images.val[1]
    val_fraction = float(cfg.get("val_fraction", 0.0) or 0.0)
    if val is None and val_fraction > 0:  # of the noisy training images, as the array datasets
        held = np.sort(rng.permutation(len(labels))[: int(round(val_fraction * len(labels)))])
        rest = np.setdiff1d(np.arange(len(labels)), held)
        val, val_clean = ([paths[i] for i in held], labels[held]), clean[held]
        paths, labels, clean, flags = [paths[i] for i in rest], labels[rest], clean[rest], flags[rest]
    train_tf, eval_tf = image_transforms(cfg, images.mean, images.std)
    workers = int(cfg.get("num_workers", 4))

    def factory(dataset, balanced_batches=None):
        def make(batch_size, shuffle, drop_last=False, augment=True, seed=0):
            """``augment=False``: the evaluation transform, in index order (a pass over the set)."""
            chosen = dataset if augment else dataset.unaugmented()
            sampler = None
            if augment and balanced_batches:
                sampler = BalancedEpochSampler(dataset.labels, balanced_batches * batch_size, PassSeeds(seed, epoch_of))
            elif shuffle or chosen.unaugmented_transform is not None:  # random order or random transform
                sampler = SeededOrder(len(chosen), shuffle, PassSeeds(seed, epoch_of))
            # generator: the loader's own draw (its workers' base seed) leaves the main stream alone, which
            # it would consume once per epoch or once in all (persistent workers), by the number of workers
            return DataLoader(chosen, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers,
                              pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                              generator=torch.Generator().manual_seed(0))
        make.dataset = dataset
        return make

    known = clean >= 0
    noisy = realised(clean[known], labels[known], source.num_classes)
    checked = flags >= 0  # every training label; the rate over the labels known right or wrong
    noisy = type(noisy)(labels, noisy.transition, float(np.mean(flags[checked] == 0)) if checked.any() else 0.0)
    train_set = factory(ImageFiles(images, paths, labels, clean, train_tf, eval_tf), cfg.get("batches_per_epoch"))
    val_set = factory(ImageFiles(images, *val, val_clean, eval_tf)) if val is not None else None
    test_set = factory(ImageFiles(images, *test, test[1], eval_tf))
    trusted = None
    if trusted_per_class > 0:
        pool = _trusted_list(cfg, source.num_classes) if cfg.get("trusted_list") else images.trusted
        if pool is None and (clean >= 0).any():  # the training images whose clean label the table gives
            pool = ([paths[i] for i in np.flatnonzero(clean >= 0)], clean[clean >= 0])
        if pool is None:
            raise ConfigError(f"{images.name} has no clean images for a trusted set: give data.trusted_list, a file "
                              "of '<image path> <label>' lines of images whose labels you checked.")
        picked = []
        for c in range(source.num_classes):
            members = np.flatnonzero(np.asarray(pool[1]) == c)
            if len(members) < trusted_per_class:
                raise ConfigError(f"data.trusted_per_class={trusted_per_class} is larger than class {c} of "
                                  f"{images.name}'s clean images ({len(members)}).")
            picked.extend(members[:trusted_per_class].tolist())
        chosen_paths, chosen = _take(pool, picked)
        trusted = factory(ImageFiles(images, chosen_paths, chosen, chosen, train_tf, eval_tf))
    check_images(images, [loader and loader.dataset for loader in (train_set, val_set, trusted, test_set)])
    return train_set, val_set, trusted, test_set, noisy, flags
