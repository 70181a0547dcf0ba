"""NoisyDataModule on the embedded digits: splits, batch contract, trusted set, augmentation."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from noisylab.data.batches import TensorBatches, random_crop_flip
from noisylab.data.datamodule import NoisyDataModule
from noisylab.errors import ConfigError

DIGITS = {"name": "digits", "test_fraction": 0.25, "val_fraction": 0.1, "augment": "none", "mean": None, "std": None}
SYM50 = {"name": "sym50", "kind": "symmetric", "rate": 0.5, "seed": 0}


def module(trusted=0, data=None, noise=None, **kw):
    return NoisyDataModule(OmegaConf.create({**DIGITS, **(data or {})}), OmegaConf.create({**SYM50, **(noise or {})}),
                           batch_size=64, trusted_per_class=trusted, serve_trusted=trusted > 0, **kw)


def test_splits_partition_the_training_set():
    dm = module(trusted=3)
    dm.prepare()
    n = len(dm.source.y_train)
    parts = [dm.split_index[k] for k in ("train", "val", "trusted")]
    assert sum(len(p) for p in parts) == n
    assert len(np.unique(np.concatenate(parts))) == n
    assert len(dm.split_index["val"]) == round(0.1 * n)
    assert np.bincount(dm.source.y_train[dm.split_index["trusted"]], minlength=10).tolist() == [3] * 10


def test_batches_follow_the_contract():
    dm = module()
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "y", "index", "y_true"}
    assert batch["x"].shape == (64, 1, 8, 8) and batch["y"].dtype == torch.int64
    # index points into the training split: y and y_true agree with the stored arrays
    rows = dm.split_index["train"][batch["index"].numpy()]
    assert np.array_equal(batch["y"].numpy(), dm.noisy.labels[rows])
    assert np.array_equal(batch["y_true"].numpy(), dm.source.y_train[rows])
    assert (batch["y"] != batch["y_true"]).float().mean() > 0.3  # the labels really are noisy


def test_validation_split_carries_noisy_labels_and_test_is_clean():
    dm = module()
    dm.prepare()
    assert (dm.val["y"] != dm.val["y_true"]).float().mean() > 0.3
    assert torch.equal(dm.test["y"], dm.test["y_true"])
    assert dm.eval_splits == ["val", "test"]


def test_trusted_batches_are_served_beside_noisy_ones_with_clean_labels():
    dm = module(trusted=2)
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert set(batch) == {"noisy", "trusted"}
    assert torch.equal(batch["trusted"]["y"], batch["trusted"]["y_true"])


def test_trusted_set_larger_than_a_class_is_refused():
    with pytest.raises(ConfigError, match="trusted_per_class=500 is larger than class"):
        module(trusted=500).prepare()


def test_same_seed_same_batches():
    a, b = module(seed=3), module(seed=3)
    a.prepare(), b.prepare()
    ia = torch.cat([batch["index"] for batch in a.train_dataloader()])
    ib = torch.cat([batch["index"] for batch in b.train_dataloader()])
    assert torch.equal(ia, ib) and not torch.equal(ia, torch.arange(len(ia)))


def test_saved_noisy_labels_load_back(tmp_path):
    dm = module(noise={"seed": 5})
    path = dm.save_noisy_labels(tmp_path)
    again = module(noise={"seed": 99, "load_from": str(path)})
    again.prepare()
    assert np.array_equal(again.noisy.labels, dm.noisy.labels)


def test_tensor_batches_shard_across_ranks():
    data = {"i": torch.arange(10)}
    seen = [torch.cat([b["i"] for b in TensorBatches(data, 3, shuffle=True, seed=1, rank=r, world_size=2)])
            for r in range(2)]
    assert sorted(torch.cat(seen).tolist()) == list(range(10)) and len(seen[0]) == 5


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = random_crop_flip(x, padding=2, flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
