"""Co-teaching+ (Yu et al., "How does Disagreement Help Generalization against Label
Corruption?", ICML 2019; official code xingruiyu/coteaching_plus).

Two networks f, g; for each mini-batch:
    1. epochs T < init_epoch: plain Co-teaching (cross update of small-loss samples);
    2. afterwards, the disagreement set D' = {i : argmax f(x_i) != argmax g(x_i)};
    3. inside D': each network keeps its (1 - forget(T))·|D'| smallest-loss samples and its
       peer is updated on them (Co-teaching's cross update, restricted to D');
    4. D' empty: full-batch CE while global_step < warmup_steps, otherwise no update;
       forget(T) as in Co-teaching (``schedule`` group).

Follows the official code in: Adam lr 1e-3, batch 128, 200 epochs, lr decayed linearly to 0
from epoch 80 with beta1 0.9 -> 0.1, Tk = 10, no augmentation or normalisation, init_epoch 20
for CIFAR-10 (0 for MNIST, 5 for CIFAR-100), both networks evaluated separately.
Stages: ``coteaching`` (the first ``init_epoch`` epochs), then ``disagreement``.
Clean score: the fraction of selections that kept a sample (in the disagreement stage only
the disagreeing samples are offered). So ``train/detection_auc`` (about 0.6 on MNIST) and
``train/label_precision`` (3-29% there) describe the disagreement subset, mostly noisy samples,
not a clean set as the other methods' do: they are not comparable with theirs (the report says
so under its table).

Deviations, on purpose (the paper's semantics where the code differs); ``quirks=official``
turns the marked ones back on: logits go into the cross-entropy (the code feeds softmax
outputs to ``F.cross_entropy``, i.e. CE of softmax(softmax(logits)): quirk
``softmax_input``, disagreement stage only, as in the code); the loss is the plain mean over
the kept samples (the code divides the mean again: quirk ``double_normalisation``); and
Co-teaching's ``skip_first_epoch``, ``drop_last``, ``linspace_schedule``,
``dropout_at_eval``. Measured on real MNIST (MLP 784-256-10, sym-50, 200 epochs, seed 0, last-10
mean; docs/reproduction-mnist.md): the paper mode 86.9% (it peaks at 96.2% near epoch 18, then
decays), ``quirks=official`` 95.3% (the published 95.8% come from this behaviour), and
``quirks=[softmax_input]`` alone 94.95%: the softmax input carries the gap. Not reproduced even then: the warm-up counts global steps (the code's
``step = epoch * batch_index``) and defaults to 0 steps (code: 5000; set
``method.warmup_steps``); without disagreement and past the warm-up no optimizer step is
taken (the code zeroes the loss but still steps Adam, whose momentum keeps moving the
weights); when floor((1 - forget)·|D'|) is 0 one sample is kept (the code keeps all of D');
label precision counts dataset index 0 too (the code drops it); the default model is the
6-conv CNN of JoCoR's re-run of Co-teaching+ (the paper's own CIFAR-10 net is LeNet-style:
``model=lenet``; on MNIST the MLP 784-256-10, as the code); every epoch covers the whole
training set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.methods.contract import Stage, require
from noisylab.methods.coteaching import COTEACHING_QUIRKS, CoTeaching, cross_update_losses
from noisylab.methods.decoupling import disagreement_mask


def disagreement_cross_update(logits1, logits2, y, forget_rate: float, **quirks):
    """Steps 2-3. Returns ``loss1, loss2, kept_by_1, kept_by_2, disagree`` with the kept
    indices in batch positions, or ``None`` when the networks agree on every sample.
    ``quirks``: the official code's ``double_normalisation`` and ``softmax_input``."""
    disagree = disagreement_mask(logits1, logits2).nonzero().flatten()
    if len(disagree) == 0:
        return None
    loss1, loss2, kept_by_1, kept_by_2 = cross_update_losses(
        logits1[disagree], logits2[disagree], y[disagree], forget_rate, **quirks)
    return loss1, loss2, disagree[kept_by_1], disagree[kept_by_2], disagree


class CoTeachingPlus(CoTeaching):
    official_quirks = (*COTEACHING_QUIRKS, "softmax_input")

    def __init__(self, schedule, init_epoch: int, warmup_steps: int, **settings):
        require(init_epoch >= 0, "init_epoch", init_epoch, "be >= 0 (epochs of plain Co-teaching first)")
        require(warmup_steps >= 0, "warmup_steps", warmup_steps, "be >= 0")
        super().__init__(schedule, **settings)
        self.init_epoch, self.warmup_steps = int(init_epoch), int(warmup_steps)

    def stages(self):
        return [Stage("coteaching", epochs=self.init_epoch), Stage("disagreement")]

    def training_step(self, batch, batch_idx: int):
        if self.stage.name == "coteaching":
            return super().training_step(batch, batch_idx)
        x, y = batch["x"], batch["y"]
        size = len(y)
        forget = self.forget_rate(self.current_epoch)
        logits1, logits2 = self.nets(x)
        selected = disagreement_cross_update(logits1, logits2, y, forget,
                                             double_normalisation="double_normalisation" in self.quirks,
                                             softmax_input="softmax_input" in self.quirks)
        if selected is not None:
            loss1, loss2, kept_by_1, kept_by_2, disagree = selected
        elif self.global_step < self.warmup_steps:  # no disagreement yet: learn from the full batch
            loss1, loss2 = F.cross_entropy(logits1, y), F.cross_entropy(logits2, y)
            kept_by_1 = kept_by_2 = disagree = torch.arange(size, device=y.device)
        else:  # nothing to learn from in this batch
            self.log_epoch_mean({"train/update_fraction": 0.0, "train/forget_rate": forget}, size)
            return None
        self.step(loss1 + loss2)  # each network gets the gradient of its own loss only
        self.log_epoch_mean({"train/update_fraction": len(disagree) / size}, size)
        self.log_selection(batch, loss1, loss2, kept_by_1, kept_by_2, forget, offered=disagree)
        return loss1
