"""The 9-layer CNN of Co-teaching (Han et al., NeurIPS 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisylab.models.base import Classifier, as_bool, as_float, model_builder

# Shape arithmetic: c1-c6 keep the size (padding 1), each 2x2/2 max-pool floors H/2, and c7-c9
# (3x3, padding 0) remove 2 pixels each: out = floor(floor(H/2)/2) - 6 >= 1  <=>  H >= 28.
# MNIST (28) ends at 1x1, CIFAR (32) at 2x2, which the global average pool covers.
MIN_IMAGE_SIZE = 28


class ChannelDropout(nn.Dropout2d):
    """``nn.Dropout2d`` that can optionally stay active in eval mode (``keep_in_eval``)."""

    def __init__(self, p: float, keep_in_eval: bool = False):
        super().__init__(p)
        self.keep_in_eval = keep_in_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(x, self.p, self.training or self.keep_in_eval, self.inplace)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keep_in_eval={self.keep_in_eval}"


def _conv_bn_lrelu(cin: int, cout: int, padding: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=padding),  # bias kept
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.01)]


class CNN9(Classifier):
    """Three blocks of 3x3 conv + BN + LeakyReLU(0.01), then global average pool and a
    128 -> C linear head (see :func:`build_cnn9`)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float, quirk_eval_dropout: bool):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_lrelu(in_channels, 128, 1), *_conv_bn_lrelu(128, 128, 1),
            *_conv_bn_lrelu(128, 128, 1),
            nn.MaxPool2d(kernel_size=2, stride=2),
            ChannelDropout(dropout, quirk_eval_dropout),
            *_conv_bn_lrelu(128, 256, 1), *_conv_bn_lrelu(256, 256, 1), *_conv_bn_lrelu(256, 256, 1),
            nn.MaxPool2d(kernel_size=2, stride=2),
            ChannelDropout(dropout, quirk_eval_dropout),
            *_conv_bn_lrelu(256, 512, 0), *_conv_bn_lrelu(512, 256, 0), *_conv_bn_lrelu(256, 128, 0),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.make_head(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@model_builder("cnn9", min_image_size=MIN_IMAGE_SIZE)
def build_cnn9(input_shape, num_classes, *, dropout=0.25, quirk_eval_dropout=False) -> CNN9:
    """The "9-layer CNN" of Co-teaching (Han et al., NeurIPS 2018; bhanML/Co-teaching
    ``model.py::CNN``), also used by its CE baseline on MNIST, CIFAR-10 and CIFAR-100.

    All convolutions are 3x3, stride 1, with bias, each followed by BatchNorm (default
    momentum) and LeakyReLU(0.01):
    c1 C->128, c2 128->128, c3 128->128 (padding 1) -> max-pool 2x2/2 -> Dropout2d(0.25);
    c4 128->256, c5 256->256, c6 256->256 (padding 1) -> max-pool 2x2/2 -> Dropout2d(0.25);
    c7 256->512, c8 512->256, c9 256->128 (padding 0) -> global average pool -> Linear 128->C.
    Needs images of at least 28x28.

    Dropout: the official code calls ``F.dropout2d(h, p)`` without ``training=``, so its
    dropout stays on at test time and its reported accuracies are stochastic. We use a real
    ``nn.Dropout2d``, which ``model.eval()`` turns off; ``quirk_eval_dropout=True`` restores
    the official behaviour for bit-level parity. The official ``top_bn`` option (always False
    there) is not offered.

    Settings: ``dropout`` (channel dropout rate, default 0.25), ``quirk_eval_dropout`` (bool).
    """
    rate = as_float("cnn9", "dropout", dropout, 0.0, 1.0)
    keep = as_bool("cnn9", "quirk_eval_dropout", quirk_eval_dropout)
    return CNN9(input_shape[0], num_classes, rate, keep)
