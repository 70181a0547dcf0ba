"""NoisyDataModule: a data source + a noise model -> noisy train, val, trusted and test splits.

Batches are mappings ``{x, y, index, y_true}``: ``y`` is the observed (possibly noisy)
label, ``index`` the sample's position in the noisy training split (for per-sample state),
``y_true`` the clean label where known and -1 where not. ``y_true`` is for diagnostics
only; no method may train on it.

Splits, in this order, from one seeded permutation of the training set:
validation (``val_fraction`` of the *noisy* training data: in practice nobody has clean
validation labels), then ``trusted_per_class`` clean samples per class (for methods that
need a small trusted/probe set), then the noisy training split. A source with a target set
of its own (SOSELETO's settings: ``toy2d``, ``svhn_to_mnist``) gives the trusted samples
from that set instead, and the training split keeps all the rest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from noisylab.data.batches import BatchTransform, TensorBatches
from noisylab.data.sources import Source, load_source
from noisylab.errors import ConfigError
from noisylab.methods.contract import fits
from noisylab.noise import (
    NoisyLabels,
    check_file_agrees,
    describe,
    fingerprint,
    make_noisy_labels,
    noise_name,
    read_noise_file,
    realised,
)

log = logging.getLogger(__name__)


def _subset(index: np.ndarray, x, y, y_true) -> dict[str, torch.Tensor]:
    return {
        "x": torch.from_numpy(np.ascontiguousarray(x[index])),
        "y": torch.from_numpy(y[index].astype(np.int64)),
        "index": torch.arange(len(index)),
        "y_true": torch.from_numpy(y_true[index].astype(np.int64)),
    }


class NoisyDataModule(pl.LightningDataModule):
    def __init__(self, data, noise, batch_size: int = 128, eval_batch_size: int = 512,
                 trusted_per_class: int = 0, serve_trusted: bool = False, seed: int = 0,
                 raw_batches: bool = False):
        super().__init__()
        self.data_cfg, self.noise_cfg = data, noise
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.trusted_per_class, self.seed = int(trusted_per_class or 0), int(seed)
        self.serve_trusted = serve_trusted  # the method trains on (noisy, trusted) pairs
        trusted_batch = data.get("trusted_batch_size")
        self.trusted_batch_size = self.batch_size if trusted_batch is None else trusted_batch
        if serve_trusted and not (fits(self.trusted_batch_size, int) and int(self.trusted_batch_size) >= 1):
            raise ConfigError(f"data.trusted_batch_size must be null (the batch size) or a whole number >= 1, "
                              f"got {trusted_batch!r}.")
        self.raw_batches = raw_batches  # training inputs reach the method un-augmented (it calls transform)
        self.transform = BatchTransform(
            data.get("augment", "none"), data.get("mean"), data.get("std"), int(data.get("padding", 4))
        )
        self.source: Source | None = None
        self.noisy: NoisyLabels | None = None
        self.noise_origin: dict = {}  # where the noisy labels came from (noise_summary)

    # ----------------------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Reads the source and applies the noise model once (idempotent)."""
        if self.source is not None:
            return
        self.source = load_source(self.data_cfg)
        if self.source.files is not None:
            self._prepare_files()
        else:
            self._prepare_arrays()
        log.info("noise %s: realised rate %.4f", noise_name(self.noise_cfg), self.noisy.actual_rate)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()
        if self.data_cfg.get("on_device", False) and self.trainer is not None:
            self._move_to(self.trainer.strategy.root_device)

    @property
    def num_classes(self) -> int:
        self.prepare()
        return self.source.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        self.prepare()
        return self.source.input_shape

    @property
    def train_size(self) -> int:
        self.prepare()
        return len(self.train["y"]) if isinstance(self.train, dict) else len(self.train.dataset)

    @property
    def class_names(self) -> list[str] | None:
        self.prepare()
        return self.source.class_names

    @property
    def target_classes(self) -> list[str] | None:
        """Names of the trusted (target) set's and the test set's classes when they are
        another label space than the training set's (transfer), else None."""
        self.prepare()
        return self.source.target_class_names

    @property
    def trusted_size(self) -> int:
        self.prepare()
        if self.trusted is None:
            return 0
        return len(self.trusted["y"]) if isinstance(self.trusted, dict) else len(self.trusted.dataset)

    def train_labels(self) -> dict[str, np.ndarray]:
        """Observed (``y``) and clean (``y_true``, -1 where unknown) label of every training
        sample, in index order, ``clean_flag`` (1 its label is right, 0 wrong, -1 unknown:
        Food-101N's verifications know right from wrong without the true class) and, for
        file-backed data, its ``path`` (for diagnostics and ``per_sample.npz``)."""
        self.prepare()
        if isinstance(self.train, dict):
            return {"y": self.train["y"].cpu().numpy(), "y_true": self.train["y_true"].cpu().numpy(),
                    "clean_flag": self.clean_flags()}
        files = self.train.dataset
        return {"y": files.labels, "y_true": files.clean, "clean_flag": self.clean_flags(),
                "path": np.asarray([str(files.root / p) for p in files.paths])}

    def clean_flags(self) -> np.ndarray:
        """Per training sample: 1 its label is known right, 0 known wrong, -1 unknown (the
        ground truth of the noise-detection AUC)."""
        self.prepare()
        if not isinstance(self.train, dict):
            return self._clean_flags
        y, y_true = self.train["y"].cpu().numpy(), self.train["y_true"].cpu().numpy()
        return np.where(y_true >= 0, (y == y_true).astype(np.int64), -1)

    def ordered_train_batches(self, batch_size: int | None = None):
        """The whole training split in index order, un-augmented, on one process (the pass
        over the training set that loss- and prediction-based methods need)."""
        self.prepare()
        size = int(batch_size or self.eval_batch_size)
        if not isinstance(self.train, dict):
            yield from self.train(batch_size=size, shuffle=False, drop_last=False, augment=False)
            return
        yield from TensorBatches(self.train, size, shuffle=False)

    @property
    def noise_summary(self) -> dict:
        """The noise as applied (``noisylab.noise.describe``): name, kind, rate, convention and
        seed, ``source`` (``generated``, the ``noise.load_from`` file, the label file of human
        noise, or the dataset's own labels), the realised rate and the noisy labels' fingerprint."""
        self.prepare()
        return {
            **describe(self.noise_cfg, self.source.asymmetric_map),
            "source": "generated", **self.noise_origin,
            "actual_rate": round(self.noisy.actual_rate, 6),
            "fingerprint": fingerprint(self.noisy.labels),
        }

    def _noisy_labels(self, source: Source) -> NoisyLabels:
        load_from = self.noise_cfg.get("load_from")
        if load_from:
            saved = read_noise_file(load_from)
            check_file_agrees(saved, describe(self.noise_cfg, source.asymmetric_map))
            if saved.clean.shape != source.y_train.shape or not np.array_equal(saved.clean, source.y_train):
                raise ConfigError(f"noise.load_from={load_from} holds the labels of another training set than this "
                                  f"run's (data={source.name}: {len(source.y_train)} samples here, {len(saved.clean)} in "
                                  "the file, or as many in another order): another dataset, data.test_fraction or split.")
            outside = saved.noisy[(saved.noisy < 0) | (saved.noisy >= source.num_classes)]
            if outside.size:
                raise ConfigError(f"noise.load_from={load_from} holds noisy label {int(outside[0])}, outside the "
                                  f"{source.name} classes 0..{source.num_classes - 1}.")
            self.noise_origin = {"source": str(saved.path), "seed": saved.identity.get("seed")}
            return realised(source.y_train, saved.noisy, source.num_classes)
        origin = {"human": "file", "feature_dependent": "student_file"}.get(str(self.noise_cfg.get("kind")))
        if origin and self.noise_cfg.get(origin):  # the labels or the student's probabilities come from a file
            self.noise_origin = {"source": str(Path(str(self.noise_cfg.get(origin))).expanduser().absolute())}

        def human_labels(key):
            from noisylab.data import readers

            path = self.noise_cfg.get("file")
            if not path:
                raise ConfigError(f"noise={self.noise_cfg.get('name')} needs noise.file, the CIFAR-N label file.")
            return readers.read_cifar_n(Path(str(path)).expanduser(), key)

        def student_scores():
            from noisylab.data.student import student_scores

            return student_scores(source, self.noise_cfg)

        return make_noisy_labels(
            source.y_train, source.num_classes, self.noise_cfg, source.asymmetric_map,
            source.coarse_train, source.name, human_labels, student_scores,
            None if source.x_train is None else (lambda: source.x_train),
        )

    def _prepare_arrays(self) -> None:
        source = self.source
        self.noisy = self._noisy_labels(source)
        order = np.random.default_rng(int(self.data_cfg.get("split_seed", 0))).permutation(len(source.y_train))
        val_fraction = float(self.data_cfg.get("val_fraction", 0.0) or 0.0)
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must lie in [0, 1), got {val_fraction}.")
        n_val = int(round(val_fraction * len(order)))
        val_index, pool = order[:n_val], order[n_val:]
        noisy, clean = self.noisy.labels, source.y_train
        if source.x_target is None:
            trusted_index = self._pick_trusted(pool, clean, source.num_classes)
            train_index = pool[~np.isin(pool, trusted_index)]  # in the permuted order
            trusted_x, trusted_y, trusted_name = source.x_train, clean, "trusted"
        else:  # the source's own target set: its trusted samples index that set
            target_order = np.random.default_rng(int(self.data_cfg.get("split_seed", 0))).permutation(len(source.y_target))
            target_classes = len(source.target_class_names or ()) or source.num_classes
            trusted_index = self._pick_trusted(target_order, source.y_target, target_classes, "samples in the target set")
            train_index = pool
            trusted_x, trusted_y, trusted_name = source.x_target, source.y_target, "target"
        if len(train_index) == 0:
            raise ConfigError(f"data.val_fraction={val_fraction} and data.trusted_per_class={self.trusted_per_class} "
                              f"leave no noisy training samples of the {len(order)} available.")
        self.train = _subset(train_index, source.x_train, noisy, clean)
        self.val = _subset(val_index, source.x_train, noisy, clean) if n_val else None
        self.trusted = _subset(trusted_index, trusted_x, trusted_y, trusted_y) if len(trusted_index) else None
        self.test = _subset(np.arange(len(source.y_test)), source.x_test, source.y_test, source.y_test)
        self.split_index = {"train": train_index, "val": val_index, trusted_name: trusted_index}

    def _pick_trusted(self, pool: np.ndarray, clean: np.ndarray, num_classes: int,
                      where: str = "training samples left after the validation split") -> np.ndarray:
        k = self.trusted_per_class
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        picked = []
        for c in range(num_classes):
            members = pool[clean[pool] == c]
            if len(members) < k:
                raise ConfigError(
                    f"data.trusted_per_class={k} is larger than class {c}, which has only "
                    f"{len(members)} {where}."
                )
            picked.append(members[:k])
        return np.sort(np.concatenate(picked))

    def _prepare_files(self) -> None:
        from noisylab.data.files import file_splits

        self.train, self.val, self.trusted, self.test, self.noisy, self._clean_flags = file_splits(
            self.source, self.data_cfg, self.noise_cfg, self.trusted_per_class, epoch_of=self._current_epoch
        )
        if self.noise_cfg.get("kind") == "none":
            self.noise_origin = {"source": "dataset (its own labels)"}
        self.split_index = {}

    def _move_to(self, device: torch.device) -> None:
        """``data.on_device``: the whole (small) dataset lives on the accelerator; batches are
        gathered and augmented there, with no host-to-device copy per step."""
        for split in (self.train, self.val, self.trusted, self.test):
            if isinstance(split, dict):
                for name in split:
                    split[name] = split[name].to(device)

    # ------------------------------------------------------------------------- loaders
    def _batches(self, split, batch_size: int, shuffle: bool, drop_last: bool = False, seed: int = 0):
        if not isinstance(split, dict):  # file-backed: already a DataLoader factory
            return split(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        return TensorBatches(split, batch_size, shuffle, drop_last, seed=seed, rank=rank, world_size=world,
                             epoch_of=self._current_epoch)

    def _current_epoch(self) -> int:
        # the epochs processed, not trainer.current_epoch: when a resumed fit makes its first iterator
        # (loader workers fetch at once), Lightning has not yet moved current_epoch past the checkpoint's epoch
        return self.trainer.fit_loop.epoch_progress.current.processed if self.trainer is not None else 0

    def train_dataloader(self):
        noisy = self._batches(self.train, self.batch_size, shuffle=True,
                              drop_last=bool(self.data_cfg.get("drop_last", False)), seed=self.seed)
        if self.trusted is None or not self.serve_trusted:
            return noisy
        from pytorch_lightning.utilities import CombinedLoader

        trusted = self._batches(self.trusted, int(self.trusted_batch_size), shuffle=True, seed=self.seed + 1)
        return CombinedLoader({"noisy": noisy, "trusted": trusted}, mode="max_size_cycle")

    @property
    def eval_splits(self) -> list[str]:
        """Names of the loaders ``val_dataloader`` returns, by dataloader index."""
        return ["val", "test"] if self.val is not None else ["test"]

    def val_dataloader(self):
        """Two loaders: the noisy validation split (0) and the test set (1), so that the
        test accuracy of every epoch is recorded for last-k-epoch reporting."""
        loaders = [self._batches(self.test, self.eval_batch_size, shuffle=False)]
        if self.val is not None:
            loaders.insert(0, self._batches(self.val, self.eval_batch_size, shuffle=False))
        return loaders

    def test_dataloader(self):
        return self._batches(self.test, self.eval_batch_size, shuffle=False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Batches of tensors already on ``device`` (CPU runs, ``data.on_device``) skip
        Lightning's generic collection walk."""
        if isinstance(batch, dict) and "x" in batch and all(
            isinstance(v, torch.Tensor) and v.device == device for v in batch.values()
        ):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        training = self.trainer is not None and self.trainer.training
        if training and self.raw_batches:
            return batch  # the method makes its own views (self.view)
        return self._transform(batch, training)

    def _transform(self, batch, training: bool):
        if isinstance(batch, dict) and "x" in batch:
            return {**batch, "x": self.transform(batch["x"], training)}
        if isinstance(batch, dict):
            return {key: self._transform(value, training) for key, value in batch.items()}
        return batch

    # --------------------------------------------------------------------------- saving
    def save_noisy_labels(self, directory: str | Path) -> Path:
        """Writes the noisy labels (and the split) so a run can be repeated on identical noise
        with ``noise.load_from=<this file>``."""
        self.prepare()
        path = Path(directory) / "noisy_labels.npz"
        clean = self.source.y_train if self.source.y_train is not None else np.zeros(0, np.int64)
        np.savez_compressed(path, noisy=self.noisy.labels, clean=clean, transition=self.noisy.transition,
                            noise=np.array(json.dumps(self.noise_summary)),  # read back by noise.read_noise_file
                            **{f"{k}_index": v for k, v in self.split_index.items()})
        return path
