"""S2E as a Hydra sweeper: search the forget-rate schedule R(t) of a small-loss method.

Yao, Yang, Han, Niu, Kwok, "Searching to Exploit Memorization Effect in Learning with Noisy
Labels", ICML 2020. The schedule has 12 parameters x0..x11 (``noisylab.schedules.S2ESchedule``).
S2E relaxes the search over x into a search over a distribution,
p_θ(x) = Π_k Beta(u_k; a_k, b_k) with x_k = u_k · S2E_SCALES[k], and maximises
J(θ) = E_{x~p_θ}[reward(x)], the reward being the noisy-validation metric of one training job
with schedule x. θ = (a_0, b_0, ..., a_11, b_11) starts at all ones (uniform).

Each iteration draws M samples, launches one job per sample through Hydra's launcher, reads
``<job dir>/results.json`` and takes one Newton-type step on θ (``newton_step``):

    g = (1/M) Σ_m r̃_m s_m,   H = (1/M) Σ_m r̃_m (s_m s_mᵀ + ∇²_θ log p_θ(u_m)),
    θ ← max(θ + ρ |H|⁻¹ g, 1),

with s_m = ∇_θ log p_θ(u_m) (``beta_score``), ∇²_θ log p_θ block-diagonal with one 2x2 block per
parameter (``beta_log_hessian``), and |H|⁻¹ = V diag(1 / max(|λ|, 1e-5)) Vᵀ from the eigen-
decomposition H = V diag(λ) Vᵀ. For a concave J, H is negative definite and |H|⁻¹g = -H⁻¹g is
exactly the paper's Newton step θ - ρ H⁻¹ g; where the estimate is indefinite, flipping the
signs of the positive eigenvalues keeps the step an ascent direction (gᵀ|H|⁻¹g ≥ 0).
The clamp θ ≥ 1 is the official code's.

Reward baseline (a choice; ``baseline``, default true): r̃_m = r_m - mean(r). The paper's
estimators use the raw rewards. Subtracting the batch mean changes neither the expected
gradient nor the expected Hessian except for the same factor (M-1)/M on both, which cancels in
H⁻¹g, because E[s] = 0 and E[s sᵀ + ∇² log p] = 0; it makes the step independent of a
constant offset of the metric (accuracy vs. accuracy - 0.5 give the same search) and removes
the r̄·mean(s) term that dominates the raw estimate when all rewards are similar, as
validation accuracies are. On the synthetic objective of tests/test_s2e.py the raw
estimator with ρ = 1 wanders away from the optimum while the baselined one converges.
Since ∇² log p does not depend on u, its weighted sum vanishes with baselined rewards and H
reduces to (1/M) Σ r̃_m s_m s_mᵀ. ``baseline: false`` gives the paper's raw-reward estimator.

``quirk_best_only_elementwise: true`` reproduces the official heng_main.py instead
(``official_step``): only the best sample, g = s_best / M, H = (s_best s_bestᵀ + ∇² log p)/M,
H⁻¹ from an SVD with singular values clamped at 1e-5, and θ_i += ρ · H⁻¹[i, 0] · g_i (numpy
broadcasting made the product elementwise with the first column), then θ ≥ 1.

The reward is the ``metric`` of results.json (default ``val/acc``), and only an accuracy on
the *noisy* validation labels is accepted (``reward_metrics``): ``val/acc`` or ``val/acc_best``,
with ``_net2`` for a method's second network. Everything else a run logs uses the true labels
(``test/*``, ``val/clean_acc``, ``train/label_precision``, ``train/detection_auc``: oracles a
practitioner does not have) or is not maximised (losses), and is refused with one sentence
before any job is launched, as is a metric the method does not log (its networks are read
from its class, no training) and a run without a validation split (``data.val_fraction=0``).
A failed job, or one without results.json, counts 0 (the search stops if no job at all has
succeeded after an iteration). In the sweep dir: s2e_history.json, s2e_best.yaml,
s2e_schedules.png, rewritten after each iteration; ``resume=true`` continues from
s2e_history.json (same ``hydra.sweep.dir``) and refuses other overrides or other search
settings than the first run's (only ``iterations`` and ``max_batch_size`` may change), so
one history never mixes two searches; a new search in a folder that holds one is refused.
Sampling is seeded per iteration (``seed``, iteration), so a resumed search draws what an
uninterrupted one would have.

What the official code did (AutoML-Research/S2E ``heng_main.py``, ``heng_mnist_main.py``,
``heng_100_main.py``), and where ours differs on purpose:

* Reward: the *test* set was split by index into halves; the reward of a sampled schedule was
  (acc_net1 + acc_net2) / 2 at the final epoch on the **second, clean half** of the test set
  (the first half, "val_loader", was only logged), i.e. the mean of both networks' final
  accuracy on clean test images. Ours is ``metric`` on the **noisy validation split** taken
  from the training data: in practice there are no clean labels to reward with (they are what
  the method is for), and the test set is never used to select anything, so the test accuracy
  of the found schedule stays an honest estimate (rewarding on half the test set and
  reporting on the other half still tunes on the test distribution's clean labels). The
  reward is one number of results.json (``val/acc`` is the first network's; the official one
  averaged both). ``val/clean_acc`` (the same validation images scored against their true
  labels) would be closer to the official protocol but is an oracle, so it is refused.
* Inner loop: Co-teaching with the searched schedule, Adam 1e-3, batch 128, 200 epochs
  (``range(1, 200)``: 199 trained, ``rate_schedule[epoch]`` from index 1). The scripts meant to
  switch Adam's beta1 from 0.9 to 0.1 at the lr decay but wrote ``param_group['momentum']``,
  a key Adam ignores, so **beta1 stayed 0.9** throughout; ours inherits the method's
  ``lr_schedule`` (Co-teaching's official code does switch ``betas``, so ours does too).
  Learning rate: the CIFAR scripts decay it linearly from epoch 80. The MNIST script sets
  ``epoch_decay_start = 200`` ("no decay" in the CIFAR scripts' loop) but never reads it: its
  plan is a hard-coded linear decay from epoch 80 (lr * (1 - (e - 80) / 120)), so in the
  published code MNIST *is* decayed, with beta1 again unchanged. Ours uses the method's
  lr_schedule on every dataset, so a schedule searched here is compared under the same
  training as every other run.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from hydra.plugins.sweeper import Sweeper

from noisylab.errors import ConfigError, NoisyLabError
from noisylab.results import write_bytes_atomic
from noisylab.schedules import S2E_SCALES, CoteachingSchedule, S2ESchedule

log = logging.getLogger(__name__)

CLIP = 1e-6  # Beta draws are clipped into [CLIP, 1 - CLIP] before any log
EIG_FLOOR = 1e-5  # smallest |eigenvalue| (or singular value) kept when inverting H
THETA_MIN = 1.0  # θ ≥ 1 after every update, as in the official code
HISTORY, BEST, PLOT = "s2e_history.json", "s2e_best.yaml", "s2e_schedules.png"
# Accuracies measured on the noisy validation labels (noisylab.methods.base): the only rewards.
NOISY_VALIDATION = ("val/acc", "val/acc_best")
# Settings a resumed search may change; any other difference would mix two searches.
RESUMABLE_CHANGES = ("iterations", "max_batch_size")


# ------------------------------------------------------------------------------------------
# The stochastic relaxation: plain numpy. θ has shape (K, 2): column 0 = a_k, column 1 = b_k;
# flattened it is (a_0, b_0, a_1, b_1, ...).


def sample_unit(theta: np.ndarray, rng: np.random.Generator, num: int) -> np.ndarray:
    """``num`` draws u ~ Π_k Beta(a_k, b_k), shape (num, K), clipped into [CLIP, 1 - CLIP]."""
    theta = np.asarray(theta, dtype=float)
    draws = rng.beta(theta[:, 0], theta[:, 1], size=(num, theta.shape[0]))
    return np.clip(draws, CLIP, 1.0 - CLIP)


def beta_score(u: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """∇_(a,b) log Beta(u; a, b) per coordinate: shape u.shape + (2,).

    ∂/∂a = log u + ψ(a+b) - ψ(a),   ∂/∂b = log(1-u) + ψ(a+b) - ψ(b).
    """
    from scipy.special import digamma  # here: Hydra imports this module on every run (its plugin scan)

    u = np.clip(np.asarray(u, dtype=float), CLIP, 1.0 - CLIP)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    common = digamma(a + b)
    return np.stack([np.log(u) + common - digamma(a), np.log1p(-u) + common - digamma(b)], -1)


def beta_log_hessian(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """∇²_(a,b) log Beta(u; a, b), independent of u: shape a.shape + (2, 2).

    [[ψ'(a+b) - ψ'(a), ψ'(a+b)], [ψ'(a+b), ψ'(a+b) - ψ'(b)]].
    """
    from scipy.special import polygamma

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    common = polygamma(1, a + b)
    hessian = np.empty(a.shape + (2, 2))
    hessian[..., 0, 0] = common - polygamma(1, a)
    hessian[..., 0, 1] = hessian[..., 1, 0] = common
    hessian[..., 1, 1] = common - polygamma(1, b)
    return hessian


def block_diagonal(blocks: np.ndarray) -> np.ndarray:
    """(K, 2, 2) blocks -> the (2K, 2K) block-diagonal matrix."""
    k = blocks.shape[0]
    full = np.zeros((2 * k, 2 * k))
    for i in range(k):
        full[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = blocks[i]
    return full


def newton_step(theta: np.ndarray, u: np.ndarray, rewards: np.ndarray, step_size: float = 1.0,
                baseline: bool = True) -> np.ndarray:
    """One Monte-Carlo Newton ascent step on J(θ) = E_{p_θ}[reward] (see the module docstring).

    theta: (K, 2); u: (M, K) unit draws; rewards: (M,). Returns the new θ, clamped ≥ 1.
    """
    theta = np.asarray(theta, dtype=float)
    rewards = np.asarray(rewards, dtype=float)
    weights = rewards - rewards.mean() if baseline else rewards
    num = len(weights)
    scores = beta_score(u, theta[:, 0], theta[:, 1]).reshape(num, -1)
    gradient = weights @ scores / num
    hessian = (scores.T * weights) @ scores / num
    hessian += weights.mean() * block_diagonal(beta_log_hessian(theta[:, 0], theta[:, 1]))
    eigenvalues, vectors = np.linalg.eigh((hessian + hessian.T) / 2)
    step = vectors @ ((vectors.T @ gradient) / np.maximum(np.abs(eigenvalues), EIG_FLOOR))
    return np.maximum(theta + step_size * step.reshape(theta.shape), THETA_MIN)


def official_step(theta: np.ndarray, u: np.ndarray, rewards: np.ndarray,
                  step_size: float = 1.0) -> np.ndarray:
    """The official heng_main.py update: best sample only, elementwise with H⁻¹[:, 0]."""
    theta = np.asarray(theta, dtype=float)
    num = len(rewards)
    best = int(np.argmax(rewards))
    score = beta_score(u[best], theta[:, 0], theta[:, 1]).reshape(-1)
    gradient = score / num
    hessian = (np.outer(score, score)
               + block_diagonal(beta_log_hessian(theta[:, 0], theta[:, 1]))) / num
    left, singular, right_t = np.linalg.svd(hessian)
    inverse = right_t.T @ np.diag(1.0 / np.maximum(singular, EIG_FLOOR)) @ left.T
    step = inverse[:, 0] * gradient
    return np.maximum(theta + step_size * step.reshape(theta.shape), THETA_MIN)


def beta_mean(theta: np.ndarray) -> np.ndarray:
    """The mean a / (a + b) of each Beta: where p_θ puts its mass in [0, 1]^K."""
    theta = np.asarray(theta, dtype=float)
    return theta[:, 0] / theta.sum(axis=1)


# ------------------------------------------------------------------------------------------
# Files: written atomically (noisylab.results.write_bytes_atomic).


def format_params(params) -> str:
    return "[" + ",".join(f"{float(p):.6f}" for p in params) + "]"


def plot_schedules(path: Path, trials: list[dict], best: dict | None, max_epochs: int,
                   noise_rate: float | None) -> None:
    """Every tried R(t) thin grey, the best bold, Co-teaching's τ·min(t/10, 1) dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = np.arange(max_epochs)
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, trial in enumerate(trials):
        curve = S2ESchedule(trial["params"], max_epochs).curve(max_epochs)
        ax.plot(epochs, curve, color="0.6", lw=0.6, alpha=0.7, label="tried" if i == 0 else None)
    if best is not None:
        curve = S2ESchedule(best["params"], max_epochs).curve(max_epochs)
        ax.plot(epochs, curve, color="C3", lw=2.5,
                label=f"best (reward {best['reward']:.4f}, job {best['job_idx']})")
    if noise_rate is not None and 0.0 <= noise_rate < 1.0:
        ax.plot(epochs, CoteachingSchedule(noise_rate).curve(max_epochs), color="C0", lw=1.8,
                ls="--", label=f"Co-teaching, τ = {noise_rate:g}")
    ax.set(xlabel="epoch", ylabel="forget rate 1 − R(t)", ylim=(-0.02, 1.0),
           title=f"S2E: {len(trials)} schedules tried")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_bytes_atomic(path, buffer.getvalue())


# ------------------------------------------------------------------------------------------
# The Hydra sweeper.


class S2ESweeper(Sweeper):
    """Hydra sweeper running the S2E search (settings: conf/hydra/sweeper/s2e.yaml)."""

    def __init__(self, iterations: int = 10, samples_per_iteration: int = 6,
                 metric: str = "val/acc", step_size: float = 1.0, seed: int = 0,
                 init_alpha: float = 1.0, init_beta: float = 1.0, baseline: bool = True,
                 quirk_best_only_elementwise: bool = False, resume: bool = False,
                 max_batch_size: int | None = None) -> None:
        super().__init__()
        self.iterations, self.samples = int(iterations), int(samples_per_iteration)
        self.metric, self.step_size, self.seed = str(metric), float(step_size), int(seed)
        self.init = (float(init_alpha), float(init_beta))
        self.baseline, self.quirk = bool(baseline), bool(quirk_best_only_elementwise)
        self.resume = bool(resume)
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.hydra_context = self.config = self.launcher = None

    def check_settings(self) -> None:
        """Refuses settings that would make the search wrong (raises ConfigError)."""
        if not re.fullmatch(r"val/acc(_best)?(_net\d+)?", self.metric):
            raise ConfigError(
                f"hydra.sweeper.metric={self.metric} is not an accuracy on the noisy validation labels "
                "(test/ metrics, val/clean_acc and train/ label precision or detection AUC use the true "
                "labels, losses are not maximised); S2E is rewarded with val/acc or val/acc_best "
                "(val/acc_net2, val/acc_best_net2: a method's second network)."
            )
        if self.iterations < 1 or self.samples < 2:
            raise ConfigError("S2E needs hydra.sweeper.iterations >= 1 and "
                              "hydra.sweeper.samples_per_iteration >= 2.")
        if min(self.init) < THETA_MIN:
            raise ConfigError("hydra.sweeper.init_alpha and init_beta must be >= 1.")
        if not self.step_size > 0:
            raise ConfigError("hydra.sweeper.step_size must be > 0.")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError("hydra.sweeper.max_batch_size must be >= 1 or null.")

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- the loop ----------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> list:
        """Runs the search; a user error ends it with one sentence and exit status 2."""
        try:
            return self._search(arguments)
        except NoisyLabError as error:
            print(f"noisylab: error: {error}", file=sys.stderr, flush=True)
            sys.exit(2)

    def _search(self, arguments: list[str]) -> list:
        from omegaconf import OmegaConf

        self.check_settings()
        fixed = self._fixed_overrides(arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        max_epochs, noise_rate = self._job_settings(fixed)
        state = self._load_history(sweep_dir, fixed) if self.resume else self._new_history(sweep_dir, fixed)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        state.update(max_epochs=max_epochs, noise_rate=noise_rate)
        theta = np.array([state["theta"][-1]["alpha"], state["theta"][-1]["beta"]]).T
        returns = []
        for iteration in range(state["completed_iterations"], self.iterations):
            rng = np.random.default_rng([self.seed, iteration])
            unit = sample_unit(theta, rng, self.samples)
            params = np.round(unit * np.array(S2E_SCALES), 6)
            unit = np.clip(params / np.array(S2E_SCALES), CLIP, 1.0 - CLIP)  # what the jobs got
            batch = [fixed + ["schedule=s2e", f"schedule.params={format_params(p)}"]
                     for p in params]
            job_returns = self._launch(batch, state["next_job_idx"])
            returns.append(job_returns)
            rewards = self._record(state, iteration, params, job_returns)
            state["next_job_idx"] += len(batch)
            if self.quirk:
                theta = official_step(theta, unit, rewards, self.step_size)
            else:
                theta = newton_step(theta, unit, rewards, self.step_size, self.baseline)
            state["theta"].append({"iteration": iteration + 1, "alpha": theta[:, 0].tolist(),
                                   "beta": theta[:, 1].tolist()})
            state["completed_iterations"] = iteration + 1
            self._save(sweep_dir, state, fixed)
            best = state["best"]
            log.info(
                "S2E iteration %d/%d: rewards mean %.4f max %.4f | best so far %.4f (job %d) | "
                "θ: a in [%.2f, %.2f], b in [%.2f, %.2f], mean of p_θ %s",
                iteration + 1, self.iterations, rewards.mean(), rewards.max(), best["reward"],
                best["job_idx"], theta[:, 0].min(), theta[:, 0].max(), theta[:, 1].min(),
                theta[:, 1].max(),
                np.array2string(beta_mean(theta) * S2E_SCALES, precision=2, separator=","),
            )
        if not returns:
            log.info("S2E: all %d iterations were already done in %s.", self.iterations, sweep_dir)
            self._save(sweep_dir, state, fixed)
        return returns

    def _record(self, state: dict, iteration: int, params: np.ndarray, job_returns) -> np.ndarray:
        """Reads each job's reward into the history; returns the rewards of this batch."""
        rewards = []
        for m, job_return in enumerate(job_returns):
            reward, job_dir, ok = self._reward(job_return, params[m])
            rewards.append(reward)
            state["trials"].append({
                "iteration": iteration, "sample": m, "job_idx": state["next_job_idx"] + m,
                "params": [float(p) for p in params[m]], "reward": reward, "ok": ok,
                "job_dir": job_dir,
            })
        done = [t for t in state["trials"] if t["ok"]]
        state["best"] = max(done, key=lambda t: t["reward"]) if done else None
        if not done:
            raise NoisyLabError(f"S2E: none of the {len(job_returns)} jobs of iteration "
                                f"{iteration + 1} gave a '{self.metric}' (see the warnings above "
                                "and the jobs' logs); stopping the search.")
        return np.array(rewards)

    def _launch(self, batch: list[list[str]], first_idx: int) -> list:
        self.validate_batch_is_legal(batch)
        size = self.max_batch_size or len(batch)
        job_returns = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            job_returns.extend(self.launcher.launch(chunk, initial_job_idx=first_idx + start))
        return job_returns

    # -- overrides and job settings ----------------------------------------------------------

    def _fixed_overrides(self, arguments: list[str]) -> list[str]:
        """The user's overrides, applied to every job, as Hydra's BasicSweeper applies fixed
        ones. Sweeps (a=1,2) and schedule overrides would fight the search, so are refused."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for override in parser.parse_overrides(list(arguments)):
            key = override.get_key_element().lstrip("+~")
            if override.is_sweep_override():
                raise ConfigError(
                    f"hydra/sweeper=s2e runs one job per sampled schedule; '{override.input_line}'"
                    " is a sweep. Give fixed values only (run one search per setting)."
                )
            if key == "schedule" or key.startswith("schedule."):
                raise ConfigError(f"hydra/sweeper=s2e sets the schedule itself; drop "
                                  f"'{override.input_line}'.")
        return list(arguments)

    def _job_settings(self, fixed: list[str]) -> tuple[int, float | None]:
        """Composes one job's config: checks the method uses a schedule and logs the reward
        metric on a validation split, and returns trainer.max_epochs (the schedule's T) and
        noise.rate (Co-teaching's τ, for the plot)."""
        from omegaconf import OmegaConf

        overrides = fixed + ["schedule=s2e", f"schedule.params={format_params(S2E_SCALES)}"]
        cfg = self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=overrides
        )
        target = OmegaConf.select(cfg, "method._target_", default=None)
        name = OmegaConf.select(cfg, "method.name", default="?")
        if not uses_schedule(target):
            raise ConfigError(f"method={name} uses no forget-rate schedule, so S2E has nothing "
                              "to search; use a small-loss method such as method=coteaching.")
        allowed = reward_metrics(target)
        if self.metric not in allowed:
            raise ConfigError(f"hydra.sweeper.metric={self.metric} is not logged by method={name}; its "
                              f"accuracies on the noisy validation labels are: {', '.join(allowed)}.")
        val_fraction = OmegaConf.select(cfg, "data.val_fraction", default=None)
        if val_fraction is not None and not float(val_fraction) > 0:
            raise ConfigError(f"data.val_fraction={val_fraction} leaves no validation split to reward S2E "
                              "with; set data.val_fraction > 0 (e.g. 0.1).")
        max_epochs = int(OmegaConf.select(cfg, "trainer.max_epochs", default=200) or 200)
        rate = OmegaConf.select(cfg, "noise.rate", default=None)
        return max_epochs, (None if rate is None else float(rate))

    # -- rewards -----------------------------------------------------------------------------

    def _reward(self, job_return, params: np.ndarray) -> tuple[float, str | None, bool]:
        """(reward, job dir, ok) of a finished job; reward 0 with a warning (and ok False) if
        the job failed or yielded no metric."""
        hydra_cfg = job_return.hydra_cfg
        job_dir = None if hydra_cfg is None else str(hydra_cfg.hydra.runtime.output_dir)
        name = f"job {job_dir or job_return.overrides}"
        try:
            value = job_return.return_value  # raises the job's exception if it failed
        except Exception as error:
            log.warning("S2E: %s failed (%s: %s); reward 0.", name, type(error).__name__, error)
            return 0.0, job_dir, False
        if isinstance(value, float) and math.isnan(value):  # noisylab's marker for a bad job
            log.warning("S2E: %s stopped with an error (see its error.txt); reward 0.", name)
            return 0.0, job_dir, False
        try:
            results = json.loads((Path(job_dir) / "results.json").read_text())
        except (OSError, TypeError, ValueError) as error:  # TypeError: no job dir known
            log.warning("S2E: %s wrote no readable results.json (%s); reward 0.", name, error)
            return 0.0, job_dir, False
        launched = ((results.get("config") or {}).get("schedule") or {}).get("params")
        if launched is not None and not np.allclose(launched, params, atol=1e-9):
            log.warning("S2E: %s has a results.json for other schedule params; reward 0.", name)
            return 0.0, job_dir, False
        value = (results.get("metrics") or {}).get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            log.warning("S2E: %s has no finite metric '%s' in results.json (it has: %s); "
                        "reward 0.", name, self.metric, ", ".join(results.get("metrics") or {}))
            return 0.0, job_dir, False
        return float(value), job_dir, True

    # -- state -------------------------------------------------------------------------------

    def _new_history(self, sweep_dir: Path, fixed: list[str]) -> dict:
        if (sweep_dir / HISTORY).is_file():
            raise ConfigError(f"hydra.sweep.dir={sweep_dir} already holds an S2E search ({HISTORY}); continue "
                              "it with hydra.sweeper.resume=true, or start a new one in another folder.")
        k = len(S2E_SCALES)
        return {
            "method": "S2E (Yao et al., ICML 2020)", "metric": self.metric,
            "settings": self._settings(), "scales": list(S2E_SCALES), "fixed_overrides": fixed,
            "completed_iterations": 0, "next_job_idx": 0,
            "theta": [{"iteration": 0, "alpha": [self.init[0]] * k, "beta": [self.init[1]] * k}],
            "trials": [], "best": None,
        }

    def _settings(self) -> dict:
        return {
            "iterations": self.iterations, "samples_per_iteration": self.samples,
            "metric": self.metric, "step_size": self.step_size, "seed": self.seed,
            "init_alpha": self.init[0], "init_beta": self.init[1], "baseline": self.baseline,
            "quirk_best_only_elementwise": self.quirk, "max_batch_size": self.max_batch_size,
        }

    def _load_history(self, sweep_dir: Path, fixed: list[str]) -> dict:
        path = sweep_dir / HISTORY
        if not path.is_file():
            raise ConfigError(f"hydra.sweeper.resume=true but {path} does not exist; pass the "
                              "old search's folder as hydra.sweep.dir=<dir>.")
        state = json.loads(path.read_text())
        first = state.get("fixed_overrides") or []
        if first != fixed:
            raise ConfigError(f"hydra.sweeper.resume=true needs the overrides of the search in {sweep_dir} "
                              f"('{' '.join(first)}'), got '{' '.join(fixed)}'; resume with those, or start a "
                              "new search in another hydra.sweep.dir.")
        before, now = state.get("settings") or {}, self._settings()
        changed = [f"{key} {before.get(key)} -> {value}" for key, value in now.items()
                   if key not in RESUMABLE_CHANGES and before.get(key, value) != value]
        if changed:
            raise ConfigError(f"hydra.sweeper.resume=true with other search settings than the search in "
                              f"{sweep_dir} ({', '.join(changed)}); only iterations and max_batch_size may "
                              "change when resuming.")
        state["settings"] = now
        log.info("S2E: resuming %s after iteration %d (next job %d).", path,
                 state["completed_iterations"], state["next_job_idx"])
        return state

    def _save(self, sweep_dir: Path, state: dict, fixed: list[str]) -> None:
        """s2e_history.json, s2e_best.yaml (once a job has succeeded), s2e_schedules.png."""
        state["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_bytes_atomic(sweep_dir / HISTORY, (json.dumps(state, indent=2) + "\n").encode())
        if state["best"] is not None:
            self._save_best(sweep_dir / BEST, state, fixed)
        try:
            plot_schedules(sweep_dir / PLOT, state["trials"], state["best"], state["max_epochs"],
                           state["noise_rate"])
        except Exception as error:  # a plot must never end a search
            log.warning("S2E: could not draw %s (%s).", PLOT, error)

    def _save_best(self, path: Path, state: dict, fixed: list[str]) -> None:
        from omegaconf import OmegaConf

        best = state["best"]
        params = f"schedule.params={format_params(best['params'])}"
        command = ["python", "-m", "noisylab", *fixed, "schedule=s2e", params]
        summary = {
            "metric": self.metric, "reward": best["reward"], "iteration": best["iteration"],
            "sample": best["sample"], "job_idx": best["job_idx"], "job_dir": best["job_dir"],
            "params": best["params"], "override": f"schedule=s2e {params}",
            "command": " ".join(shlex.quote(part) for part in command),
            "trials": len(state["trials"]),
        }
        header = ("# The best schedule S2E found so far. Reuse it in a normal run with\n"
                  f"#   schedule=s2e {params}\n")
        write_bytes_atomic(path, (header + OmegaConf.to_yaml(summary)).encode())


def reward_metrics(target: str) -> list[str]:
    """The metrics S2E may maximise for the method class ``target``: its accuracies on the
    noisy validation labels, for each network it reports (``_net2`` etc. for all but the first,
    as ``LNLMethod`` logs them)."""
    from hydra.utils import get_class

    networks = get_class(target).reported
    suffixes = [""] + [f"_{net}" for net in networks[1:]]
    return [name + suffix for suffix in suffixes for name in NOISY_VALIDATION]


def uses_schedule(target: str | None) -> bool:
    """Whether the method class ``target`` takes a forget-rate schedule (a ``schedule`` setting)."""
    if not target:
        return False
    from hydra.utils import get_class

    from noisylab.methods.contract import accepted_settings

    return "schedule" in accepted_settings(get_class(target))
