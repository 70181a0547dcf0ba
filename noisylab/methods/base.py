"""What every method shares: networks from the ``model`` group, optimisers and their
per-epoch schedule from config, and validation/test metrics.

A method subclasses :class:`LNLMethod` and writes ``training_step`` as its paper's
pseudo-code. Optimisation is manual (``self.step(loss)``, one optimizer) so that one- and
two-network methods read alike. Evaluation is uniform: every network a method reports
(``self.reported``) gets ``val/acc`` (on the noisy validation split), ``val/clean_acc``
(diagnostic), and the test accuracy of every epoch, from which ``test/acc_last10`` (the
mean over the last 10 epochs, as Co-teaching reports) is computed.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from omegaconf import DictConfig, ListConfig, OmegaConf

from noisylab.errors import ConfigError
from noisylab.models import build_model


def build_optimizer(parameters, cfg) -> torch.optim.Optimizer:
    name = cfg.get("name", "adam")
    lr = float(cfg.lr)
    weight_decay = float(cfg.get("weight_decay", 0.0))
    if name == "adam":
        betas = tuple(cfg.get("betas", (0.9, 0.999)))
        return torch.optim.Adam(parameters, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                               weight_decay=weight_decay, nesterov=bool(cfg.get("nesterov", False)))
    raise ConfigError(f"Unknown optimizer '{name}'; choose adam or sgd.")


def lr_factor(cfg, epoch: int, max_epochs: int) -> float:
    """Multiplier of the base learning rate at ``epoch`` (0-based)."""
    name = cfg.get("name", "none") if cfg is not None else "none"
    if name == "none":
        return 1.0
    if name == "linear_decay":  # Co-teaching: linear to 0 from decay_start to the end
        start = int(cfg.decay_start)
        return 1.0 if epoch < start else (max_epochs - epoch) / max(max_epochs - start, 1)
    if name == "multistep":
        return float(cfg.get("gamma", 0.1)) ** sum(epoch >= m for m in cfg.milestones)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max_epochs))
    raise ConfigError(f"Unknown lr_schedule '{name}'; choose none, linear_decay, multistep or cosine.")


class LNLMethod(pl.LightningModule):
    """Base of every method. ``reported`` names the networks whose accuracy is logged."""

    reported: tuple[str, ...] = ("net",)

    def __init__(self, *, model, num_classes: int, input_shape, train_size: int, noise_rate: float,
                 max_epochs: int, optimizer, lr_schedule=None, last_k: int = 10, **method_settings):
        super().__init__()
        self.save_hyperparameters(ignore=["method_settings"])
        for key, value in list(self.hparams.items()):  # plain types: checkpoints load with weights_only
            if isinstance(value, (DictConfig, ListConfig)):
                self.hparams[key] = OmegaConf.to_container(value, resolve=True)
        self.automatic_optimization = False
        self.model_cfg = dict(model)
        self.num_classes, self.input_shape = int(num_classes), tuple(input_shape)
        self.train_size, self.noise_rate, self.max_epochs = int(train_size), float(noise_rate), int(max_epochs)
        self.optimizer_cfg = OmegaConf.create(optimizer)  # a dict too (load_from_checkpoint)
        self.lr_schedule_cfg = None if lr_schedule is None else OmegaConf.create(lr_schedule)
        self.last_k = int(last_k)
        self.metrics = torch.nn.ModuleDict({
            f"{split}_{net}": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
            for split in ("val", "val_clean", "test") for net in self.reported
        })
        self.history: dict[str, list[float]] = {}
        self.epoch_sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ building blocks
    def build_network(self) -> torch.nn.Module:
        settings = {k: v for k, v in self.model_cfg.items() if k != "name"}
        return build_model(self.model_cfg["name"], self.input_shape, self.num_classes, **settings)

    def network(self, name: str) -> torch.nn.Module:
        return getattr(self, name)

    def configure_optimizers(self):
        """One optimizer over every trainable parameter (see ``methods/pair.py`` for why
        that also serves two-network methods)."""
        return build_optimizer([p for p in self.parameters() if p.requires_grad], self.optimizer_cfg)

    def step(self, loss: torch.Tensor) -> None:
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def per_sample_state(self, name: str, *shape: int, fill: float = 0.0, dtype=torch.float32) -> torch.Tensor:
        """A buffer with one row per training sample (indexed by ``batch["index"]``); it is
        saved in checkpoints."""
        self.register_buffer(name, torch.full((self.train_size, *shape), fill, dtype=dtype))
        return getattr(self, name)

    def log_epoch_mean(self, values: dict, batch_size: int) -> None:
        """Training statistics, averaged over the epoch (weighted by batch size, NaN = not
        measured in this batch) and logged once at its end. Lightning's ``self.log`` costs
        about a millisecond per call on the CPU, more than a small network's whole step."""
        for name, value in values.items():
            value = value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value))
            measured = ~torch.isnan(value)
            total, count = self.epoch_sums.get(name, (0.0, 0.0))
            self.epoch_sums[name] = (total + torch.where(measured, value, 0.0) * batch_size,
                                     count + measured.float() * batch_size)

    def on_train_epoch_end(self) -> None:
        for name, (total, count) in self.epoch_sums.items():
            self.log(name, total / count if float(count) > 0 else torch.tensor(float("nan")), sync_dist=True)
        self.epoch_sums = {}

    # ------------------------------------------------------------------ the epoch plan
    def epoch_hyperparameters(self, epoch: int) -> tuple[float, float | None]:
        """(lr, Adam's beta1 or None to keep it) for ``epoch``: the lr schedule, and the
        Co-teaching code's switch of beta1 to ``beta1_after_decay`` at the decay start."""
        lr = float(self.optimizer_cfg.lr) * lr_factor(self.lr_schedule_cfg, epoch, self.max_epochs)
        beta1_after = (self.lr_schedule_cfg or {}).get("beta1_after_decay")
        if beta1_after is None:
            return lr, None
        decayed = epoch >= int(self.lr_schedule_cfg.decay_start)
        return lr, float(beta1_after) if decayed else float(tuple(self.optimizer_cfg.get("betas", (0.9,)))[0])

    def on_train_epoch_start(self) -> None:
        lr, beta1 = self.epoch_hyperparameters(self.current_epoch)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
                if beta1 is not None and "betas" in group:
                    group["betas"] = (beta1, group["betas"][1])
        self.log_epoch_mean({"train/lr": lr}, 1)

    # ------------------------------------------------------------------- evaluation
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["noisylab_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = checkpoint.get("noisylab_history", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.reported[0])(x)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.trainer.datamodule.eval_splits[dataloader_idx]
        for net in self.reported:
            logits = self.network(net)(batch["x"])
            self.metrics[f"{split}_{net}"].update(logits, batch["y"])
            if split == "val":
                known = batch["y_true"] >= 0
                self.metrics[f"val_clean_{net}"].update(logits[known], batch["y_true"][known])
                self.log("val/loss" + self._suffix(net), F.cross_entropy(logits, batch["y"]),
                         add_dataloader_idx=False, batch_size=len(batch["y"]), sync_dist=True)

    def _suffix(self, net: str) -> str:
        return "" if net == self.reported[0] else f"_{net}"

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            for metric in self.metrics.values():
                metric.reset()
            return
        for net in self.reported:
            for split, key in (("val", "val/acc"), ("val_clean", "val/clean_acc"), ("test", "test/acc_epoch")):
                metric = self.metrics[f"{split}_{net}"]
                if metric.update_count == 0:
                    continue
                value = float(metric.compute())
                metric.reset()
                name = key + self._suffix(net)
                self.history.setdefault(name, []).append(value)
                self.log(name, value, sync_dist=True)  # already global: torchmetrics syncs on compute

    def test_step(self, batch, batch_idx: int) -> None:
        for net in self.reported:
            logits = self.network(net)(batch["x"])
            self.metrics[f"test_{net}"].update(logits, batch["y"])

    def on_test_epoch_end(self) -> None:
        for net in self.reported:
            metric = self.metrics[f"test_{net}"]
            self.log("test/acc" + self._suffix(net), float(metric.compute()), sync_dist=True)
            metric.reset()

    def summary_metrics(self) -> dict[str, float]:
        """Metrics over the whole run: last-k mean test accuracy, best validation accuracy
        and the test accuracy at the epoch of best validation accuracy (model selection on
        the noisy validation split)."""
        out: dict[str, float] = {}
        for net in self.reported:
            suffix = self._suffix(net)
            tests = self.history.get("test/acc_epoch" + suffix, [])
            if tests:
                out[f"test/acc_last{self.last_k}{suffix}"] = sum(tests[-self.last_k:]) / len(tests[-self.last_k:])
            vals = self.history.get("val/acc" + suffix, [])
            if vals:
                best = max(range(len(vals)), key=vals.__getitem__)
                out["val/acc_best" + suffix] = vals[best]
                if len(tests) == len(vals):
                    out["test/acc_at_best_val" + suffix] = tests[best]
        return out


class TwoNetworkMethod(LNLMethod):
    """Base of methods that train two networks of one shape on the same batches;
    ``self.nets(x)`` gives both logits, ``fused=True`` runs them as one vmapped network."""

    reported = ("net1", "net2")

    def __init__(self, fused: bool = False, **settings):
        super().__init__(**settings)
        from noisylab.methods.pair import make_pair

        self.nets = make_pair(self.build_network, fused)

    def network(self, name: str) -> torch.nn.Module:
        return self.nets.member(self.reported.index(name))
