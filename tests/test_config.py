"""Every option of every config group composes and resolves."""

from pathlib import Path

import pytest

from noisylab.schema import check_config
from noisylab.train import config_dir
from tests.conftest import resolved

CONF = Path(config_dir())
GROUPS = ["method", "data", "noise", "model", "protocol", "schedule", "trainer", "logger", "callbacks", "experiment"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    if (group, option) != ("schedule", "s2e"):  # s2e needs the params of a searched schedule
        check_config(cfg)  # and passes the schema (noisylab/schema.py)
    cfg = resolved(cfg)
    assert cfg["method"]["name"] and cfg["data"]["name"] and cfg["model"]["name"]
    if group in ("method", "data", "noise"):
        assert cfg[group]["name"] == option
    if group == "model" and option != "auto":
        assert cfg["model"]["name"] == option


def test_defaults_run_coteaching_on_embedded_digits(make_cfg):
    cfg = resolved(make_cfg())
    assert (cfg["method"]["name"], cfg["data"]["name"], cfg["noise"]["name"]) == ("coteaching", "digits", "sym50")
    assert cfg["model"]["name"] == "mlp"  # the dataset's small model: cnn9 needs bigger images


def test_model_auto_is_the_published_model_and_model_group_overrides_it(make_cfg):
    assert resolved(make_cfg("data=cifar10"))["model"]["name"] == "cnn9"
    assert resolved(make_cfg("data=mnist1d"))["model"]["name"] == "cnn1d"  # the dataset's own
    assert resolved(make_cfg("data=cifar10", "model=preact_resnet18"))["model"]["name"] == "preact_resnet18"


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group
