"""The config's schema, checked once, before anything heavy is imported or loaded.

:func:`check_config` validates the composed config against the pydantic models below (types,
ranges, unknown keys of every group but the method's settings, which the method's class
checks: ``noisylab.methods.contract.check_settings``), then what needs several groups at
once: the noise rate against the dataset's classes (``noisylab.noise.check_rate``), the
forget-rate schedule (``noisylab.schedules.build_schedule``), the file of
``noise.load_from``, the checkpoint of ``ckpt_path`` (read without PyTorch:
``noisylab.checkpoint_info``) and the Trainer's arguments. Each failure is one sentence
naming the key, the value and what is allowed (:class:`~noisylab.errors.ConfigError`, exit
status 2). The optimiser models also check the optimisers a method declares
(:func:`optimizer_settings`).
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import json
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from noisylab.errors import ConfigError
from noisylab.methods.contract import DESCRIPTIVE_KEYS, QUIRK_MODES

MAX_SEED = 2**32 - 1


# ---------------------------------------------------------------------------- value types
def Int(ge: int | None = None, le: int | None = None):  # noqa: N802 - a type
    text = "an integer" + (f" in [{ge}, {le}]" if le is not None else f" >= {ge}" if ge is not None else "")
    return Annotated[int, Field(strict=True, ge=ge, le=le, description=text)]


def Float(ge: float | None = None, gt: float | None = None, lt: float | None = None,  # noqa: N802 - a type
          le: float | None = None):
    low = f"[{ge}" if ge is not None else f"({gt}" if gt is not None else None
    high = f"{lt})" if lt is not None else f"{le}]" if le is not None else None
    text = "a number" + (f" in {low}, {high}" if low and high else f" >= {ge}" if ge is not None
                         else f" > {gt}" if gt is not None else "")
    return Annotated[float, Field(ge=ge, gt=gt, lt=lt, le=le, description=text)]


Fraction = Float(ge=0, lt=1)
Augment = Literal["none", "crop", "crop_flip"]


class Group(BaseModel):
    """A config group: known keys only, no type coercion, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)


class Open(Group):
    """A group whose other keys are checked elsewhere (a method's settings, a Trainer's arguments)."""

    model_config = ConfigDict(extra="allow")


class Target(Open):
    """An object Hydra instantiates (a logger, a callback): ``_target_`` and its arguments."""

    target: str = Field(alias="_target_")


# ---------------------------------------------------------------------------- protocol
class Optimizer(Open):
    """Any torch optimiser as Hydra's ``_target_`` with ``_partial_: true`` (the parameters are
    given when it is built); the common keys typed here, every key checked against the
    optimiser's arguments (:func:`optimizer_settings`). ``name: adam|sgd|adamw`` is the old
    shorthand for the three ``_target_`` s."""

    target: str = Field(alias="_target_")
    partial: Literal[True] = Field(alias="_partial_", description="true (the parameters come when it is built)")
    lr: Float(gt=0)
    betas: Annotated[list[Fraction], Field(min_length=2, max_length=2, description="two numbers in [0, 1)")] = None
    momentum: Fraction = None
    weight_decay: Float(ge=0) = None
    nesterov: bool = None


SHORT_NAMES = {"adam": "torch.optim.Adam", "sgd": "torch.optim.SGD", "adamw": "torch.optim.AdamW"}


class NoDecay(Open):
    """No lr plan; keys left by a plan it replaces (Hydra merges ``{name: none}`` into it) are ignored."""

    name: Literal["none"]


class LinearDecay(Group):
    name: Literal["linear_decay"]
    decay_start: Int(ge=0)
    beta1_after_decay: Fraction | None = None


class MultiStep(Group):
    name: Literal["multistep"]
    milestones: Annotated[list[Int(ge=0)], Field(description="a list of epochs (integers >= 0)")]
    gamma: Float(gt=0) = 0.1


class Cosine(Group):
    name: Literal["cosine"]
    floor: Float(ge=0, lt=1) = 0.0  # the lowest lr as a fraction of the base lr (torch's eta_min / lr)


class CosineRestarts(Group):
    name: Literal["cosine_restarts"]
    first_period: Float(gt=0)
    t_mul: Float(gt=0) = 1.0
    m_mul: Float(gt=0) = 1.0
    floor: Float(ge=0, lt=1) = 0.0  # the lowest lr as a fraction of the base lr (torch's eta_min / lr)


class Meta(Group):
    """A recipe's settings for a meta-learner (Meta-Weight-Net's V), read by the method's config."""

    weight_norm: str | None = None
    optimizer: dict | None = None  # checked by optimizer_settings


class Protocol(Group):
    name: str
    epochs: Int(ge=1)
    batch_size: Int(ge=1)
    optimizer: Annotated[dict, Field(description="a group of settings (key: value)")]  # checked by optimizer_settings
    lr_schedule: Annotated[NoDecay | LinearDecay | MultiStep | Cosine | CosineRestarts,
                           Field(discriminator="name")] = NoDecay(name="none")
    augment: Augment | None = None
    normalize: bool | None = None
    last_k: Int(ge=1) = 10
    meta: Meta | None = None


# ---------------------------------------------------------------------------- data
class Data(Group):
    root: str
    trusted_per_class: Int(ge=0) | None = None  # None: the method config's request
    trusted_batch_size: Int(ge=1) | None = None
    eval_batch_size: Int(ge=1) = 512
    augment: Augment = "none"
    padding: Int(ge=0) = 4
    mean: list[float] | None = None
    std: list[Float(gt=0)] | None = None
    model: str | None = None  # the dataset's own small model for model=auto
    split_seed: Int(ge=0) = 0
    drop_last: bool = False


class ArrayData(Data):
    val_fraction: Fraction = 0.0
    on_device: bool = False


class Digits(ArrayData):
    name: Literal["digits"]
    test_fraction: Float(gt=0, lt=1) = 0.25


class Mnist1d(ArrayData):
    name: Literal["mnist1d"]
    num_samples: Int(ge=100) = 5000


class FileData(ArrayData):
    name: Literal["mnist", "cifar10", "cifar100", "svhn"]
    download: bool = False


class Toy2D(ArrayData):
    name: Literal["toy2d"]
    seed: Int(ge=0) = 0
    num_source: Int(ge=1) = 500
    target_pool: Int(ge=1) = 1000
    num_test: Int(ge=1) = 1000


Digit = Int(ge=0, le=9)


class SvhnToMnist(ArrayData):
    name: Literal["svhn_to_mnist"]
    download: bool = False
    source_classes: Annotated[list[Digit], Field(min_length=1, description="a list of distinct digits 0..9")] = [
        0, 1, 2, 3, 4]
    target_classes: Annotated[list[Digit], Field(min_length=1, description="a list of distinct digits 0..9")] = [
        5, 6, 7, 8, 9]
    source_mean: float = 0.444
    source_std: Float(gt=0) = 0.175
    target_mean: float = 0.1307
    target_std: Float(gt=0) = 0.3081


class ImageFileData(Data):
    """Images read from files by DataLoader workers (noisylab.data.files)."""
    batches_per_epoch: Int(ge=1) | None = None
    resize: Int(ge=1) = 256
    crop_size: Int(ge=1) = 224
    crop_padding: Int(ge=0) = 0
    num_workers: Int(ge=0) = 8
    subset: Int(ge=1) | None = None
    val_fraction: Fraction = 0.0
    trusted_list: str | None = None


class Clothing1M(ImageFileData):
    name: Literal["clothing1m"]


class WebVision(ImageFileData):
    name: Literal["webvision_mini", "webvision"]
    imagenet_val: bool = True
    imagenet_root: str
    val_folder: str = "val_images_256"


class Food101N(ImageFileData):
    name: Literal["food101n"]
    food101_root: str


class Animal10N(ImageFileData):
    name: Literal["animal10n"]


class OwnImages(ImageFileData):
    name: Literal["folder", "table"]
    root: str | None = None
    file: str | None = None      # data=table: the CSV/TSV
    test_fraction: Float(gt=0, lt=1) = 0.2


FileImageData = Clothing1M | WebVision | Food101N | Animal10N | OwnImages


# ---------------------------------------------------------------------------- noise
class Student(Group):
    per_class: Int(ge=1) = 10
    hidden: Int(ge=1) = 64
    steps: Int(ge=1) = 300
    lr: Float(gt=0) = 0.01


class Noise(Group):
    """The settings of every noise kind (a sweep over kinds may set a kind's keys for all: a key
    another kind reads is ignored); the rate's range for each kind and dataset is
    ``noisylab.noise.check_rate``'s."""

    name: str
    kind: Literal["none", "symmetric", "pair", "asymmetric", "human", "feature_dependent", "instance_dependent"]
    rate: float = 0.0
    seed: Int(ge=0) = 0
    load_from: str | None = None
    include_true_class: bool = False                                # symmetric
    cifar100_groups: Literal["superclass", "blocks"] = "superclass"  # asymmetric
    file: str | None = None                                         # human: the label file,
    dataset: str | None = None                                      # and for a label set not among
    key: str | None = None                                          # noisylab.noise.HUMAN_KEYS
    tie_rule: Literal["stable", "official"] = "stable"              # feature_dependent
    student_file: str | None = None
    student: Student | None = None
    flip_std: Float(gt=0) = 0.1                                     # instance_dependent


# ---------------------------------------------------------------------------- model
# The settings each network's builder takes (noisylab.models: tests/test_bad_input.py checks that
# these match); values are checked for type here, for range by the builders.
class PlainNet(Group):
    """A network without settings."""

    name: Literal["cnn6", "cnn8", "lenet", "preact_resnet18", "resnet32"]


class MLP(Group):
    name: Literal["mlp"]
    hidden: list[Int(ge=1)] | None = None
    dropout: float | None = None


class CNN9(Group):
    name: Literal["cnn9"]
    dropout: float | None = None
    quirk_eval_dropout: bool | None = None


class CNN1D(Group):
    name: Literal["cnn1d"]
    channels: Int(ge=1) | None = None


class CifarQuick(Group):
    name: Literal["cifar_quick"]
    init: str | None = None


class ResNet50(Group):
    name: Literal["resnet50"]
    pretrained: bool | None = None
    weights_path: str | None = None


class WRN(Group):
    name: Literal["wrn28_10"]
    depth: int | None = None
    widen_factor: int | None = None
    dropout: float | None = None
    variant: str | None = None


ModelSchema = PlainNet | MLP | CNN9 | CNN1D | CifarQuick | ResNet50 | WRN
MODEL_SCHEMAS = typing.get_args(ModelSchema)


# ---------------------------------------------------------------------------- the rest
class CoteachingSchedule(Group):
    name: Literal["coteaching"]
    form: str = "paper"
    tau: float | None = None
    num_gradual: int = 10
    exponent: float = 1.0
    official_index_shift: int = 1


class S2ESchedule(Group):
    name: Literal["s2e"]
    params: list[float] | None = None


class ConstantSchedule(Group):
    name: Literal["constant"]
    tau: float | None = None


class Method(Open):
    target: str = Field(alias="_target_")
    name: str
    model: str
    model_settings: dict[str, Any] | None = None  # its published model's settings (used with that model)
    trusted_per_class: Int(ge=0) | None = None  # the trusted set the method's paper used, per class


Limit = Annotated[Int(ge=0) | Float(ge=0, le=1) | None,
                  Field(description="an integer >= 0 (batches) or a number in [0, 1] (a fraction)")]


class Trainer(Open):
    target: str = Field(alias="_target_")
    max_epochs: Annotated[int, Field(strict=True, ge=1, description="an integer >= 1 (the lr plans need an end)")]
    limit_train_batches: Limit = None
    limit_val_batches: Limit = None
    limit_test_batches: Limit = None
    log_every_n_steps: Int(ge=1) = 1
    num_sanity_val_steps: Int(ge=-1) = 0
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    deterministic: bool | Literal["warn"] | None = None


class Speed(Group):
    """conf/speed/*.yaml: the GPU-path settings (noisylab.train.apply_speed)."""
    name: str = "none"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    fused: bool = False
    data_on_device: bool | Literal["auto"] = False


class Paths(Group):
    data_dir: str
    log_dir: str
    output_dir: str


class RunConfig(Group):
    task_name: str = "train"
    seed: Int(ge=0, le=MAX_SEED)
    ckpt_path: str | None = None
    resume: bool = True
    optimized_metric: str | None = None
    quirks: Annotated[Literal[QUIRK_MODES] | list[str], Field(description="paper, official or a list of quirk names")] = "paper"
    protocol: Protocol
    method: Method
    data: Annotated[Digits | Mnist1d | FileData | Toy2D | SvhnToMnist | FileImageData, Field(discriminator="name")]
    noise: Noise
    model: Annotated[ModelSchema, Field(discriminator="name")]
    schedule: Annotated[CoteachingSchedule | S2ESchedule | ConstantSchedule, Field(discriminator="name")]
    trainer: Trainer
    speed: Speed = Speed()
    logger: dict[str, Target | None] = {}
    callbacks: dict[str, Target | None] = {}
    paths: Paths
    paper: Any = None  # a sweep's numbers from the papers (conf/sweep/*.yaml)


# ---------------------------------------------------------------------------- sentences
TYPE_WORDS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
              "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
              "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
              "list_type": "a list", "model_type": "a group of settings (key: value)",
              "dict_type": "a group of settings (key: value)", "model_attributes_type": "a group of settings (key: value)"}


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _description(annotation) -> str | None:
    for arg in typing.get_args(annotation):
        found = arg.description if isinstance(arg, FieldInfo) else _description(arg)
        if found:
            return found
    return None


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[FieldInfo | None, list[type[BaseModel]]]:
    """Follows pydantic's error location through the models: the last field met and the
    models that the location's mapping may be (a union tag in ``loc`` picks its member)."""
    models, info = [root], None
    for part in loc:
        if isinstance(part, int):
            continue
        hit = next((field for model in models for name, field in model.model_fields.items()
                    if part in (name, field.alias)), None)
        if hit is not None:
            info, models = hit, _models_in(hit.annotation)
            continue
        tagged = [m for m in models if any(part in typing.get_args(f.annotation) for f in m.model_fields.values())]
        models = tagged[:1] or models  # a union tag picks its member; a dict key keeps them
    return info, models


def _allowed(info: FieldInfo | None, error: dict, item: bool) -> str:
    text = info and (info.description or _description(info.annotation))
    text = text or TYPE_WORDS.get(error["type"]) or error["msg"].removeprefix("Input should be ")
    nullable = info is not None and type(None) in typing.get_args(info.annotation)
    return text + (" or null" if nullable and not item and "null" not in text else "")


def _shown(value) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _user_key(loc: tuple, values) -> tuple[list[str], Any]:
    """The keys of ``loc`` present in the user's config (union tags dropped) and the value there."""
    keys, node = [], values
    for part in loc:
        if isinstance(node, dict) and part in node:
            keys.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            keys[-1:] = [f"{keys[-1]}[{part}]" if keys else f"[{part}]"]
            node = node[part]
    return keys, node


def sentence(error: dict, values, root: type[BaseModel], prefix: str = "") -> str:
    """One sentence for pydantic's ``error``: the key, its value, what is allowed."""
    loc, kind = tuple(error["loc"]), error["type"]
    keys, value = _user_key(loc, values)
    key = ".".join(filter(None, [prefix, *keys]))
    if kind == "extra_forbidden":
        _, models = _walk(loc[:-1], root)
        names = sorted((field.alias or name for name, field in models[0].model_fields.items()),
                       key=lambda name: name not in ("name", "kind"))  # the group's choice first
        close = difflib.get_close_matches(keys[-1], names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        where = ".".join(filter(None, [prefix, *keys[:-1]])) or "noisylab's config"
        return f"{key} is not a setting of {where}{hint}; its settings are: {', '.join(names)}."
    ctx = error.get("ctx", {})
    discriminator = str(ctx.get("discriminator", "")).strip("'")
    if kind == "union_tag_invalid":
        return f"{key}.{discriminator} must be one of {ctx.get('expected_tags')}, got {_shown(ctx.get('tag'))}."
    if kind == "union_tag_not_found":
        return f"{key}.{discriminator} is missing."
    info, _ = _walk(loc, root)
    allowed = _allowed(info, error, item=bool(loc) and isinstance(loc[-1], int))
    if kind == "missing":
        return f"{key} is missing; it must be {allowed}."
    return f"{key} must be {allowed}, got {_shown(value)}."


def checked(model: type[BaseModel], values, prefix: str = "") -> BaseModel:
    """``values`` validated by ``model``, or the first problem as one sentence (keys under ``prefix``)."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise ConfigError(sentence(error.errors()[0], values, model, prefix)) from None


# ---------------------------------------------------------------------------- the checks
def check_config(cfg) -> None:
    """Checks the composed config ``cfg`` (a DictConfig); raises ``ConfigError`` with one
    sentence on the first problem. Imports neither PyTorch nor Lightning."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "the config"
        raise ConfigError(f"{key} cannot be resolved: {(str(error).splitlines() or ['?'])[0]}.") from None
    checked(RunConfig, values)
    optimizer_settings(values["protocol"]["optimizer"], "protocol.optimizer")
    if (values["protocol"].get("meta") or {}).get("optimizer"):
        optimizer_settings(values["protocol"]["meta"]["optimizer"], "protocol.meta.optimizer")
    check_trainer_arguments(values["trainer"])
    epochs, max_epochs = values["protocol"].get("epochs"), values["trainer"]["max_epochs"]
    if epochs is not None and max_epochs != epochs:
        raise ConfigError(f"trainer.max_epochs={max_epochs} differs from protocol.epochs={epochs}: the number of "
                          f"epochs is set once, as protocol.epochs={max_epochs} (trainer.max_epochs follows it).")
    check_noise(values)
    from noisylab.schedules import build_schedule

    build_schedule(values["schedule"], values["noise"].get("rate", 0.0), values["trainer"]["max_epochs"])
    check_checkpoint(values)


def optimizer_settings(cfg, key: str = "optimizer") -> dict:
    """An optimiser's node validated: ``_target_`` (a torch optimiser: its arguments read from
    torch's source, without importing it) with ``_partial_: true`` and its arguments; the old
    ``name: adam|sgd|adamw`` becomes the ``_target_``. Returns the node's keys."""
    from omegaconf import DictConfig, OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    if "_target_" not in values:
        name = values.pop("name", "adam")
        if name not in SHORT_NAMES:
            raise ConfigError(f"{key}.name must be one of {', '.join(map(repr, SHORT_NAMES))}, got {_shown(name)} "
                              f"(any other torch optimiser: {key}._target_=torch.optim.<Name>).")
        values = {"_target_": SHORT_NAMES[name], **({"momentum": 0.9} if name == "sgd" else {}), **values}
    values.setdefault("_partial_", True)
    checked(Optimizer, values, key)
    target = values["_target_"]
    accepted = optimizer_arguments(target)
    if accepted is None and target.startswith("torch.optim."):
        known = sorted(torch_optimizers())
        name = target.rsplit(".", 1)[-1]
        close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean torch.optim.{close[0]}?)" if close else ""
        raise ConfigError(f"{key}._target_={target} is not an optimiser of torch.optim{hint}.")
    for name in values:
        if accepted is not None and name not in ("_target_", "_partial_") and name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{key}.{name} is not a setting of {key}{hint}; the arguments of {target} are: "
                              f"{', '.join(accepted)} (~{key}.{name} removes it).")
    return values


@functools.cache
def torch_optimizers() -> dict[str, tuple[str, ...]]:
    """``{"SGD": ("lr", "momentum", ...), ...}``: the optimisers of ``torch.optim`` and their
    arguments (less ``params``), read from torch's source without importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return {}
    found = {}
    for path in sorted((Path(spec.origin).parent / "optim").glob("*.py")):
        try:
            tree = ast.parse(path.read_text())
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                init = next((item for item in node.body if isinstance(item, ast.FunctionDef)
                             and item.name == "__init__"), None)
                names = [a.arg for a in [*init.args.args, *init.args.kwonlyargs]] if init else []
                if names[:2] == ["self", "params"]:
                    found[node.name] = tuple(names[2:])
    return found


def optimizer_arguments(target: str) -> tuple[str, ...] | None:
    """The arguments of ``torch.optim.<Name>`` (None for another target: checked when built)."""
    module, _, name = target.rpartition(".")
    return torch_optimizers().get(name) if module == "torch.optim" else None


# Datasets read from image files (noisylab.data.files), whose noise noise.load_from cannot replay.
FILE_DATA = ("clothing1m", "webvision", "webvision_mini", "food101n", "animal10n", "folder", "table")


def check_noise(values: dict) -> None:
    """The rate against the noise kind and the dataset's classes, the CIFAR-100 grouping, and
    the file of ``noise.load_from`` against the noise the config asks for."""
    from noisylab import noise
    from noisylab.data.sources import DATASETS, num_classes

    settings, data = values["noise"], values["data"]["name"]
    asymmetric_map = DATASETS[data][1]
    noise.check_rate(settings.get("rate", 0.0), settings["kind"], num_classes(values["data"]),
                     bool(settings.get("include_true_class", False)))
    groups = settings.get("cifar100_groups", "superclass")
    if groups != "superclass" and data != "cifar100":
        raise ConfigError(f"noise.cifar100_groups={groups} applies to data=cifar100 only, not to data={data}.")
    if settings.get("load_from") and data in FILE_DATA:  # their noisy labels live beside image paths, not in arrays
        raise ConfigError(f"noise.load_from is for the in-memory datasets, not data={data}: its noise is drawn again "
                          "from noise.kind, noise.rate and noise.seed (the same labels: results.json's noise "
                          "fingerprint shows it), so drop noise.load_from.")
    if settings.get("load_from"):
        noise.check_file_agrees(noise.read_noise_file(settings["load_from"]), noise.describe(settings, asymmetric_map))


LIGHTNING_TRAINERS = ("pytorch_lightning.Trainer", "lightning.pytorch.Trainer", "lightning.Trainer")


@functools.cache
def trainer_arguments() -> frozenset[str] | None:
    """The arguments of Lightning's ``Trainer``, read from its source without importing it
    (None where the source cannot be found: the Trainer then checks them itself)."""
    spec = importlib.util.find_spec("pytorch_lightning")
    if spec is None or spec.origin is None:
        return None
    try:
        tree = ast.parse((Path(spec.origin).parent / "trainer" / "trainer.py").read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return frozenset(a.arg for a in [*item.args.args, *item.args.kwonlyargs] if a.arg != "self")
    return None


# Trainer arguments whose other values would make the record false (the number of epochs is
# protocol.epochs: a run cut short by steps is no finished run; test/acc_last10 and the per-epoch
# CSV need one evaluation at the end of every epoch) or that no method can take (every method
# steps its optimizers itself, Lightning's manual optimization, which Lightning refuses them for
# only once fit has started): (allowed values..., why).
MANUAL = "every method steps its optimizers itself (Lightning's manual optimization)"
UNSUPPORTED_TRAINER_ARGUMENTS = {
    "accumulate_grad_batches": (1, None, MANUAL),
    "gradient_clip_val": (0, 0.0, None, MANUAL),
    "max_steps": (-1, None, "the number of epochs is set once, as protocol.epochs (a run cut short by steps would be "
                  "recorded as finished); for a short look use debug=limit or fewer protocol.epochs"),
    "min_steps": (None, "the number of epochs is set once, as protocol.epochs"),
    "check_val_every_n_epoch": (1, None, "test/acc_last10 and the per-epoch record need an evaluation every epoch"),
    "val_check_interval": (1, 1.0, None, "test/acc_last10 and the per-epoch record need one evaluation per epoch, "
                           "at its end"),
}


def check_trainer_arguments(trainer: dict) -> None:
    accepted = trainer_arguments() if trainer.get("_target_") in LIGHTNING_TRAINERS else None
    if accepted is None:
        return
    for key in trainer:
        if key != "_target_" and key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"trainer.{key} is not an argument of Lightning's Trainer{hint}.")
    for key, (*allowed, why) in UNSUPPORTED_TRAINER_ARGUMENTS.items():
        if key in trainer and not any(type(trainer[key]) is type(value) and trainer[key] == value for value in allowed):
            raise ConfigError(f"trainer.{key}={trainer[key]} is not supported: {why}.")


def _flat(value, key: str) -> dict:
    """``{"model": {"name": "mlp", "hidden": (256,)}}`` -> ``{"model.name": "mlp", "model.hidden": [256]}``
    (tuples as lists: a checkpoint's hyperparameters come back with tuples)."""
    if isinstance(value, dict):
        return {k: v for name, item in value.items() for k, v in _flat(item, f"{key}.{name}").items()}
    return {key: json.loads(json.dumps(value, default=str))}


def check_checkpoint(values: dict) -> None:
    """``ckpt_path``: a readable Lightning checkpoint a noisylab run wrote, of the same method
    (class and settings) and model, saved before the last epoch of this run."""
    if values.get("ckpt_path") in (None, "", "last", "auto"):
        return  # last / auto: the run folder's own checkpoint (noisylab.run_folder)
    from noisylab.checkpoint_info import read_checkpoint, written_by_noisylab

    path = Path(values["ckpt_path"]).expanduser().absolute()
    where = f"ckpt_path={path}"
    checkpoint = read_checkpoint(path)
    if not written_by_noisylab(checkpoint):  # a Lightning project's own: its networks would fail to load, late
        raise ConfigError(f"{where} is a Lightning checkpoint that no noisylab run wrote; resume from a noisylab "
                          "run's <run dir>/checkpoints/last.ckpt.")
    method, target = values["method"]["name"], values["method"]["_target_"]
    trained = checkpoint.get("noisylab_method")
    if isinstance(trained, str) and trained != target:
        raise ConfigError(f"{where} is a checkpoint of {trained.rsplit('.', 1)[-1]} ({trained}), not of "
                          f"method={method} ({target}); resume it with the method it was trained with.")
    hyper = checkpoint.get("hyper_parameters")
    hyper = hyper if isinstance(hyper, dict) else {}
    settings = {k: v for k, v in values["method"].items() if k not in DESCRIPTIVE_KEYS}
    # quirks (as the behaviours they turn on) and the schedule of methods with one: in the identity
    now = {**_flat(settings, "method"), **_flat(values["model"], "model")}
    then = {**_flat({k: v for k, v in hyper.items() if k in settings}, "method"),
            **{k: v for key in ("model",) if key in hyper for k, v in _flat(hyper[key], key).items()}}
    for key in sorted(now.keys() & then.keys()):  # keys one side lacks keep their defaults: networks' shapes are checked at load
        if now[key] != then[key]:
            raise ConfigError(f"{where} was trained with {key}={_shown(then[key])}, but this run has "
                              f"{key}={_shown(now[key])}; resume it with the settings it was trained with.")
    # the identity (which holds the labels files' contents) is compared in noisylab.run_folder.check_resume
    epoch, max_epochs = checkpoint.get("epoch"), values["trainer"]["max_epochs"]
    # a checkpoint with an identity: its number of epochs is compared there (every schedule depends on it)
    if isinstance(epoch, int) and epoch >= max_epochs and not isinstance(checkpoint.get("noisylab_identity"), dict):
        raise ConfigError(f"{where} was saved at epoch {epoch} (0-based), past trainer.max_epochs={max_epochs}; "
                          f"resume it with protocol.epochs above {epoch}, or start without ckpt_path.")
