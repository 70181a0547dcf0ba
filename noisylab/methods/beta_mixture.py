"""A two-component beta mixture over per-sample training losses (Arazo et al., "Unsupervised
Label Noise Modeling and Loss Correction", ICML 2019; official code PaulAlbert31/LabelNoiseCorrection,
``utils.py``: ``track_training_loss``, ``BetaMixture1D``, ``compute_probabilities_batch``).

After an epoch the losses l_i of the whole training set are
    1. clipped: only p5 <= l_i <= p95 (5th and 95th percentiles) take part in the fit;
    2. scaled to [0, 1]: l^ = (l - low) / (high - low + 1e-6), low = p5 + 1e-5, high = p95;
       l^ >= 1 becomes 1 - 1e-3, l^ <= 0 becomes 1e-3 (then 1e-4 / 1 - 1e-4 inside the fit);
    3. fit by EM, 10 steps, from component 0 (clean, low loss) Beta(1, 2) and component 1
       (noisy, high loss) Beta(2, 1), weights 1/2 each. E-step: responsibilities
       r_k ∝ max(pi_k Beta(x; a_k, b_k), 1e-12); M-step: the weighted method of moments,
       m = sum r x / sum r, s2 = sum r (x - m)^2 / sum r, a = m (m (1 - m) / s2 - 1),
       b = a (1 - m) / m, pi_k = mean r_k;
    4. summarised as a 100-entry table of the noisy posterior P(k = 1 | x) on
       linspace(1e-12, 1 - 1e-12, 100), made monotone (every entry after the largest is set to
       it); a loss is read at index int(100 · l^), clipped to [0, 99].
The component indices are fixed as in the code (1 = noisy), even if EM were to swap them.
The weighted method of moments is not maximum likelihood; it moves slowly from this start: on
0.6 Beta(2, 8) + 0.4 Beta(8, 2) the code's 10 steps give a noisy component near Beta(2.5, 1.0),
about 100 steps recover the truth (a fixed point; the tests). The methods run the code's 10.

Guards the code lacks (it gives NaN in both cases): losses of (nearly) one value cannot be fit
and give an uninformative mixture (``degenerate``: posterior 1/2 everywhere); a component whose
weighted variance vanishes has it floored at 1e-12, so its parameters stay finite.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

CLEAN, NOISY = 0, 1
EPS_NAN = 1e-12        # the code's floor of responsibilities and of the posterior's denominator
FIT_CLAMP = 1e-4       # the fit keeps x in [1e-4, 1 - 1e-4]
SCALE_CLAMP = 1e-3     # the code's 10e-4: scaled losses at or beyond the range end up here
VAR_FLOOR = 1e-12
LOOKUP_SIZE = 100


def weighted_moments_beta(x: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(alpha, beta) of a beta distribution with the weighted mean and variance of ``x``."""
    mean = float(np.sum(weights * x) / np.sum(weights))
    var = max(float(np.sum(weights * (x - mean) ** 2) / np.sum(weights)), VAR_FLOOR)
    alpha = mean * (mean * (1.0 - mean) / var - 1.0)
    return alpha, alpha * (1.0 - mean) / mean


class BetaMixture:
    """Two beta components on (0, 1): 0 = clean (low loss), 1 = noisy (high loss)."""

    def __init__(self, alphas=(1.0, 2.0), betas=(2.0, 1.0), weights=(0.5, 0.5)):
        self.alphas = np.array(alphas, dtype=np.float64)
        self.betas = np.array(betas, dtype=np.float64)
        self.weights = np.array(weights, dtype=np.float64)
        self.degenerate = False

    def weighted_likelihoods(self, x) -> np.ndarray:
        """pi_k · Beta(x; a_k, b_k), shape (2, len(x))."""
        x = np.asarray(x, dtype=np.float64)
        return np.stack([self.weights[k] * stats.beta.pdf(x, self.alphas[k], self.betas[k]) for k in (CLEAN, NOISY)])

    def fit(self, x, steps: int = 10) -> BetaMixture:
        x = np.clip(np.asarray(x, dtype=np.float64), FIT_CLAMP, 1.0 - FIT_CLAMP)
        if x.size < 2 or np.ptp(x) < 1e-6:
            self.degenerate = True  # one value: nothing to separate
            return self
        self.degenerate = False
        for _ in range(int(steps)):
            r = np.maximum(self.weighted_likelihoods(x), EPS_NAN)
            r /= r.sum(axis=0)
            for k in (CLEAN, NOISY):
                self.alphas[k], self.betas[k] = weighted_moments_beta(x, r[k])
            self.weights = r.sum(axis=1) / r.sum()
        return self

    def posterior(self, x, component: int) -> np.ndarray:
        """P(component | x); 1/2 everywhere for a degenerate fit."""
        x = np.asarray(x, dtype=np.float64)
        if self.degenerate:
            return np.full(x.shape, 0.5)
        likelihoods = self.weighted_likelihoods(x)
        return likelihoods[component] / (likelihoods.sum(axis=0) + EPS_NAN)

    def clean_posterior(self, x) -> np.ndarray:
        return self.posterior(x, CLEAN)

    def noisy_lookup(self, size: int = LOOKUP_SIZE) -> np.ndarray:
        """The code's table of P(noisy | x) on linspace(1e-12, 1 - 1e-12, size), monotone."""
        table = self.posterior(np.linspace(EPS_NAN, 1.0 - EPS_NAN, size), NOISY)
        table[int(np.argmax(table)):] = table.max()
        return table


def loss_range(losses) -> tuple[float, float]:
    """(low, high) = (p5 + 1e-5, p95) of the losses: the code's scaling bounds."""
    losses = np.asarray(losses, dtype=np.float64)
    return float(np.percentile(losses, 5)) + 1e-5, float(np.percentile(losses, 95))


def scale_losses(losses: torch.Tensor, low: float | torch.Tensor, high: float | torch.Tensor) -> torch.Tensor:
    """l^ = (l - low) / (high - low + 1e-6); >= 1 -> 1 - 1e-3, <= 0 -> 1e-3 (as the code)."""
    scaled = (losses - low) / (high - low + 1e-6)
    scaled = torch.where(scaled >= 1.0, torch.full_like(scaled, 1.0 - SCALE_CLAMP), scaled)
    return torch.where(scaled <= 0.0, torch.full_like(scaled, SCALE_CLAMP), scaled)


def read_lookup(table: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
    """table[int(len(table) · l^)], the index clipped to the table."""
    index = (len(table) * scaled).long().clamp(0, len(table) - 1)
    return table[index]


def fit_losses(losses: torch.Tensor, steps: int = 10) -> tuple[BetaMixture, float, float]:
    """Steps 1-3 above on a training set's losses: (the mixture, low, high)."""
    values = losses.detach().double().cpu().numpy()
    low, high = loss_range(values)
    p5, p95 = np.percentile(values, 5), np.percentile(values, 95)
    kept = torch.from_numpy(values[(values >= p5) & (values <= p95)])
    return BetaMixture().fit(scale_losses(kept, low, high).numpy(), steps), low, high
