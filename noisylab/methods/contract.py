"""What a method is given and what it declares: the run's facts, its settings, its stages.

* :class:`RunFacts` — everything the data and noise decide before a method is built
  (classes, input shape, training-set size, the noise actually realised), handed over as
  one object, so a new fact never widens every constructor.
* :func:`check_settings` — a method's settings are its constructors' named arguments; an
  unknown key stops the run with one sentence that lists the accepted ones, and so does a
  value that is not of its argument's type (``bool``, ``int``, ``float``, ``str``, or one of
  them or ``None``): a word for a number, 2.5 epochs, NaN, "maybe" for a switch.
* :class:`Stage` — one phase of training (warm-up, main training, retraining from
  scratch); a method returns its list from ``stages()`` and the base runs them.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from noisylab.errors import ConfigError

# quirks=paper: the paper's algorithm; quirks=official: every official-code behaviour a method lists;
# quirks=[name, ...]: the named ones only.
QUIRK_MODES = ("paper", "official")


def published_model(cfg) -> None:
    """Puts the method's ``model_settings`` (its published model's settings, e.g. L2RW's
    WRN-28-10 dropout 0.3) into ``cfg.model`` when the run uses that model, except the keys
    the run sets itself; the recorded config then shows what ran."""
    from omegaconf import open_dict

    extra = cfg.method.get("model_settings")
    if not extra or cfg.model.get("name") != cfg.method.get("model"):
        return
    with open_dict(cfg.model):
        for key, value in extra.items():
            if key not in cfg.model:
                cfg.model[key] = value


def quirk_request(cfg: Mapping) -> str | list[str]:
    """A run's ``quirks``: a mode's name, or the list of quirk names it asks for."""
    request = cfg.get("quirks", "paper")
    return str(request) if isinstance(request, str) else [str(name) for name in request]
# Arguments the run itself hands to every method: not user settings of ``method.*``.
RUN_ARGUMENTS = ("facts", "model", "protocol", "quirks", "settings", "self")
# Keys of a method's config that describe it rather than configure its class (the model and
# the trusted set it was published with are requests to the run, not constructor settings).
DESCRIPTIVE_KEYS = ("_target_", "name", "model", "model_settings", "trusted_per_class")


@dataclass(frozen=True)
class RunFacts:
    """The facts of one run that a method may use (never the clean labels).

    ``transition`` is the realised noise transition matrix, ``transition[i][j] = P(observed j
    | true i)``, for oracle corrections (a ceiling, clearly labelled where used);
    ``noise_rate`` is the nominal rate of the noise applied and ``noise_kind`` its model
    (``symmetric``, ``pair``, ``asymmetric``, ``human``, ``feature_dependent``,
    ``instance_dependent``, ``none``);
    ``noise_fingerprint`` is a hash of the noisy labels (a checkpoint trained on other labels
    is refused at resume).
    ``target_classes`` names the classes of the trusted (target) and test sets when they are
    another label space than the training set's (a transfer setting, ``data=svhn_to_mnist``:
    a method then needs a target head with ``len(target_classes)`` outputs over the shared
    representation); ``None`` when the trusted set shares the training labels."""

    num_classes: int
    input_shape: tuple[int, ...]
    train_size: int
    max_epochs: int
    noise_rate: float = 0.0
    noise_kind: str = "none"
    transition: tuple[tuple[float, ...], ...] | None = None
    class_names: tuple[str, ...] | None = None
    trusted_size: int = 0
    target_classes: tuple[str, ...] | None = None
    noise_fingerprint: str | None = None

    @classmethod
    def of(cls, value: RunFacts | Mapping) -> RunFacts:
        """A ``RunFacts`` from itself or from the plain dict a checkpoint stores."""
        if isinstance(value, RunFacts):
            return value
        value = dict(value)
        value["input_shape"] = tuple(value["input_shape"])
        if value.get("transition") is not None:
            value["transition"] = tuple(tuple(float(p) for p in row) for row in value["transition"])
        for key in ("class_names", "target_classes"):
            if value.get(key) is not None:
                value[key] = tuple(value[key])
        return cls(**value)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Stage:
    """One phase of a method's training.

    ``epochs=None`` takes the rest of the run. At the start of a stage (other than the
    first) ``reinit`` re-builds the networks from scratch and ``reset_optimizer`` clears the
    networks' optimiser state. ``lr`` replaces the protocol's base learning rate during the
    stage; ``lr_schedule`` is the stage's own lr plan, counted from its first epoch (``None``:
    the protocol's plan, counted over the whole run)."""

    name: str
    epochs: int | None = None
    reinit: bool = False
    reset_optimizer: bool = False
    lr: float | None = None
    lr_schedule: Mapping | None = field(default=None, hash=False)


@dataclass(frozen=True)
class StageSpan:
    stage: Stage
    index: int
    start: int  # first epoch (0-based)
    end: int    # one past the last epoch

    @property
    def epochs(self) -> int:
        return self.end - self.start


def plan_stages(stages: Sequence[Stage], max_epochs: int) -> list[StageSpan]:
    """Start and end epochs of each stage. Stages past ``max_epochs`` are cut (a short debug
    run of a two-stage method never reaches the second: ``unreached`` lists them)."""
    if not stages:
        raise ConfigError("a method must declare at least one stage.")
    spans, start = [], 0
    for index, stage in enumerate(stages):
        if stage.epochs is not None and int(stage.epochs) < 0:
            raise ConfigError(f"stage {stage.name} needs epochs >= 0, got {stage.epochs}.")
        if stage.epochs is None and index != len(stages) - 1:
            raise ConfigError(f"only the last stage may take the rest of the run (epochs: null), not {stage.name}.")
        end = max_epochs if stage.epochs is None else min(start + int(stage.epochs), max_epochs)
        if end > start:
            spans.append(StageSpan(stage, len(spans), start, end))
        start = end
    return spans


def accepted_settings(cls: type) -> list[str]:
    """The named constructor arguments of ``cls`` and its bases (its ``method.*`` settings)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, parameter in inspect.signature(init).parameters.items():
            if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) or name in RUN_ARGUMENTS:
                continue
            if name not in names:
                names.append(name)
    return names


def check_settings(method_name: str, cls: type, settings: Mapping) -> None:
    """Stops with one sentence naming any key ``cls`` does not accept, or a value not of its
    argument's plain type."""
    accepted = accepted_settings(cls)
    unknown = [key for key in settings if key not in accepted]
    if unknown:
        listed = ", ".join(accepted) if accepted else "none"
        raise ConfigError(f"method.{unknown[0]} is not a setting of method={method_name}; "
                          f"its settings are: {listed}.")
    types = setting_types(cls)
    for key, value in settings.items():
        if key in types and not any(fits(value, kind) for kind in types[key]):
            allowed = " or ".join(TYPE_WORDS[kind] for kind in types[key])
            raise ConfigError(f"method.{key} must be {allowed}, got {value!r}.")


def require(ok: bool, key: str, value, allowed: str) -> None:
    """A constructor's range check: stops with "method.<key> must <allowed>, got <value>."
    unless ``ok`` (written as what holds, so that NaN fails it)."""
    if not ok:
        raise ConfigError(f"method.{key} must {allowed}, got {value}.")


TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a word",
              type(None): "null"}


def setting_types(cls: type) -> dict[str, tuple[type, ...]]:
    """Setting name -> the plain types its annotation allows (``int | None``: int, None);
    settings of other types (a nested block, a schedule) are left out."""
    types: dict[str, tuple[type, ...]] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        names = [] if init is None else [
            name for name, parameter in inspect.signature(init).parameters.items()
            if name not in RUN_ARGUMENTS and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)]
        hints = typing.get_type_hints(init) if names else {}
        for name in names:
            kinds = typing.get_args(hints.get(name)) or (hints.get(name),)
            if all(kind in TYPE_WORDS for kind in kinds):
                types[name] = kinds
    return types


def fits(value, kind: type) -> bool:
    """``value``, as a config gives it, is a ``kind``: an int is a float (finite), 3.0 an int,
    a bool neither."""
    if isinstance(value, bool):
        return kind is bool
    if kind in (bool, str, type(None)):
        return isinstance(value, kind)
    if kind is int:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, (int, float)) and math.isfinite(value)
