"""The labels to re-check: every training sample ranked from most to least likely mislabelled.

    python -m noisylab.suspects <run_dir> [more run dirs] [--top-k 24] [--out DIR] [--no-image]

Reads each run's ``per_sample.npz`` (written at the end of every run) and writes
``suspects.csv``: rank, index, path (file-backed data), given label, the method's predicted
label, the clean score and, where known, the true label and whether the given label is wrong;
and ``suspects.png``, a grid of the top-k images with given -> predicted labels.

The suspicion of a sample is its **clean score** (the method's own belief that its label is
right: e.g. the fraction of epochs a small-loss method kept it, MW-Net's weight, DY-R's clean
posterior; ``LNLMethod.clean_score``), lowest first. A method without one is ranked by its
final network's softmax probability of the given label (cleanlab's "self-confidence"). With two
or more runs (methods or seeds) on the same training set, samples are ranked by the runs'
agreement: the mean over runs of each sample's rank, as a fraction of the set (Borda).

Where the true labels are known (synthetic noise; Food-101N's verifications; a table's
``clean_label``), precision@k (the share of the top k that is mislabelled) and the noise
detection AUC (of the clean score against "label right", the run's ``train/detection_auc``)
are printed, so the list's quality is measured, never assumed. Runs of a method with a clean
score write their ``suspects.csv`` themselves (``noisylab.train``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from noisylab.errors import NoisyLabError

PER_SAMPLE = "per_sample.npz"
CSV_NAME, PNG_NAME = "suspects.csv", "suspects.png"


# ----------------------------------------------------------------------------- at the end of a run


def predictions(method, datamodule) -> dict[str, np.ndarray]:
    """The final network's predicted label and probability of the given label for every
    training sample (one un-augmented pass, index order), and the class names."""
    import torch

    logits, _ = method.training_set_pass()
    probabilities = torch.softmax(logits.float(), dim=1)
    y = torch.as_tensor(datamodule.train_labels()["y"], device=probabilities.device)
    arrays = {"predicted_label": probabilities.argmax(1).cpu().numpy(),
              "given_label_prob": probabilities.gather(1, y.view(-1, 1)).squeeze(1).cpu().numpy()}
    if datamodule.class_names:
        arrays["class_names"] = np.asarray([str(n) for n in datamodule.class_names])
    return arrays


def after_run(run_dir) -> Path | None:
    """``suspects.csv`` in ``run_dir`` when its method gives a clean score, else None."""
    run = load_run(run_dir)
    if "clean_score" not in run:
        return None
    order, score = rank([run])
    return write_csv(Path(run_dir) / CSV_NAME, [run], order, score)


# ----------------------------------------------------------------------------- ranking


def read_per_sample(path: Path) -> dict[str, np.ndarray]:
    """A run's ``per_sample.npz``, or one sentence: not found, not an .npz of plain arrays
    (torn, another tool's file), or arrays of different lengths (one entry per sample)."""
    import zipfile

    if not path.is_file():
        raise NoisyLabError(f"{path} not found: give the folder of a finished noisylab run (it writes {PER_SAMPLE}).")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except OSError as error:
        raise NoisyLabError(f"{path} cannot be read ({error.strerror or error}).") from None
    except (ValueError, EOFError, zipfile.BadZipFile):  # numpy calls any non-archive "pickled data"
        raise NoisyLabError(f"{path} is not a noisylab {PER_SAMPLE}: not an .npz archive of plain arrays (torn, "
                            "or another tool's file).") from None
    lengths = {key: len(value) for key, value in arrays.items() if value.ndim >= 1 and key != "class_names"}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{key} {n}" for key, n in lengths.items())
        raise NoisyLabError(f"{path} holds arrays of different lengths ({counts}): one entry per training sample "
                            "expected.")
    return arrays


def load_run(run_dir) -> dict[str, np.ndarray]:
    path = Path(run_dir) / PER_SAMPLE
    run = read_per_sample(path)
    missing = [key for key in ("y", "predicted_label") if key not in run]
    if missing:
        raise NoisyLabError(f"{path} has no {' or '.join(missing)}: it was written by an older noisylab; "
                            "rerun the experiment.")
    run["run_dir"] = np.asarray(str(run_dir))
    return run


def suspicion(run: dict) -> tuple[np.ndarray, str]:
    """(clean score, its name): higher means cleaner."""
    if "clean_score" in run:
        return run["clean_score"].astype(np.float64), "clean_score"
    return run["given_label_prob"].astype(np.float64), "given_label_prob"


def run_order(run: dict) -> np.ndarray:
    """One run's samples from most to least suspect: by clean score; ties (a selection
    method's kept fractions tie often) by the final network's probability of the given label,
    then by index."""
    score = suspicion(run)[0]
    tie_break = run.get("given_label_prob", np.zeros_like(score))
    return np.lexsort((np.arange(len(score)), tie_break, score))


def rank(runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(order, score): sample indices from most to least suspect, and the score that orders
    them (one run: its clean score; several: the mean over runs of each sample's rank as a
    fraction of the set, 0 = the most suspect)."""
    first = runs[0]
    for run in runs[1:]:
        if run["y"].shape != first["y"].shape or not np.array_equal(run["y"], first["y"]):
            raise NoisyLabError(f"{run['run_dir']} trained on other labels than {first['run_dir']}: rank runs "
                                "together only on the same training set (same data, noise and split).")
    if len(runs) == 1:
        return run_order(first), suspicion(first)[0]
    score = np.mean([np.argsort(run_order(r), kind="stable") / len(first["y"]) for r in runs], axis=0)
    return np.lexsort((np.arange(len(score)), score)), score


def quality(score: np.ndarray, flags: np.ndarray, order: np.ndarray, ks=(10, 50, 100)) -> dict | None:
    """precision@k over the samples whose label is known right or wrong (in ranked order), the
    number of wrong ones, and the AUC of ``score`` for "label right" (None: nothing known)."""
    known = flags[order] >= 0
    wrong = flags[order][known] == 0
    if wrong.size == 0 or wrong.all() or not wrong.any():
        return None
    out = {"known": int(wrong.size), "wrong": int(wrong.sum())}
    for k in (*ks, int(wrong.sum())):
        if k <= wrong.size:
            out[f"precision@{k}"] = float(wrong[:k].mean())
    out["auc"] = auc(score[flags >= 0], flags[flags >= 0] == 1)
    return out


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    sorted_score = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_score)) + 1]
    ends = np.r_[starts[1:], len(score)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0  # average 1-based rank of a tie group
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ----------------------------------------------------------------------------- output


def _name(names, label: int) -> str:
    return str(names[label]) if names is not None and 0 <= label < len(names) else ""


def write_csv(path: Path, runs: list[dict], order: np.ndarray, score: np.ndarray) -> Path:
    from noisylab.results import write_bytes_atomic

    first = runs[0]
    names = first.get("class_names")
    has_path, has_truth = "path" in first, "y_true" in first and (first["y_true"] >= 0).any()
    header = ["rank", "index"] + (["path"] if has_path else []) + [
        "given_label", "given_name", "predicted_label", "predicted_name",
        suspicion(first)[1] if len(runs) == 1 else "agreement_score"]
    if len(runs) > 1:
        header += [f"{suspicion(r)[1]}_run{i}" for i, r in enumerate(runs)]
    if "clean_flag" in first and (first["clean_flag"] >= 0).any():
        header += ["label_wrong"] + (["true_label", "true_name"] if has_truth else [])
    lines = [header]
    for position, i in enumerate(order, start=1):
        given, predicted = int(first["y"][i]), int(first["predicted_label"][i])
        row = [position, int(i)] + ([str(first["path"][i])] if has_path else []) + [
            given, _name(names, given), predicted, _name(names, predicted), f"{score[i]:.6g}"]
        if len(runs) > 1:
            row += [f"{suspicion(r)[0][i]:.6g}" for r in runs]
        if "label_wrong" in header:
            flag = int(first["clean_flag"][i])
            row.append("" if flag < 0 else int(flag == 0))
            if has_truth:
                true = int(first["y_true"][i])
                row += ["", ""] if true < 0 else [true, _name(names, true)]
        lines.append(row)
    buffer = _csv_text(lines)
    return write_bytes_atomic(path, buffer.encode())


def _csv_text(rows) -> str:
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _images(run: dict, indices: np.ndarray) -> list | None:
    """The training images of ``indices`` as HxW(x3) arrays: read from their files, or taken
    from the run's data rebuilt from its results.json; None when the inputs are not images."""
    if "path" in run:
        from PIL import Image

        return [np.asarray(Image.open(str(run["path"][i])).convert("RGB")) for i in indices]
    results = Path(str(run["run_dir"])) / "results.json"
    if not results.is_file():
        return None
    from omegaconf import OmegaConf

    from noisylab.train import build_datamodule

    datamodule = build_datamodule(OmegaConf.create(json.loads(results.read_text())["config"]))
    datamodule.prepare()
    x = datamodule.train["x"][indices].float().numpy()
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        return None
    low = x.min(axis=(1, 2, 3), keepdims=True)
    x = (x - low) / np.maximum(x.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
    return [image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0) for image in x]


def write_grid(path: Path, run: dict, order: np.ndarray, top_k: int) -> Path | None:
    """``suspects.png``: the ``top_k`` most suspect images, titled ``given -> predicted``."""
    indices = order[:top_k]
    images = _images(run, indices)
    if images is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = run.get("class_names")
    columns = min(8, len(indices))
    rows = -(-len(indices) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, i, image in zip(axes.flat, indices, images):
        given, predicted = int(run["y"][i]), int(run["predicted_label"][i])
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        title = f"#{i}: {_name(names, given) or given} → {_name(names, predicted) or predicted}"
        wrong = int(run["clean_flag"][i]) == 0 if "clean_flag" in run else False
        axis.set_title(title, fontsize=7, color="tab:red" if wrong else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def report(runs: list[dict], order: np.ndarray, score: np.ndarray) -> list[str]:
    first = runs[0]
    lines = [f"{len(order)} training samples ranked by "
             + (suspicion(first)[1] if len(runs) == 1 else f"the agreement of {len(runs)} runs")]
    flags = first.get("clean_flag", np.full(len(order), -1))
    measured = quality(score, flags, order)
    if measured is None:
        lines.append("true labels unknown: the list's precision cannot be measured here.")
        return lines
    lines.append(f"labels known right or wrong: {measured['known']}, of them wrong: {measured['wrong']}")
    lines.append("precision@k: " + ", ".join(f"{k.split('@')[1]}: {v:.3f}" for k, v in measured.items()
                                               if k.startswith("precision@")))
    lines.append(f"noise detection AUC (score vs label right): {measured['auc']:.4f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m noisylab.suspects", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run folders (with per_sample.npz); several: ranked by agreement")
    parser.add_argument("--top-k", type=int, default=24, help="images in suspects.png (default 24)")
    parser.add_argument("--out", default=None, help="folder for suspects.csv/.png (default: the run folder, or "
                        "the runs' common parent folder)")
    parser.add_argument("--no-image", action="store_true", help="write suspects.csv only")
    args = parser.parse_args(argv)
    try:
        if args.top_k < 1:
            raise NoisyLabError(f"--top-k must be at least 1, got {args.top_k}.")
        runs = [load_run(d) for d in args.run_dirs]
        order, score = rank(runs)
        out = Path(args.out or (args.run_dirs[0] if len(runs) == 1 else os.path.commonpath(
            [str(Path(d).absolute()) for d in args.run_dirs])))
        out.mkdir(parents=True, exist_ok=True)
        for line in report(runs, order, score):
            print(line)
        print(f"wrote {write_csv(out / CSV_NAME, runs, order, score)}")
        if not args.no_image:
            grid = write_grid(out / PNG_NAME, runs[0], order, args.top_k)
            print(f"wrote {grid}" if grid else "no suspects.png: the inputs are not images.")
    except NoisyLabError as error:
        print(f"noisylab.suspects: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # --out a file, a read-only folder
        from noisylab.results import unwritable

        print(f"noisylab.suspects: error: {unwritable(error, args.out)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
