"""noisylab.suspects: the ranked list of labels to re-check, its measured quality, agreement
across runs, and a run on the user's own folder of images."""

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from noisylab import suspects
from noisylab.train import run
from tests.fixtures_web import write_image_folder

FAST = ("debug=fast", "callbacks=none", "data=digits")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_auc_is_mann_whitney_with_ties():
    score = np.array([0.1, 0.4, 0.4, 0.8, 0.9])
    positive = np.array([False, True, False, True, True])
    # pairs (positive, negative): (0.4,0.1) 1, (0.4,0.4) 1/2, (0.8,.) 2, (0.9,.) 2 -> 5.5 / 6
    assert suspects.auc(score, positive) == pytest.approx(5.5 / 6)
    assert suspects.auc(score, positive) == pytest.approx(roc_auc_score(positive, score))


def _fake_run(folder: Path, score, y, y_true):
    folder.mkdir()
    np.savez(folder / "per_sample.npz", y=np.asarray(y), y_true=np.asarray(y_true), clean_score=np.asarray(score),
             predicted_label=np.asarray(y_true), clean_flag=(np.asarray(y) == np.asarray(y_true)).astype(np.int64),
             class_names=np.asarray(["a", "b"]))
    return str(folder)


def test_a_broken_per_sample_file_is_one_sentence(tmp_path, capsys):
    from noisylab import plot_weights

    folder = Path(_fake_run(tmp_path / "a", [0.9, 0.1], [0, 1], [0, 0]))
    (folder / "results.json").write_text("{}")
    for content, says in ((b"text, not an archive", "is not a noisylab per_sample.npz: not an .npz archive"),
                          (None, "holds arrays of different lengths (y 2, y_true 2, clean_score 2, predicted_label 2, "
                                 "clean_flag 2, weights 3)")):
        if content is None:
            np.savez(folder / "per_sample.npz", **{**dict(np.load(tmp_path / "kept.npz")), "weights": np.ones(3)})
        else:
            (folder / "per_sample.npz").rename(tmp_path / "kept.npz")
            (folder / "per_sample.npz").write_bytes(content)
        assert suspects.main([str(folder), "--no-image"]) == 2
        assert says in capsys.readouterr().err
        assert plot_weights.main([str(folder)]) == 2
        assert says in capsys.readouterr().err


def test_agreement_ranks_by_the_mean_rank_over_runs(tmp_path, capsys):
    y, y_true = [0, 1, 0, 1], [0, 0, 1, 1]  # samples 1 and 2 are mislabelled
    first = _fake_run(tmp_path / "a", [0.9, 0.1, 0.5, 0.3], y, y_true)   # ranks: 3, 0, 2, 1
    second = _fake_run(tmp_path / "b", [0.8, 0.6, 0.2, 0.9], y, y_true)  # ranks: 2, 1, 0, 3
    order, score = suspects.rank([suspects.load_run(first), suspects.load_run(second)])
    # mean ranks / 4: 0.625, 0.125, 0.25, 0.5 -> 1, 2, 3, 0
    assert order.tolist() == [1, 2, 3, 0] and score.tolist() == [0.625, 0.125, 0.25, 0.5]
    (tmp_path / "a_file").write_text("")
    assert suspects.main([first, second, "--out", str(tmp_path / "a_file"), "--no-image"]) == 2  # not a traceback
    assert "a_file: a file stands where a folder must be" in capsys.readouterr().err
    assert suspects.main([first, second, "--out", str(tmp_path / "both"), "--no-image"]) == 0
    rows = read_csv(tmp_path / "both" / "suspects.csv")
    assert [r["index"] for r in rows] == ["1", "2", "3", "0"] and rows[0]["label_wrong"] == "1"
    assert rows[0]["given_name"] == "b" and rows[0]["true_name"] == "a"
    printed = capsys.readouterr().out
    assert "precision@k: 2: 1.000" in printed  # both wrong labels on top
    other = _fake_run(tmp_path / "c", [0.1, 0.2, 0.3, 0.4], [1, 1, 0, 1], y_true)
    assert suspects.main([first, other, "--no-image"]) == 2
    assert "trained on other labels" in capsys.readouterr().err


def test_digits_suspects_are_the_flipped_samples_and_agree_with_the_runs_auc(make_cfg, one_thread, capsys):
    results = run(make_cfg(*FAST, "method=coteaching", "protocol.epochs=3", "noise=sym50"))
    run_dir = Path(results["run_dir"])
    rows = read_csv(run_dir / "suspects.csv")  # written by the run: co-teaching has a clean score
    per_sample = np.load(run_dir / "per_sample.npz")
    assert len(rows) == len(per_sample["y"]) and rows[0]["rank"] == "1"
    scores = [float(r["clean_score"]) for r in rows]
    assert scores == sorted(scores)
    wrong = np.array([r["label_wrong"] == "1" for r in rows])
    assert np.array_equal(wrong, np.array([per_sample["y"][int(r["index"])] != per_sample["y_true"][int(r["index"])]
                                           for r in rows]))
    assert wrong[:50].mean() > 0.8 > wrong.mean() - 0.3  # the top is mostly the flipped (~50% overall)
    assert suspects.main([str(run_dir)]) == 0
    printed = capsys.readouterr().out
    auc = float(printed.split("noise detection AUC (score vs label right): ")[1].split()[0])
    assert auc == pytest.approx(results["metrics"]["train/detection_auc"], abs=1e-4)
    assert (run_dir / "suspects.png").stat().st_size > 1000


def test_a_folder_of_images_trains_and_lists_its_suspects(make_cfg, one_thread, tmp_path):
    write_image_folder(tmp_path / "mine", per_class=12)
    results = run(make_cfg("debug=fast", "callbacks=none", "data=folder", f"data.root={tmp_path / 'mine'}",
                           "data.num_workers=0", "data.resize=8", "data.crop_size=8", "method=ce", "model=mlp",
                           "protocol.epochs=1"))
    run_dir = Path(results["run_dir"])
    assert not (run_dir / "suspects.csv").exists()  # CE has no clean score: only the command ranks it
    assert suspects.main([str(run_dir), "--top-k", "4"]) == 0
    rows = read_csv(run_dir / "suspects.csv")
    assert len(rows) == 30 and {r["given_name"] for r in rows} == {"cat", "dog", "fox"}
    assert all(Path(r["path"]).is_file() for r in rows) and "label_wrong" not in rows[0]
    probabilities = [float(r["given_label_prob"]) for r in rows]  # no clean score: the given label's probability
    assert probabilities == sorted(probabilities) and (run_dir / "suspects.png").is_file()
