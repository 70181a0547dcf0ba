"""Networks: one registry and one call, ``build_model(name, input_shape, num_classes, **settings)``.

``input_shape`` is the shape of one sample without the batch dimension: ``(C, H, W)`` for images,
``(D,)`` for vectors. The number of input channels always comes from ``input_shape``; a network
that cannot take the data (a vector given to a CNN, images smaller than its minimum size) raises
:class:`~noisylab.errors.ConfigError` with one sentence saying what to choose instead. Settings
come from the Hydra ``model`` group as keyword arguments; unknown ones raise ``ConfigError``.

Every network is a :class:`Classifier`: ``features(x)`` gives the penultimate features
``(B, feature_dim)``, ``classifier`` is the final ``nn.Linear`` head, and
``forward(x) == classifier(features(x))`` gives logits ``(B, num_classes)``. Methods that need
embeddings and logits from one pass write ``f = net.features(x); logits = net.classifier(f)``.

Each builder carries ``min_image_size`` (the smallest H and W it accepts; ``None`` for networks
that flatten any input or, like ``cnn1d``, take 1-D signals ``(L,)`` or ``(C, L)`` and check
them themselves), derived by shape arithmetic in its module.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from noisylab.errors import ConfigError
from noisylab.models.base import Classifier, model_builder

# ---------------------------------------------------------------------------- registry
from noisylab.models.cifar_quick import build_cifar_quick
from noisylab.models.cnn1d import build_cnn1d
from noisylab.models.cnn9 import build_cnn9
from noisylab.models.mlp import build_mlp
from noisylab.models.preact_resnet import build_preact_resnet18
from noisylab.models.resnet50 import build_resnet50
from noisylab.models.resnet_cifar import build_resnet32
from noisylab.models.small_cnns import build_cnn6, build_cnn8, build_lenet
from noisylab.models.wide_resnet import build_wrn28_10

MODELS: dict[str, Callable[..., Classifier]] = {
    builder.model_name: builder
    for builder in (build_mlp, build_cnn9, build_cnn6, build_cnn8, build_lenet, build_cifar_quick,
                    build_preact_resnet18, build_resnet32, build_wrn28_10, build_resnet50, build_cnn1d)
}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    """Builds the registered network ``name`` for samples of ``input_shape`` and ``num_classes``.

    Raises ``ConfigError`` for an unknown name, unknown settings, or data the network cannot take.
    """
    if name not in MODELS:
        raise ConfigError(f"Unknown model '{name}'; choose one of: {', '.join(MODELS)}.")
    return MODELS[name](input_shape, num_classes, **kwargs)


__all__ = ["MODELS", "Classifier", "build_model", "model_builder"]
