"""Readers of the real dataset formats, checked on tiny fixtures written in those formats."""

import gzip
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest

from noisylab.data import readers
from noisylab.errors import DatasetError
from tests.fixtures import (
    CIFAR10N_RATES,
    CIFAR100_FINE_TO_COARSE,
    idx_bytes,
    write_cifar10,
    write_cifar10n,
    write_cifar100,
    write_cifar100n,
    write_clothing1m,
    write_mnist,
    write_py2_pickle,
    write_svhn,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any socket a reader opens fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a reader tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def check_arrays(arrays, written, channels, size, num_classes):
    for split in ("train", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        assert x.dtype == np.uint8 and y.dtype == np.int64
        assert x.shape == (len(written[f"y_{split}"]), channels, size, size)
        assert y.min() >= 0 and y.max() < num_classes
        assert np.array_equal(x, written[f"x_{split}"])
        assert np.array_equal(y, written[f"y_{split}"])


# ----------------------------------------------------------------------------- round trips


def test_cifar10_round_trip(tmp_path):
    written = write_cifar10(tmp_path, n_train=50, n_test=20)
    arrays = readers.read_cifar10(tmp_path)
    check_arrays(arrays, written, 3, 32, 10)
    assert arrays.class_names[:2] == ["airplane", "automobile"] and len(arrays.class_names) == 10
    assert arrays.coarse_train is None
    assert sorted(np.unique(arrays.y_train)) == list(range(10))


def test_cifar_pixels_are_planar_rgb_rows(tmp_path):
    written = write_cifar10(tmp_path, n_train=5, n_test=2)
    with open(written["folder"] / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="latin1")["data"][0]
    image = readers.read_cifar10(tmp_path).x_train[0]
    assert np.array_equal(image[0].reshape(-1), row[:1024])  # red plane first, row by row
    assert np.array_equal(image[2, 31], row[-32:])  # last row of blue last


def test_cifar_fixture_loads_like_a_python2_pickle(tmp_path):
    written = write_cifar10(tmp_path, n_train=10, n_test=5)
    path = written["folder"] / "data_batch_1"
    with open(path, "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")
    with open(path, "rb") as f:
        as_str = pickle.load(f, encoding="latin1")
    assert set(as_bytes) == {b"batch_label", b"data", b"filenames", b"labels"}
    assert set(as_str) == {"batch_label", "data", "filenames", "labels"}
    assert as_bytes[b"data"].shape == (2, 3072) and as_bytes[b"data"].dtype == np.uint8
    assert b"U\x04data" in path.read_bytes()  # SHORT_BINSTRING, as Python 2 wrote it


def test_cifar100_round_trip_with_superclasses(tmp_path):
    written = write_cifar100(tmp_path, n_train=40, n_test=10)
    arrays = readers.read_cifar100(tmp_path)
    check_arrays(arrays, written, 3, 32, 100)
    assert arrays.coarse_train.dtype == np.int64
    assert np.array_equal(arrays.coarse_train, written["coarse_train"])
    assert np.array_equal(arrays.coarse_test, CIFAR100_FINE_TO_COARSE[arrays.y_test])
    assert len(arrays.class_names) == 100 and arrays.class_names[0] == "apple"


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip_raw_and_gz(tmp_path, gz):
    written = write_mnist(tmp_path, gz=gz, n_train=20, n_test=10)
    assert all(p.name.endswith(".gz") == gz for p in written["paths"].values())
    arrays = readers.read_mnist(tmp_path)
    check_arrays(arrays, written, 1, 28, 10)
    assert arrays.class_names == [str(d) for d in range(10)]


def test_svhn_round_trip_maps_label_10_to_digit_0(tmp_path):
    written = write_svhn(tmp_path, n_train=20, n_test=10)
    assert (written["y_train_raw"] == 10).any() and written["y_train_raw"].min() == 1
    arrays = readers.read_svhn(tmp_path)
    check_arrays(arrays, written, 3, 32, 10)
    assert np.array_equal(arrays.y_train == 0, written["y_train_raw"] == 10)
    assert arrays.x_train.flags["C_CONTIGUOUS"]


def test_clothing1m_splits_and_clean_overlap(tmp_path):
    written = write_clothing1m(tmp_path, per_class=2)
    data = readers.read_clothing1m(tmp_path)
    assert data.root == tmp_path
    for split in ("noisy_train", "clean_train", "clean_val", "clean_test"):
        paths, labels = getattr(data, split)
        assert paths == written[split][0]
        assert labels.dtype == np.int64 and np.array_equal(labels, written[split][1])
        assert all(p.startswith("images/") for p in paths)
    assert len(data.noisy_train[0]) == 28 and data.class_names[0] == "T-Shirt"
    paths, noisy = data.noisy_train
    clean = data.clean_label_of(paths)
    expected = [written["clean_kv"].get(p, -1) for p in paths]
    assert clean.dtype == np.int64 and clean.tolist() == expected
    known = clean >= 0
    assert 0 < known.sum() < len(paths)
    assert (clean[known] != noisy[known]).any() and (clean[known] == noisy[known]).any()


def test_clothing1m_images_load_as_rgb(tmp_path):
    written = write_clothing1m(tmp_path, size=8)
    data = readers.read_clothing1m(tmp_path)
    key = data.clean_test[0][0]
    image = readers.load_clothing1m_image(data.root, key)
    assert image.mode == "RGB" and image.size == (8, 8)
    assert np.abs(np.asarray(image, dtype=int) - written["colors"][key]).max() <= 3


def test_clothing1m_default_class_names_when_file_absent(tmp_path):
    write_clothing1m(tmp_path)
    (tmp_path / "category_names_eng.txt").unlink()
    assert readers.read_clothing1m(tmp_path).class_names[-1] == "Underwear"


# ----------------------------------------------------------------------------- CIFAR-N


@pytest.fixture
def torch_load_forbidden(monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load should not be needed for a CIFAR-N file")

    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize("key", sorted(CIFAR10N_RATES))
def test_cifar10n_noise_rates_without_torch_load(tmp_path, key, torch_load_forbidden):
    path = tmp_path / "CIFAR-10_human.pt"
    written = write_cifar10n(path, n=50)
    clean = readers.read_cifar_n(path, "clean_label")
    noisy = readers.read_cifar_n(path, key)
    assert noisy.dtype == np.int64 and noisy.shape == (50,)
    assert np.array_equal(noisy, written[key]) and np.array_equal(clean, written["clean_label"])
    assert (noisy != clean).mean() == pytest.approx(round(CIFAR10N_RATES[key] * 50) / 50)


def test_cifar10n_clean_labels_follow_the_cifar_fixture(tmp_path):
    cifar = write_cifar10(tmp_path, n_train=50, n_test=5)
    path = tmp_path / "CIFAR-10_human.pt"
    write_cifar10n(path, clean=cifar["y_train"])
    clean = readers.read_cifar_n(path, "clean_label")
    assert np.array_equal(clean, readers.read_cifar10(tmp_path).y_train)
    assert (readers.read_cifar_n(path, "worse_label") != clean).mean() == pytest.approx(0.4)


def test_cifar100n_labels_and_coarse_lists(tmp_path, torch_load_forbidden):
    path = tmp_path / "CIFAR-100_human.pt"
    written = write_cifar100n(path, n=50, rate=0.4)
    noisy = readers.read_cifar_n(path, "noisy_label")
    clean = readers.read_cifar_n(path, "clean_label")
    assert noisy.dtype == np.int64 and noisy.max() < 100
    assert (noisy != clean).mean() == pytest.approx(0.4)
    coarse = readers.read_cifar_n(path, "noisy_coarse_label")  # stored as a Python list
    assert coarse.dtype == np.int64 and coarse.tolist() == written["noisy_coarse_label"]


def test_cifar_n_falls_back_to_torch_load_for_tensors_and_legacy_files(tmp_path):
    import torch

    path = tmp_path / "legacy.pt"
    labels = torch.tensor([3, 1, 4, 1, 5])
    torch.save({"worse_label": labels}, path, _use_new_zipfile_serialization=False)
    assert readers.read_cifar_n(path, "worse_label").tolist() == [3, 1, 4, 1, 5]


def test_cifar_n_unknown_key_lists_the_keys_present(tmp_path):
    path = tmp_path / "CIFAR-100_human.pt"
    write_cifar100n(path)
    with pytest.raises(DatasetError, match="aggre_label") as err:
        readers.read_cifar_n(path, "aggre_label")
    assert "clean_coarse_label, clean_label, noisy_coarse_label, noisy_label" in str(err.value)


# ----------------------------------------------------------------------------- missing files


def cifar10_batch(root):
    return root / "cifar-10-batches-py" / "data_batch_3"


MISSING = {
    "cifar10-batch": (write_cifar10, readers.read_cifar10, cifar10_batch, "cifar.html"),
    "cifar10-test": (
        write_cifar10, readers.read_cifar10,
        lambda r: r / "cifar-10-batches-py" / "test_batch", "cifar-10-python.tar.gz",
    ),
    "cifar100": (
        write_cifar100, readers.read_cifar100,
        lambda r: r / "cifar-100-python" / "train", "cifar-100-python.tar.gz",
    ),
    "mnist": (
        write_mnist, readers.read_mnist,
        lambda r: r / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz",
    ),
    "svhn": (write_svhn, readers.read_svhn, lambda r: r / "test_32x32.mat", "housenumbers"),
    "clothing1m-kv": (
        write_clothing1m, readers.read_clothing1m,
        lambda r: r / "clean_label_kv.txt", "annotations.zip",
    ),
    "clothing1m-list": (
        write_clothing1m, readers.read_clothing1m,
        lambda r: r / "clean_val_key_list.txt", "Clothing1M authors",
    ),
}


@pytest.mark.parametrize("case", sorted(MISSING))
def test_missing_file_names_the_expected_path(tmp_path, case):
    write, read, target, hint = MISSING[case]
    write(tmp_path)
    target(tmp_path).unlink()
    with pytest.raises(DatasetError) as err:
        read(tmp_path)
    message = str(err.value)
    assert f"expected {target(tmp_path)}" in message and hint in message
    assert "not found" in message and message.endswith(".")


def test_empty_root_reports_first_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="data.download=true") as err:
        readers.read_cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py" / "data_batch_1") in str(err.value)


def test_clothing1m_without_images_folder(tmp_path):
    write_clothing1m(tmp_path)
    (tmp_path / "images").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="expected folder .*images"):
        readers.read_clothing1m(tmp_path)


def test_missing_clothing1m_image_and_cifar_n_file(tmp_path):
    write_clothing1m(tmp_path)
    with pytest.raises(DatasetError, match="images/9/99/nothing.jpg"):
        readers.load_clothing1m_image(tmp_path, "images/9/99/nothing.jpg")
    with pytest.raises(DatasetError, match="CIFAR-10_human.pt") as err:
        readers.read_cifar_n(tmp_path / "CIFAR-10_human.pt", "worse_label")
    assert "UCSC-REAL/cifar-10-100n" in str(err.value)


# ----------------------------------------------------------------------------- corrupt files


def truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def test_cifar_truncated_batch(tmp_path):
    write_cifar10(tmp_path)
    truncate(cifar10_batch(tmp_path))
    with pytest.raises(DatasetError, match="cannot unpickle") as err:
        readers.read_cifar10(tmp_path)
    assert str(cifar10_batch(tmp_path)) in str(err.value)


def test_cifar_wrong_shape_and_missing_key(tmp_path):
    write_cifar10(tmp_path)
    batch = {b"data": np.zeros((4, 1024), np.uint8), b"labels": [0, 1, 2, 3]}
    write_py2_pickle(cifar10_batch(tmp_path), batch)
    with pytest.raises(DatasetError, match=r"'data' is uint8 \(4, 1024\), expected uint8"):
        readers.read_cifar10(tmp_path)
    write_py2_pickle(cifar10_batch(tmp_path), {b"data": np.zeros((4, 3072), np.uint8)})
    with pytest.raises(DatasetError, match="data_batch_3 is corrupt .*missing key 'labels'"):
        readers.read_cifar10(tmp_path)


def test_cifar_labels_out_of_range_or_wrong_count(tmp_path):
    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    data = np.zeros((3, 3072), np.uint8)
    write_py2_pickle(path, {b"data": data, b"fine_labels": [0, 1, 100], b"coarse_labels": [0] * 3})
    with pytest.raises(DatasetError, match="'fine_labels' span 0..100, expected 0..99"):
        readers.read_cifar100(tmp_path)
    write_py2_pickle(path, {b"data": data, b"fine_labels": [0, 1], b"coarse_labels": [0] * 3})
    with pytest.raises(DatasetError, match="'fine_labels' has 2 entries for 3 images"):
        readers.read_cifar100(tmp_path)


def test_mnist_wrong_magic(tmp_path):
    written = write_mnist(tmp_path)
    path = written["paths"]["train-images-idx3-ubyte"]
    path.write_bytes(idx_bytes(np.zeros(5, np.uint8)))  # a labels file where images belong
    with pytest.raises(DatasetError, match="magic number 2049, expected 2051") as err:
        readers.read_mnist(tmp_path)
    assert str(path) in str(err.value)


def test_mnist_truncated_data_and_bad_gzip(tmp_path):
    written = write_mnist(tmp_path)
    truncate(written["paths"]["t10k-images-idx3-ubyte"])
    with pytest.raises(DatasetError, match="header .* promises 7840"):
        readers.read_mnist(tmp_path)
    gz_root = tmp_path / "gz"
    written = write_mnist(gz_root, gz=True)
    truncate(written["paths"]["train-labels-idx1-ubyte"])
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz is corrupt"):
        readers.read_mnist(gz_root)


def test_mnist_label_count_must_match_images(tmp_path):
    written = write_mnist(tmp_path, n_train=20)
    written["paths"]["train-labels-idx1-ubyte"].write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DatasetError, match="19 labels for 20 images"):
        readers.read_mnist(tmp_path)


def test_svhn_corrupt_files(tmp_path):
    from scipy.io import savemat

    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    truncate(path)
    with pytest.raises(DatasetError, match="train_32x32.mat is corrupt"):
        readers.read_svhn(tmp_path)
    savemat(str(path), {"y": np.ones((3, 1), np.uint8)})
    with pytest.raises(DatasetError, match="missing variable 'X'"):
        readers.read_svhn(tmp_path)
    savemat(str(path), {"X": np.zeros((32, 32, 3, 3), np.uint8), "y": np.zeros((3, 1), np.uint8)})
    with pytest.raises(DatasetError, match="expected labels 1..10"):
        readers.read_svhn(tmp_path)
    savemat(str(path), {"X": np.zeros((28, 28, 3), np.uint8), "y": np.ones((3, 1), np.uint8)})
    with pytest.raises(DatasetError, match=r"expected uint8 \(32, 32, 3, N\)"):
        readers.read_svhn(tmp_path)


def test_clothing1m_bad_annotation_lines(tmp_path):
    write_clothing1m(tmp_path)
    kv = tmp_path / "noisy_label_kv.txt"
    kv.write_text(kv.read_text() + "images/0/00/broken.jpg fourteen\n")
    with pytest.raises(DatasetError, match="noisy_label_kv.txt is corrupt .*broken.jpg fourteen"):
        readers.read_clothing1m(tmp_path)


def test_clothing1m_key_without_label(tmp_path):
    write_clothing1m(tmp_path)
    keys = tmp_path / "clean_test_key_list.txt"
    keys.write_text(keys.read_text() + "images/5/55/unlabelled.jpg\n")
    with pytest.raises(DatasetError, match="unlabelled.jpg have no label in clean_label_kv.txt"):
        readers.read_clothing1m(tmp_path)


def test_clothing1m_undecodable_image(tmp_path):
    written = write_clothing1m(tmp_path)
    key = written["noisy_train"][0][0]
    (tmp_path / key).write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=f"{key} is corrupt"):
        readers.load_clothing1m_image(tmp_path, key)


def test_cifar_n_garbage_file(tmp_path):
    path = tmp_path / "CIFAR-10_human.pt"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DatasetError, match="CIFAR-10_human.pt is corrupt"):
        readers.read_cifar_n(path, "worse_label")


def test_gzip_fixture_really_is_gzip(tmp_path):
    written = write_mnist(tmp_path, gz=True)
    data = gzip.decompress(written["paths"]["train-images-idx3-ubyte"].read_bytes())
    assert data[:4] == (2051).to_bytes(4, "big") and len(data) == 16 + 20 * 28 * 28


# ----------------------------------------------------------------------------- network


def test_readers_never_touch_the_network(tmp_path):
    """Every reader runs with sockets disabled (autouse fixture) and still works."""
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_mnist(tmp_path, gz=True)
    write_svhn(tmp_path)
    write_clothing1m(tmp_path / "clothing")
    write_cifar10n(tmp_path / "CIFAR-10_human.pt")
    arrays = (readers.read_cifar10, readers.read_cifar100, readers.read_mnist, readers.read_svhn)
    for read in arrays:
        assert len(read(tmp_path).y_train) > 0
    assert len(readers.read_clothing1m(tmp_path / "clothing").noisy_train[0]) == 28
    assert len(readers.read_cifar_n(tmp_path / "CIFAR-10_human.pt", "aggre_label")) == 50


def test_failed_download_becomes_dataset_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(root, **kwargs):  # as torchvision: folders made, a partial file left, then the error
        (Path(root) / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
        (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    with pytest.raises(DatasetError, match="could not download cifar10 into .*Name or service"):
        readers.download("cifar10", tmp_path)
    with pytest.raises(DatasetError, match="could not download cifar10 into .*Name or service"):
        readers.download("cifar10", tmp_path / "new" / "data")
    # what the failed downloads made is gone, what was there stays
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["mine", "mine/notes.txt"]


def test_download_refuses_datasets_torchvision_cannot_fetch(tmp_path):
    with pytest.raises(DatasetError, match="only for cifar10, cifar100, mnist, svhn"):
        readers.download("clothing1m", tmp_path)


# ----------------------------------------------------------------------------- hostile inputs


def cifar10n_run(make_cfg, tmp_path, edit):
    """data=cifar10 with noise=cifar10n_worst over a CIFAR-10_human.pt that ``edit`` changed."""
    import torch

    from noisylab.train import build_datamodule

    written = write_cifar10(tmp_path, n_train=50, n_test=5)
    path = tmp_path / "CIFAR-10_human.pt"
    data = write_cifar10n(path, clean=written["y_train"], n=50)
    edit(data)
    torch.save(data, path)
    cfg = make_cfg("method=ce", "data=cifar10", f"data.root={tmp_path}", "noise=cifar10n_worst", "data.val_fraction=0")
    dm = build_datamodule(cfg)
    dm.prepare()
    return dm, path, written


def test_cifar_n_label_outside_the_dataset_classes_is_refused(make_cfg, tmp_path):
    def edit(data):
        data["worse_label"][7] = 15  # a CIFAR-100 class in a CIFAR-10N file

    with pytest.raises(DatasetError) as err:
        cifar10n_run(make_cfg, tmp_path, edit)
    path = tmp_path / "CIFAR-10_human.pt"
    assert str(err.value) == (f"CIFAR-N file {path} is corrupt ('worse_label' holds label 15 at index 7, outside "
                              f"data=cifar10's classes 0..9); {readers.CIFAR_N_HINT}")


def test_cifar_n_clean_labels_must_be_the_dataset_training_labels(make_cfg, tmp_path):
    def edit(data):  # the images in another order: every human label shifted by one image
        for key in data:
            data[key] = np.roll(data[key], 1)

    with pytest.raises(DatasetError) as err:
        cifar10n_run(make_cfg, tmp_path, edit)
    y = write_cifar10(tmp_path / "again", n_train=50, n_test=5)["y_train"]
    differ = np.flatnonzero(np.roll(y, 1) != y)
    i = int(differ[0])
    assert str(err.value) == (
        f"CIFAR-N file {tmp_path / 'CIFAR-10_human.pt'} does not match data=cifar10: its 'clean_label' differs from "
        f"the dataset's training labels at {differ.size} of 50 positions (the first at index {i}: {np.roll(y, 1)[i]} "
        f"in the file, {y[i]} in the dataset), so its labels belong to other images or another order; use the "
        "official training batches and the CIFAR-N file made for them.")


def test_cifar_n_file_without_clean_labels_is_used_as_it_is(make_cfg, tmp_path):
    dm, _, written = cifar10n_run(make_cfg, tmp_path, lambda data: data.pop("clean_label"))
    assert dm.noise_summary["actual_rate"] == pytest.approx(0.40)


def test_whole_float_labels_are_labels(make_cfg, tmp_path):
    from scipy.io import savemat

    written = write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    x = np.ascontiguousarray(written["x_train"].transpose(2, 3, 1, 0))
    savemat(str(path), {"X": x, "y": written["y_train_raw"].astype(np.float64)[:, None]})  # MATLAB's double
    arrays = readers.read_svhn(tmp_path)
    assert arrays.y_train.dtype == np.int64 and np.array_equal(arrays.y_train, written["y_train"])
    y = written["y_train_raw"].astype(np.float64)
    y[3] = 2.5
    savemat(str(path), {"X": x, "y": y[:, None]})
    with pytest.raises(DatasetError) as err:
        readers.read_svhn(tmp_path)
    assert str(err.value) == (f"SVHN file {path} is corrupt (the value 2.5 at index 3 of labels is not a whole "
                              f"number); "
                              f"{readers.SVHN_HINT.format(root=tmp_path)}")
    dm, _, _ = cifar10n_run(make_cfg, tmp_path / "n", lambda data: data.update(
        {key: values.astype(np.float32) for key, values in data.items()}))
    assert dm.noise_summary["actual_rate"] == pytest.approx(0.40)
    human = tmp_path / "human.pt"
    write_cifar10n(human)
    import torch

    data = torch.load(human, weights_only=False)
    data["aggre_label"] = data["aggre_label"].astype(np.float32)
    data["aggre_label"][4] = 2.5
    torch.save(data, human)
    with pytest.raises(DatasetError) as err:
        readers.read_cifar_n(human, "aggre_label")
    assert str(err.value) == (f"CIFAR-N file {human} is corrupt (the value 2.5 at index 4 of 'aggre_label' is not a "
                              f"whole number); {readers.CIFAR_N_HINT}")


def test_clothing1m_key_listed_again_keeps_the_later_label_and_says_so(tmp_path, caplog):
    """As the official loaders (a dict): the later line wins; one warning line counts them."""
    written = write_clothing1m(tmp_path)
    kv = tmp_path / "noisy_label_kv.txt"
    key, label = next(iter(written["noisy_kv"].items()))
    lines = kv.read_text().splitlines()
    kv.write_text("\n".join([*lines, f"{key} {label}"]) + "\n")  # the same label again: one image, no word
    with caplog.at_level("WARNING", logger="noisylab"):
        readers.read_clothing1m(tmp_path)
    assert "again" not in caplog.text
    kv.write_text("\n".join([*lines, f"{key} {(label + 1) % 14}"]) + "\n")
    with caplog.at_level("WARNING", logger="noisylab"):
        data = readers.read_clothing1m(tmp_path)
    assert "lists 1 key(s) again with another label" in caplog.text and f"at line {len(lines) + 1}" in caplog.text
    paths, labels = data.noisy_train
    assert key in paths and labels[paths.index(key)] == (label + 1) % 14


def test_clothing1m_names_file_with_another_count_is_named(tmp_path):
    write_clothing1m(tmp_path)
    names = tmp_path / "category_names_eng.txt"
    names.write_text("".join(f"{n}\n" for n in readers.CLOTHING1M_CLASSES[:13]))
    with pytest.raises(DatasetError) as err:
        readers.read_clothing1m(tmp_path)
    assert str(err.value) == (f"Clothing1M file {names} is corrupt (it names 13 categories, expected 14 (one per "
                              f"line)); {readers.CLOTHING1M_HINT.format(root=tmp_path)}")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_meta_with_another_count_of_names_is_refused(tmp_path, dataset):
    write = {"cifar10": write_cifar10, "cifar100": write_cifar100}[dataset]
    written = write(tmp_path)
    meta, key, count, name, hint = {
        "cifar10": ("batches.meta", "label_names", 10, "CIFAR-10", readers.CIFAR10_HINT),
        "cifar100": ("meta", "fine_label_names", 100, "CIFAR-100", readers.CIFAR100_HINT),
    }[dataset]
    path = written["folder"] / meta
    write_py2_pickle(path, {key.encode(): [n.encode() for n in written["class_names"][:-1]]})
    with pytest.raises(DatasetError) as err:
        (readers.read_cifar10 if dataset == "cifar10" else readers.read_cifar100)(tmp_path)
    assert str(err.value) == (f"{name} file {path} is corrupt ('{key}' holds {count - 1} names, expected {count}); "
                              f"{hint.format(root=tmp_path)}")


@pytest.mark.parametrize("name", ["webvision", "webvision_mini"])
def test_webvision_label_beyond_its_1000_classes_is_refused(make_cfg, tmp_path, name):
    from omegaconf import OmegaConf

    from noisylab.data import sources
    from noisylab.data.image_lists import WEBVISION_HINT
    from tests.fixtures_web import write_webvision

    root = tmp_path / "webvision"
    write_webvision(root)
    cfg = OmegaConf.create({"name": name, "root": str(root), "imagenet_val": False, "imagenet_root": "",
                            "val_folder": "val_images_256", "crop_size": 8})
    full = len(sources.webvision(cfg).files.train[0])  # the fixture as written is read
    assert full == (9 if name == "webvision" else 4)  # mini: the Google labels below 50
    listing = root / "info" / ("train_filelist_flickr.txt" if name == "webvision" else "train_filelist_google.txt")
    source = listing.name.split("_")[-1][:-4]
    listing.write_text(listing.read_text() + f"\n{source}/q1001/000009.jpg 1000\n")  # after a blank line
    lines = len(listing.read_text().splitlines())
    with pytest.raises(DatasetError) as err:
        sources.webvision(cfg)
    assert str(err.value) == (f"WebVision file {listing} is corrupt (line {lines} is '{source}/q1001/000009.jpg "
                              f"1000', expected '<image path> <label 0..999>'); {WEBVISION_HINT.format(root=root)}")


def test_16_bit_and_float_images_keep_their_grey_levels(tmp_path):
    """convert("RGB") clips 16-bit levels above 255 to white: scaled to 8 bits instead."""
    from PIL import Image

    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tif")
    Image.fromarray(np.full((4, 4), 7.0, np.float32)).save(tmp_path / "hdr.tif")
    assert np.asarray(readers.load_image(tmp_path, "deep.png", "data=folder")).tolist() == [[[156] * 3] * 4] * 4
    assert np.asarray(readers.load_image(tmp_path, "float.tif", "data=folder")).max() == 128
    with pytest.raises(DatasetError, match="hdr.tif is corrupt .cannot decode it: its F pixel values span 7..7"):
        readers.load_image(tmp_path, "hdr.tif", "data=folder")
