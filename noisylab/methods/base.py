"""What every method shares, written once.

A method subclasses :class:`LNLMethod` and writes ``training_step`` as its paper's
pseudo-code. The base gives it:

* **networks** from the ``model`` group (``self.add_network``), re-buildable for a stage that
  retrains from scratch;
* **declared optimisers**: ``net`` over the networks, from the protocol; a method may add
  more in ``declare_optimizers`` (a weighting network's, label variables'). Every trainable
  parameter belongs to exactly one, the epoch plan (lr, Adam's beta1) touches only ``net``,
  Lightning checkpoints the state of all; ``self.optimizer(name)`` is the plain torch
  optimiser (what ``higher`` needs), ``self.step(loss, name)`` one update;
* **stages** (``stages()``): warm-up, training, retraining; the current one is
  ``self.stage`` and is logged as ``train/stage``;
* **the training set in index order** (``training_set_pass``) and **views** of raw batches
  (``raw_batches = True`` + ``self.view(x)``);
* **per-sample state** (``per_sample_state``): buffers with one row per training sample,
  kept in checkpoints, synchronised across DDP processes at each epoch end, written to
  ``per_sample.npz``; a method's ``clean_score()`` gives ``train/detection_auc``;
* **evaluation**: ``val/acc`` on the noisy validation split, ``val/clean_acc``
  (diagnostic), the test accuracy of every epoch, ``test/acc_last10``;
* **the official-code switch** (``quirks=official``): the behaviours a method lists in
  ``official_quirks`` (and its docstring) are turned on together; ``quirks=[name, ...]`` turns
  on the named ones only.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from noisylab.errors import ConfigError
from noisylab.methods.contract import QUIRK_MODES, RunFacts, Stage, StageSpan, plan_stages
from noisylab.models import build_model
from noisylab.schema import optimizer_settings

log = logging.getLogger("noisylab")


def build_optimizer(parameters, cfg, fused: bool = False, decay_weights_only: bool = False) -> torch.optim.Optimizer:
    """The optimiser of the node ``cfg`` (``_target_`` + ``_partial_``, or the old ``name``),
    its settings checked by ``noisylab.schema``; ``fused``: fused kernels when the optimiser
    has them and every parameter is on CUDA (``speed.fused``); ``decay_weights_only``: weight
    decay on weight matrices and kernels only (parameters of 2 or more dimensions), none on
    biases and BatchNorm's scales and shifts."""
    from hydra.utils import get_class

    settings, parameters = optimizer_settings(cfg), list(parameters)
    cls = get_class(settings["_target_"])
    arguments = {k: tuple(v) if k == "betas" else v for k, v in settings.items() if k not in ("_target_", "_partial_")}
    if fused and parameters and all(p.is_cuda for p in parameters) and "fused" in inspect.signature(cls).parameters:
        arguments["fused"] = True
    if decay_weights_only:
        parameters = [group for group in ({"params": [p for p in parameters if p.dim() > 1]},
                                          {"params": [p for p in parameters if p.dim() <= 1], "weight_decay": 0.0})
                      if group["params"]]
    return cls(parameters, **arguments)


def lr_factor(cfg, epoch: int, max_epochs: int) -> float:
    """Multiplier of the base learning rate at ``epoch`` (0-based) of ``max_epochs``."""
    name = cfg.get("name", "none") if cfg is not None else "none"
    if name == "none":
        return 1.0
    if name == "linear_decay":  # Co-teaching: linear to 0 from decay_start to the end
        start = int(cfg.decay_start)
        return 1.0 if epoch < start else (max_epochs - epoch) / max(max_epochs - start, 1)
    if name == "multistep":
        return float(cfg.get("gamma", 0.1)) ** sum(epoch >= m for m in cfg.milestones)
    if name == "cosine":
        floor = float(cfg.get("floor", 0.0))  # torch's eta_min / lr
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * epoch / max_epochs))
    if name == "cosine_restarts":  # SGDR as tf.train.cosine_decay_restarts (IEG): periods p, p·t_mul, p·t_mul², ...
        t_mul, m_mul = float(cfg.t_mul), float(cfg.m_mul)  # each restart's peak is m_mul × the last one's
        done = epoch / float(cfg.first_period)
        # (+1e-9: at an exact restart boundary the logarithms' rounding would count one restart short)
        restart = math.floor(done) if t_mul == 1 else math.floor(math.log(1 - done * (1 - t_mul)) / math.log(t_mul) + 1e-9)
        before = restart if t_mul == 1 else (1 - t_mul ** restart) / (1 - t_mul)  # periods already completed
        cosine = m_mul ** restart * 0.5 * (1.0 + math.cos(math.pi * (done - before) / t_mul ** restart))
        floor = float(cfg.get("floor", 0.0))  # tf's alpha; torch's eta_min / lr
        return floor + (1.0 - floor) * cosine
    raise ConfigError(f"Unknown lr_schedule '{name}'; choose none, linear_decay, multistep, cosine or cosine_restarts.")


def plain(value):
    """Config nodes -> plain containers (checkpoints load with ``weights_only``)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, RunFacts):
        return value.as_dict()
    return value


class LNLMethod(pl.LightningModule):
    """Base of every method. ``reported`` names the networks whose accuracy is logged."""

    reported: tuple[str, ...] = ("net",)
    needs_trusted: bool = False        # the datamodule serves a trusted clean set beside the noisy one
    raw_batches: bool = False          # training batches arrive un-augmented: the method calls self.view(x)
    target_head: bool = False          # evaluates on facts.target_classes, another label space (transfer data)
    official_quirks: tuple[str, ...] = ()  # official-code behaviours applied with quirks=official
    fused_optimizers: bool = False     # speed.fused on CUDA (set by noisylab.speed.apply)

    def __init__(self, *, facts, model, protocol, quirks: str | Sequence[str] = "paper"):
        super().__init__()
        # every constructor's argument for the checkpoint, made plain values in place (a second save_hyperparameters
        # compares its dict with each argument: a DictConfig converts it, the facts' C x C noise matrix included,
        # minutes at 1000 classes); not for the loggers, which get the run's config (noisylab.train)
        self.save_hyperparameters(ignore=["settings"], logger=False)
        self.hparams.update({key: plain(value) for key, value in self.hparams.items()})
        self.automatic_optimization = False
        self.facts = RunFacts.of(facts)
        self.model_cfg = dict(plain(model))
        self.protocol = OmegaConf.create(plain(protocol))
        self.quirks = self.quirks_for(quirks)
        self.num_classes, self.input_shape = self.facts.num_classes, self.facts.input_shape
        self.train_size, self.noise_rate = self.facts.train_size, self.facts.noise_rate
        self.max_epochs = self.facts.max_epochs
        self.last_k = int(self.protocol.get("last_k", 10))
        eval_classes = len(self.facts.target_classes or ()) or self.num_classes  # the test set's label space
        self.metrics = nn.ModuleDict({
            f"{split}_{net}": torchmetrics.classification.MulticlassAccuracy(eval_classes, average="micro")
            for split in ("val", "val_clean", "test") for net in self.reported
        })
        self.history: dict[str, list[float]] = {}
        self.epoch_sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._builders: dict[str, Callable[[], nn.Module]] = {}
        self._per_sample: list[str] = []
        self._spans: list[StageSpan] | None = None
        self._optimizer_names: list[str] = []
        self._flushed_epoch = -1

    @classmethod
    def quirks_for(cls, request) -> frozenset[str]:
        """The official-code behaviours a run turns on: ``quirks=paper`` none, ``official`` every
        one in ``official_quirks``, or a list of their names (``quirks=[softmax_input]``), so that
        each one's effect can be measured alone."""
        if isinstance(request, str):
            if request not in QUIRK_MODES:
                raise ConfigError(f"quirks must be one of {', '.join(QUIRK_MODES)} or a list of the method's quirk "
                                  f"names, got {request!r}.")
            return frozenset(cls.official_quirks if request == "official" else ())
        names = [str(name) for name in request]
        unknown = [name for name in names if name not in cls.official_quirks]
        if unknown:
            listed = ", ".join(cls.official_quirks) or "none"
            raise ConfigError(f"quirk {unknown[0]} is not one of {cls.__name__}'s official-code behaviours; "
                              f"its quirks are: {listed}.")
        return frozenset(names)

    # ------------------------------------------------------------------ networks
    def build_network(self, num_classes: int | None = None) -> nn.Module:
        """The configured model with ``num_classes`` outputs (the data's classes unless given)."""
        settings = {k: v for k, v in self.model_cfg.items() if k != "name"}
        return build_model(self.model_cfg["name"], self.input_shape, num_classes or self.num_classes, **settings)

    def add_network(self, name: str, build: Callable[[], nn.Module]) -> nn.Module:
        """Builds a network (or pair) as attribute ``name``; ``build`` is kept so a stage can
        re-initialise it."""
        self._builders[name] = build
        setattr(self, name, build())
        return getattr(self, name)

    def networks(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in self._builders}

    def network(self, name: str) -> nn.Module:
        return getattr(self, name)

    def reinitialise_networks(self) -> None:
        """Fresh weights in the same parameter tensors (the optimisers keep pointing at them)."""
        for name, build in self._builders.items():
            getattr(self, name).load_state_dict(build().state_dict())

    # ------------------------------------------------------------------ optimisers
    def declare_optimizers(self) -> dict[str, tuple[Iterable[nn.Parameter], object]]:
        """name -> (parameters, optimiser settings). ``net``: the networks, with the
        protocol's optimiser. Methods with more trainable parameters add their own."""
        params = [p for module in self.networks().values() for p in module.parameters() if p.requires_grad]
        return {"net": (params, self.protocol.optimizer)}

    def configure_optimizers(self):
        declared = {name: (list(params), cfg) for name, (params, cfg) in self.declare_optimizers().items()}
        owner: dict[int, str] = {}
        for name, (params, _) in declared.items():
            for p in params:
                if id(p) in owner:
                    raise ConfigError(f"a parameter is declared in two optimisers, {owner[id(p)]} and {name}.")
                owner[id(p)] = name
        stray = [n for n, p in self.named_parameters() if p.requires_grad and id(p) not in owner]
        if stray:
            raise ConfigError(f"parameter {stray[0]} belongs to no declared optimiser (see declare_optimizers).")
        self._optimizer_names = list(declared)
        return [build_optimizer(params, OmegaConf.create(plain(cfg)), self.fused_optimizers,
                                "decay_weights_only" in self.quirks)
                for params, cfg in declared.values()]

    def _optimizer_index(self, name: str) -> int:
        if name not in self._optimizer_names:
            raise KeyError(f"no optimiser named {name!r}; declared: {self._optimizer_names}")
        return self._optimizer_names.index(name)

    def optimizer(self, name: str = "net") -> torch.optim.Optimizer:
        """The plain torch optimiser ``name`` (not Lightning's wrapper)."""
        return self.trainer.optimizers[self._optimizer_index(name)]

    def step(self, loss: torch.Tensor, name: str | tuple[str, ...] = "net",
             adjust: Callable[[], None] | None = None) -> None:
        """One update of optimiser ``name`` on ``loss``, through Lightning's wrapper (so the
        precision plugin's gradient scaling applies); a tuple of names: one backward, then a
        step of each (a network and per-sample variables trained on one loss); ``adjust()``
        runs between the backward pass and the update (gradient clipping, CDR's gradient mask)."""
        wrapped = self.optimizers()
        wrapped = wrapped if isinstance(wrapped, list) else [wrapped]
        chosen = [wrapped[self._optimizer_index(n)] for n in ((name,) if isinstance(name, str) else name)]
        for optimizer in chosen:
            optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if adjust is not None:
            adjust()
        for optimizer in chosen:
            optimizer.step()

    # ------------------------------------------------------------------ stages
    def stages(self) -> list[Stage]:
        """The method's phases; one stage over the whole run unless a method says otherwise."""
        return [Stage("train")]

    @property
    def stage_spans(self) -> list[StageSpan]:
        if self._spans is None:
            self._spans = plan_stages(self.stages(), self.max_epochs)
            for name in self.stage_record()["stages_not_run"]:
                log.warning("stage %s of %s never runs: the run ends after %d epochs.",
                            name, type(self).__name__, self.max_epochs)
        return self._spans

    def stage_record(self) -> dict:
        """For ``results.json``: the stages the run trained (name, first and last epoch,
        0-based) and those its epochs never reached, so the record says what ran."""
        ran = [{"name": span.stage.name, "epochs": [span.start, span.end - 1]} for span in self.stage_spans]
        reached = {span.stage.name for span in self.stage_spans}
        return {"stages": ran,
                "stages_not_run": [s.name for s in self.stages() if s.name not in reached and s.epochs != 0]}

    def stage_at(self, epoch: int) -> StageSpan:
        for span in self.stage_spans:
            if span.start <= epoch < span.end:
                return span
        return self.stage_spans[-1]

    @property
    def stage(self) -> Stage:
        return self.stage_at(self.current_epoch).stage

    def epoch_hyperparameters(self, epoch: int) -> tuple[float, float | None]:
        """(lr, Adam's beta1 or None to keep it) of the ``net`` optimiser at ``epoch``: the
        stage's or the protocol's lr plan, and Co-teaching's switch of beta1 to
        ``beta1_after_decay`` at the decay start."""
        span = self.stage_at(epoch)
        base_lr = float(self.protocol.optimizer.lr if span.stage.lr is None else span.stage.lr)
        if span.stage.lr_schedule is not None:
            plan = OmegaConf.create(plain(span.stage.lr_schedule))
            plan_epoch, plan_length = epoch - span.start, span.epochs
        else:
            plan, plan_epoch, plan_length = self.protocol.get("lr_schedule"), epoch, self.max_epochs
        lr = base_lr * lr_factor(plan, plan_epoch, plan_length)
        beta1_after = (plan or {}).get("beta1_after_decay")
        if beta1_after is None:
            return lr, None
        decayed = plan_epoch >= int(plan.decay_start)
        return lr, float(beta1_after) if decayed else float(tuple(self.protocol.optimizer.get("betas", (0.9,)))[0])

    def on_train_epoch_start(self) -> None:
        span = self.stage_at(self.current_epoch)
        if span.index > 0 and self.current_epoch == span.start:
            if span.stage.reinit:
                self.reinitialise_networks()
            if span.stage.reinit or span.stage.reset_optimizer:
                self.optimizer("net").state.clear()
        lr, beta1 = self.epoch_hyperparameters(self.current_epoch)
        for group in self.optimizer("net").param_groups:
            group["lr"] = lr
            if beta1 is not None and "betas" in group:
                group["betas"] = (beta1, group["betas"][1])
        self.log_epoch_mean({"train/lr": lr, "train/stage": float(span.index)}, 1)

    # ------------------------------------------------------------------ the official-code switch
    def on_train_batch_start(self, batch, batch_idx: int):
        if "skip_first_epoch" in self.quirks and self.current_epoch == 0:
            return -1  # the official loop only evaluates its first epoch
        if self.trainer.world_size > 1 and self._per_sample:
            self._touched[self.batch_indices(batch)] = True
        return None

    @contextlib.contextmanager
    def evaluation_mode(self):
        """Eval mode as the paper means it; with the ``dropout_at_eval`` quirk, dropout stays
        on (the official code never switches it off)."""
        if "dropout_at_eval" not in self.quirks:
            yield
            return
        dropouts = [m for m in self.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        for module in dropouts:
            module.train()
        try:
            yield
        finally:
            for module in dropouts:
                module.eval()

    # ------------------------------------------------------------------ data access
    @staticmethod
    def batch_indices(batch) -> torch.Tensor:
        return batch["index"] if "index" in batch else batch["noisy"]["index"]

    def view(self, x: torch.Tensor, augment: bool = True) -> torch.Tensor:
        """One view of raw inputs through the data's own pipeline (augmentation, then
        normalisation); call it K times for K views (``raw_batches = True`` methods)."""
        return self.trainer.datamodule.transform(x, augment)

    @torch.no_grad()
    def training_set_pass(self, network: nn.Module | None = None, augment: bool = False,
                          batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, per-sample CE against the observed labels) of every training sample, in
        index order, in eval mode, on this process's device; ``augment=True`` uses the
        training augmentation."""
        network = network or self.network(self.reported[0])
        was_training = network.training
        network.eval()
        logits = torch.zeros(self.train_size, self.num_classes, device=self.device)
        losses = torch.zeros(self.train_size, device=self.device)
        try:
            for batch in self.trainer.datamodule.ordered_train_batches(batch_size):
                x = self.trainer.datamodule.transform(batch["x"].to(self.device), augment)
                index, y = batch["index"].to(self.device), batch["y"].to(self.device)
                logits[index] = network(x).float()
                losses[index] = F.cross_entropy(logits[index], y, reduction="none")
        finally:
            network.train(was_training)
        return logits, losses

    # ------------------------------------------------------------------ per-sample state
    def per_sample_state(self, name: str, *shape: int, fill: float = 0.0, dtype=torch.float32) -> torch.Tensor:
        """A buffer with one row per training sample (indexed by ``batch["index"]``): kept in
        checkpoints, synchronised across DDP processes, saved in ``per_sample.npz``."""
        self.register_buffer(name, torch.full((self.train_size, *shape), fill, dtype=dtype))
        return self._track_per_sample(name)

    def per_sample_parameter(self, name: str, initial: torch.Tensor) -> nn.Parameter:
        """A trainable tensor with one row per training sample (``initial``, sized to the
        training set), kept and saved as per-sample state; the method declares the optimiser
        that trains it (``declare_optimizers``). Only the rows a batch touches get a gradient,
        so a plain SGD step (no momentum, no weight decay) moves only those rows."""
        if initial.shape[0] != self.train_size:
            raise ValueError(f"{name} needs {self.train_size} rows, got {initial.shape[0]}")
        self.register_parameter(name, nn.Parameter(initial.clone()))
        return self._track_per_sample(name)

    def _track_per_sample(self, name: str) -> torch.Tensor:
        if not self._per_sample:
            self.register_buffer("_touched", torch.zeros(self.train_size, dtype=torch.bool), persistent=False)
        self._per_sample.append(name)
        # DDP broadcasts rank 0's buffers before every forward; per-sample rows are merged
        # at the epoch end instead (_sync_per_sample_state)
        self._ddp_params_and_buffers_to_ignore = [*self._per_sample, "_touched"]
        return getattr(self, name)

    def clean_score(self) -> torch.Tensor | None:
        """Per training sample, how clean the method believes its label is (higher: cleaner);
        ``None`` if the method has no such belief."""
        return None

    def per_sample_arrays(self) -> dict[str, np.ndarray]:
        arrays = {name: getattr(self, name).detach().cpu().numpy() for name in self._per_sample}
        score = self.clean_score()
        if score is not None:
            arrays["clean_score"] = score.detach().float().cpu().numpy()
        return arrays

    @torch.no_grad()
    def _sync_per_sample_state(self) -> None:
        """DDP: in an epoch each sample lives on one process (the loader splits the
        permutation), so every row is taken from the process that touched it."""
        if self.trainer.world_size <= 1 or not self._per_sample:
            return
        owners = self.trainer.strategy.reduce(self._touched.float(), reduce_op="sum")
        for name in self._per_sample:
            state = getattr(self, name)
            mask = self._touched.view(-1, *[1] * (state.dim() - 1))
            total = self.trainer.strategy.reduce(torch.where(mask, state, 0).double(), reduce_op="sum")
            seen = (owners > 0).view_as(mask)
            state.copy_(torch.where(seen, total.to(state.dtype), state))
        self._touched.zero_()

    def detection_auc(self) -> torch.Tensor | None:
        """AUROC of ``clean_score`` against whether each training label is right, over the
        samples where that is known (the datamodule's ``clean_flags``): a diagnostic of noise
        detection (nothing trains on it)."""
        score = self.clean_score()
        flags = getattr(self.trainer.datamodule, "clean_flags", None)
        if score is None or flags is None:
            return None
        flags = torch.as_tensor(flags(), device=score.device)
        known = flags >= 0
        clean = flags[known] == 1
        if bool(clean.all()) or not bool(clean.any()):
            return None  # one class only: AUROC undefined
        return torchmetrics.functional.classification.binary_auroc(score[known].float(), clean.long())

    # ------------------------------------------------------------------ epoch-level logging
    def log_epoch_mean(self, values: dict, batch_size: int) -> None:
        """Training statistics, averaged over the epoch (weighted by batch size, NaN = not
        measured in this batch) and logged once at its end. Lightning's ``self.log`` costs
        about a millisecond per call on the CPU, more than a small network's whole step."""
        for name, value in values.items():
            # on the module's device: under DDP on CUDA, NCCL cannot reduce a CPU tensor
            value = value.detach().float().to(self.device) if torch.is_tensor(value) else \
                torch.tensor(float(value), device=self.device)
            measured = ~torch.isnan(value)
            total, count = self.epoch_sums.get(name, (0.0, 0.0))
            self.epoch_sums[name] = (total + torch.where(measured, value, 0.0) * batch_size,
                                     count + measured.float() * batch_size)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.trainer.num_training_batches - 1:
            self._end_of_epoch()  # before validation, so the epoch's checkpoint holds the synced state

    def on_train_epoch_end(self) -> None:
        self._end_of_epoch()  # an epoch that stopped early (skip_first_epoch, limit_train_batches)

    def _end_of_epoch(self) -> None:
        if self._flushed_epoch == self.current_epoch:
            return
        self._flushed_epoch = self.current_epoch
        self._sync_per_sample_state()
        auc = self.detection_auc()
        # statistics of an earlier stage that this epoch did not log: results.json leaves them out
        logged = set(self.epoch_sums) | ({"train/detection_auc"} if auc is not None else set())
        self.statistics_seen = set(getattr(self, "statistics_seen", ())) | logged
        self.stale_statistics = sorted(self.statistics_seen - logged)
        if auc is not None:
            self.log("train/detection_auc", auc, on_step=False, on_epoch=True, batch_size=1)
        for name, (total, count) in self.epoch_sums.items():
            value = total / count if float(count) > 0 else torch.tensor(float("nan"), device=self.device)
            # once per epoch: batch_size=1 spares Lightning guessing it from a nested (trusted) batch
            self.log(name, value, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)
        self.epoch_sums = {}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["noisylab_method"] = f"{type(self).__module__}.{type(self).__qualname__}"  # checked at resume
        checkpoint["noisylab_identity"] = getattr(self, "run_identity", None)  # noisylab.run_folder
        checkpoint["noisylab_history"] = self.history
        checkpoint["noisylab_statistics"] = {"seen": sorted(getattr(self, "statistics_seen", ())),
                                             "stale": list(getattr(self, "stale_statistics", []))}
        name, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint["noisylab_rng"] = {  # plain types and tensors: loads with weights_only
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trained_on = ((checkpoint.get("hyper_parameters") or {}).get("facts") or {}).get("noise_fingerprint")
        if self._trainer is not None and trained_on and trained_on != self.facts.noise_fingerprint:
            raise ConfigError(f"ckpt_path={self.trainer.ckpt_path} was trained on other noisy labels (fingerprint "
                              f"{trained_on}) than this run's ({self.facts.noise_fingerprint}); resume it with the "
                              "data and noise it was trained on.")
        if self._trainer is not None:  # resuming a run (not a bare load): the networks must be the same
            saved, own = checkpoint.get("state_dict", {}), self.state_dict()
            differs = [k for k in own if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
            other = next(iter(differs + sorted(own.keys() ^ saved.keys())), None)
            if other is not None:
                raise ConfigError(f"ckpt_path={self.trainer.ckpt_path} holds other networks than this run builds "
                                  f"(first difference: {other}); resume it with the model and data it was trained with.")
        self.history = checkpoint.get("noisylab_history", {})
        statistics = checkpoint.get("noisylab_statistics") or {}
        self.statistics_seen = set(statistics.get("seen") or ())
        self.stale_statistics = list(statistics.get("stale") or [])
        rng = checkpoint.get("noisylab_rng")
        if rng is not None and self._trainer is not None:  # resuming: continue the random streams
            torch.set_rng_state(rng["torch"])
            name, keys, position, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
            random.setstate(rng["python"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    # ------------------------------------------------------------------ evaluation
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.reported[0])(x)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.trainer.datamodule.eval_splits[dataloader_idx]
        for net in self.reported:
            with self.evaluation_mode():
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
            with self.evaluation_mode():
                logits = self.network(net)(batch["x"])
            self.metrics[f"test_{net}"].update(logits, batch["y"])

    def on_test_epoch_end(self) -> None:
        for net in self.reported:
            metric = self.metrics[f"test_{net}"]
            self.log("test/acc" + self._suffix(net), float(metric.compute()), sync_dist=True)
            metric.reset()

    def summary_metrics(self) -> dict[str, float]:
        """Metrics over the whole run: last-k mean test accuracy, the best (highest of any
        epoch: a selection on the test set, as Arazo et al. and others report) and last
        epoch's test accuracy, best validation accuracy and the test accuracy at the epoch of
        best validation accuracy (model selection on the noisy validation split)."""
        out: dict[str, float] = {}
        for net in self.reported:
            suffix = self._suffix(net)
            tests = self.history.get("test/acc_epoch" + suffix, [])
            if tests:
                out[f"test/acc_last{self.last_k}{suffix}"] = sum(tests[-self.last_k:]) / len(tests[-self.last_k:])
                out["test/acc_best" + suffix], out["test/acc_last" + suffix] = max(tests), tests[-1]
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

    def __init__(self, fused: bool, **settings):
        super().__init__(**settings)
        from noisylab.methods.pair import make_pair

        self.add_network("nets", lambda: make_pair(self.build_network, bool(fused)))

    def network(self, name: str) -> nn.Module:
        return self.nets.member(self.reported.index(name))
