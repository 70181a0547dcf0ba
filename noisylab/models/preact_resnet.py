"""PreAct ResNet-18 for 32x32 images, as in Arazo et al. (ICML 2019) and DivideMix (ICLR 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisylab.models.base import Classifier, model_builder

# 3x3 convs with padding 1 and stride 2 give ceil(H/2) >= 1, and the pool is global, so any
# image size works (32x32 ends at 4x4, where the global pool equals the reference avg_pool2d(4)).
MIN_IMAGE_SIZE = 1


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with a skip connection taken *after* the first BN-ReLU.

    In the reference code the skip path is ``shortcut(relu(bn1(x)))`` where ``shortcut`` is a
    1x1 strided conv when the shape changes and an empty ``nn.Sequential`` otherwise, so even
    the identity skip carries the pre-activated tensor (unlike He et al., 2016, whose identity
    skip carries ``x``). We keep that, since the published numbers come from it.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.shortcut = (nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + self.shortcut(activated)


class PreActResNet(Classifier):
    """conv3x3 -> BN -> ReLU stem, four stages of PreAct blocks, global average pool."""

    def __init__(self, in_channels: int, num_classes: int, blocks_per_stage=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        stages: list[nn.Module] = []
        cin = 64
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), blocks_per_stage, strict=True)):
            strides = [1 if index == 0 else 2] + [1] * (count - 1)
            blocks = []
            for stride in strides:
                blocks.append(PreActBlock(cin, width, stride))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.make_head(512, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.pool(out)


@model_builder("preact_resnet18", min_image_size=MIN_IMAGE_SIZE)
def build_preact_resnet18(input_shape, num_classes) -> PreActResNet:
    """PreAct ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016) in
    the CIFAR form used by Arazo et al. (ICML 2019; PaulAlbert31/LabelNoiseCorrection
    ``PreResNet.py::ResNet18``) and DivideMix (Li et al., ICLR 2020; LiJunnan1992/DivideMix
    ``PreResNet.py::ResNet18``), whose two files define the same network.

    Stem conv3x3 C->64 (no bias) + BN + ReLU; stages of 2 PreAct blocks with 64/128/256/512
    channels (strides 1/2/2/2, 1x1 conv shortcut when the shape changes; see
    :class:`PreActBlock` for the pre-activated skip); no final BN-ReLU; global average pool
    (= the reference ``avg_pool2d(out, 4)`` on 32x32 inputs); Linear 512->C. PyTorch default
    initialisation, as in the reference. Any image size >= 1x1 is accepted. No settings.
    """
    return PreActResNet(input_shape[0], num_classes)
