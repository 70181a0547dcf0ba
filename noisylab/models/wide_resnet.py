"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016): WRN-28-10 as used by MW-Net and IEG."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from noisylab.errors import ConfigError
from noisylab.models.base import Classifier, as_float, as_int, model_builder

# Stride-2 3x3 convs (padding 1) give ceil(H/2) >= 1, the parameter-free shortcuts of the "ieg"
# variant pool with ceil_mode (also ceil(H/2)), and the final pool is global: any size works.
MIN_IMAGE_SIZE = 1
VARIANTS = ("zagoruyko", "ieg")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class PoolPadShortcut(nn.Module):
    """Parameter-free shortcut of the "ieg" variant: average-pool with kernel = stride = ``stride``
    and zero-pad the channels from ``cin`` to ``cout`` (split before/after)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.pool = (nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity())
        self.pad_front = (cout - cin) // 2
        self.pad_back = cout - cin - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(self.pool(x), (0, 0, 0, 0, self.pad_front, self.pad_back))


class WideBlock(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 + skip.

    ``shared_activation``: the skip takes the pre-activated input ``relu(bn1(x))`` instead of
    ``x``. ``projection``: the skip is a 1x1 strided conv ("zagoruyko"); otherwise, when the
    shape changes, the parameter-free :class:`PoolPadShortcut` ("ieg").
    """

    def __init__(self, cin: int, cout: int, stride: int, dropout: float, shared_activation: bool,
                 projection: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(cout, cout)
        self.shared_activation = shared_activation
        if cin == cout and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        elif projection:
            self.shortcut = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
        else:
            self.shortcut = PoolPadShortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(activated)))))
        return out + self.shortcut(activated if self.shared_activation else x)


class WideResNet(Classifier):
    """conv3x3 16, three groups of ``n = (depth - 4) / 6`` wide blocks (16k/32k/64k channels,
    strides 1/2/2), BN-ReLU, global average pool, linear head (see :func:`build_wrn28_10`)."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, widen_factor: int,
                 dropout: float, variant: str):
        super().__init__()
        per_group = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.variant = variant
        zagoruyko = variant == "zagoruyko"
        self.conv1 = _conv3x3(in_channels, widths[0])
        groups: list[nn.Module] = []
        stage_skips: list[nn.Module] = []
        for index, stride in enumerate((1, 2, 2)):
            cin, cout = widths[index], widths[index + 1]
            blocks = []
            for position in range(per_group):
                first = position == 0
                # Zagoruyko: every shape-changing block shares its activation with the skip;
                # IEG/AutoAugment: only the very first block of the network does.
                shared = (first and cin != cout) if zagoruyko else (first and index == 0)
                blocks.append(WideBlock(cin if first else cout, cout, stride if first else 1,
                                        dropout, shared, projection=zagoruyko))
            groups.append(nn.Sequential(*blocks))
            if not zagoruyko:
                stage_skips.append(PoolPadShortcut(cin, cout, stride))
        self.block1, self.block2, self.block3 = groups
        # "ieg" only: residuals around each whole group and from the stem to the end.
        self.stage_skips = nn.ModuleList(stage_skips)
        self.stem_skip = None if zagoruyko else PoolPadShortcut(widths[0], widths[3], 4)
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.make_head(widths[3], num_classes)
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He normal with fan-out, in both references
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (module.kernel_size[0]
                                * module.kernel_size[1] * module.out_channels)))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.variant == "ieg":  # AutoAugment's fc: U(-1/sqrt(C), 1/sqrt(C))
            bound = 1.0 / math.sqrt(self.num_classes)
            nn.init.uniform_(self.classifier.weight, -bound, bound)
        nn.init.zeros_(self.classifier.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.variant == "zagoruyko":
            out = self.block3(self.block2(self.block1(out)))
        else:
            stem = out
            for group, skip in zip((self.block1, self.block2, self.block3), self.stage_skips,
                                   strict=True):
                out = group(out) + skip(out)
            out = out + self.stem_skip(stem)
        return self.pool(F.relu(self.bn(out)))


@model_builder("wrn28_10", min_image_size=MIN_IMAGE_SIZE)
def build_wrn28_10(input_shape, num_classes, *, depth=28, widen_factor=10, dropout=0.0,
                   variant="zagoruyko") -> WideResNet:
    """WRN-28-10 (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016), the network of
    Meta-Weight-Net's paper experiments (Shu et al., NeurIPS 2019; xjtushujun/meta-weight-net
    ``wideresnet.py``), of IEG (Zhang et al., CVPR 2020; google-research ``ieg/models/wrn.py``)
    and of L2RW's CIFAR experiments (Ren et al., ICML 2018).

    conv3x3 C->16; three groups of 4 pre-activation wide blocks with 160/320/640 channels
    (strides 1/2/2), optional dropout between each block's two convs; BN-ReLU; global average
    pool (= the reference ``avg_pool2d(8)`` on 32x32 inputs); Linear 640->C. Convs have no bias
    and He-normal (fan-out) initialisation; BN weights 1, biases 0; head bias 0.

    ``variant="zagoruyko"`` (default) is the original WRN as in MW-Net: 1x1 strided conv
    shortcuts where the shape changes, whose input is the block's shared BN-ReLU activation.
    ``variant="ieg"`` is IEG's TensorFlow WRN (from AutoAugment, ``wrn_size=160``):
    parameter-free shortcuts (average pool by the stride, then zero-padded channels), only the
    first block shares its activation with the skip, extra residuals around each group and
    from the stem to the last group, and a U(+-1/sqrt(C)) head. TF "SAME" padding of strided
    convs (pad bottom/right only) is approximated by symmetric padding 1.

    Settings: ``depth`` (6n+4, default 28), ``widen_factor`` (default 10), ``dropout`` (in
    [0, 1), default 0 as in MW-Net and IEG), ``variant`` ("zagoruyko" or "ieg").
    Any image size >= 1x1 is accepted.
    """
    depth = as_int("wrn28_10", "depth", depth, low=10)
    if (depth - 4) % 6:
        raise ConfigError(f"model wrn28_10 needs depth = 6n+4 (10, 16, 22, 28, ...), but got {depth}.")
    widen = as_int("wrn28_10", "widen_factor", widen_factor)
    rate = as_float("wrn28_10", "dropout", dropout, 0.0, 1.0)
    if variant not in VARIANTS:
        raise ConfigError(f"model wrn28_10 needs variant to be one of {', '.join(VARIANTS)}, "
                          f"but got {variant!r}.")
    return WideResNet(input_shape[0], num_classes, depth, widen, rate, variant)
