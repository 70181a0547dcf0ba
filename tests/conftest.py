import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from noisylab.data.datamodule import NoisyDataModule
from noisylab.train import config_dir

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def make_cfg(tmp_path):
    """Composes conf/ with overrides, as the CLI would; each call gets its own run dir
    (tmp_path/run0, run1, ...), as each CLI run does."""
    calls = []

    def compose_cfg(*overrides: str):
        calls.append(overrides)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / f"run{len(calls) - 1}")
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield compose_cfg
    GlobalHydra.instance().clear()


@pytest.fixture
def one_thread():
    """Tiny networks train faster on one thread (and far faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def resolved(cfg):
    return OmegaConf.to_container(cfg, resolve=True)


def shuffle_y_true(monkeypatch, seed: int = 1234):
    """Makes every datamodule shuffle its clean labels (train and val) after preparing: a
    method that trains on y_true would then train differently (the honesty tests)."""
    original = NoisyDataModule._prepare_arrays

    def prepare_and_shuffle(self):
        original(self)
        generator = torch.Generator().manual_seed(seed)
        for split in (self.train, self.val):
            split["y_true"] = split["y_true"][torch.randperm(len(split["y_true"]), generator=generator)]

    monkeypatch.setattr(NoisyDataModule, "_prepare_arrays", prepare_and_shuffle)


def method_defaults(cls) -> dict:
    """The settings of the method config whose target is ``cls`` (where its defaults live)."""
    from pathlib import Path

    from noisylab.methods.contract import DESCRIPTIVE_KEYS

    for path in sorted((Path(config_dir()) / "method").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if cfg.get("_target_") == f"{cls.__module__}.{cls.__qualname__}":
            return {k: v for k, v in cfg.items() if k not in (*DESCRIPTIVE_KEYS, "defaults")}
    return {}


def tiny_method(cls, *, max_epochs: int = 10, train_size: int = 8, num_classes: int = 3, protocol=None,
                noise_kind: str = "symmetric", quirks: str = "paper", **settings):
    """A method on 8-feature inputs with a small MLP, built outside any run; settings not
    given come from its config."""
    from noisylab.methods.contract import RunFacts

    settings = {**method_defaults(cls), **settings}
    facts = RunFacts(num_classes=num_classes, input_shape=(8,), train_size=train_size, max_epochs=max_epochs,
                     noise_rate=0.5, noise_kind=noise_kind)
    protocol = protocol or {"optimizer": {"name": "adam", "lr": 1e-3}}
    return cls(facts=facts, model={"name": "mlp", "hidden": [16]}, protocol=protocol, quirks=quirks, **settings)
