"""CDR, robust early learning (Xia et al., "Robust Early-Learning: Hindering the Memorization of
Noisy Labels", ICLR 2021; official code xiaoboxia/CDR, ``main.py::train_one_step``).

One network; the weights (matrices and convolution kernels) split at every step into
*critical* ones, which fit the clean majority early, and the rest, which would memorise the
noise:
    1. the gradient g of the mean CE on the batch;
    2. over all weight matrices and kernels together, the score |w·g| per entry; the
       (1 - tau) fraction with the largest scores is critical;
    3. a critical weight takes its gradient step (with weight decay); any other keeps only
       the weight decay (its gradient is zeroed before the optimiser's step, which adds the
       decay); biases and normalisation parameters always take their gradient.
tau = ``clip_rate``, the noise rate of the run by default (the code's ``1 - noise_rate``).

Protocol ``cdr`` (the code's CIFAR settings): SGD 0.01, momentum 0.9, wd 1e-3, batch 64, 200
epochs, lr x0.1 at epochs 40 and 80, crop + flip, normalisation; MNIST (protocol_data
``cdr_mnist``): batch 32, 100 epochs, lr x0.1 at 10 and 20, the code's LeNet. Deviations: the
code's CIFAR ResNet-50 is not offered (``preact_resnet18`` here). The code builds a schedule of
tau from 0 to the noise rate over ``num_gradual`` epochs but overwrites it (``clip = 1 -
noise_rate`` on the next line), so tau is constant there as here. With ``quirks=official``:
``scaled_gradient`` — the code multiplies the kept gradients by 1 - tau as well;
``lr_one_epoch_early`` — the code steps its MultiStepLR before each epoch, so each lr drop
comes one epoch early (at 39 and 79). Not reproduced: the code's ``train`` runs the network on
each batch once more before ``train_one_step`` (for its accuracy, in train mode), so BatchNorm's
running statistics take two updates per step (weight 0.19 per batch at momentum 0.1, not 0.1);
gradients and steps are unaffected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from noisylab.methods.base import LNLMethod
from noisylab.methods.contract import require


def critical_masks(weights: list[torch.Tensor], grads: list[torch.Tensor], keep_fraction: float) -> list[torch.Tensor]:
    """Step 2: per tensor, True where |w·g| is among the ``int(keep_fraction · total)`` largest
    over all tensors together (ties with the threshold kept, as the code's ``>=``)."""
    scores = [(w * g).abs() for w, g in zip(weights, grads)]
    flat = torch.cat([s.reshape(-1) for s in scores])
    count = max(int(keep_fraction * flat.numel()), 1)
    threshold = torch.topk(flat, count).values[-1]
    return [s >= threshold for s in scores]


class CDR(LNLMethod):
    official_quirks = ("scaled_gradient", "lr_one_epoch_early")

    def __init__(self, clip_rate: float | None, **settings):
        super().__init__(**settings)
        tau = self.noise_rate if clip_rate is None else float(clip_rate)
        require(0.0 <= tau < 1.0, "clip_rate", clip_rate if clip_rate is not None else f"null (the noise rate {tau})",
                "lie in [0, 1) (the fraction of weights whose gradient is dropped)")
        self.clip_rate = tau
        self.add_network("net", self.build_network)

    def weights(self) -> list[torch.nn.Parameter]:
        return [p for p in self.net.parameters() if p.dim() in (2, 4) and p.grad is not None]

    def mask_gradients(self) -> None:
        weights = self.weights()
        keep = 1.0 - self.clip_rate
        masks = critical_masks([w.detach() for w in weights], [w.grad for w in weights], keep)
        scale = keep if "scaled_gradient" in self.quirks else 1.0
        for weight, mask in zip(weights, masks):
            weight.grad.mul_(mask * scale)
        self.log_epoch_mean({"train/critical_fraction": sum(m.sum() for m in masks) / sum(m.numel() for m in masks)}, 1)

    def epoch_hyperparameters(self, epoch: int):
        if "lr_one_epoch_early" in self.quirks:
            epoch = min(epoch + 1, self.max_epochs - 1)
        return super().epoch_hyperparameters(epoch)

    def training_step(self, batch, batch_idx: int):
        loss = F.cross_entropy(self.net(batch["x"]), batch["y"])
        self.step(loss, adjust=self.mask_gradients)
        self.log_epoch_mean({"train/loss": loss}, len(batch["y"]))
        return loss
