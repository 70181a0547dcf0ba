"""Our suspects list vs cleanlab's find_label_issues on digits with synthetic noise."""
import subprocess, sys, json
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/wt-datasets")
from noisylab import suspects

PY = "/work/main/.venv/bin/python"
out = Path("/tmp/dsw/cmp")
def noisylab_run(name, *overrides):
    d = out / name
    if not (d / "results.json").exists():
        subprocess.run([PY, "-m", "noisylab", *overrides, "logger=none", "trainer.enable_progress_bar=false",
                        f"hydra.run.dir={d}"], check=True, cwd="/work/wt-datasets", capture_output=True)
    return d

def measures(score_clean, wrong, k_list):
    order = np.lexsort((np.arange(len(score_clean)), score_clean))
    res = {f"p@{k}": float(wrong[order][:k].mean()) for k in k_list}
    res["auc"] = suspects.auc(score_clean, ~wrong)
    return res, order

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from cleanlab.filter import find_label_issues
import time
for noise in ("sym20", "sym50"):
    runs = {m: noisylab_run(f"{m}_{noise}_s{s}", f"method={m}", f"noise={noise}", "data=digits", f"seed={s}")
            for m, s in (("coteaching", 0), ("coteaching", 1), ("dyr_h", 0))}  if False else {}
    runs = {}
    for m, s in (("coteaching", 0), ("coteaching", 1)):
        runs[f"{m}_s{s}"] = noisylab_run(f"{m}_{noise}_s{s}", f"method={m}", f"noise={noise}", "data=digits", f"seed={s}")
    first = suspects.load_run(runs["coteaching_s0"])
    y, y_true = first["y"], first["y_true"]
    wrong = y != y_true
    n_wrong = int(wrong.sum())
    ks = [50, 100, n_wrong]
    rows = {}
    for name, d in runs.items():
        r = suspects.load_run(d)
        order = suspects.run_order(r)
        rows[f"noisylab {name} (clean score)"] = ({**{f"p@{k}": float(wrong[order][:k].mean()) for k in ks},
                                                 "auc": suspects.auc(r["clean_score"], ~wrong)}, order)
    order, score = suspects.rank([suspects.load_run(d) for d in runs.values()])
    rows["noisylab agreement of 2 seeds"] = ({**{f"p@{k}": float(wrong[order][:k].mean()) for k in ks},
                                             "auc": suspects.auc(-score, ~wrong)}, order)
    # cleanlab: out-of-fold probabilities of a logistic regression on the same training images
    x = __import__("noisylab.train", fromlist=["x"])
    from omegaconf import OmegaConf
    cfg = OmegaConf.create(json.loads((runs["coteaching_s0"] / "results.json").read_text())["config"])
    dm = x.build_datamodule(cfg); dm.prepare()
    features = dm.train["x"].numpy().reshape(len(y), -1)
    t = time.time()
    probs = cross_val_predict(LogisticRegression(max_iter=2000), features, y, cv=5, method="predict_proba")
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    flagged = np.zeros(len(y), bool); flagged[ranked] = True
    rest = np.setdiff1d(np.arange(len(y)), ranked)
    quality = probs[np.arange(len(y)), y]
    cl_order = np.concatenate([ranked, rest[np.argsort(quality[rest], kind="stable")]])
    rows["cleanlab find_label_issues (5-fold logistic regression)"] = (
        {**{f"p@{k}": float(wrong[cl_order][:k].mean()) for k in ks}, "auc": suspects.auc(quality, ~wrong),
         "flagged": int(len(ranked)), "flagged precision": float(wrong[ranked].mean()),
         "flagged recall": float(wrong[ranked].sum() / n_wrong)}, cl_order)
    # cleanlab on our run's own predictions is not possible: per_sample.npz keeps only p(given label)
    ours = rows["noisylab coteaching_s0 (clean score)"][1][:n_wrong]
    print(f"\n## digits {noise}: {len(y)} training samples, {n_wrong} flipped; k = 50, 100, {n_wrong}")
    for name, (m, order) in rows.items():
        overlap = len(set(order[:n_wrong]) & set(ours)) / n_wrong
        print(f"| {name} | " + " | ".join(f"{m[f'p@{k}']:.3f}" for k in ks) + f" | {m['auc']:.4f} | {overlap:.2f} |"
              + (f" flagged {m['flagged']}, precision {m['flagged precision']:.3f}, recall {m['flagged recall']:.3f}" if 'flagged' in m else ""))
    for name, d in runs.items():
        res = json.loads((d / "results.json").read_text())["metrics"]
        print(name, "train/detection_auc", res.get("train/detection_auc"), "test/acc", res.get("test/acc"), "wall", json.loads((d / "results.json").read_text())["wall_time_s"])
