"""Datamodules over the real formats (fixtures): CIFAR-N human noise, CIFAR-100 superclass
noise, Clothing1M's file lists."""

import numpy as np
import pytest
import torch

from noisylab.data.batches import PassSeeds
from noisylab.data.files import BalancedEpochSampler
from noisylab.train import build_datamodule
from tests.fixtures import write_cifar10, write_cifar10n, write_cifar100, write_clothing1m


def test_cifar10n_worst_labels_come_from_the_label_file(make_cfg, tmp_path):
    written = write_cifar10(tmp_path, n_train=50, n_test=10)
    human = write_cifar10n(tmp_path / "CIFAR-10_human.pt", clean=written["y_train"], n=50)
    cfg = make_cfg("method=ce", "data=cifar10", f"data.root={tmp_path}", "noise=cifar10n_worst", "data.val_fraction=0")
    dm = build_datamodule(cfg)
    dm.prepare()
    assert np.array_equal(dm.noisy.labels, human["worse_label"])
    assert dm.noise_summary["actual_rate"] == pytest.approx(0.40)


def test_cifar100_asymmetric_noise_stays_inside_the_true_superclass(make_cfg, tmp_path):
    written = write_cifar100(tmp_path, n_train=400, n_test=10)
    cfg = make_cfg("method=ce", "data=cifar100", f"data.root={tmp_path}", "noise=asym40")
    dm = build_datamodule(cfg)
    dm.prepare()
    moved = dm.noisy.labels != written["y_train"]
    fine_to_coarse = dict(zip(written["y_train"].tolist(), written["coarse_train"].tolist()))
    assert moved.sum() > 50
    for noisy, clean in zip(dm.noisy.labels[moved], written["y_train"][moved]):
        assert fine_to_coarse[int(noisy)] == fine_to_coarse[int(clean)]


@pytest.fixture
def clothing(make_cfg, tmp_path):
    written = write_clothing1m(tmp_path / "clothing1m", per_class=2)
    cfg = make_cfg("method=ce", "data=clothing1m", f"paths.data_dir={tmp_path}", "noise=none",
                   "data.num_workers=0", "data.batches_per_epoch=2", "data.crop_size=32", "protocol.batch_size=7")
    return cfg, written


def test_clothing1m_batches_follow_the_contract(clothing):
    cfg, written = clothing
    dm = build_datamodule(cfg)
    dm.prepare()
    assert dm.train_size == 28 and dm.num_classes == 14
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 2 and all(set(b) == {"x", "y", "index", "y_true"} for b in batches)
    assert batches[0]["x"].shape == (7, 3, 32, 32) and batches[0]["x"].dtype == torch.float32
    keys, noisy = written["noisy_train"]
    for batch in batches:
        for i, y, y_true in zip(batch["index"].tolist(), batch["y"].tolist(), batch["y_true"].tolist()):
            assert y == noisy[i]
            assert y_true == written["clean_kv"].get(keys[i], -1)  # -1 where no clean label exists
    test = next(iter(dm.test_dataloader()))
    assert torch.equal(test["y"], test["y_true"]) and len(dm.test_dataloader().dataset) == 7


def test_clothing1m_refuses_synthetic_noise(make_cfg, tmp_path):
    write_clothing1m(tmp_path / "clothing1m")
    cfg = make_cfg("method=ce", "data=clothing1m", f"paths.data_dir={tmp_path}", "noise=sym20")
    with pytest.raises(Exception, match="already noisy"):
        build_datamodule(cfg).prepare()


def test_balanced_sampler_draws_every_class_equally():
    labels = np.repeat(np.arange(4), [100, 10, 50, 40])
    epoch = [0]
    sampler = BalancedEpochSampler(labels, 40, PassSeeds(7, lambda: epoch[0]))
    keys = list(sampler)
    seeds, drawn = {seed for seed, _ in keys}, labels[[i for _, i in keys]]
    assert np.bincount(drawn, minlength=4).tolist() == [10, 10, 10, 10] and len(seeds) == 1
    torch.manual_seed(123)  # the main random stream plays no part: a resumed epoch draws the same
    assert list(BalancedEpochSampler(labels, 40, PassSeeds(7, lambda: epoch[0]))) == keys
    epoch[0] = 1
    assert list(sampler) != keys  # another draw each epoch
