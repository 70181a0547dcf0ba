"""Every reproduction sweep in conf/sweep/ composes for every method it lists, with settings
the method accepts, of their types (a typo in a sweep file would otherwise surface only on
the GPU machine, hours later), and each has its link in multirun_sweeps/."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from noisylab.methods.contract import DESCRIPTIVE_KEYS, check_settings
from noisylab.schema import check_config
from noisylab.train import config_dir, method_class

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.stem for p in (Path(config_dir()) / "sweep").glob("*.yaml"))


def first(values: str) -> str:
    return str(values).split(",")[0].strip()


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_job_of_a_sweep_composes(make_cfg, sweep):
    params = OmegaConf.load(Path(config_dir()) / "sweep" / f"{sweep}.yaml").hydra.sweeper.params
    methods = [m.strip() for m in str(params.get("method", "ce")).split(",")]
    others = [f"{key}={first(value)}" for key, value in params.items() if key != "method"]
    for method in methods:
        cfg = make_cfg(f"+sweep={sweep}", f"method={method}", *others)
        assert cfg.method.name == method
        check_config(cfg)  # passes the schema (noisylab/schema.py)
        settings = {k: v for k, v in cfg.method.items() if k not in DESCRIPTIVE_KEYS}
        check_settings(method, method_class(cfg), settings)  # the target imports; its settings are its own
    link = ROOT / "multirun_sweeps" / f"{sweep}.yaml"
    assert link.is_symlink() and link.resolve() == (Path(config_dir()) / "sweep" / f"{sweep}.yaml").resolve()
    assert f"`{sweep}`" in (ROOT / "multirun_sweeps" / "README.md").read_text()
