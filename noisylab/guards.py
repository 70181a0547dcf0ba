"""A Lightning callback that stops a run whose training diverged, instead of letting it
train on to chance accuracy and write results that look normal.

``FiniteGuard`` watches every loss a method backpropagates (Lightning's ``on_before_backward``
sees each ``self.step(loss)``), the losses logged at each epoch end (``train/loss``,
``val/loss``, ...), any logged metric that is infinite, and the networks' weights at each
epoch end. A loss that is NaN, infinite or above ``max_loss`` (1e6 by default: Adam at
lr=1e6 gives finite losses of 1e14) raises :class:`~noisylab.errors.DivergenceError`, one
sentence naming the epoch and step; ``noisylab.train.task`` prints it, records it as
``error.txt`` in the run folder and exits with status 2; no ``results.json`` is written.

The per-step check costs no device synchronisation: each step's loss is kept (detached) and
the pending ones are read together every ``check_every_n_steps`` steps and at each epoch end. Logged metrics
may be NaN when a quantity was not measured in an epoch (e.g. label precision without clean
labels), so NaN stops a run only in a metric whose name says it is a loss.
"""

from __future__ import annotations

import math

import torch
from pytorch_lightning import Callback

from noisylab.errors import DivergenceError


class FiniteGuard(Callback):
    def __init__(self, max_loss: float | None = 1e6, check_every_n_steps: int = 50):
        self.max_loss = math.inf if max_loss is None else float(max_loss)
        self.every = max(1, int(check_every_n_steps))
        self._batch = 0
        self._pending: list[tuple[int, torch.Tensor]] = []  # (batch index, loss) not checked yet

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._pending = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch = batch_idx

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._pending.append((self._batch, loss.detach()))  # read in bulk later: no synchronisation here

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % self.every == 0:
            self._check_losses(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check_losses(trainer, pl_module)
        for name, module in pl_module.named_children():
            weights = [p.detach() for p in module.parameters()]
            if weights and not bool(torch.stack([torch.isfinite(w).all() for w in weights]).all()):
                raise DivergenceError(f"training diverged: the weights of {name} became non-finite in epoch "
                                      f"{trainer.current_epoch} (0-based){self._advice(pl_module)}")
        self._check_metrics(trainer, pl_module, "at the end of training epoch")

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._check_metrics(trainer, pl_module, "after validation in epoch")

    def _check_losses(self, trainer, pl_module) -> None:
        if not self._pending:
            return
        values = torch.stack([loss.float().sum() for _, loss in self._pending])
        bad = torch.nonzero(~torch.isfinite(values) | (values.abs() > self.max_loss)).flatten().tolist()
        steps, self._pending = [step for step, _ in self._pending], []
        if not bad:
            return
        value = float(values[bad[0]])
        what = f"became {value}" if not math.isfinite(value) else f"reached {value:.3g} (above {self.max_loss:g})"
        raise DivergenceError(f"training diverged: the loss {what} at step {steps[bad[0]]} of epoch "
                              f"{trainer.current_epoch} (0-based){self._advice(pl_module)}")

    def _check_metrics(self, trainer, pl_module, when: str) -> None:
        for name, value in trainer.callback_metrics.items():
            value = float(value)
            if math.isinf(value) or (math.isnan(value) and "loss" in name):
                raise DivergenceError(f"training diverged: {name} became {value} {when} {trainer.current_epoch} "
                                      f"(0-based){self._advice(pl_module)}")

    @staticmethod
    def _advice(pl_module) -> str:
        lr = getattr(getattr(getattr(pl_module, "protocol", None), "optimizer", None), "lr", None)
        return f"; lower the learning rate (protocol.optimizer.lr={lr:g}) or check the method's settings." \
            if lr is not None else "; check the learning rate and the method's settings."
