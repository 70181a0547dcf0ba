"""PES, progressive early stopping, without semi-supervised learning (Bai et al.,
"Understanding and Improving Early Stopping for Learning with Noisy Labels", NeurIPS 2021;
official code tmllab/PES, ``PES_cs.py``: "PES without semi").

One network, its layers in groups (input side first, the linear head last). Later layers
memorise noise sooner, so each part is stopped early on its own:
    1. train the whole network with CE for ``early_epochs`` (T1; the code: 25 on CIFAR-10,
       30 on CIFAR-100);
    2. re-initialise the last ``refine_groups`` groups and the head, freeze the rest, train
       them for ``refine_epochs`` (T2, 7) with Adam at ``refine_lr`` (1e-4);
    3. re-initialise the head alone, train it for ``head_epochs`` (T3, 5) the same way;
    4. for the rest of the run, at the start of every epoch select the samples the network
       predicts as their observed label, and train the whole network on them with CE weighted
       per class by mean(count) / count (the protocol's SGD, as in step 1).
Stages 2 and 3 train on the whole noisy set (the code computes a selection first and drops
it). Layer groups: the network's top-level parameterised modules (a ResNet's stem, layer1 ...
layer4; cnn9's blocks), or the children of its only feature module (an MLP's ``body``); the
head is ``classifier``; ``refine_groups`` 1 re-trains a ResNet's layer4 with the head, as the
code; at least the first group is kept (digits' one-hidden-layer MLP: ``refine_groups`` 0, the
head alone, from conf/method_data/pes_digits.yaml). Clean score: the softmax probability of the observed label at the last selection.

Protocol ``pes``: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, crop + flip, normalisation; the
code's 200 epochs count T2 + T3 as one (the refinement runs inside epoch T1), so 211 epochs
here (25 + 7 + 5 + 174) with the lr x0.1 at 111 and 161 (the code's 100 and 150). Deviations:
PreAct ResNet-18 rather than the code's ResNet-18 (CIFAR-100: its ResNet-34); the selected
samples are masked inside the noisy batches (the code builds a loader of them, dropping its
last partial batch); the semi-supervised variant (``PES_semi.py``: MixMatch on the selected
and the rest, lambda_u) is not implemented. With ``quirks=official``: ``augmented_selection``
— the code predicts the selection on augmented images, the mean softmax of two independently
augmented views of each (``common/tools.py::predict_softmax``); ``stale_optimizer`` — the code's
re-initialisation builds new layers the SGD optimiser does not hold, so after step 3 only the
layers that were not re-initialised are trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import Stage, require

HEAD = "classifier"


def layer_groups(network: nn.Module) -> list[str]:
    """Names of the network's parameterised top-level modules before its head, or of the
    children of its only one (an MLP's ``body``), input side first."""
    def parameterised(module: nn.Module, prefix: str = "") -> list[str]:
        return [prefix + name for name, child in module.named_children()
                if name != HEAD and any(True for _ in child.parameters())]

    groups = parameterised(network)
    if len(groups) == 1:
        groups = parameterised(network.get_submodule(groups[0]), groups[0] + ".") or groups
    return groups


def renewed_modules(network: nn.Module, groups: int) -> list[str]:
    """The last ``groups`` layer groups and the head."""
    before = layer_groups(network)
    return [*before[len(before) - groups:], HEAD] if groups else [HEAD]


def confident_selection(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Step 4: the samples whose prediction is their observed label."""
    return logits.argmax(dim=1) == y


def mean_softmax(views: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the views' softmax outputs (one view: its softmax)."""
    return torch.stack([logits.softmax(dim=1) for logits in views]).mean(dim=0)


def class_weights(y: torch.Tensor, selected: torch.Tensor, num_classes: int) -> torch.Tensor:
    """mean(count) / count over the selected samples' labels; 0 for a class with none."""
    counts = torch.bincount(y[selected], minlength=num_classes).float()
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts[present].mean() / counts[present]
    return weights


class PES(LNLMethod):
    official_quirks = ("augmented_selection", "stale_optimizer")

    def __init__(self, early_epochs: int, refine_epochs: int, head_epochs: int, refine_groups: int,
                 refine_lr: float, **settings):
        super().__init__(**settings)
        for key, value in (("early_epochs", early_epochs), ("refine_epochs", refine_epochs),
                           ("head_epochs", head_epochs), ("refine_groups", refine_groups)):
            require(int(value) >= 0, key, value, "be >= 0")
        require(float(refine_lr) > 0, "refine_lr", refine_lr, "be > 0 (Adam's lr for the re-initialised layers)")
        self.early_epochs, self.refine_epochs, self.head_epochs = int(early_epochs), int(refine_epochs), int(head_epochs)
        self.refine_groups, self.refine_lr = int(refine_groups), float(refine_lr)
        self.add_network("net", self.build_network)
        available = len(layer_groups(self.net))
        require(self.refine_groups < available, "refine_groups", refine_groups,
                f"be below {available}, the layer groups of this network before its head (the first ones stay: "
                "PES re-trains later layers on the features of the earlier ones)")
        self.selected = self.per_sample_state("selected")  # 1: in the last selection
        self.label_probability = self.per_sample_state("label_probability")
        self.register_buffer("weights", torch.ones(self.num_classes))
        self._refine_optimizer: torch.optim.Optimizer | None = None
        self._refine_state: dict | None = None  # a resumed refinement optimiser's state

    def stages(self) -> list[Stage]:
        return [Stage("early", epochs=self.early_epochs), Stage("refine", epochs=self.refine_epochs),
                Stage("refine_head", epochs=self.head_epochs), Stage("select")]

    def refined(self) -> list[str]:
        return renewed_modules(self.net, self.refine_groups if self.stage.name == "refine" else 0)

    def refined_parameters(self) -> list[nn.Parameter]:
        return [p for name in self.refined() for p in self.net.get_submodule(name).parameters()]

    def on_train_epoch_start(self) -> None:
        span = self.stage_at(self.current_epoch)
        name = span.stage.name
        if span.index > 0:
            self.select()  # the code selects before each refinement too (and drops it there)
        if name.startswith("refine"):
            if self.current_epoch == span.start:
                fresh = self.build_network().to(self.device)
                for module in self.refined():
                    self.net.get_submodule(module).load_state_dict(fresh.get_submodule(module).state_dict())
                self._refine_optimizer = None
            if self._refine_optimizer is None:
                self._refine_optimizer = torch.optim.Adam(self.refined_parameters(), lr=self.refine_lr)
                if self._refine_state is not None:
                    self._refine_optimizer.load_state_dict(self._refine_state)
                    self._refine_state = None
        else:
            self._refine_optimizer = None
        super().on_train_epoch_start()

    def select(self) -> None:
        augmented = "augmented_selection" in self.quirks  # the code: two augmented views, their softmax averaged
        probs = mean_softmax([self.training_set_pass(augment=augmented)[0] for _ in range(2 if augmented else 1)])
        y = self.trainer.datamodule.train["y"].to(self.device)
        selected = confident_selection(probs, y)
        self.selected.copy_(selected.float())
        self.label_probability.copy_(probs.gather(1, y[:, None]).squeeze(1))
        self.weights.copy_(class_weights(y, selected, self.num_classes))

    def training_step(self, batch, batch_idx: int):
        x, y = batch["x"], batch["y"]
        selecting = self.stage.name == "select"
        kept = self.selected[batch["index"]] > 0 if selecting else torch.ones_like(y, dtype=torch.bool)
        if not bool(kept.any()):
            return None
        loss = F.cross_entropy(self.net(x)[kept], y[kept], weight=self.weights if selecting else None)
        if self._refine_optimizer is not None:  # steps 2-3: the re-initialised layers alone
            self.net.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            self._refine_optimizer.step()
        else:
            stale = selecting and "stale_optimizer" in self.quirks
            self.step(loss, adjust=self.drop_refined_gradients if stale else None)
        self.log_epoch_mean({"train/loss": loss, "train/kept": kept.float().mean(),
                             "train/label_precision": (y == batch["y_true"])[kept].float().mean()}, len(y))
        return loss

    def drop_refined_gradients(self) -> None:
        renewed = renewed_modules(self.net, self.refine_groups if self.refine_epochs else 0)
        for module in renewed if self.refine_epochs or self.head_epochs else []:
            for p in self.net.get_submodule(module).parameters():
                p.grad = None  # SGD skips a parameter without a gradient (no decay, no momentum)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._refine_optimizer is not None:
            checkpoint["pes_refine_optimizer"] = self._refine_optimizer.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._refine_state = checkpoint.get("pes_refine_optimizer")

    def clean_score(self) -> torch.Tensor:
        return self.label_probability
