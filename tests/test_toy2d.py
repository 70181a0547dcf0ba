"""data=toy2d (SOSELETO's synthetic 2-D experiment) and the per-sample weight plot."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from noisylab.data.datamodule import NoisyDataModule
from noisylab.data.sources import load_source
from noisylab.errors import ConfigError
from noisylab.plot_weights import main as plot_main
from noisylab.plot_weights import plot_weights, run_points
from noisylab.train import build_datamodule, run_facts

TOY = {"name": "toy2d", "seed": 0, "num_source": 500, "target_pool": 1000, "num_test": 1000}


def test_points_are_uniform_and_labelled_by_the_sign_of_x0():
    source = load_source(OmegaConf.create(TOY))
    for x, y, n in ((source.x_train, source.y_train, 500), (source.x_target, source.y_target, 1000),
                    (source.x_test, source.y_test, 1000)):
        assert x.shape == (n, 2) and x.dtype == np.float32
        assert np.all(np.abs(x) <= 1.0)
        assert np.array_equal(y, (x[:, 0] > 0).astype(np.int64))
        assert 0.4 < y.mean() < 0.6
    again = load_source(OmegaConf.create(TOY))
    other = load_source(OmegaConf.create({**TOY, "seed": 1}))
    assert np.array_equal(source.x_train, again.x_train) and not np.array_equal(source.x_train, other.x_train)
    assert source.input_shape == (2,) and source.num_classes == 2
    with pytest.raises(ConfigError, match="data.num_source must be a positive number"):
        load_source(OmegaConf.create({**TOY, "num_source": 0}))


def test_the_slides_setup_500_noisy_source_points_and_50_clean_target_points(make_cfg):
    cfg = make_cfg("data=toy2d", "method=l2rw")
    assert cfg.noise.name == "sym20"  # toy2d's own default noise
    assert make_cfg("data=toy2d", "noise=sym40").noise.name == "sym40"  # the command line still wins
    dm = build_datamodule(cfg)
    dm.prepare()
    assert dm.train_size == 500 and dm.val is None and len(dm.test["y"]) == 1000
    flipped = (dm.train["y"] != dm.train["y_true"]).numpy()
    assert flipped.mean() == pytest.approx(dm.noisy.actual_rate) and 0.15 < flipped.mean() < 0.25
    assert np.array_equal(1 - dm.train["y_true"].numpy()[flipped], dm.train["y"].numpy()[flipped])
    trusted = dm.trusted
    assert trusted["y"].bincount().tolist() == [25, 25]
    assert (trusted["y"] == trusted["y_true"]).all()
    assert np.array_equal(trusted["y"].numpy(), (trusted["x"][:, 0] > 0).long().numpy())  # clean
    train_points = {tuple(p) for p in dm.train["x"].numpy().tolist()}
    assert not any(tuple(p) in train_points for p in trusted["x"].numpy().tolist())  # drawn separately
    assert sorted(dm.split_index) == ["target", "train", "val"]
    assert run_facts(cfg, dm).trusted_size == 50 and run_facts(cfg, dm).target_classes is None


def test_a_target_set_smaller_than_asked_is_refused():
    dm = NoisyDataModule(OmegaConf.create({**TOY, "target_pool": 10, "val_fraction": 0.0}),
                         OmegaConf.create({"name": "sym20", "kind": "symmetric", "rate": 0.2, "seed": 0}),
                         trusted_per_class=25)
    with pytest.raises(ConfigError, match="data.trusted_per_class=25 is larger than class 0, which has only "
                                          r"\d samples in the target set"):
        dm.prepare()


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_weights_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (60, 2))
    flipped = np.arange(60) % 5 == 0
    path = plot_weights(points, np.where(flipped, 0.05, 0.9), flipped, tmp_path / "w.png")
    width, height = png_size(path)
    assert width > 300 and height > 300
    with pytest.raises(ValueError, match="need points"):
        plot_weights(points[:, :1], np.ones(60), flipped, tmp_path / "bad.png")


def test_plot_weights_cli_on_a_finished_toy2d_run(make_cfg, tmp_path, capsys, one_thread):
    from noisylab.train import run

    cfg = make_cfg("data=toy2d", "method=ce", "debug=fast", "protocol.epochs=1", "callbacks=none")
    results = run(cfg)
    run_dir = tmp_path / "run0"
    assert json.loads((run_dir / "results.json").read_text())["data"] == "toy2d"
    dm = build_datamodule(cfg)
    dm.prepare()
    assert np.array_equal(run_points(run_dir), dm.train["x"].numpy())  # the points in index order
    assert plot_main([str(run_dir)]) == 2  # ce keeps no per-sample weights
    assert "pass --key" in capsys.readouterr().err
    per_sample = dict(np.load(run_dir / "per_sample.npz"))
    per_sample["alpha"] = np.where(per_sample["y"] != per_sample["y_true"], 0.05, 0.9)
    np.savez(run_dir / "per_sample.npz", **per_sample)
    assert plot_main([str(run_dir), "--out", str(tmp_path / "alpha.png")]) == 0
    assert png_size(tmp_path / "alpha.png")[0] > 300
    capsys.readouterr()
    for out, says in ((tmp_path / "alpha.txt", "names no image format matplotlib writes"),
                      (tmp_path / "absent" / "a.png", f"cannot write {tmp_path / 'absent' / 'a.png'} (No such file")):
        assert plot_main([str(run_dir), "--out", str(out)]) == 2
        assert says in capsys.readouterr().err and not out.exists()
    assert results["noise"]["name"] == "sym20"
