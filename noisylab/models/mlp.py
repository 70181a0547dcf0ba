"""Multi-layer perceptron on flattened inputs (any sample shape)."""

from __future__ import annotations

import math

import torch
from torch import nn

from noisylab.models.base import Classifier, as_float, as_int_list, model_builder


class MLP(Classifier):
    """``flatten -> [Linear -> ReLU (-> Dropout)] * len(hidden) -> Linear``.

    The features are the output of the last hidden layer (after ReLU and dropout); with
    ``hidden=[]`` the model is multinomial logistic regression and the features are the
    flattened input.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: list[int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        self.body = nn.Sequential(*layers)
        self.make_head(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@model_builder("mlp", min_image_size=None)
def build_mlp(input_shape, num_classes, *, hidden=(256,), dropout=0.0) -> MLP:
    """MLP over the flattened sample: ``prod(input_shape) -> hidden... -> num_classes``, ReLU.

    The default ``hidden=[256]`` is the MNIST network of Co-teaching+ (Yu et al., ICML 2019,
    xingruiyu/coteaching_plus ``model.py::MLPNet``) and JoCoR (Wei et al., CVPR 2020,
    hongxin001/JoCoR): 784 -> 256 -> 10 with ReLU and no dropout.

    Settings: ``hidden`` (list of hidden widths, may be empty), ``dropout`` (after each hidden
    ReLU, in [0, 1); 0 adds no dropout layer).
    """
    widths = as_int_list("mlp", "hidden", hidden)
    rate = as_float("mlp", "dropout", dropout, 0.0, 1.0)
    return MLP(math.prod(input_shape), num_classes, widths, rate)
