"""The small 1-D CNN of MNIST-1D (Greydanus, "Scaling down deep learning", 2020)."""

from __future__ import annotations

import torch
from torch import nn

from noisylab.errors import ConfigError
from noisylab.models.base import Classifier, _shape_text, as_int, model_builder

# (kernel, stride, padding) of the three convs, as in greydanus/mnist1d notebooks/models.py.
CNN1D_LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))


def conv_length(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a ``Conv1d`` (dilation 1)."""
    return (length + 2 * padding - kernel) // stride + 1


# Length 40 -> 19 -> 10 -> 5, so the head sees 25 * 5 = 125 features (the official linear_in).
# The first conv needs L + 2 >= 5, i.e. L >= 3; after it every length is >= 1 and the two
# kernel-3, padding-1 convs keep it >= 1. So 3 is the shortest signal the network takes.
CNN1D_MIN_LENGTH = 3


class CNN1D(Classifier):
    """Three strided ``Conv1d`` + ReLU layers, flatten, linear head (MNIST-1D's ``ConvBase``)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int):
        super().__init__()
        self.in_channels, self.length = (1, *input_shape) if len(input_shape) == 1 else input_shape
        layers: list[nn.Module] = []
        width, length = self.in_channels, self.length
        for kernel, stride, padding in CNN1D_LAYERS:
            layers += [nn.Conv1d(width, channels, kernel, stride=stride, padding=padding), nn.ReLU()]
            width, length = channels, conv_length(length, kernel, stride, padding)
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.make_head(channels * length, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L) signals get their single channel here, as the official x.view(-1, 1, L).
        return self.body(x.reshape(x.shape[0], self.in_channels, self.length))


@model_builder("cnn1d", min_image_size=None)
def build_cnn1d(input_shape, num_classes, *, channels=25) -> CNN1D:
    """The 1-D CNN that MNIST-1D's paper benchmarks (Greydanus, "Scaling down deep learning",
    arXiv:2011.14439, 2020; greydanus/mnist1d ``notebooks/models.py::ConvBase``, ~94% test
    accuracy there on the 4,000/1,000 split).

    conv1d C->25 (kernel 5, stride 2, padding 1) -> ReLU -> conv1d 25->25 (kernel 3, stride 2,
    padding 1) -> ReLU -> conv1d 25->25 (kernel 3, stride 2, padding 1) -> ReLU -> flatten ->
    Linear(25 * L', classes), all with bias and PyTorch's default initialisation. On MNIST-1D's
    length-40 signals L' = 5, the official ``linear_in=125``, and the network has 5,210
    parameters for 10 classes. The kernels follow the official code (5, 3, 3), not a uniform 5.
    The features are the flattened output of the third conv (after ReLU).

    Takes 1-D signals: ``input_shape`` ``(L,)`` (one channel, as MNIST-1D's ``(40,)``) or
    ``(C, L)``, with L at least 3. Setting: ``channels`` (width of every conv, default 25).
    """
    if len(input_shape) not in (1, 2):
        raise ConfigError(f"model cnn1d needs 1-D signals given as (length,) or (channels, length), "
                          f"but data gives samples of shape {_shape_text(input_shape)}; choose an "
                          f"image model such as lenet or cnn6, or model=mlp.")
    if input_shape[-1] < CNN1D_MIN_LENGTH:
        raise ConfigError(f"model cnn1d needs signals of at least {CNN1D_MIN_LENGTH} samples, but "
                          f"data gives {_shape_text(input_shape)}; choose model=mlp.")
    width = as_int("cnn1d", "channels", channels)
    return CNN1D(input_shape, num_classes, width)

