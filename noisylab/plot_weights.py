"""Per-sample weights over 2-D inputs (``data=toy2d``): the picture of SOSELETO's synthetic
experiment, clean points heavy and flipped ones light.

``plot_weights(points_xy, weights, flipped, path)`` draws every point sized and coloured by
its weight, flipped ones as crosses, and writes a PNG. From the command line, for a finished
run on 2-D data::

    python -m noisylab.plot_weights <run_dir> [--key alpha] [--out weights.png]

reads ``per_sample.npz`` (``index``, ``y``, ``y_true`` and the method's arrays: the weights
are ``--key``, by default the first of ``weights``, ``alpha``, ``clean_score`` present),
rebuilds the run's training points from its ``results.json`` config and ``noisy_labels.npz``
(``train_index``), and writes ``<run_dir>/weights.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

WEIGHT_KEYS = ("weights", "alpha", "clean_score")


def plot_weights(points_xy, weights, flipped, path, title: str | None = None) -> Path:
    """Scatter of ``points_xy`` (N, 2): marker area and colour grow with ``weights`` (N,),
    clean points as discs, ``flipped`` (N, bool) ones as crosses; the legend gives each
    group's mean weight. Writes ``path`` (PNG) and returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = np.asarray(points_xy, dtype=float)
    weights = np.asarray(weights, dtype=float).reshape(-1)
    flipped = np.asarray(flipped, dtype=bool).reshape(-1)
    if points.ndim != 2 or points.shape[1] != 2 or not len(points) == len(weights) == len(flipped):
        raise ValueError(f"need points (N, 2), weights (N,) and flipped (N,); got {points.shape}, "
                         f"{weights.shape}, {flipped.shape}")
    low, high = float(weights.min()), float(weights.max())
    span = high - low if high > low else 1.0
    sizes = 12.0 + 120.0 * (weights - low) / span
    figure = Figure(figsize=(6.4, 5.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shown = None
    for group, marker in ((~flipped, "o"), (flipped, "X")):
        if group.any():
            mean = weights[group].mean()
            label = f"{'flipped' if marker == 'X' else 'clean'} ({group.sum()}), mean weight {mean:.3g}"
            shown = axes.scatter(points[group, 0], points[group, 1], s=sizes[group], c=weights[group],
                                 cmap="viridis", vmin=low, vmax=low + span, marker=marker,
                                 edgecolors="black" if marker == "o" else "red", linewidths=0.3 if marker == "o" else 0.8,
                                 label=label)
    figure.colorbar(shown, ax=axes, label="weight")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=1, frameon=False)
    axes.set_xlabel("x0")
    axes.set_ylabel("x1")
    axes.set_title(title or "per-sample weights")
    axes.set_aspect("equal", adjustable="datalim")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def run_points(run_dir: Path) -> np.ndarray:
    """The run's training inputs in index order, rebuilt from its config and split."""
    from omegaconf import OmegaConf

    from noisylab.data.sources import load_source
    from noisylab.errors import NoisyLabError

    try:
        results = json.loads((run_dir / "results.json").read_text())
        with np.load(run_dir / "noisy_labels.npz", allow_pickle=False) as split:
            train_index = split["train_index"]
        source = load_source(OmegaConf.create(results["config"]["data"]))
        return source.x_train[train_index]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:  # a torn or foreign record
        raise NoisyLabError(f"{run_dir} does not hold a readable finished run to draw ({type(error).__name__}: "
                            f"{error}).") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m noisylab.plot_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--key", help=f"the per-sample array to draw (default: the first of {', '.join(WEIGHT_KEYS)})")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: <run_dir>/weights.png)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.expanduser()
    per_sample_path = run_dir / "per_sample.npz"
    if not per_sample_path.is_file() or not (run_dir / "results.json").is_file():
        print(f"plot_weights: error: {run_dir} is not a finished run (no per_sample.npz or results.json).",
              file=sys.stderr)
        return 2
    from noisylab.errors import NoisyLabError
    from noisylab.suspects import read_per_sample

    try:
        per_sample = read_per_sample(per_sample_path)
        points = run_points(run_dir)
    except NoisyLabError as error:
        print(f"plot_weights: error: {error}", file=sys.stderr)
        return 2
    key = args.key or next((k for k in WEIGHT_KEYS if k in per_sample), None)
    if key not in per_sample:
        wanted = repr(key) if key else f"named {', '.join(WEIGHT_KEYS)} (pass --key)"
        print(f"plot_weights: error: per_sample.npz has no array {wanted}; it has {', '.join(per_sample) or 'none'}.",
              file=sys.stderr)
        return 2
    if points.ndim != 2 or points.shape[1] != 2:
        print(f"plot_weights: error: the run's inputs have shape {points.shape[1:]}, not 2-D points (use data=toy2d).",
              file=sys.stderr)
        return 2
    out = (args.out or run_dir / "weights.png").expanduser()
    import matplotlib.pyplot as plt

    kinds = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if out.suffix.lstrip(".").lower() not in kinds:
        print(f"plot_weights: error: --out {out} names no image format matplotlib writes; end it in "
              f"{', '.join('.' + k for k in ('png', 'pdf', 'svg'))}.", file=sys.stderr)
        return 2
    order = per_sample["index"]
    flipped = per_sample["y"] != per_sample["y_true"]
    try:
        path = plot_weights(points[order], per_sample[key], flipped, out, title=f"{key} per training point ({run_dir.name})")
    except OSError as error:
        from noisylab.results import unwritable

        print(f"plot_weights: error: {unwritable(error, out)}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
