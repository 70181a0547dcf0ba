"""data=svhn_to_mnist (SOSELETO's transfer setting) on SVHN and MNIST files in the real formats."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from noisylab.data.sources import load_source
from noisylab.errors import ConfigError, DatasetError, NoisyLabError
from noisylab.train import build_datamodule, build_method, config_dir, run_facts
from tests.fixtures import write_mnist, write_svhn


@pytest.fixture
def root(tmp_path):
    svhn = write_svhn(tmp_path, n_train=30, n_test=5, seed=1)  # 3 images of each digit
    (tmp_path / "test_32x32.mat").unlink()  # only SVHN's training split is used
    mnist = write_mnist(tmp_path, gz=True, n_train=60, n_test=20, seed=2)  # 6 and 2 of each digit
    return tmp_path, svhn, mnist


def config(root, **extra):
    cfg = OmegaConf.load(Path(config_dir()) / "data" / "svhn_to_mnist.yaml")
    return OmegaConf.merge(cfg, {"root": str(root), **extra})


def test_source_is_svhn_0_to_4_grayscale_28x28_as_the_official_loader(root):
    folder, svhn, _ = root
    source = load_source(config(folder))
    keep = svhn["y_train"] < 5
    assert source.x_train.shape == (15, 1, 28, 28) and source.x_train.dtype == np.float32
    assert np.array_equal(source.y_train, svhn["y_train"][keep])
    assert source.num_classes == 5 and source.input_shape == (1, 28, 28)
    assert source.class_names == ["0", "1", "2", "3", "4"]
    # SOSELETO's data_loader.py: PIL resize to 28x28 (bilinear), grayscale, ToTensor, Normalize(0.444, 0.175)
    for image, ours in zip(svhn["x_train"][keep], source.x_train, strict=True):
        pil = Image.fromarray(image.transpose(1, 2, 0)).resize((28, 28), Image.BILINEAR).convert("L")
        expected = (np.asarray(pil, dtype=np.float32) / 255.0 - 0.444) / 0.175
        assert np.abs(ours[0] - expected).max() < 3 / 255 / 0.175  # PIL rounds to bytes twice


def test_target_and_test_are_mnist_5_to_9_relabelled_0_to_4(root):
    folder, _, mnist = root
    source = load_source(config(folder))
    for x, y, raw_x, raw_y in ((source.x_target, source.y_target, mnist["x_train"], mnist["y_train"]),
                               (source.x_test, source.y_test, mnist["x_test"], mnist["y_test"])):
        keep = raw_y >= 5
        assert np.array_equal(y, raw_y[keep] - 5)
        assert np.allclose(x, (raw_x[keep].astype(np.float32) / 255.0 - 0.1307) / 0.3081, atol=1e-6)
    assert source.target_class_names == ["5", "6", "7", "8", "9"]


def test_the_trusted_set_is_n_t_mnist_images_and_the_facts_name_the_target_classes(root, make_cfg):
    folder, svhn, _ = root
    cfg = make_cfg("data=svhn_to_mnist", f"data.root={folder}", "method=l2rw", "noise=none")
    assert cfg.data.trusted_per_class == 4  # n_t = 20 in total
    dm = build_datamodule(cfg)
    dm.prepare()
    assert dm.train_size == 15 and dm.val is None  # every SVHN 0-4 image is a source sample
    assert dm.trusted["y"].bincount().tolist() == [4] * 5 and dm.trusted_size == 20
    assert len(dm.test["y"]) == 10
    source = dm.source
    picked = dm.split_index["target"]
    assert np.array_equal(dm.trusted["x"].numpy(), source.x_target[picked])
    facts = run_facts(cfg, dm)
    assert facts.target_classes == ("5", "6", "7", "8", "9") and facts.class_names == ("0", "1", "2", "3", "4")
    assert facts.num_classes == 5 and facts.input_shape == (1, 28, 28)
    assert np.array_equal(dm.train["x"].numpy(), source.x_train[dm.split_index["train"]])
    assert np.array_equal(np.sort(dm.train["y"].numpy()), np.sort(svhn["y_train"][svhn["y_train"] < 5]))


def test_only_a_method_with_a_target_head_trains_on_it(root, make_cfg):
    """Any other method would be tested on classes it never learned (test_soseleto trains SOSELETO on the files)."""
    folder = root[0]
    for method in ("l2rw", "ce"):
        cfg = make_cfg("data=svhn_to_mnist", f"data.root={folder}", f"method={method}", "model=mlp", "noise=none")
        with pytest.raises(NoisyLabError, match=rf"data=svhn_to_mnist tests on other classes than it trains on "
                                                rf"\(the target classes 5, 6, 7, 8, 9\), and method={method} has no "
                                                r"target head for them; use method=soseleto\."):
            build_method(cfg, build_datamodule(cfg))


def test_missing_files_and_bad_digit_lists_are_one_sentence(tmp_path):
    write_svhn(tmp_path)
    with pytest.raises(DatasetError, match=r"MNIST not found: expected .*MNIST/raw/train-images-idx3-ubyte"):
        load_source(config(tmp_path))
    write_mnist(tmp_path)
    (tmp_path / "train_32x32.mat").unlink()
    with pytest.raises(DatasetError, match=r"SVHN not found: expected .*train_32x32.mat"):
        load_source(config(tmp_path))
    with pytest.raises(ConfigError, match=r"data.target_classes must be distinct digits 0..9, got \[5, 5\]"):
        load_source(config(tmp_path, target_classes=[5, 5]))
