"""Bad input through the command line, one case per row: exit status 2, exactly one line on
stderr naming the key, no traceback, no results, and no heavy import before the refusal."""

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from noisylab.data.datamodule import NoisyDataModule
from noisylab.errors import ConfigError
from noisylab.schema import check_config
from noisylab.train import config_dir

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ONCE = ["method=ce", "model=mlp", "debug=limit", "trainer.enable_progress_bar=false"]


def noisylab(run_dir: Path, *overrides, python_flags=()):
    command = [sys.executable, *python_flags, "-m", "noisylab", "data=digits", *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Files the cases point at: noise files (written by the datamodule, hand-made broken ones)
    and checkpoints of a real 2-epoch ce run."""
    tmp = tmp_path_factory.mktemp("inputs")
    digits = OmegaConf.create({"name": "digits", "test_fraction": 0.25, "val_fraction": 0.1})
    sym20 = OmegaConf.create({"name": "sym20", "kind": "symmetric", "rate": 0.2, "seed": 0})
    (tmp / "sym20").mkdir()
    written = NoisyDataModule(digits, sym20).save_noisy_labels(tmp / "sym20")
    with np.load(written) as saved:
        np.savez(tmp / "legacy.npz", noisy=saved["noisy"], clean=saved["clean"])  # no noise description
        outside = {key: saved[key] for key in saved.files}
        outside["noisy"] = np.where(np.arange(len(saved["noisy"])) == 3, 10, saved["noisy"])  # digits: 0..9
        np.savez(tmp / "outside.npz", **outside)
    np.savez(tmp / "no_labels.npz", transition=np.eye(3))
    (tmp / "text.npz").write_text("not an archive\n")
    (tmp / "text.ckpt").write_text("not a checkpoint\n")
    with zipfile.ZipFile(tmp / "other.ckpt", "w") as archive:  # a torch.save-like archive, not Lightning's
        archive.writestr("archive/data.pkl", pickle.dumps({"weights": [1.0, 2.0]}))
    with zipfile.ZipFile(tmp / "lightning.ckpt", "w") as archive:  # a Lightning project's own checkpoint
        archive.writestr("archive/data.pkl", pickle.dumps({"pytorch-lightning_version": "2.4.0", "state_dict": {},
                                                           "epoch": 0, "callbacks": {"ModelCheckpoint{}": {}}}))
    trained = noisylab(tmp / "ce", *TRAIN_ONCE)
    assert trained.returncode == 0, trained.stderr[-2000:]
    return {"sym20": written, "ckpt": tmp / "ce" / "checkpoints" / "last.ckpt", "dir": tmp}


CASES = [  # through the CLI: (overrides, a part of the sentence); {name}: a path of the files fixture
    (["seed=abc"], "seed must be an integer in [0, 4294967295], got 'abc'."),
    (["method.batch_size=0"], "protocol.batch_size must be an integer >= 1, got 0."),
    (["method.optimizer.lr=-1"], "protocol.optimizer.lr must be a number > 0, got -1."),
    (["trainer.max_epochs=-3"], "trainer.max_epochs must be an integer >= 1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs must be an integer >= 1"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs must be an integer >= 1"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch is not an argument of Lightning's Trainer (did you mean "
                               "max_epochs?)."),
    (["data.test_fraction=1.0"], "data.test_fraction must be a number in (0, 1), got 1.0."),
    (["data.val_fraction=1"], "data.val_fraction must be a number in [0, 1), got 1."),
    (["data.augment=flip"], "data.augment must be 'none', 'crop' or 'crop_flip', got 'flip'."),
    (["+data.foo=1"], "data.foo is not a setting of data; its settings are: name, root,"),
    (["+protocol.optimizer.momentm=0.9"], "protocol.optimizer.momentm is not a setting of protocol.optimizer; the "
                                          "arguments of torch.optim.Adam are: lr, betas, eps, weight_decay,"),
    (["protocol=mixup", "+method.optimizer.momentm=0.9"], "protocol.optimizer.momentm is not a setting of "
                                                          "protocol.optimizer (did you mean momentum?)"),
    (["noise.rate=1.5"], "noise.rate must lie in [0, 1), got 1.5."),
    (["noise.rate=0.95"], "noise.rate=0.95 is too high for symmetric noise over 10 classes"),
    (["noise=pair45", "noise.rate=0.5"], "noise.rate=0.5 is too high for pair noise"),
    (["noise=none", "noise.rate=0.3"], "noise.rate must be 0 with noise.kind=none (clean labels), got 0.3;"),
    (["noise.load_from={dir}/missing.npz"], "noise.load_from={dir}/missing.npz does not exist;"),
    (["noise.load_from={dir}/text.npz"], "noise.load_from={dir}/text.npz cannot be read as a noisy_labels.npz"),
    (["noise=sym20", "noise.load_from={dir}/outside.npz"], "noise.load_from={dir}/outside.npz holds noisy label 10, "
                                                          "outside the digits classes 0..9."),
    (["noise=sym50", "noise.load_from={sym20}"], "noise.load_from={sym20} holds symmetric noise at rate 0.2 "
                                                 "(other_classes) but the config asks for symmetric noise at rate 0.5"),
    (["model=mlp", "model.hidden=[0]"], "model.hidden[0] must be an integer >= 1, got 0."),
    (["schedule.tau=2"], "schedule.tau must lie in [0, 1), got 2.0."),
    (["quirks=official_code"], "quirks must be paper, official or a list of quirk names, got 'official_code'."),
    (["+colour=red"], "colour is not a setting of noisylab's config;"),
    (["ckpt_path={dir}/missing.ckpt"], "ckpt_path={dir}/missing.ckpt does not exist;"),
    (["ckpt_path={dir}/text.ckpt"], "ckpt_path={dir}/text.ckpt is not a readable PyTorch Lightning checkpoint"),
    (["method=coteaching", "ckpt_path={ckpt}"], "ckpt_path={ckpt} is a checkpoint of CrossEntropy "
                                                "(noisylab.methods.ce.CrossEntropy), not of method=coteaching"),
    (["method=ce", "protocol.epochs=1", "ckpt_path={ckpt}"], "ckpt_path={ckpt} was trained with protocol.epochs=2, "
                                                            "but this run has protocol.epochs=1;"),
    ([*TRAIN_ONCE, "seed=1", "ckpt_path={ckpt}"], "ckpt_path={ckpt} was trained with seed=0, but this run has seed=1"),
    (["method=ce", "trainer.strategy=bogus"], "Lightning refuses the trainer settings (accelerator="),
    (["method=ce", "model=preact_resnet18", "protocol.batch_size=1211"],  # digits: 1,212 training samples
     "the last training batch would hold a single sample (1212 training samples, protocol.batch_size 1211), on "
     "which the BatchNorm layers of model=preact_resnet18 cannot train;"),
    (["method=ce", "+data.drop_last=true", "protocol.batch_size=2000"],  # an empty epoch otherwise
     "no training batch: 1212 training samples, protocol.batch_size 2000, and drop_last"),
    (["noise.kind=human"], "noise.kind=human needs a set of human labels: choose noise=cifar10n_worst,"),
    (["noise=sym20", "noise.load_from={sym20}", "data.test_fraction=0.3"],
     "noise.load_from={sym20} holds the labels of another training set than this run's (data=digits: 1257 samples "
     "here, 1347 in the file, or as many in another order)"),
]
MORE_CASES = [  # the same check_config in-process, to keep the file fast
    (["seed=-1"], "seed must be an integer in [0, 4294967295], got -1."),
    (["seed=1.5"], "seed must be an integer in [0, 4294967295], got 1.5."),
    (["protocol.batch_size=0"], "protocol.batch_size must be an integer >= 1, got 0."),
    (["protocol.optimizer.lr=-1"], "protocol.optimizer.lr must be a number > 0, got -1."),
    (["protocol.optimizer._target_=torch.optim.adagrad"], "protocol.optimizer._target_=torch.optim.adagrad is not an "
                                                          "optimiser of torch.optim (did you mean torch.optim.Adagrad?)."),
    (["protocol.optimizer._target_=torch.optim.SGD"], "protocol.optimizer.betas is not a setting of protocol.optimizer; "
                                                      "the arguments of torch.optim.SGD are: lr, momentum,"),
    (["protocol.optimizer._partial_=false"], "protocol.optimizer._partial_ must be true"),
    (["protocol.epochs=0"], "protocol.epochs must be an integer >= 1, got 0."),
    (["+trainer.limit_train_batches=-1"], "trainer.limit_train_batches must be an integer >= 0 (batches) or a number"),
    (["data.trusted_per_class=-2"], "data.trusted_per_class must be an integer >= 0 or null, got -2."),
    (["data.eval_batch_size=0"], "data.eval_batch_size must be an integer >= 1, got 0."),
    (["protocol=mixup", "protocol.optimizer.momentum=1.5"],
     "protocol.optimizer.momentum must be a number in [0, 1), got 1.5."),
    (["protocol.optimizer.betas=[0.9]"], "protocol.optimizer.betas must be two numbers in [0, 1), got [0.9]."),
    (["protocol.lr_schedule.decay_start=-5"], "protocol.lr_schedule.decay_start must be an integer >= 0, got -5."),
    (["protocol.augment=crop_fli"], "protocol.augment must be 'none', 'crop' or 'crop_flip' or null, got "
                                    "'crop_fli'."),
    (["noise.rate=abc"], "noise.rate must be a number, got 'abc'."),
    (["noise=asym40", "noise.rate=0.6"], "noise.rate=0.6 is too high for asymmetric noise"),
    (["noise.seed=-1"], "noise.seed must be an integer >= 0, got -1."),
    (["noise.kind=gaussian"], "noise.kind must be 'none', 'symmetric', 'pair', 'asymmetric', 'human', "
                              "'feature_dependent' or 'instance_dependent', got 'gaussian'."),
    (["+noise.tie_rul=stable"], "noise.tie_rul is not a setting of noise (did you mean tie_rule?); its settings "
                                "are: name, kind,"),
    (["noise=asym40", "noise.cifar100_groups=blocks"], "noise.cifar100_groups=blocks applies to data=cifar100 only"),
    (["noise.load_from={dir}"], "noise.load_from={dir} is not a file;"),
    (["noise.load_from={dir}/no_labels.npz"], "noise.load_from={dir}/no_labels.npz holds no noisy and clean label"),
    (["noise.load_from={dir}/legacy.npz"], "noise.load_from={dir}/legacy.npz does not record which noise it holds"),
    (["noise=pair20", "noise.load_from={sym20}"], "holds symmetric noise at rate 0.2 (other_classes) but the config "
                                                  "asks for pair noise at rate 0.2 (next_class)"),
    (["model=mlp", "+model.hiden=[8]"], "model.hiden is not a setting of model (did you mean hidden?); its settings "
                                        "are: name, hidden, dropout."),
    (["schedule=s2e"], "schedule=s2e needs schedule.params"),
    (["schedule.num_gradual=ten"], "schedule.num_gradual must be an integer, got 'ten'."),
    (["logger.csv=1"], "logger.csv must be a group of settings (key: value), got 1."),
    (["ckpt_path={dir}/other.ckpt"], "ckpt_path={dir}/other.ckpt is a PyTorch file but not a Lightning checkpoint"),
    (["method=ce", "model=mlp", "model.hidden=[32]", "ckpt_path={ckpt}"],
     "ckpt_path={ckpt} was trained with model.hidden=[256], but this run has model.hidden=[32];"),
    (["method=ce", "ckpt_path={dir}/lightning.ckpt"], "ckpt_path={dir}/lightning.ckpt is a Lightning checkpoint that "
                                                      "no noisylab run wrote"),
]


@pytest.mark.parametrize("overrides,sentence", CASES, ids=[" ".join(case[0]) for case in CASES])
def test_bad_input_is_refused_with_one_sentence(tmp_path, files, overrides, sentence):
    paths = {k: str(v) for k, v in files.items()}
    done = noisylab(tmp_path / "run", *[o.format(**paths) for o in overrides])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("noisylab: error: "), done.stderr[-2000:]
    assert sentence.format(**paths) in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "run" / "results.json").exists()
    assert (tmp_path / "run" / "error.txt").read_text().strip() == lines[0].removeprefix("noisylab: error: ")


HYDRA_CASES = [  # Hydra's own refusals, found by composing once before the run (train.composition_error)
    (["trainer.detect_anomaly=true"], "trainer.detect_anomaly is not a key of the config; to add a new key "
                                      "write +trainer.detect_anomaly=true."),
    (["data.foo=1"], "data.foo is not a setting of data; its settings are: name, "),  # not "+data.foo": refused too
    (["data=clothing1m", "data.download=true"], "data.download is not a setting of data; "),
    (["model=bogus"], "model=bogus is not an option of model; the options are: auto, "),
    (["method=ce,coteaching"], "'method=ce,coteaching' sweeps over several values: add -m"),
    (["seed=[1,"], "no viable alternative at input '[1,'"),
]


@pytest.mark.parametrize("overrides,sentence", HYDRA_CASES, ids=[" ".join(case[0]) for case in HYDRA_CASES])
def test_a_config_that_does_not_compose_is_one_sentence_before_any_run(tmp_path, overrides, sentence):
    done = noisylab(tmp_path / "run", *overrides)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("noisylab: error: ") and sentence in lines[0], done.stderr
    assert not (tmp_path / "run").exists()  # no run was started, so there is no run folder


@pytest.mark.parametrize("overrides,sentence", MORE_CASES, ids=[" ".join(case[0]) for case in MORE_CASES])
def test_more_bad_input_is_refused_with_one_sentence(make_cfg, files, overrides, sentence):
    paths = {k: str(v) for k, v in files.items()}
    with pytest.raises(ConfigError) as refused:
        check_config(make_cfg("data=digits", *[o.format(**paths) for o in overrides]))
    assert sentence.format(**paths) in str(refused.value) and "\n" not in str(refused.value)


def test_refusals_come_before_pytorch_is_imported(tmp_path, files):
    done = noisylab(tmp_path / "run", "method=coteaching", f"ckpt_path={files['ckpt']}", python_flags=["-X", "importtime"])
    assert done.returncode == 2 and "is a checkpoint of CrossEntropy" in done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "noisylab.schema" in imported and "noisylab.checkpoint_info" in imported
    assert not {"torch", "pytorch_lightning", "sklearn"} & imported


def test_the_model_schemas_list_each_builders_settings():
    from noisylab.models import MODELS
    from noisylab.schema import MODEL_SCHEMAS

    schemas = {}
    for schema in MODEL_SCHEMAS:
        for name in schema.model_fields["name"].annotation.__args__:
            schemas[name] = tuple(field for field in schema.model_fields if field != "name")
    assert schemas == {name: builder.settings for name, builder in MODELS.items()}


def test_the_written_noise_file_records_its_noise(files):
    with np.load(files["sym20"]) as saved:
        identity = json.loads(str(saved["noise"]))
    assert (identity["name"], identity["kind"], identity["rate"], identity["convention"]) == \
        ("sym20", "symmetric", 0.2, "other_classes")


CONF = Path(config_dir())
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


def shipped_configs() -> list[list[str]]:
    """Every method_data / protocol_data pairing and every value of a sweep's grid other than
    its methods and seeds (the other keys at their first value). Every group option and every
    sweep's methods pass the schema in tests/test_config.py and tests/test_sweeps.py."""
    configs = []
    for group, selector in (("method_data", "method"), ("protocol_data", "protocol")):
        for p in sorted((CONF / group).glob("*.yaml")):
            data = max((d for d in DATA if p.stem.endswith(f"_{d}")), key=len)
            configs.append([f"{selector}={p.stem[: -len(data) - 1]}", f"data={data}"])
    for p in sorted((CONF / "sweep").glob("*.yaml")):
        params = {k: [v.strip() for v in str(values).split(",")]
                  for k, values in OmegaConf.load(p).hydra.sweeper.params.items()}
        first = {k: v[0] for k, v in params.items()}
        variations = [{k: value} for k, v in params.items() if k not in ("method", "seed") for value in v[1:]]
        configs += [[f"+sweep={p.stem}", *(f"{k}={v}" for k, v in {**first, **change}.items())] for change in variations]
    return configs


@pytest.mark.parametrize("overrides", shipped_configs(), ids=" ".join)
def test_every_shipped_config_passes_the_schema(make_cfg, overrides):
    check_config(make_cfg(*overrides))


def test_a_run_folder_holding_a_file_where_hydra_makes_a_folder_is_one_sentence(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".hydra").write_text("a file where Hydra writes its record")
    done = noisylab(tmp_path / "run", "method=ce")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"noisylab: error: the run folder {tmp_path / 'run'} holds a file .hydra where a "
                                   "run makes a folder; remove it or choose another folder with hydra.run.dir=<folder>.")
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".hydra"]
