"""File-backed data (Clothing1M): JPEG folders read by DataLoader workers.

Clothing1M's usual protocol (DivideMix, ELR+): Resize(256), RandomCrop(224) + flip for
training, CenterCrop(224) for evaluation, its own mean/std; each epoch draws
``batches_per_epoch * batch_size`` noisy samples, balanced over the 14 noisy classes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from noisylab.errors import ConfigError
from noisylab.noise import realised

CLOTHING1M_MEAN = (0.6959, 0.6537, 0.6371)
CLOTHING1M_STD = (0.3113, 0.3192, 0.3214)


class ImageFiles(Dataset):
    """(relative path, label, clean label) triples -> ``{x, y, index, y_true}``."""

    def __init__(self, root, paths, labels, clean, transform):
        self.root, self.paths, self.transform = root, list(paths), transform
        self.labels = np.asarray(labels, dtype=np.int64)
        self.clean = np.asarray(clean, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        from noisylab.data.readers import load_clothing1m_image

        image = load_clothing1m_image(self.root, self.paths[i])
        return {"x": self.transform(image), "y": int(self.labels[i]), "index": i, "y_true": int(self.clean[i])}


class BalancedEpochSampler(Sampler[int]):
    """Each epoch, ``num_samples`` indices drawn class-balanced (without replacement)."""

    def __init__(self, labels: np.ndarray, num_samples: int, seed: int = 0):
        self.labels, self.num_samples = np.asarray(labels), int(num_samples)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        classes = np.unique(self.labels)
        per_class = -(-self.num_samples // len(classes))
        picked = []
        for c in classes:
            members = np.flatnonzero(self.labels == c)
            picked.append(self.rng.permutation(members)[:per_class])
        order = self.rng.permutation(np.concatenate(picked))[: self.num_samples]
        return iter(order.tolist())


def clothing1m_transforms(size: int):
    from torchvision import transforms as T

    normalize = T.Normalize(CLOTHING1M_MEAN, CLOTHING1M_STD)
    train = T.Compose([T.Resize(256), T.RandomCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    evaluate = T.Compose([T.Resize(256), T.CenterCrop(size), T.ToTensor(), normalize])
    return train, evaluate


def clothing1m_splits(source, cfg, trusted_per_class: int):
    """Loader factories for the noisy train set, clean val, clean-train trusted set, clean test."""
    files = source.files
    size = int(cfg.get("crop_size", 224))
    train_tf, eval_tf = clothing1m_transforms(size)
    workers = int(cfg.get("num_workers", 4))
    paths, labels = files.noisy_train
    clean = files.clean_label_of(paths)

    def factory(dataset, balanced_batches=None):
        def make(batch_size, shuffle, drop_last=False):
            sampler = None
            if balanced_batches:
                sampler = BalancedEpochSampler(dataset.labels, balanced_batches * batch_size, int(cfg.get("split_seed", 0)))
                shuffle = False
            return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                              drop_last=drop_last, num_workers=workers, pin_memory=torch.cuda.is_available(),
                              persistent_workers=workers > 0)
        make.dataset = dataset
        return make

    known = clean >= 0
    noisy = realised(clean[known], np.asarray(labels)[known], source.num_classes)
    train = factory(ImageFiles(files.root, paths, labels, clean, train_tf), cfg.get("batches_per_epoch"))
    val = factory(ImageFiles(files.root, *files.clean_val, files.clean_val[1], eval_tf))
    test = factory(ImageFiles(files.root, *files.clean_test, files.clean_test[1], eval_tf))
    trusted = None
    if trusted_per_class > 0:
        trusted_paths, trusted_labels = files.clean_train
        picked = []
        for c in range(source.num_classes):
            members = np.flatnonzero(np.asarray(trusted_labels) == c)
            if len(members) < trusted_per_class:
                raise ConfigError(
                    f"data.trusted_per_class={trusted_per_class} is larger than class {c} of "
                    f"Clothing1M's clean training set ({len(members)} images)."
                )
            picked.extend(members[:trusted_per_class].tolist())
        chosen_paths = [trusted_paths[i] for i in picked]
        chosen = np.asarray(trusted_labels)[picked]
        trusted = factory(ImageFiles(files.root, chosen_paths, chosen, chosen, train_tf))
    return train, val, trusted, test, noisy
