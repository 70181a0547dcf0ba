"""Forget-rate schedules: the fraction of each batch a small-loss method drops at epoch t.

Naming follows the code of the Co-teaching family, not the paper: the papers write R(T) for
the *kept* fraction; here every schedule returns the *forget* rate 1 - R(T), as the official
code's ``rate_schedule`` does. ``t`` is the 0-based epoch index, so the first epoch keeps
every sample (the paper updates R(T) at the end of epoch T).

* ``coteaching``: forget(t) = tau * min((t / Tk)^c, 1)  (Han et al. 2018, Sec. 3; the
  official code instead applies c to tau, ``linspace(0, tau**c, Tk)``; for c = 1 they agree
  up to reaching tau at epoch Tk instead of Tk - 1).
* ``s2e``: the 12-parameter search space of S2E (Yao et al. 2020, official ``heng_main.py``):
  three saturating increasing bases mixed convexly, minus two decreasing terms, capped at
  0.99. Negative values mean "keep everything".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from noisylab.errors import ConfigError

# Upper end of each S2E parameter's range: x ~ Beta(a, b) on [0, 1] is scaled by these.
S2E_SCALES = (1.0, 1.0, 0.5, 1.0, 0.5, 2.0, 0.5, 1.0, 1.0, 0.5, 0.5, 2.0)
S2E_CAP = 0.99


class ForgetRateSchedule:
    """Maps an epoch index to the fraction of each batch to drop."""

    def forget_rate(self, epoch: int) -> float:
        raise NotImplementedError

    def __call__(self, epoch: int) -> float:
        return min(max(self.forget_rate(epoch), 0.0), S2E_CAP)

    def curve(self, epochs: int) -> list[float]:
        return [self(t) for t in range(epochs)]


class CoteachingSchedule(ForgetRateSchedule):
    """forget(t) = tau * min((t / num_gradual)^exponent, 1)."""

    def __init__(self, tau: float, num_gradual: int = 10, exponent: float = 1.0):
        if not 0.0 <= tau < 1.0:
            raise ConfigError(f"schedule.tau must lie in [0, 1), got {tau}.")
        if num_gradual < 0:
            raise ConfigError(f"schedule.num_gradual must be >= 0, got {num_gradual}.")
        self.tau, self.num_gradual, self.exponent = tau, num_gradual, exponent

    def forget_rate(self, epoch: int) -> float:
        if self.num_gradual == 0:
            return self.tau
        return self.tau * min((epoch / self.num_gradual) ** self.exponent, 1.0)


class S2ESchedule(ForgetRateSchedule):
    """The S2E search space; ``params`` are the 12 values x0..x11 in their scaled ranges."""

    def __init__(self, params: Sequence[float], max_epochs: int):
        params = [float(p) for p in params]
        if len(params) != len(S2E_SCALES):
            raise ConfigError(
                f"schedule.params needs {len(S2E_SCALES)} numbers for the S2E schedule, "
                f"got {len(params)}."
            )
        for k, (value, high) in enumerate(zip(params, S2E_SCALES)):
            if not 0.0 <= value <= high:
                raise ConfigError(f"schedule.params[{k}] must lie in [0, {high}], got {value}.")
        self.params, self.max_epochs = params, max(int(max_epochs), 1)

    def forget_rate(self, epoch: int) -> float:
        x, t, T = self.params, float(epoch), float(self.max_epochs)
        exponential = x[0] * (1.0 - math.exp(-x[2] * t ** x[1]))
        power = (1.0 - x[0]) * x[7] * (1.0 - (x[4] * t + 1.0) ** (-x[3]))
        denominator = math.log(1.0 + x[8] + x[9] * t)
        logarithmic = (1.0 - x[0]) * (1.0 - x[7]) * (
            (1.0 - math.log(1.0 + x[8]) / denominator) if denominator > 0 else 0.0
        )
        decreasing_power = x[6] * (t / T) ** x[5]
        log_T = math.log(1.0 + T ** x[11])
        decreasing_log = x[10] * math.log(1.0 + t ** x[11]) / log_T if log_T > 0 else 0.0
        return exponential + power + logarithmic - decreasing_power - decreasing_log


class ConstantSchedule(ForgetRateSchedule):
    """The same forget rate every epoch (0 = plain training)."""

    def __init__(self, tau: float = 0.0):
        self.tau = tau

    def forget_rate(self, epoch: int) -> float:
        return self.tau


def build_schedule(cfg, noise_rate: float, max_epochs: int) -> ForgetRateSchedule:
    """Builds the schedule named by ``cfg.name`` (the ``schedule`` config group).

    ``tau: null`` means "the noise rate", as in Co-teaching.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(cfg)  # a plain dict too (hyperparameters restored from a checkpoint)
    name = cfg.get("name", "coteaching")
    tau = cfg.get("tau")
    tau = noise_rate if tau is None else float(tau)
    if name == "coteaching":
        return CoteachingSchedule(tau, int(cfg.get("num_gradual", 10)), float(cfg.get("exponent", 1.0)))
    if name == "s2e":
        if cfg.get("params") is None:
            raise ConfigError("schedule=s2e needs schedule.params: the 12 numbers of a searched schedule.")
        return S2ESchedule(list(cfg.params), max_epochs)
    if name == "constant":
        return ConstantSchedule(tau)
    raise ConfigError(f"Unknown schedule '{name}'; choose coteaching, s2e or constant.")
