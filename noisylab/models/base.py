"""What every network shares: the :class:`Classifier` base (features + linear head), the
``model_builder`` decorator that checks settings and input shapes, and setting validators."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable

import torch
from torch import nn

from noisylab.errors import ConfigError


class Classifier(nn.Module):
    """Base of every network: a feature extractor followed by one linear head.

    Subclasses build their layers, call :meth:`make_head` last (so that parameter order and
    initialisation order match the reference code) and implement :meth:`features`.
    """

    feature_dim: int
    num_classes: int

    def make_head(self, feature_dim: int, num_classes: int) -> None:
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.classifier = nn.Linear(self.feature_dim, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# ---------------------------------------------------------------------- builder plumbing
def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def _as_shape(name: str, input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"model {name} needs input_shape as a tuple of integers, "
                          f"but got {input_shape!r}.") from None
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"model {name} needs a non-empty input_shape of positive sizes, "
                          f"but got {input_shape!r}.")
    return shape


def _check_image(name: str, shape: tuple[int, ...], min_size: int) -> None:
    if len(shape) != 3:
        raise ConfigError(f"model {name} needs images given as (channels, height, width), but data "
                          f"gives samples of shape {_shape_text(shape)}; choose model=mlp.")
    _, height, width = shape
    if height < min_size or width < min_size:
        raise ConfigError(f"model {name} needs images of at least {min_size}x{min_size} pixels, but "
                          f"data gives {_shape_text(shape)}; choose model=mlp or a dataset with "
                          f"larger images.")


def model_builder(name: str, *, min_image_size: int | None) -> Callable:
    """Turns ``fn(input_shape, num_classes, **settings)`` into a checked registry builder.

    The wrapper rejects unknown settings, bad ``num_classes`` and inputs the network cannot take
    (``min_image_size=None``: any shape, flattened; otherwise ``(C, H, W)`` with H, W at least
    ``min_image_size``), all as ``ConfigError``.
    """

    def decorate(fn: Callable) -> Callable:
        settings = [p.name for p in inspect.signature(fn).parameters.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY]

        @functools.wraps(fn)
        def build(input_shape, num_classes: int, **kwargs) -> Classifier:
            unknown = sorted(set(kwargs) - set(settings))
            if unknown:
                takes = ", ".join(settings) if settings else "no settings"
                raise ConfigError(f"model {name} has no setting {', '.join(map(repr, unknown))}; "
                                  f"it takes: {takes}.")
            shape = _as_shape(name, input_shape)
            if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
                raise ConfigError(f"model {name} needs num_classes to be a positive integer, "
                                  f"but got {num_classes!r}.")
            if min_image_size is not None:
                _check_image(name, shape, min_image_size)
            return fn(shape, int(num_classes), **kwargs)

        build.model_name = name
        build.min_image_size = min_image_size
        build.settings = tuple(settings)
        return build

    return decorate


# Setting validators: Hydra hands over ints for floats, ListConfig for lists, etc.
def as_float(model: str, key: str, value, low: float, high: float, *, high_open: bool = True) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    ok = low <= out < high if high_open else low <= out <= high
    if isinstance(value, bool) or not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(f"model {model} needs {key} in [{low}, {high}{bracket}, but got {value!r}.")
    return out


def as_int(model: str, key: str, value, low: int = 1) -> int:
    integral = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value) and int(value) == value)
    if not integral or value < low:
        raise ConfigError(f"model {model} needs {key} to be an integer >= {low}, but got {value!r}.")
    return int(value)


def as_bool(model: str, key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"model {model} needs {key} to be true or false, but got {value!r}.")
    return value


def as_int_list(model: str, key: str, value) -> list[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(f"model {model} needs {key} to be a list of integers, but got {value!r}.")
    return [as_int(model, key, v) for v in value]
