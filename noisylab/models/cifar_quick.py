"""Caffe's "CIFAR-10 quick" network (examples/cifar10/cifar10_quick_train_test.prototxt)."""

from __future__ import annotations

import torch
from torch import nn

from noisylab.errors import ConfigError
from noisylab.models.base import Classifier, model_builder

# Caffe pools round up (ceil mode): out = ceil((H - 3) / 2) + 1, and the 5x5 convs (padding 2)
# keep the size. 8 -> 4 -> 2 -> 1 is the smallest chain that never pools a 1-pixel map (which
# would give 0 outputs); 32 -> 16 -> 8 -> 4 on CIFAR, so ip1 sees 64*4*4 = 1024 inputs.
MIN_IMAGE_SIZE = 8


def _caffe_pooled(size: int) -> int:
    return -(-(size - 3) // 2) + 1


class CifarQuick(Classifier):
    """conv5 32 -> maxpool 3/2 -> ReLU; conv5 32 -> ReLU -> avgpool 3/2; conv5 64 -> ReLU ->
    avgpool 3/2; ip1 (64, no non-linearity); ip2 = linear head."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, init: str):
        super().__init__()
        channels, height, width = input_shape
        for _ in range(3):
            height, width = _caffe_pooled(height), _caffe_pooled(width)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=5, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.AvgPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.AvgPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.Flatten(),
            nn.Linear(64 * height * width, 64),
        )
        self.make_head(64, num_classes)
        if init == "caffe":
            # Gaussian weight fillers of the prototxt, constant-0 biases.
            stds = iter([1e-4, 1e-2, 1e-2, 1e-1, 1e-1])
            for module in [*self.body, self.classifier]:
                if isinstance(module, nn.Conv2d | nn.Linear):
                    nn.init.normal_(module.weight, 0.0, next(stds))
                    nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@model_builder("cifar_quick", min_image_size=MIN_IMAGE_SIZE)
def build_cifar_quick(input_shape, num_classes, *, init="caffe") -> CifarQuick:
    """Caffe's CIFAR-10 "quick" network (BVLC Caffe, examples/cifar10/
    cifar10_quick_train_test.prototxt), the network of SOSELETO's noisy CIFAR-10 experiments
    (Litany & Freedman, 2018) and of the earlier noise-adaptation-layer line of work
    (Goldberger & Ben-Reuven, ICLR 2017; Bekker & Goldberger, 2016).

    conv 5x5 C->32 (pad 2) -> max-pool 3/2 -> ReLU; conv 5x5 32->32 (pad 2) -> ReLU ->
    avg-pool 3/2; conv 5x5 32->64 (pad 2) -> ReLU -> avg-pool 3/2; fc 64 (ip1); fc C (ip2).
    As in Caffe, pooling rounds up (``ceil_mode=True``) and there is no ReLU between ip1 and
    ip2; the features are the 64-dimensional ip1 output. Needs images of at least 8x8.
    Caffe's doubled bias learning rate (``lr_mult: 2``) belongs to the optimiser and is not
    reproduced here.

    Settings: ``init`` = ``"caffe"`` (default: the prototxt's Gaussian fillers, std 1e-4 for
    conv1, 1e-2 for conv2/conv3, 0.1 for ip1/ip2, zero biases) or ``"torch"`` (PyTorch's
    default initialisation).
    """
    if init not in ("caffe", "torch"):
        raise ConfigError(f"model cifar_quick needs init to be 'caffe' or 'torch', but got {init!r}.")
    return CifarQuick(input_shape, num_classes, init)
