"""The table of docs/suspects.md: noisylab's suspects list vs cleanlab's find_label_issues on
digits with synthetic noise. Needs `pip install cleanlab` (not a noisylab dependency).

    OMP_NUM_THREADS=1 python docs/suspects_vs_cleanlab.py [output folder]     (about 5 minutes)
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def noisylab_run(out: Path, name: str, *overrides: str) -> Path:
    folder = out / name
    if not (folder / "results.json").exists():
        subprocess.run([sys.executable, "-m", "noisylab", *overrides, "logger=none", "trainer.enable_progress_bar=false",
                        f"hydra.run.dir={folder}"], check=True, cwd=str(ROOT), capture_output=True)
    return folder


def main(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from cleanlab.filter import find_label_issues
    from omegaconf import OmegaConf
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from noisylab import suspects
    from noisylab.train import build_datamodule

    for noise in ("sym20", "sym50"):
        runs = {f"coteaching_s{s}": noisylab_run(out, f"coteaching_{noise}_s{s}", "method=coteaching", f"noise={noise}",
                                                 "data=digits", f"seed={s}") for s in (0, 1)}
        loaded = {name: suspects.load_run(folder) for name, folder in runs.items()}
        first = loaded["coteaching_s0"]
        y, wrong = first["y"], first["y"] != first["y_true"]
        n_wrong = int(wrong.sum())
        ks = [50, 100, n_wrong]

        def row(order, auc, wrong=wrong, ks=ks, **extra):
            return {**{f"p@{k}": float(wrong[order][:k].mean()) for k in ks}, "auc": auc, "order": order, **extra}

        rows = {f"noisylab {name} (clean score)": row(suspects.run_order(r), suspects.auc(r["clean_score"], ~wrong))
                for name, r in loaded.items()}
        order, score = suspects.rank(list(loaded.values()))
        rows["noisylab agreement of 2 seeds"] = row(order, suspects.auc(score, ~wrong))  # higher mean rank: cleaner
        # cleanlab: out-of-fold probabilities of a logistic regression on the same training images and labels
        cfg = OmegaConf.create(json.loads((runs["coteaching_s0"] / "results.json").read_text())["config"])
        datamodule = build_datamodule(cfg)
        datamodule.prepare()
        features = datamodule.train["x"].numpy().reshape(len(y), -1)
        probs = cross_val_predict(LogisticRegression(max_iter=2000), features, y, cv=5, method="predict_proba")
        ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
        quality = probs[np.arange(len(y)), y]
        rest = np.setdiff1d(np.arange(len(y)), ranked)
        cl_order = np.concatenate([ranked, rest[np.argsort(quality[rest], kind="stable")]])
        rows["cleanlab find_label_issues (5-fold logistic regression)"] = row(
            cl_order, suspects.auc(quality, ~wrong), flagged=len(ranked), precision=float(wrong[ranked].mean()),
            recall=float(wrong[ranked].sum() / n_wrong))
        ours = set(rows["noisylab coteaching_s0 (clean score)"]["order"][:n_wrong])
        print(f"\n## digits {noise}: {len(y)} training samples, {n_wrong} flipped; k = 50, 100, {n_wrong}")
        for name, m in rows.items():
            overlap = len(set(m["order"][:n_wrong]) & ours) / n_wrong
            flagged = (f" flagged {m['flagged']}, precision {m['precision']:.3f}, recall {m['recall']:.3f}"
                       if "flagged" in m else "")
            print(f"| {name} | " + " | ".join(f"{m[f'p@{k}']:.3f}" for k in ks) + f" | {m['auc']:.4f} | {overlap:.2f} |"
                  + flagged)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "suspects_vs_cleanlab").absolute())
