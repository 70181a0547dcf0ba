"""torchvision's ResNet-50 with a new head; ImageNet weights only from a local file."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torchvision
from torch import nn

from noisylab.errors import ConfigError
from noisylab.models.base import Classifier, as_bool, model_builder

# conv1 (7x7/2, pad 3) and the max-pool (3x3/2, pad 1) give >= 1 pixel for any input, strided
# convs give ceil(H/2), and the pool is adaptive, so any size works (224x224 is the usual).
MIN_IMAGE_SIZE = 1
# torchvision's file names in the hub cache; IMAGENET1K_V1 (the weights of the LNL papers) first.
KNOWN_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")


class ResNet50(Classifier):
    """``body`` is torchvision's ``resnet50`` with ``fc`` replaced by ``nn.Identity`` (so
    ``features`` are the 2048-d pooled activations); ``classifier`` is the new Linear 2048->C."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = torchvision.models.resnet50(weights=None)
        if in_channels != 3:
            self.body.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.body.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.body.fc = nn.Identity()
        self.make_head(2048, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _cached_weights() -> Path | None:
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in KNOWN_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("resnet50-*.pth")) if folder.is_dir() else []
    return found[0] if found else None


def _fit_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Adapts RGB conv1 filters to ``channels`` inputs: summed for 1 channel (a grey image then
    gives the response of its RGB copy), otherwise cycled over the channels and scaled by
    3/channels (roughly preserving the response to a constant image)."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(channels / 3)
    return weight.repeat(1, repeats, 1, 1)[:, :channels] * (3.0 / channels)


def _read_weights(path: Path, channels: int) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` without its ``fc``, conv1 adapted to ``channels`` inputs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is for the user to fix
        raise ConfigError(f"model resnet50 could not read the weights file {path} "
                          f"({type(error).__name__}); give a torchvision resnet50 state dict.") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"model resnet50 needs a state dict in {path}, but it holds a "
                          f"{type(state).__name__}.")
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not k.removeprefix("module.").startswith("fc.")}
    if channels != 3 and isinstance(state.get("conv1.weight"), torch.Tensor):
        state["conv1.weight"] = _fit_channels(state["conv1.weight"], channels)
    return state


def _load_weights(model: ResNet50, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        missing, unexpected = model.body.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ConfigError(f"model resnet50 cannot use the weights in {path}: they do not fit "
                          f"torchvision's resnet50 ({str(error).splitlines()[-1].strip()}).") from None
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        raise ConfigError(f"model resnet50 cannot use the weights in {path}: "
                          f"{'missing' if missing else 'unexpected'} tensors such as {names}.")


@model_builder("resnet50", min_image_size=MIN_IMAGE_SIZE)
def build_resnet50(input_shape, num_classes, *, pretrained=False, weights_path=None) -> ResNet50:
    """ResNet-50 (He et al., CVPR 2016) from torchvision with a new Linear 2048->C head: the
    Clothing1M / Food-101N / WebVision network of the LNL literature (e.g. DivideMix, Li et al.,
    ICLR 2020; MW-Net, Shu et al., NeurIPS 2019; ELR+, Liu et al., NeurIPS 2020), which starts
    from ImageNet weights.

    Nothing is ever downloaded. With ``pretrained=true`` the ImageNet weights are read from
    ``weights_path`` if given, else from torchvision's file in the torch hub cache
    (``torch.hub.get_dir()/checkpoints/resnet50-0676ba61.pth``, i.e. IMAGENET1K_V1, or any other
    ``resnet50-*.pth`` there); if there is no such file, ``ConfigError`` says where to put it.
    A given ``weights_path`` implies ``pretrained``. The file's ``fc`` is discarded; a
    non-RGB input gets its conv1 filters summed (1 channel) or cycled and rescaled.
    Without weights, torchvision's random initialisation is used. Any image size is accepted.

    Settings: ``pretrained`` (bool, default false), ``weights_path`` (path or null).
    """
    pretrained = as_bool("resnet50", "pretrained", pretrained)
    channels = input_shape[0]
    path: Path | None = None
    if weights_path is not None:
        path = Path(str(weights_path)).expanduser()
        if not path.is_file():
            raise ConfigError(f"model resnet50 weights_path {path} is not a file; give the path of "
                              f"torchvision's resnet50-0676ba61.pth (ImageNet weights).")
    elif pretrained:
        path = _cached_weights()
        if path is None:
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise ConfigError(f"model resnet50 with pretrained=true needs ImageNet weights on disk "
                              f"(nothing is downloaded): put torchvision's resnet50-0676ba61.pth "
                              f"into {cache}/ or set model.weights_path=/path/to/resnet50.pth.")
    state = _read_weights(path, channels) if path is not None else None
    model = ResNet50(channels, num_classes)
    if state is not None:
        _load_weights(model, state, path)
    return model
