"""T-Revision (Xia, Liu, Wang, Han, Gong, Niu & Sugiyama, "Are Anchor Points Really
Indispensable in Label-Noise Learning?", NeurIPS 2019; official code xiaoboxia/T-Revision).

T (T_ij = P(observed j | true i)) is estimated from anchor points, then used for importance
reweighting, then revised by a learned slack ΔT. With p = softmax f(x) and the given label y:
    1. ``estimate`` (20 epochs): CE on the given labels; then T̂ from the network's softmax on
       every training sample (the anchor points of ``method=forward``: for each class the
       sample with the largest p_i below the 97th percentile, its p as T̂'s row, rows normalised);
    2. ``reweight`` (200 epochs): L = mean_i β_i·CE(f(x_i), y_i), β_i = p_{y_i} / (T̂^T p)_{y_i}
       held constant (the code wraps β in a fresh ``Variable``: no gradient through it);
    3. ``revise`` (200 epochs): T = T̂ + ΔT, ΔT a C×C parameter starting at 0 with its own
       optimiser (Adam 5e-7, weight decay 1e-4); L as in 2 with T̂ + ΔT, β now differentiable,
       which is the only way ΔT gets a gradient.
The network of each stage starts from the last one's (no re-initialisation). Clean score: none.
``train/transition_error`` logs ‖T − T_realised‖₁ / ‖T_realised‖₁ once T̂ exists (a diagnostic,
as the code prints; the realised T is never trained on).

Protocol ``t_revision`` (the official main.py, CIFAR-10): ResNet-18, batch 128, SGD 0.01 weight
decay 1e-4; stage 2 with momentum 0.9 and lr ×0.1 at its epochs 40 and 80; 20 + 200 + 200
epochs. MNIST: 100 reweighting epochs; CIFAR-100: 15 estimation epochs and the plain argmax
anchor (``conf/method_data/``).

Deviations: T̂ comes from the last network of stage 1 and stage 2 (3) starts from the last of
stage 1 (2), where the code takes the epochs of best noisy-validation accuracy; stage 1 uses
the protocol's SGD with momentum 0.9 (the code: no momentum); in stage 3 the network keeps its
SGD at lr ``revision_lr`` (the code moves network and ΔT together with one Adam at 5e-7), only
ΔT has Adam; the network is PreAct ResNet-18 (the code: ResNet-18 without padding in its first
convolution); p is not clipped before the anchor search (as ``method=forward``); the anchor
search works on a copy and normalises T̂'s rows, where the code's ``tools.fit`` zeroes the top
3% of each column in place (``robust_eta`` is a view), so a later class's anchor can read a
zeroed entry, and ``tools.norm`` divides column j by row j's sum (``T / row_sum``): the same T̂
whenever the anchors' rows are intact (they then sum to 1), a different one otherwise (a hand
case in tests/test_official_apl_cores_tmatrix_pes_cdr_idn.py: entries off by up to 0.95). With
``quirks=official``: ``accumulated_slack`` — the code's ``reweighting_revision_loss`` adds ΔT
to T inside its loop over the batch (``T = T + correction`` per sample), so the i-th sample of
a batch is reweighted with T̂ + (i + 1)·ΔT (up to 128·ΔT at batch 128) and ΔT's gradient is
(B + 1)/2 = 64.5 times larger on average; the same file's ``reweighting_revision_loss_v2``
(unused by its main.py) adds ΔT once, as here (both re-typed in
tests/test_official_apl_cores_tmatrix_pes_cdr_idn.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import Stage, require
from noisylab.methods.loss_correction import estimate_transition
from noisylab.methods.volminnet import transition_error


def reweighted_loss(logits: torch.Tensor, y: torch.Tensor, transition: torch.Tensor,
                    weight_gradient: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-3: mean_i β_i·CE_i with β_i = p_{y_i} / (T^T p_i)_{y_i}; ``weight_gradient``:
    β carries a gradient (stage 3), else it is a constant. ``transition`` is one C×C matrix or
    one per sample (B×C×C). Returns (loss, β)."""
    probs = logits.softmax(dim=1)
    clean = probs.gather(1, y[:, None]).squeeze(1)
    noisy_all = torch.einsum("bc,bcd->bd", probs, transition) if transition.dim() == 3 else probs @ transition
    noisy = noisy_all.gather(1, y[:, None]).squeeze(1)  # (T^T p)_y
    beta = clean / noisy
    if not weight_gradient:
        beta = beta.detach()
    return (beta * F.cross_entropy(logits, y, reduction="none")).mean(), beta


def accumulated_transitions(estimate: torch.Tensor, slack: torch.Tensor, batch: int) -> torch.Tensor:
    """The official loop's T for each sample of a batch: T̂ + (i + 1)·ΔT for the i-th (B×C×C)."""
    steps = torch.arange(1, batch + 1, dtype=slack.dtype, device=slack.device).view(-1, 1, 1)
    return estimate + steps * slack


class TRevision(LNLMethod):
    official_quirks = ("accumulated_slack",)

    def __init__(self, estimate_epochs: int, reweight_epochs: int, filter_outlier: bool, percentile: float,
                 revision_lr: float, slack_optimizer, **settings):
        super().__init__(**settings)
        require(int(estimate_epochs) >= 1, "estimate_epochs", estimate_epochs,
                "be >= 1 (T is estimated from the network stage 1 trains)")
        require(int(reweight_epochs) >= 0, "reweight_epochs", reweight_epochs, "be >= 0")
        require(0.0 < float(percentile) <= 100.0, "percentile", percentile, "lie in (0, 100]")
        require(float(revision_lr) >= 0, "revision_lr", revision_lr, "be >= 0 (the network's lr in stage 3)")
        self.estimate_epochs, self.reweight_epochs = int(estimate_epochs), int(reweight_epochs)
        self.filter_outlier, self.percentile = bool(filter_outlier), float(percentile)
        self.revision_lr, self.slack_optimizer = float(revision_lr), slack_optimizer
        self.add_network("net", self.build_network)
        self.register_buffer("estimated_transition", torch.eye(self.num_classes))
        self.slack = nn.Parameter(torch.zeros(self.num_classes, self.num_classes))  # ΔT

    def stages(self):
        return [Stage("estimate", epochs=self.estimate_epochs, lr_schedule={"name": "none"}),
                Stage("reweight", epochs=self.reweight_epochs, reset_optimizer=True,
                      lr_schedule=self.protocol.get("lr_schedule")),  # the recipe's plan, from the stage's start
                Stage("revise", reset_optimizer=True, lr=self.revision_lr, lr_schedule={"name": "none"})]

    def declare_optimizers(self):
        return {**super().declare_optimizers(), "slack": ([self.slack], self.slack_optimizer)}

    def transition(self) -> torch.Tensor:
        return self.estimated_transition + self.slack

    def on_train_epoch_start(self) -> None:
        span = self.stage_at(self.current_epoch)
        if span.index > 0 and span.stage.name != "estimate" and self.current_epoch == span.start \
                and self.stage_at(self.current_epoch - 1).stage.name == "estimate":
            logits, _ = self.training_set_pass(self.net)  # stage 1's last network
            estimate = estimate_transition(logits.softmax(dim=1).cpu().numpy(), self.filter_outlier, self.percentile)
            self.estimated_transition.copy_(torch.as_tensor(estimate, dtype=self.estimated_transition.dtype))
        super().on_train_epoch_start()

    def training_step(self, batch, batch_idx: int):
        logits, y = self.net(batch["x"]), batch["y"]
        stage, parts = self.stage.name, {}
        if stage == "estimate":
            loss = F.cross_entropy(logits, y)
            self.step(loss)
        else:
            revise = stage == "revise"
            transition = self.transition()
            if revise and "accumulated_slack" in self.quirks:
                transition = accumulated_transitions(self.estimated_transition, self.slack, len(y))
            loss, beta = reweighted_loss(logits, y, transition, weight_gradient=revise)
            self.step(loss, ("net", "slack") if revise else "net")
            parts = {"train/beta": beta.mean()}
        self.log_epoch_mean({"train/loss": loss, **parts}, len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        if self.facts.transition is not None and self.stage.name != "estimate":
            truth = torch.tensor(self.facts.transition, dtype=torch.float32, device=self.device)
            self.log("train/transition_error", transition_error(self.transition().detach(), truth),
                     on_step=False, on_epoch=True, batch_size=1)
        super().on_train_epoch_end()
