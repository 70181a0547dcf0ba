"""Image-file datasets in their real layouts (tests/fixtures_web.py): WebVision (mini, full)
with ImageNet val, Food-101N with Food-101's test list, Animal-10N, the user's folder and
table; missing and corrupt files as one sentence."""

import numpy as np
import pytest

from noisylab.data import image_lists
from noisylab.errors import DatasetError
from noisylab.train import build_datamodule
from tests.fixtures_web import (
    FOOD_CLASSES,
    wnid,
    write_animal10n,
    write_food101n,
    write_image,
    write_image_folder,
    write_imagenet_devkit,
    write_webvision,
)

SMALL = ("data.num_workers=0", "data.resize=8", "data.crop_size=8", "method=ce")


@pytest.fixture
def webvision(tmp_path):
    written = write_webvision(tmp_path / "webvision", tmp_path / "imagenet")
    return tmp_path, written


def test_webvision_mini_is_the_first_50_google_classes_tested_on_imagenet_val(webvision):
    tmp_path, written = webvision
    images = image_lists.read_webvision(tmp_path / "webvision", 50, flickr=False, imagenet_root=tmp_path / "imagenet")
    assert images.train[0] == [p for p, y in written["google"] if y < 50]
    assert images.train[1].tolist() == [0, 0, 1, 49]
    assert images.val[0] == ["val_images_256/val000001.jpg", "val_images_256/val000002.jpg",
                             "val_images_256/val000003.jpg"] and images.val[1].tolist() == [0, 1, 49]
    # ImageNet val: the images of WNIDs 0, 1 (of 50), by image id; class 50 is not mini's
    assert [p.split("/")[-1] for p in images.test[0]] == [
        "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000004.JPEG"]
    assert images.test[1].tolist() == [0, 1, 0] and images.class_names[:2] == [wnid(0), wnid(1)]


def test_imagenet_val_from_the_devkit_ground_truth(webvision):
    tmp_path, _ = webvision
    write_imagenet_devkit(tmp_path / "devkit_layout", labels=(50, 0, 1, 0))
    images = image_lists.read_webvision(tmp_path / "webvision", 50, False, imagenet_root=tmp_path / "devkit_layout")
    assert [p.split("/")[-1] for p in images.test[0]] == [
        "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000004.JPEG"]
    assert images.test[1].tolist() == [0, 1, 0]


def test_webvision_full_adds_flickr_and_every_class(webvision):
    tmp_path, written = webvision
    images = image_lists.read_webvision(tmp_path / "webvision", 1000, flickr=True)
    assert images.train[1].tolist() == [y for _, y in written["google"] + written["flickr"]]
    assert images.test[1].tolist() == [0, 1, 49, 50] and images.val is None


def test_webvision_batches_through_the_datamodule(make_cfg, webvision):
    tmp_path, _ = webvision
    dm = build_datamodule(make_cfg("data=webvision_mini", f"paths.data_dir={tmp_path}", *SMALL))
    dm.prepare()
    assert dm.num_classes == 50 and dm.train_size == 4 and dm.noise_summary["source"] == "dataset (its own labels)"
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape[1:] == (3, 8, 8) and batch["y_true"].tolist() == [-1] * len(batch["y"])
    assert dm.eval_splits == ["val", "test"] and len(dm.test.dataset) == 3


def test_food101n_verifications_trusted_pool_and_food101_test(tmp_path):
    written = write_food101n(tmp_path / "Food-101N_release", tmp_path / "food-101")
    images = image_lists.read_food101n(tmp_path / "Food-101N_release", tmp_path / "food-101")
    keys = written["keys"]
    assert images.class_names == FOOD_CLASSES
    assert images.train[0] == [f"images/{k}" for k in keys] and images.train[1].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    # right (1) / wrong (0) where verified (train or val), else unknown
    assert images.clean_flags().tolist() == [1, 0, -1, 1, 0, -1, 1, -1, -1]
    assert images.trusted[0] == ["images/" + keys[i] for i in (0, 3, 6)] and images.trusted[1].tolist() == [0, 1, 2]
    assert images.test[1].tolist() == [0, 0, 1, 1, 2, 2] and images.test[0][0].endswith("food-101/images/apple_pie/100.jpg")


def test_food101n_detection_ground_truth_reaches_the_datamodule(make_cfg, tmp_path):
    write_food101n(tmp_path / "food101n" / "Food-101N_release", tmp_path / "food101n" / "food-101")
    dm = build_datamodule(make_cfg("data=food101n", f"paths.data_dir={tmp_path}", *SMALL))
    dm.prepare()
    assert dm.clean_flags().tolist() == [1, 0, -1, 1, 0, -1, 1, -1, -1]
    assert dm.noise_summary["actual_rate"] == pytest.approx(2 / 5)  # of the verified labels, 2 wrong


def test_animal10n_label_is_the_first_character(tmp_path):
    written = write_animal10n(tmp_path)
    images = image_lists.read_animal10n(tmp_path)
    names, labels = written["training"]
    assert dict(zip(images.train[0], images.train[1].tolist())) == {f"training/{n}": int(y) for n, y in zip(names, labels)}
    assert len(images.test[0]) == 10 and images.class_names[1] == "lynx"


def test_folder_takes_a_stratified_test_split_and_keeps_class_names(make_cfg, tmp_path):
    write_image_folder(tmp_path / "mine", per_class=10)
    dm = build_datamodule(make_cfg("data=folder", f"data.root={tmp_path / 'mine'}", "data.test_fraction=0.2", *SMALL))
    dm.prepare()
    assert dm.class_names == ["cat", "dog", "fox"] and dm.noise_summary["kind"] == "none"
    assert np.bincount(dm.test.dataset.labels).tolist() == [2, 2, 2] and dm.train_size == 24
    assert not set(dm.test.dataset.paths) & set(dm.train.dataset.paths)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape[1:] == (3, 8, 8)  # images of 12x9 and 7x15 resized and cropped


def test_a_folder_leaves_out_hidden_entries_and_refuses_an_empty_class(tmp_path):
    mine = tmp_path / "mine"
    write_image_folder(mine, per_class=2)
    (mine / ".ipynb_checkpoints").mkdir()  # not a class
    (mine / "cat" / "._img000.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS's metadata twin: not an image
    images = image_lists.read_folder(mine)
    assert images.class_names == ["cat", "dog", "fox"] and len(images.train[0]) == 6
    (mine / "owl").mkdir()
    with pytest.raises(DatasetError, match="the class folder .*/mine/owl holds no images"):
        image_lists.read_folder(mine)
    (mine / "owl").rmdir()
    (mine / "dog" / "linked.jpg").symlink_to(tmp_path / "moved_away.jpg")  # a link whose image is gone
    with pytest.raises(DatasetError, match="1 link.s. below .*mine point nowhere, the first .*dog/linked.jpg"):
        image_lists.read_folder(mine)


def test_table_with_names_splits_and_clean_labels(make_cfg, tmp_path):
    write_image_folder(tmp_path / "mine", per_class=4)
    rows = ["path,label,split,clean_label"]
    for i, (cls, split) in enumerate([("cat", "train"), ("dog", "train"), ("dog", "test"), ("cat", "train")]):
        rows.append(f"mine/{cls}/img00{i}.{'png' if i % 2 else 'jpg'},{cls},{split},{'dog' if i == 0 else ''}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    images = image_lists.read_table(tmp_path / "labels.csv")
    assert images.class_names == ["cat", "dog"] and images.train[1].tolist() == [0, 1, 0]
    assert images.train_clean.tolist() == [1, -1, -1] and images.test[1].tolist() == [1]
    assert images.clean_flags().tolist() == [0, -1, -1]
    dm = build_datamodule(make_cfg("data=table", f"data.file={tmp_path / 'labels.csv'}", *SMALL))
    dm.prepare()
    assert dm.train_size == 3 and len(dm.test.dataset) == 1
    # as a spreadsheet saves it ("CSV UTF-8"): a byte-order mark and CRLF line ends
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    excel = image_lists.read_table(tmp_path / "excel.csv")
    assert excel.class_names == images.class_names and excel.train[0] == images.train[0]


def test_a_table_with_integer_labels_has_no_gap(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\na.png,0\nb.png,3\nc.png,03\n")
    with pytest.raises(DatasetError, match="integer labels name classes 0..3, but no row has class 1, 2; number"):
        image_lists.read_table(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("path,label\na.png,0\nb.png,1\nc.png,02\n")  # "02" is class 2
    table = image_lists.read_table(tmp_path / "labels.csv")
    assert table.class_names == ["0", "1", "2"] and table.train[1].tolist() == [0, 1, 2]


@pytest.mark.parametrize("extra,says", [
    ("cats/a.png,dog", "lines 2 and 4 list cats/a.png with labels cat and dog"),  # two annotators' votes
    ("./cats/a.png,cat,test", "lines 2 and 4 list ./cats/a.png in split train and test"),  # a test image trained on
    ("cats//a.png,cat", "lines 2 and 4 list cats//a.png twice"),
])
def test_a_table_lists_each_image_once(tmp_path, extra, says):
    (tmp_path / "labels.csv").write_text(f"path,label,split\ncats/a.png,cat,\ndogs/b.png,dog,train\n{extra}\n")
    with pytest.raises(DatasetError, match=says + "; give each image one row"):
        image_lists.read_table(tmp_path / "labels.csv")


def test_synthetic_noise_on_the_users_labels_and_refused_on_real_noise(make_cfg, tmp_path):
    write_image_folder(tmp_path / "mine", per_class=10)
    dm = build_datamodule(make_cfg("data=folder", f"data.root={tmp_path / 'mine'}", "noise=sym50", *SMALL))
    dm.prepare()
    flags, train = dm.clean_flags(), dm.train.dataset
    assert np.array_equal(flags == 0, train.labels != train.clean) and (train.clean >= 0).all()
    assert dm.noise_summary["actual_rate"] == pytest.approx((flags == 0).mean()) and 0.25 < (flags == 0).mean() < 0.75
    write_animal10n(tmp_path / "animal10n")
    with pytest.raises(Exception, match="already noisy"):
        build_datamodule(make_cfg("data=animal10n", f"paths.data_dir={tmp_path}", "noise=sym20", *SMALL)).prepare()


def _break(path, text=None):
    if text is None:
        path.unlink()
    else:
        path.write_text(text)


@pytest.mark.parametrize("dataset,file,text,says", [
    ("webvision", "info/train_filelist_google.txt", None, "expected .*train_filelist_google.txt; download WebVision"),
    ("webvision", "info/val_filelist.txt", "val000001.jpg zero\n", "line 1 is 'val000001.jpg zero'"),
    ("imagenet", "LOC_val_solution.csv", "Id,Labels\n", "expected the header 'ImageId,PredictionString'"),
    ("food101n", "meta/verified_train.tsv", "class_name/key\tverification_label\napple_pie/x.jpg\t7\n",
     "line 2 is .*expected '<class>/<file>"),
    ("food101n", "meta/imagelist.tsv", "class_name/key\nsushi/x.jpg\n", "names 'sushi/x.jpg'"),
    ("food101", "meta/test.txt", None, "expected .*test.txt; download food-101.tar.gz"),
    ("animal10n", "training/cat.jpg", "", "does not start with the label digit"),
])
def test_missing_and_corrupt_files_are_one_sentence(tmp_path, dataset, file, text, says):
    write_webvision(tmp_path / "webvision", tmp_path / "imagenet")
    write_food101n(tmp_path / "food101n", tmp_path / "food101")
    write_animal10n(tmp_path / "animal10n")
    folder = {"webvision": "webvision", "imagenet": "imagenet", "food101n": "food101n", "food101": "food101",
              "animal10n": "animal10n"}[dataset]
    target = tmp_path / folder / file
    if dataset == "animal10n":
        write_image(target, (1, 2, 3))
    else:
        _break(target, text)
    read = {
        "webvision": lambda: image_lists.read_webvision(tmp_path / "webvision", 50, False),
        "imagenet": lambda: image_lists.read_webvision(tmp_path / "webvision", 50, False,
                                                       imagenet_root=tmp_path / "imagenet"),
        "food101n": lambda: image_lists.read_food101n(tmp_path / "food101n", tmp_path / "food101"),
        "food101": lambda: image_lists.read_food101n(tmp_path / "food101n", tmp_path / "food101"),
        "animal10n": lambda: image_lists.read_animal10n(tmp_path / "animal10n"),
    }[dataset]
    with pytest.raises(DatasetError, match=says) as error:
        read()
    assert "\n" not in str(error.value) and str(target) in str(error.value)


def cut_off_jpeg(path):
    """A JPEG whose header is whole and whose pixels are cut off: found only when decoded."""
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_corrupt_image_names_its_file(make_cfg, tmp_path):
    write_image_folder(tmp_path / "mine", per_class=3)
    broken = tmp_path / "mine" / "dog" / "img000.jpg"
    cut_off_jpeg(broken)
    dm = build_datamodule(make_cfg("data=folder", f"data.root={tmp_path / 'mine'}", *SMALL))
    dm.prepare()
    dataset = dm.train.dataset if "dog/img000.jpg" in dm.train.dataset.paths else dm.test.dataset
    position = dataset.paths.index("dog/img000.jpg")
    with pytest.raises(DatasetError, match=f"data=folder image file {broken} is corrupt .cannot decode it"):
        dataset[position]


def test_a_pass_over_the_training_images_is_unaugmented_and_augmentation_is_keyed_by_seed_and_index(
        make_cfg, tmp_path):
    """The methods' pass over the training set (small-loss scoring, DivideMix's GMM) sees the
    evaluation transform, as their official code's test transform; training batches draw each
    image's crop and flip from (the epoch's seed, its index), whatever the main stream does."""
    import torch

    write_image_folder(tmp_path / "mine", per_class=6)
    dm = build_datamodule(make_cfg("data=folder", f"data.root={tmp_path / 'mine'}", *SMALL))
    dm.prepare()
    first, second = (torch.cat([b["x"] for b in dm.ordered_train_batches(4)]) for _ in range(2))
    assert torch.equal(first, second)
    images = dm.train.dataset
    torch.manual_seed(1)
    one = images[(7, 3)]["x"]
    torch.manual_seed(2)
    assert torch.equal(images[(7, 3)]["x"], one)
    assert any(not torch.equal(images[(seed, 3)]["x"], one) for seed in range(8, 20))


def test_a_missing_image_is_refused_before_the_run_starts(make_cfg, tmp_path):
    """Every listed image is checked when the data is prepared (before the run folder is
    touched), not found missing in the middle of training."""
    from noisylab.data.files import missing_images

    write_image_folder(tmp_path / "mine", per_class=4)
    rows = ["path,label"] + [f"mine/{c}/img00{i}.{'png' if i % 2 else 'jpg'},{c}" for c in ("cat", "dog") for i in range(4)]
    rows += ["mine/dog/gone.png,dog", "elsewhere/none.png,cat"]  # a missing file, a missing folder
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert missing_images(tmp_path, [r.split(",")[0] for r in rows[1:]]) == ["mine/dog/gone.png", "elsewhere/none.png"]
    assert missing_images(tmp_path, [str(tmp_path / "mine/cat/img000.jpg"), "mine"]) == ["mine"]  # absolute; a folder
    dm = build_datamodule(make_cfg("data=table", f"data.file={tmp_path / 'labels.csv'}", *SMALL))
    with pytest.raises(DatasetError, match=f"data=table: 2 of the 10 images it lists are missing, the first "
                                           f"{tmp_path / 'mine/dog/gone.png'}"):
        dm.prepare()
    # the trusted set's own list is checked too
    (tmp_path / "labels.csv").write_text("\n".join(rows[:-2]) + "\n")
    (tmp_path / "trusted.txt").write_text("mine/cat/img000.jpg 0\nmine/dog/missing.png 1\n")
    dm = build_datamodule(make_cfg("data=table", f"data.file={tmp_path / 'labels.csv'}", "method=mwnet",
                                   f"data.trusted_list={tmp_path / 'trusted.txt'}", "data.trusted_per_class=1",
                                   *SMALL[:-1]))
    with pytest.raises(DatasetError, match="1 of the .* images it lists are missing, the first .*missing.png"):
        dm.prepare()


def test_an_image_without_an_image_header_is_refused_before_the_run_starts(make_cfg, tmp_path):
    """An empty file or a web page saved as .jpg is found while the data is prepared, not in the
    middle of training after the run folder's earlier run was replaced."""
    write_image_folder(tmp_path / "mine", per_class=3)
    (tmp_path / "mine" / "cat" / "empty.jpg").write_bytes(b"")
    (tmp_path / "mine" / "dog" / "page.jpg").write_text("<html><body>404</body></html>")
    dm = build_datamodule(make_cfg("data=folder", f"data.root={tmp_path / 'mine'}", *SMALL))
    with pytest.raises(DatasetError, match=f"data=folder: 2 of the 11 images it lists are not readable images, the "
                                           f"first {tmp_path / 'mine/cat/empty.jpg'} .UnidentifiedImageError"):
        dm.prepare()


def test_split_folders_links_and_loose_images(tmp_path, caplog):
    """ImageNet's train/ + val/ layout, val/ beside test/, a test class train/ lacks, a linked
    sub-folder, a .jfif, and images outside every class folder."""
    write_image_folder(tmp_path / "inet" / "train", classes=("cat", "dog"), per_class=3)
    write_image_folder(tmp_path / "inet" / "val", classes=("cat", "dog"), per_class=2)
    images = image_lists.read_folder(tmp_path / "inet")
    assert images.class_names == ["cat", "dog"] and len(images.train[0]) == 6 and len(images.test[0]) == 4
    assert images.val is None and all(p.startswith("val/") for p in images.test[0])
    write_image_folder(tmp_path / "inet" / "test", classes=("cat", "dog"), per_class=1)
    images = image_lists.read_folder(tmp_path / "inet")
    assert len(images.test[0]) == 2 and len(images.val[0]) == 4  # val/ beside test/: a validation set
    write_image_folder(tmp_path / "inet" / "test", classes=("owl",), per_class=1)
    with pytest.raises(DatasetError, match="inet/test has the class folder owl, which .*inet/train lacks"):
        image_lists.read_folder(tmp_path / "inet")
    mine = tmp_path / "mine"
    write_image_folder(mine, classes=("cat", "dog"), per_class=2)
    write_image_folder(tmp_path / "elsewhere", classes=("batch2",), per_class=3)
    (mine / "cat" / "batch2").symlink_to(tmp_path / "elsewhere" / "batch2")  # a linked sub-folder: read
    (mine / "dog" / "loop").symlink_to(mine / "dog")  # a link loop: each real folder read once
    (mine / "dog" / "img000.jpg").rename(mine / "dog" / "img000.jfif")  # a JPEG as Windows names it
    (mine / "loose.png").write_bytes((mine / "cat" / "img001.png").read_bytes())
    with caplog.at_level("WARNING", logger="noisylab"):
        images = image_lists.read_folder(mine)
    assert np.bincount(images.train[1]).tolist() == [5, 2]
    assert "1 image(s) directly in" in caplog.text and "loose.png" in caplog.text


def test_table_labels_as_spreadsheets_and_pandas_write_them(tmp_path):
    (tmp_path / "t.csv").write_text("path,label,split,clean_label\n\na.png,0.0,,-1\n\nb.png,1.0,,0.0\nc.png,1,,\n")
    table = image_lists.read_table(tmp_path / "t.csv")  # 1.0 is class 1; -1: clean label unknown
    assert table.class_names == ["0", "1"] and table.train[1].tolist() == [0, 1, 1]
    assert table.train_clean.tolist() == [-1, 0, -1]
    for rows, says in (("a.png,-1,,\nb.png,1,,\n", "line 2 has label -1, a negative class"),
                       ("a.png,cat,,\nb.png,dog,,\n\n\nc.png,,,\n", "line 6 has no path or no label"),  # blank lines
                       ("a.png,cat,,\nb.png,dog,,\nc.png,bird,test,\n", "class bird has no training row"),
                       (f"a.png,cat,,\nb.png,dog,,\n{tmp_path / 'a.png'},dog,,\n", "lines 2 and 4 list")):
        (tmp_path / "t.csv").write_text("path,label,split,clean_label\n" + rows)
        with pytest.raises(DatasetError, match=says):
            image_lists.read_table(tmp_path / "t.csv")


def test_noise_load_from_is_refused_for_file_backed_data(make_cfg, tmp_path):
    from noisylab.errors import ConfigError
    from noisylab.schema import check_config

    with pytest.raises(ConfigError, match="noise.load_from is for the in-memory datasets, not data=folder"):
        check_config(make_cfg("data=folder", f"data.root={tmp_path}", f"noise.load_from={tmp_path / 'n.npz'}"))


def test_a_corrupt_image_read_by_a_worker_process_is_one_sentence(make_cfg, tmp_path):
    """torch re-raises a DataLoader worker's error with its traceback as the message; the
    user sees the sentence alone."""
    write_image_folder(tmp_path / "mine", per_class=3)
    broken = tmp_path / "mine" / "dog" / "img000.jpg"
    cut_off_jpeg(broken)
    dm = build_datamodule(make_cfg("data=folder", f"data.root={tmp_path / 'mine'}", *SMALL[1:], "data.num_workers=1"))
    dm.prepare()
    with pytest.raises(DatasetError) as error:
        for split in (dm.train, dm.test):
            list(split(batch_size=4, shuffle=False))
    assert str(error.value).startswith(f"data=folder image file {broken} is corrupt (cannot decode it")
    assert "\n" not in str(error.value) and "Traceback" not in str(error.value)


def test_the_real_noise_sweeps_compose_with_the_papers_recipes_and_numbers(make_cfg):
    from noisylab.schema import check_config

    mslg = make_cfg("+sweep=mslg_food101n", "method=mslg", "protocol=mslg", "seed=1")
    check_config(mslg)
    assert (mslg.data.name, mslg.noise.kind, mslg.model.name, mslg.model.pretrained) == ("food101n", "none", "resnet50", True)
    assert (mslg.protocol.epochs, mslg.protocol.batch_size, mslg.protocol.optimizer.lr) == (10, 32, 0.001)
    assert list(mslg.protocol.lr_schedule.milestones) == [5]
    assert (mslg.method.beta, mslg.method.warmup_epochs, mslg.data.trusted_per_class) == (1500.0, 1, 99)
    assert mslg.paper["values"]["mslg"] == 79.06 and mslg.paper["values"]["gce"] == 71.60
    ieg = make_cfg("+sweep=ieg_webvision_mini", "method=ieg", "seed=1")
    check_config(ieg)
    assert (ieg.data.name, ieg.noise.kind, ieg.method.ce_factor, ieg.method.consistency_factor) == (
        "webvision_mini", "none", 4, 8)
    assert (ieg.protocol.batch_size, ieg.protocol.epochs, ieg.data.batches_per_epoch) == (64, 1000, 1000)  # 1M steps
    assert ieg.paper.ieg.none == 80.0
    food = make_cfg("+sweep=ieg_food101n", "method=ieg", "seed=1")
    check_config(food)
    assert food.data.name == "food101n" and food.data.trusted_per_class == 10


@pytest.mark.parametrize("data,says", [("folder", "data=folder needs data.root"), ("table", "data=table needs data.file")])
def test_own_data_without_its_location_is_one_sentence(make_cfg, data, says):
    from noisylab.errors import ConfigError

    with pytest.raises(ConfigError, match=says):
        build_datamodule(make_cfg(f"data={data}", *SMALL)).prepare()
