"""Training in-process: determinism, and the honesty test (no method trains on y_true)."""

import pytest
import torch

from noisylab.methods.base import LNLMethod
from noisylab.train import run
from tests.conftest import shuffle_y_true
from tests.test_method_contract import stopped_run

FAST = ["debug=fast", "protocol.epochs=3"]


def trained_weights(results) -> dict:
    checkpoint = torch.load(f"{results['run_dir']}/checkpoints/last.ckpt", weights_only=False)
    return {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("nets.") or k.startswith("net.")}


@pytest.mark.parametrize("method", ["ce", "coteaching"])
def test_training_never_reads_y_true(make_cfg, monkeypatch, method):
    reference = run(make_cfg(*FAST, f"method={method}"))
    reference_weights = trained_weights(reference)
    shuffle_y_true(monkeypatch)
    shuffled = run(make_cfg(*FAST, f"method={method}"))
    weights = trained_weights(shuffled)
    assert weights.keys() == reference_weights.keys() and weights
    for name, tensor in reference_weights.items():
        assert torch.equal(tensor, weights[name]), name
    assert shuffled["metrics"]["test/acc"] == reference["metrics"]["test/acc"]
    if method == "coteaching":  # the diagnostic did see the shuffled labels
        assert shuffled["metrics"]["train/label_precision"] != reference["metrics"]["train/label_precision"]


def test_same_seed_same_metrics_other_seed_other_weights(make_cfg):
    first = run(make_cfg(*FAST, "method=ce"))
    first_weights = trained_weights(first)  # read now: the runs share one run dir
    second = run(make_cfg(*FAST, "method=ce"))
    assert first["metrics"] == second["metrics"]
    other = run(make_cfg(*FAST, "method=ce", "seed=1"))
    assert any(not torch.equal(a, b) for a, b in zip(first_weights.values(), trained_weights(other).values()))


def test_wandb_logs_offline_into_the_run_dir_without_a_key(make_cfg, monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    results = run(make_cfg("protocol.epochs=1", "trainer.enable_progress_bar=false", "callbacks=none", "logger=wandb"))
    runs = list((tmp_path / "run0" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert (tmp_path / "run0" / "csv" / "metrics.csv").is_file() and results["metrics"]["test/acc"] is not None


def test_a_run_resumes_from_its_checkpoint_with_its_history(make_cfg, monkeypatch):
    first = stopped_run(make_cfg("debug=fast", "protocol.epochs=4", "+callbacks.stop._target_=tests.test_method_contract.stop_after",
                         "+callbacks.stop.epochs=2"))
    checkpoint = f"{first['run_dir']}/checkpoints/last.ckpt"
    captured = {}
    original = LNLMethod.summary_metrics

    def capture(self):
        captured["history"] = {k: list(v) for k, v in self.history.items()}
        return original(self)

    monkeypatch.setattr(LNLMethod, "summary_metrics", capture)
    resumed = run(make_cfg("debug=fast", "protocol.epochs=4",
                           f"ckpt_path={checkpoint}"))
    assert resumed["epochs"] == 4
    assert len(captured["history"]["test/acc_epoch"]) == 4  # 2 restored + 2 new epochs


def test_a_checkpoint_loads_back_into_its_method_for_evaluation(make_cfg):
    from noisylab.methods.coteaching import CoTeaching

    results = run(make_cfg("debug=fast", "protocol.epochs=1"))
    restored = CoTeaching.load_from_checkpoint(f"{results['run_dir']}/checkpoints/last.ckpt")
    restored.eval()
    logits = restored.network("net2")(torch.zeros(3, 1, 8, 8))
    assert logits.shape == (3, 10) and restored.forget_rate(20) == pytest.approx(0.5)
