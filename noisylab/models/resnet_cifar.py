"""The CIFAR ResNets of He et al. (CVPR 2016, Sec. 4.2): ResNet-32 as used by MW-Net and L2RW."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisylab.models.base import Classifier, model_builder

# Stride-2 3x3 convs (padding 1) and the [::2] subsampling of the shortcut both give ceil(H/2),
# and the pool is global, so any image size works.
MIN_IMAGE_SIZE = 1


class ZeroPadShortcut(nn.Module):
    """He et al.'s option A: subsample by ``stride`` and zero-pad the new channels (no
    parameters), split evenly before and after the existing ones."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad_front = (cout - cin) // 2
        self.pad_back = cout - cin - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, add the shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (ZeroPadShortcut(cin, cout, stride)
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """conv3x3 16 + BN + ReLU, three stages of ``n`` basic blocks (16/32/64 channels, strides
    1/2/2), global average pool, Linear 64->C; 6n+2 weighted layers."""

    def __init__(self, in_channels: int, num_classes: int, blocks_per_stage: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages: list[nn.Module] = []
        cin = 16
        for index, width in enumerate((16, 32, 64)):
            blocks = []
            for position in range(blocks_per_stage):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(BasicBlock(cin, width, stride))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.make_head(64, num_classes)
        # He (Kaiming) normal initialisation of every conv and linear weight, as in MW-Net.
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.pool(out)


@model_builder("resnet32", min_image_size=MIN_IMAGE_SIZE)
def build_resnet32(input_shape, num_classes) -> CifarResNet:
    """ResNet-32 for CIFAR (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
    Sec. 4.2: n = 5), as in Meta-Weight-Net's "stable" script (Shu et al., NeurIPS 2019;
    xjtushujun/meta-weight-net ``resnet.py::ResNet32``) and L2RW's ResNet-32 experiments
    (Ren et al., ICML 2018).

    conv3x3 C->16 + BN + ReLU; 3 stages x 5 basic blocks with 16/32/64 channels (strides
    1/2/2); parameter-free zero-padding shortcuts (option A) where the shape changes; global
    average pool; Linear 64->C. Kaiming-normal (fan-in) initialisation of conv and linear
    weights, PyTorch defaults elsewhere, as in MW-Net. Any image size >= 1x1 is accepted.
    No settings.
    """
    return CifarResNet(input_shape[0], num_classes, blocks_per_stage=5)
