"""The numerical guard: a diverging run stops with one sentence naming the epoch and step,
records it in error.txt and writes no results.json."""

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from noisylab.errors import DivergenceError
from noisylab.guards import FiniteGuard

ROOT = Path(__file__).resolve().parents[1]


class Module(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(2, 2)
        self.protocol = SimpleNamespace(optimizer=SimpleNamespace(lr=0.5))


def trainer(epoch=2, **metrics):
    return SimpleNamespace(current_epoch=epoch, sanity_checking=False,
                           callback_metrics={k: torch.tensor(v) for k, v in metrics.items()})


def feed(guard, losses, trainer_, module, every_end=True):
    """Runs the guard's hooks over one epoch of backward passes with ``losses``."""
    guard.on_train_epoch_start(trainer_, module)
    for step, loss in enumerate(losses):
        guard.on_train_batch_start(trainer_, module, None, step)
        guard.on_before_backward(trainer_, module, torch.tensor(loss))
        guard.on_train_batch_end(trainer_, module, None, None, step)
    if every_end:
        guard.on_train_epoch_end(trainer_, module)


def test_a_nan_loss_names_its_epoch_and_step_at_the_next_check():
    guard, t, module = FiniteGuard(check_every_n_steps=10), trainer(epoch=2), Module()
    feed(guard, [1.0, 0.9, 0.8], t, module)  # a healthy epoch passes
    guard.on_train_epoch_start(t, module)
    for step, loss in enumerate([0.7, 0.6, 0.5, math.nan, 0.4, math.inf]):
        guard.on_train_batch_start(t, module, None, step)
        guard.on_before_backward(t, module, torch.tensor(loss))
        guard.on_train_batch_end(t, module, None, None, step)  # 6 < 10 steps: not read yet
    with pytest.raises(DivergenceError) as stopped:
        guard.on_train_epoch_end(t, module)
    assert str(stopped.value) == ("training diverged: the loss became nan at step 3 of epoch 2 (0-based); lower the "
                                  "learning rate (protocol.optimizer.lr=0.5) or check the method's settings.")


def test_a_loss_above_the_limit_counts_as_divergence_and_is_read_every_n_steps():
    guard, t, module = FiniteGuard(max_loss=1e6, check_every_n_steps=2), trainer(epoch=0), Module()
    with pytest.raises(DivergenceError, match=r"the loss reached 2e\+07 \(above 1e\+06\) at step 1 of epoch 0"):
        feed(guard, [3.0, 2e7, 1.0, 1.0], t, module, every_end=False)
    feed(FiniteGuard(max_loss=None), [3.0, 2e7], t, module)  # no limit: only NaN and inf stop a run


def test_non_finite_weights_and_loss_metrics_stop_the_run_but_unmeasured_metrics_do_not():
    module = Module()
    FiniteGuard().on_validation_end(trainer(**{"train/label_precision": math.nan, "val/acc": 0.5}), module)
    with pytest.raises(DivergenceError, match=r"val/loss became nan after validation in epoch 2"):
        FiniteGuard().on_validation_end(trainer(**{"val/loss": math.nan}), module)
    with pytest.raises(DivergenceError, match=r"train/forget_rate became inf"):
        FiniteGuard().on_validation_end(trainer(**{"train/forget_rate": math.inf}), module)
    with torch.no_grad():
        module.net.weight[0, 1] = math.nan
    with pytest.raises(DivergenceError, match=r"the weights of net became non-finite in epoch 2"):
        feed(FiniteGuard(), [1.0], trainer(), module)


def test_an_astronomical_loss_stops_the_run(make_cfg, one_thread):
    """Adam at lr=1e6 keeps the loss finite but astronomical (1e14): the limit catches it at
    once (in process; the command line's exit and error.txt: the NaN case below)."""
    from noisylab.errors import NoisyLabError
    from noisylab.train import run

    cfg = make_cfg("method=ce", "data=digits", "debug=limit", "protocol.optimizer.lr=1e6")
    with pytest.raises(NoisyLabError, match="training diverged: the loss reached"):
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "results.json").exists()


@pytest.mark.parametrize("overrides,sentence", [
    # SGD at lr=1e6 with no limit: the network's outputs become NaN
    (["protocol=mixup", "protocol.optimizer.lr=1e6", "callbacks.finite_guard.max_loss=null"], "became nan"),
])
def test_a_diverging_run_stops_with_one_sentence_and_no_results(tmp_path, overrides, sentence):
    command = [sys.executable, "-m", "noisylab", "method=ce", "data=digits", "debug=limit", *overrides,
               f"hydra.run.dir={tmp_path}/run"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("noisylab: error: training diverged: ") and sentence in error
    assert " of epoch " in error or " in epoch " in error
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "results.json").exists()
    assert (tmp_path / "run" / "error.txt").read_text().strip() == error.removeprefix("noisylab: error: ")
