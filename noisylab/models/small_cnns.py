"""The small CNNs of Co-teaching+, JoCoR and S2E (the 6-conv CNN, the LeNet-style CNN) and
MSLG's 8-layer CNN."""

from __future__ import annotations

import torch
from torch import nn

from noisylab.models.base import Classifier, model_builder

# cnn6: padding-1 convs keep the size, three 2x2/2 max-pools floor H/2 each:
# floor(H/8) >= 1  <=>  H >= 8.
CNN6_MIN_IMAGE_SIZE = 8
# lenet: 5x5 conv (no padding) -4, pool /2, 5x5 conv -4, pool /2:
# floor((floor((H-4)/2) - 4)/2) >= 1  <=>  H >= 16.
LENET_MIN_IMAGE_SIZE = 16


def three_pooled_stages(channels: int, last: int) -> list[nn.Module]:
    """3x3 convs (padding 1, bias) + BN + ReLU: C->64, 64->64, pool, 64->128, 128->128, pool,
    128->196, 196->``last``, pool (each 2x2/2), flattened."""

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return [*conv(channels, 64), *conv(64, 64), nn.MaxPool2d(2, 2),
            *conv(64, 128), *conv(128, 128), nn.MaxPool2d(2, 2),
            *conv(128, 196), *conv(196, last), nn.MaxPool2d(2, 2), nn.Flatten()]


class CNN6(Classifier):
    """Six 3x3 conv + BN + ReLU layers in three pooled stages, flatten, linear head."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        self.body = nn.Sequential(*three_pooled_stages(channels, 16))
        self.make_head(16 * (height // 8) * (width // 8), num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CNN8(Classifier):
    """Six 3x3 conv + BN + ReLU layers in three pooled stages, FC 256 + BN + ReLU, linear head."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        self.body = nn.Sequential(*three_pooled_stages(channels, 196),
                                  nn.Linear(196 * (height // 8) * (width // 8), 256), nn.BatchNorm1d(256), nn.ReLU())
        for module in self.body:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
        self.make_head(256, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LeNet(Classifier):
    """conv5 C->6, ReLU, pool; conv5 6->16, ReLU, pool; fc ->120, ReLU; fc 120->84, ReLU; head."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        flat = 16 * (((height - 4) // 2 - 4) // 2) * (((width - 4) // 2 - 4) // 2)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(),
            nn.Linear(flat, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
        )
        self.make_head(84, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@model_builder("cnn6", min_image_size=CNN6_MIN_IMAGE_SIZE)
def build_cnn6(input_shape, num_classes) -> CNN6:
    """The 6-conv CNN of Co-teaching+ on CIFAR-100 (Yu et al., ICML 2019;
    xingruiyu/coteaching_plus ``model.py::CNN``), reused as ``CNN_large`` by JoCoR on
    CIFAR-10/100 (Wei et al., CVPR 2020; hongxin001/JoCoR, whose paper calls it the "7-layer"
    network) and by S2E on CIFAR-100 (Yao et al., ICML 2020; AutoML-4Paradigm/S2E).

    3x3 convs (padding 1, with bias), each followed by BatchNorm (default momentum) and ReLU:
    C->64, 64->64, max-pool 2x2/2, 64->128, 128->128, max-pool, 128->196, 196->16, max-pool,
    flatten -> Linear(16*(H/8)*(W/8), C). On 32x32 CIFAR images this is the official
    256 -> C head; other sizes get the matching flattened width. Needs images of at least 8x8.
    The official ``dropout_rate`` argument is unused there and is not offered. No settings.
    """
    return CNN6(input_shape, num_classes)


@model_builder("cnn8", min_image_size=CNN6_MIN_IMAGE_SIZE)
def build_cnn8(input_shape, num_classes) -> CNN8:
    """MSLG's CIFAR-10 network, the "8-layer CNN" of its table, used for every method there
    (Algan & Ulusoy, ICPR 2020; gorkemalgan/MSLG_noisy_label ``model_getter.py::model_cifar10``).

    3x3 convs (padding 1, with bias), each followed by BatchNorm and ReLU: C->64, 64->64,
    max-pool 2x2/2, 64->128, 128->128, max-pool, 128->196, 196->196, max-pool, flatten ->
    Linear(196*(H/8)*(W/8), 256) -> BatchNorm1d -> ReLU -> Linear(256, C); the features are the
    256-dimensional output. Convs initialised Kaiming-normal (fan_out), as the code. Needs
    images of at least 8x8 (the same shape arithmetic as cnn6). No settings.
    """
    return CNN8(input_shape, num_classes)


@model_builder("lenet", min_image_size=LENET_MIN_IMAGE_SIZE)
def build_lenet(input_shape, num_classes) -> LeNet:
    """The LeNet-5-style ``CNN_small`` of Co-teaching+ (Yu et al., ICML 2019;
    xingruiyu/coteaching_plus ``model.py::CNN_small``), its CIFAR-10 network, which S2E
    (Yao et al., ICML 2020; AutoML-4Paradigm/S2E) also uses on CIFAR-10.

    conv 5x5 C->6 -> ReLU -> max-pool 2x2/2 -> conv 5x5 6->16 -> ReLU -> max-pool 2x2/2 ->
    flatten (16*5*5 = 400 on 32x32 inputs) -> fc 120 -> ReLU -> fc 84 -> ReLU -> Linear 84->C.
    The features are the 84-dimensional output. Needs images of at least 16x16. No settings.
    """
    return LeNet(input_shape, num_classes)
