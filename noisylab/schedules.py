"""Forget-rate schedules: the fraction of each batch a small-loss method drops at epoch t.

Naming follows the code of the Co-teaching family, not the paper: the papers write R(T) for
the *kept* fraction; here every schedule returns the *forget* rate 1 - R(T), as the official
code's ``rate_schedule`` does. ``t`` is the 0-based epoch index, so under the ``paper`` and
``study`` forms the first epoch keeps every sample (the paper updates R(T) at the end of
epoch T).

* ``coteaching``: tau = the final forget rate, T_k = ``num_gradual``, c = ``exponent``; three
  forms (``form``) that agree only at c = 1:

  - ``paper`` (default): forget(t) = tau * min((t / T_k)^c, 1). The Co-teaching slides' answer
    to "how many samples to be kept", R(t) = 1 - tau * min((t / t_k)^c, 1); at c = 1 it is
    Algorithm 1's R(T) = 1 - min(T / T_k * tau, tau) (Han et al. 2018).
  - ``study``: forget(t) = min(t^c * tau / T_k, tau). The form of the paper's study of c and T_k
    (the slides' "Impact of memorization", R(T) = 1 - min(T^c / T_k * tau, tau), c in
    {0.5, 1, 2}, T_k in {5, 10, 15}; ``conf/sweep/coteaching_ck_*.yaml``). It reaches tau at
    t = T_k^(1/c), not at T_k.
  - ``official``: the official code (bhanML/Co-teaching ``main.py``, also JoCoR's) builds
    ``rate_schedule = ones(n_epoch) * tau; rate_schedule[:T_k] = linspace(0, tau**c, T_k)``,
    i.e. c is applied to tau, not to time, and the ramp ends at index T_k - 1 (at tau^c, which
    jumps to tau at index T_k when c != 1). Its training loop runs ``for epoch in
    range(1, n_epoch)`` and uses ``rate_schedule[epoch]``, so our 0-based epoch t gets
    ``rate_schedule[t + 1]``: the first training epoch already drops tau^c / (T_k - 1). At
    c = 1 this is the ``paper`` form with T_k - 1 in place of T_k, shifted by one epoch:
    official_{T_k}(t) = paper_{T_k - 1}(t + 1).
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


COTEACHING_FORMS = ("paper", "study", "official")


class CoteachingSchedule(ForgetRateSchedule):
    """Co-teaching's ramp to ``tau`` over ``num_gradual`` epochs, in one of three ``form``s
    (see the module docstring): ``paper`` tau * min((t/T_k)^c, 1), ``study``
    min(t^c * tau / T_k, tau), ``official`` the official code's linspace(0, tau^c, T_k) array
    read at index t + 1."""

    def __init__(self, tau: float, num_gradual: int = 10, exponent: float = 1.0, form: str = "paper",
                 official_index_shift: int = 1):
        if not 0.0 <= tau < 1.0:
            raise ConfigError(f"schedule.tau must lie in [0, 1), got {tau}.")
        if num_gradual < 0:
            raise ConfigError(f"schedule.num_gradual must be >= 0, got {num_gradual}.")
        if form not in COTEACHING_FORMS:
            raise ConfigError(f"schedule.form must be one of {', '.join(COTEACHING_FORMS)}; got '{form}'.")
        if exponent <= 0:
            raise ConfigError(f"schedule.exponent must be > 0, got {exponent}.")
        self.tau, self.num_gradual, self.exponent, self.form = tau, num_gradual, exponent, form
        # official: our epoch t is the code's epoch t + 1, unless the run skips training in its
        # first epoch as the code does (quirks=official), which aligns the two counts (shift 0)
        self.official_index_shift = int(official_index_shift)

    def official_array(self, index: int) -> float:
        """``rate_schedule[index]`` of the official code (any index >= 0; n_epoch unbounded)."""
        tk = self.num_gradual
        if index >= tk:
            return self.tau
        if tk == 1:  # linspace(0, x, 1) == [0]
            return 0.0
        return self.tau**self.exponent * index / (tk - 1)

    def forget_rate(self, epoch: int) -> float:
        if self.form == "official":
            return self.official_array(epoch + self.official_index_shift)
        if self.num_gradual == 0:
            return self.tau
        if self.form == "study":
            return min(epoch**self.exponent * self.tau / self.num_gradual, self.tau)
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

    ``tau: null`` means "the noise rate", as in Co-teaching; for ``coteaching``, ``form``
    (``paper``, ``study`` or ``official``; missing = ``paper``) picks the formula.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(cfg)  # a plain dict too (hyperparameters restored from a checkpoint)
    name = cfg.get("name", "coteaching")
    tau = cfg.get("tau")
    tau = noise_rate if tau is None else float(tau)
    if name == "coteaching":
        return CoteachingSchedule(tau, int(cfg.get("num_gradual", 10)), float(cfg.get("exponent", 1.0)),
                                  str(cfg.get("form") or "paper"), int(cfg.get("official_index_shift", 1)))
    if name == "s2e":
        if cfg.get("params") is None:
            raise ConfigError("schedule=s2e needs schedule.params: the 12 numbers of a searched schedule.")
        return S2ESchedule(list(cfg.params), max_epochs)
    if name == "constant":
        return ConstantSchedule(tau)
    raise ConfigError(f"Unknown schedule '{name}'; choose coteaching, s2e or constant.")
