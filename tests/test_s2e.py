"""S2E (noisylab/s2e.py): the math of the stochastic relaxation, the sweeper's plumbing on a
fake Hydra app (no training), and the real command line."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta as beta_dist

from noisylab.errors import ConfigError
from noisylab.s2e import (
    S2ESweeper,
    beta_log_hessian,
    beta_mean,
    beta_score,
    block_diagonal,
    newton_step,
    official_step,
    sample_unit,
)
from noisylab.schedules import S2E_SCALES

ROOT = Path(__file__).resolve().parents[1]
POINTS = [(0.3, 1.0, 1.0), (0.05, 2.5, 0.7), (0.9, 1.3, 4.0), (0.5, 7.0, 3.0)]


# ---------------------------------------------------------------- the math


@pytest.mark.parametrize("u,a,b", POINTS)
def test_beta_score_matches_finite_differences_of_logpdf(u, a, b):
    h = 1e-6
    da = (beta_dist.logpdf(u, a + h, b) - beta_dist.logpdf(u, a - h, b)) / (2 * h)
    db = (beta_dist.logpdf(u, a, b + h) - beta_dist.logpdf(u, a, b - h)) / (2 * h)
    np.testing.assert_allclose(beta_score(u, a, b), [da, db], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("u,a,b", POINTS)
def test_beta_log_hessian_matches_second_differences_of_logpdf(u, a, b):
    h = 1e-4

    def f(da, db):
        return beta_dist.logpdf(u, a + da, b + db)

    haa = (f(h, 0) - 2 * f(0, 0) + f(-h, 0)) / h**2
    hbb = (f(0, h) - 2 * f(0, 0) + f(0, -h)) / h**2
    hab = (f(h, h) - f(h, -h) - f(-h, h) + f(-h, -h)) / (4 * h**2)
    np.testing.assert_allclose(beta_log_hessian(a, b), [[haa, hab], [hab, hbb]], rtol=1e-4,
                               atol=1e-4)


def test_score_and_hessian_are_vectorised_per_parameter():
    rng = np.random.default_rng(0)
    theta = rng.uniform(1, 4, size=(12, 2))
    u = sample_unit(theta, rng, 5)
    assert u.shape == (5, 12) and u.min() >= 1e-6 and u.max() <= 1 - 1e-6
    scores = beta_score(u, theta[:, 0], theta[:, 1])
    assert scores.shape == (5, 12, 2)
    np.testing.assert_allclose(scores[3, 7], beta_score(u[3, 7], *theta[7]))
    blocks = beta_log_hessian(theta[:, 0], theta[:, 1])
    assert blocks.shape == (12, 2, 2)
    full = block_diagonal(blocks)
    np.testing.assert_allclose(full[14:16, 14:16], blocks[7])
    assert np.count_nonzero(full) == 12 * 4
    assert np.all(np.linalg.eigvalsh(full) < 0)  # log Beta is concave in (a, b)


TARGET = np.array([0.2, 0.8, 0.3, 0.7, 0.25, 0.6, 0.35, 0.75, 0.4, 0.65, 0.2, 0.8])


def synthetic_search(seed, baseline=True, iterations=20, samples=6):
    """reward(u) = exp(-|u - u*|^2 / 0.25), no training: how close does p_θ's mean get?"""
    rng = np.random.default_rng(seed)
    theta = np.ones((12, 2))
    for _ in range(iterations):
        u = sample_unit(theta, rng, samples)
        rewards = np.exp(-((u - TARGET) ** 2).sum(axis=1) / 0.25)
        theta = newton_step(theta, u, rewards, 1.0, baseline)
    start = np.linalg.norm(0.5 - TARGET)
    return np.linalg.norm(beta_mean(theta) - TARGET) / start


def test_newton_steps_move_the_distribution_toward_the_best_schedule():
    ratios = [synthetic_search(seed) for seed in range(5)]
    assert max(ratios) < 0.85 and np.mean(ratios) < 0.7, ratios
    # the reason for the mean baseline: with raw rewards the estimate mostly follows noise
    assert np.mean([synthetic_search(seed, baseline=False) for seed in range(5)]) > 1.0


def test_the_step_always_ascends_and_ignores_a_constant_offset():
    rng = np.random.default_rng(1)
    for _ in range(20):
        theta = rng.uniform(30, 60, size=(12, 2))  # far from the clamp at 1
        u = sample_unit(theta, rng, 6)
        rewards = rng.uniform(0.5, 0.9, size=6)
        weights = rewards - rewards.mean()
        gradient = (weights @ beta_score(u, theta[:, 0], theta[:, 1]).reshape(6, -1)) / 6
        step = (newton_step(theta, u, rewards, 0.1) - theta).reshape(-1)
        assert gradient @ step > 0
        shifted = newton_step(theta, u, rewards + 3.0, 0.1)
        np.testing.assert_allclose(shifted, theta + step.reshape(12, 2), rtol=1e-9)


def test_equal_rewards_leave_theta_alone_and_theta_stays_at_least_one():
    rng = np.random.default_rng(2)
    theta = np.ones((12, 2))
    u = sample_unit(theta, rng, 6)
    np.testing.assert_array_equal(newton_step(theta, u, np.zeros(6)), theta)
    for _ in range(10):
        theta = newton_step(theta, sample_unit(theta, rng, 6), rng.uniform(size=6), 5.0)
        assert theta.min() >= 1.0 and np.all(np.isfinite(theta))


def test_the_official_quirk_mode_runs_and_changes_theta():
    rng = np.random.default_rng(3)
    theta = np.full((12, 2), 5.0)
    u = sample_unit(theta, rng, 6)
    rewards = rng.uniform(size=6)
    new = official_step(theta, u, rewards, 1.0)
    assert new.shape == theta.shape and not np.allclose(new, theta) and new.min() >= 1.0
    # best sample only, g = s/M, H = (s sᵀ + ∇² log p)/M, Δθ_i = H⁻¹[i, 0] · g_i (elementwise)
    best = int(np.argmax(rewards))
    score = beta_score(u[best], theta[:, 0], theta[:, 1]).reshape(-1)
    hessian = (np.outer(score, score) + block_diagonal(beta_log_hessian(theta[:, 0], theta[:, 1])))
    expected = theta.reshape(-1) + np.linalg.inv(hessian / 6)[:, 0] * score / 6
    np.testing.assert_allclose(new.reshape(-1), np.maximum(expected, 1.0), rtol=1e-6)
    # only the best sample matters
    others = u.copy()
    others[np.arange(6) != best] = 0.5
    np.testing.assert_allclose(official_step(theta, others, rewards, 1.0), new)


@pytest.mark.parametrize("metric", ["test/acc", "test/acc_last10", "test/acc_at_best_val", "val/clean_acc",
                                    "val/clean_acc_net2", "train/label_precision", "train/detection_auc",
                                    "val/loss", "val/acc_clean", "acc", "val/accuracy"])
def test_only_accuracies_on_the_noisy_validation_labels_can_be_the_reward(metric):
    with pytest.raises(ConfigError, match="is not an accuracy on the noisy validation labels") as error:
        S2ESweeper(metric=metric).check_settings()
    assert "\n" not in str(error.value)
    for allowed in ("val/acc", "val/acc_best", "val/acc_net2", "val/acc_best_net2"):
        S2ESweeper(metric=allowed).check_settings()


def test_the_reward_names_are_those_the_method_logs_for_each_network():
    from noisylab.methods.ce import CrossEntropy
    from noisylab.methods.coteaching import CoTeaching
    from noisylab.s2e import reward_metrics
    from tests.conftest import tiny_method

    schedule = {"name": "coteaching", "form": "paper", "tau": None, "num_gradual": 10, "exponent": 1}
    for cls, settings in ((CoTeaching, {"schedule": schedule}), (CrossEntropy, {})):
        method = tiny_method(cls, **settings)
        logged = [name + method._suffix(net) for net in method.reported for name in ("val/acc", "val/acc_best")]
        assert reward_metrics(f"{cls.__module__}.{cls.__qualname__}") == logged
    assert reward_metrics("noisylab.methods.coteaching.CoTeaching") == [
        "val/acc", "val/acc_best", "val/acc_net2", "val/acc_best_net2"]


# ---------------------------------------------------------------- the sweeper on a fake app

FAKE_APP = '''
import json, math, sys
from pathlib import Path
import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

SCALES = np.array(SCALES_HERE)

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    num = HydraConfig.get().job.num
    out = Path(HydraConfig.get().runtime.output_dir)
    if num == cfg.crash_job:
        raise RuntimeError("boom")
    if num == cfg.bad_job:  # noisylab's way to end a job on bad input inside a multirun
        (out / "error.txt").write_text("bad input\\n")
        return float("nan")
    u = np.array(cfg.schedule.params) / SCALES
    reward = float(np.exp(-((u - 0.3) ** 2).sum()))
    results = {"metrics": {"val/acc": reward, "test/acc": 1.0},
               "config": OmegaConf.to_container(cfg, resolve=True)}
    (out / "results.json").write_text(json.dumps(results))
    return reward

main()
'''

FAKE_CONFIG = """
defaults:
  - method: smallloss
  - schedule: coteaching
  - _self_
noise:
  rate: 0.45
trainer:
  max_epochs: ${method.epochs}
crash_job: -1
bad_job: -1
hydra:
  sweep:
    subdir: ${hydra.job.num}
"""

SHIM = '''
from noisylab.s2e import S2ESweeper as _S2ESweeper


class S2ESweeper(_S2ESweeper):
    pass
'''


@pytest.fixture
def fake_app(tmp_path):
    """A Hydra app with noisylab's results.json contract, the real sweeper config (with its
    target pointed at a throw-away hydra_plugins entry point) and the real schedule group."""
    app = tmp_path / "app"
    (app / "conf" / "hydra" / "sweeper").mkdir(parents=True)
    (app / "conf" / "method").mkdir()
    (app / "conf" / "schedule").mkdir()
    (app / "app.py").write_text(FAKE_APP.replace("SCALES_HERE", repr(list(S2E_SCALES))))
    (app / "conf" / "config.yaml").write_text(FAKE_CONFIG)
    (app / "conf" / "method" / "smallloss.yaml").write_text("name: smallloss\nepochs: 30\n"
                                                             "_target_: noisylab.methods.coteaching.CoTeaching\n")
    (app / "conf" / "method" / "ce.yaml").write_text("name: ce\nepochs: 30\n_target_: noisylab.methods.ce.CrossEntropy\n")
    for name in ("s2e", "coteaching"):
        text = (ROOT / "conf" / "schedule" / f"{name}.yaml").read_text()
        (app / "conf" / "schedule" / f"{name}.yaml").write_text(text)
    sweeper = (ROOT / "conf" / "hydra" / "sweeper" / "s2e.yaml").read_text()
    sweeper = sweeper.replace("hydra_plugins.noisylab_s2e.", "hydra_plugins.s2e_test_shim.")
    (app / "conf" / "hydra" / "sweeper" / "s2e.yaml").write_text(sweeper)
    shim = tmp_path / "shim" / "hydra_plugins" / "s2e_test_shim"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(SHIM)

    def run(*overrides):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), str(ROOT)])}
        command = [sys.executable, "app.py", "-m", "hydra/sweeper=s2e",
                   f"hydra.sweep.dir={tmp_path}/sweep", *overrides]
        return subprocess.run(command, cwd=app, env=env, capture_output=True, text=True,
                              timeout=120)

    return run, tmp_path / "sweep"


def test_the_sweeper_launches_rewards_updates_and_resumes(fake_app):
    run, sweep = fake_app
    small = ["hydra.sweeper.samples_per_iteration=3", "crash_job=1", "bad_job=2"]
    done = run("hydra.sweeper.iterations=2", *small)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((sweep / "s2e_history.json").read_text())
    assert history["completed_iterations"] == 2 and history["next_job_idx"] == 6
    assert len(history["theta"]) == 3 and history["fixed_overrides"] == ["crash_job=1", "bad_job=2"]
    trials = history["trials"]
    assert [t["job_idx"] for t in trials] == list(range(6))
    assert trials[1]["reward"] == 0.0 and trials[2]["reward"] == 0.0  # crashed / error.txt
    assert [t["ok"] for t in trials] == [True, False, False, True, True, True]
    for trial in trials:
        assert len(trial["params"]) == 12
        assert all(0 <= p <= s for p, s in zip(trial["params"], S2E_SCALES, strict=True))
        if trial["job_idx"] not in (1, 2):
            expected = np.exp(-((np.array(trial["params"]) / S2E_SCALES - 0.3) ** 2).sum())
            assert trial["reward"] == pytest.approx(expected, rel=1e-9)
            assert Path(trial["job_dir"]) == sweep / str(trial["job_idx"])
    assert history["best"]["reward"] == max(t["reward"] for t in trials) > 0
    assert history["theta"][1] != history["theta"][0]
    best = (sweep / "s2e_best.yaml").read_text()
    params = ",".join(f"{p:.6f}" for p in history["best"]["params"])
    assert f"override: schedule=s2e schedule.params=[{params}]" in best
    assert (sweep / "s2e_schedules.png").read_bytes()[:4] == b"\x89PNG"
    assert "S2E iteration 2/2" in done.stdout + done.stderr
    assert "failed (RuntimeError: boom); reward 0" in done.stdout + done.stderr

    done = run("hydra.sweeper.iterations=3", "hydra.sweeper.resume=true", *small)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads((sweep / "s2e_history.json").read_text())
    assert resumed["completed_iterations"] == 3 and len(resumed["theta"]) == 4
    assert [t["job_idx"] for t in resumed["trials"]] == list(range(9))
    assert resumed["trials"][:6] == trials and resumed["theta"][:3] == history["theta"]
    assert (sweep / "8" / "results.json").is_file()

    # one history never mixes two searches: other overrides, other settings, or a new search
    # in the same folder are refused before anything is launched or rewritten
    multirun = (sweep / "multirun.yaml").read_text()
    for overrides, sentence in [
        (["hydra.sweeper.iterations=4", "hydra.sweeper.resume=true", "crash_job=1", "bad_job=0"],
         "hydra.sweeper.resume=true needs the overrides of the search in "
         f"{sweep} ('crash_job=1 bad_job=2'), got 'crash_job=1 bad_job=0'; resume with those, or start a new search "
         "in another hydra.sweep.dir."),
        (["hydra.sweeper.iterations=4", "hydra.sweeper.resume=true", "hydra.sweeper.samples_per_iteration=4",
          "crash_job=1", "bad_job=2"], "(samples_per_iteration 3 -> 4)"),
        (["hydra.sweeper.iterations=4", "hydra.sweeper.resume=true", "hydra.sweeper.metric=val/acc_best", *small],
         "(metric val/acc -> val/acc_best)"),
        (["hydra.sweeper.iterations=4", *small], "already holds an S2E search (s2e_history.json)"),
    ]:
        done = run(*overrides)
        assert done.returncode == 2 and sentence in done.stderr, (overrides, done.stderr[-2000:])
        assert done.stderr.strip().splitlines()[-1].startswith("noisylab: error: ")
    assert json.loads((sweep / "s2e_history.json").read_text()) == resumed
    assert (sweep / "multirun.yaml").read_text() == multirun and not (sweep / "9").exists()


def test_the_sweeper_refuses_bad_settings_with_one_sentence(fake_app):
    run, sweep = fake_app
    for overrides, sentence in [
        (["hydra.sweeper.metric=val/clean_acc"], "val/clean_acc is not an accuracy on the noisy validation labels"),
        (["hydra.sweeper.metric=val/acc_net3"], "hydra.sweeper.metric=val/acc_net3 is not logged by "
         "method=smallloss; its accuracies on the noisy validation labels are: val/acc, val/acc_best, val/acc_net2, "
         "val/acc_best_net2."),
        (["+data.val_fraction=0"], "data.val_fraction=0 leaves no validation split to reward S2E with"),
        (["crash_job=3,4"], "'crash_job=3,4' is a sweep"),
        (["method=ce"], "method=ce uses no forget-rate schedule"),
        (["schedule=s2e", "schedule.params=[0.5]"], "sets the schedule itself"),
    ]:
        done = run(*overrides)
        assert done.returncode == 2, (overrides, done.stderr[-2000:])
        assert "noisylab: error: " in done.stderr and sentence in done.stderr
        assert "Traceback" not in done.stderr
        assert not sweep.exists()  # refused before any job (or file) was made


# ---------------------------------------------------------------- the real command line

HAS_ENTRY_POINT = importlib.util.find_spec("hydra_plugins.noisylab_s2e") is not None
needs_entry_point = pytest.mark.skipif(
    not HAS_ENTRY_POINT,
    reason="Hydra 1.3 loads sweepers only from the hydra_plugins package: "
           "hydra_plugins/noisylab_s2e (the entry point of noisylab.s2e.S2ESweeper) is missing",
)


@needs_entry_point
def test_hydra_instantiates_the_sweeper_from_the_primary_config_dir():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["hydra/sweeper=s2e"], return_hydra_config=True)
        plugins = Plugins.instance()
        sweeper = plugins._instantiate(cfg.hydra.sweeper)
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(sweeper, S2ESweeper)
    assert (sweeper.iterations, sweeper.samples, sweeper.metric) == (10, 6, "val/acc")
    assert (sweeper.step_size, sweeper.seed, sweeper.init) == (1.0, 0, (1.0, 1.0))
    assert not sweeper.quirk and not sweeper.resume and sweeper.max_batch_size is None


@pytest.mark.slow
@needs_entry_point
def test_s2e_from_the_command_line_then_a_run_with_the_best_schedule(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    fast = ["protocol.epochs=2", "trainer.enable_progress_bar=false", "callbacks=none", "logger=none"]
    search = [sys.executable, "-m", "noisylab", "-m", "hydra/sweeper=s2e", "method=coteaching",
              "data=digits", "noise=pair45", *fast, "hydra.sweeper.iterations=2",
              "hydra.sweeper.samples_per_iteration=2", f"hydra.sweep.dir={tmp_path}/sweep"]
    done = subprocess.run(search, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "sweep" / "s2e_history.json").read_text())
    assert len(history["trials"]) == 4 and history["completed_iterations"] == 2
    assert all(0.0 < t["reward"] <= 1.0 for t in history["trials"])
    assert history["max_epochs"] == 2 and history["noise_rate"] == 0.45
    assert (tmp_path / "sweep" / "s2e_schedules.png").is_file()
    best = history["best"]
    results = json.loads((Path(best["job_dir"]) / "results.json").read_text())
    assert results["metrics"]["val/acc"] == best["reward"]
    assert results["config"]["schedule"]["params"] == best["params"]

    params = ",".join(f"{p:.6f}" for p in best["params"])
    rerun = [sys.executable, "-m", "noisylab", "method=coteaching", "data=digits", "noise=pair45",
             *fast, "schedule=s2e", f"schedule.params=[{params}]", f"hydra.run.dir={tmp_path}/run"]
    done = subprocess.run(rerun, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["config"]["schedule"] == {"name": "s2e", "params": best["params"]}
    assert again["metrics"]["val/acc"] == pytest.approx(best["reward"], abs=1e-6)  # same seed
