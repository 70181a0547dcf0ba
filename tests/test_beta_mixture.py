"""The beta mixture of Arazo et al. (noisylab/methods/beta_mixture.py): one EM step against the
formulas computed by hand, recovery of a known mixture from samples, the posterior's order and
the monotone table, the code's scaling of losses, and the degenerate inputs."""

import math

import numpy as np
import pytest
import torch

from noisylab.methods.beta_mixture import CLEAN, NOISY, BetaMixture, fit_losses, loss_range, read_lookup, scale_losses


def beta_pdf(x, a, b):
    return math.exp((a - 1) * math.log(x) + (b - 1) * math.log(1 - x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))


def two_betas(n, weight_clean, clean, noisy, seed=0):
    rng = np.random.default_rng(seed)
    is_clean = rng.random(n) < weight_clean
    return np.where(is_clean, rng.beta(*clean, n), rng.beta(*noisy, n)), is_clean


def test_one_em_step_matches_the_formulas():
    x = [0.05, 0.1, 0.2, 0.4, 0.7, 0.9, 0.95]
    # E-step from the code's start: clean Beta(1, 2), noisy Beta(2, 1), weights 1/2
    r = [[0.5 * beta_pdf(v, 1, 2), 0.5 * beta_pdf(v, 2, 1)] for v in x]
    r = [[a / (a + b), b / (a + b)] for a, b in r]
    expected = []
    for k in (0, 1):
        w = [row[k] for row in r]
        mean = sum(wi * v for wi, v in zip(w, x)) / sum(w)
        var = sum(wi * (v - mean) ** 2 for wi, v in zip(w, x)) / sum(w)
        alpha = mean * (mean * (1 - mean) / var - 1)
        expected.append((alpha, alpha * (1 - mean) / mean, sum(w) / len(x)))
    mixture = BetaMixture().fit(x, steps=1)
    for k in (CLEAN, NOISY):
        assert (mixture.alphas[k], mixture.betas[k], mixture.weights[k]) == pytest.approx(expected[k], rel=1e-9)


def test_em_recovers_a_known_mixture_from_samples():
    x, _ = two_betas(20000, 0.6, clean=(2, 8), noisy=(8, 2))
    mixture = BetaMixture().fit(x, steps=100)  # from the code's initialisation
    assert mixture.alphas == pytest.approx([2, 8], rel=0.05) and mixture.betas == pytest.approx([8, 2], rel=0.05)
    assert mixture.weights == pytest.approx([0.6, 0.4], abs=0.01)
    # the truth is a fixed point: 10 steps (the code's) started there stay there
    settled = BetaMixture((2, 8), (8, 2), (0.6, 0.4)).fit(x, steps=10)
    assert settled.alphas == pytest.approx([2, 8], rel=0.05) and settled.betas == pytest.approx([8, 2], rel=0.05)


def test_the_posterior_orders_points_and_matches_bayes_rule():
    x, is_clean = two_betas(5000, 0.5, clean=(2, 6), noisy=(6, 2), seed=1)
    mixture = BetaMixture().fit(x, steps=10)
    grid = np.linspace(0.05, 0.95, 19)
    clean = mixture.clean_posterior(grid)
    assert np.all(np.diff(clean) < 0) and clean[0] > 0.9 and clean[-1] < 0.1
    assert clean + mixture.posterior(grid, NOISY) == pytest.approx(np.ones_like(grid))
    a, b, w = mixture.alphas, mixture.betas, mixture.weights
    by_hand = w[0] * beta_pdf(0.3, a[0], b[0]) / (w[0] * beta_pdf(0.3, a[0], b[0]) + w[1] * beta_pdf(0.3, a[1], b[1]))
    assert mixture.clean_posterior([0.3])[0] == pytest.approx(by_hand, rel=1e-6)
    # on the samples: a clean sample's posterior beats a noisy one's almost always
    score = mixture.clean_posterior(np.clip(x, 1e-4, 1 - 1e-4))
    assert (score[is_clean][:, None] > score[~is_clean][None, :]).mean() > 0.95


def test_the_lookup_table_is_the_noisy_posterior_made_monotone():
    # a wide clean component around a narrow noisy one: P(noisy) rises, then falls again
    mixture = BetaMixture((1, 20), (1, 20), (0.5, 0.5))
    grid = np.linspace(1e-12, 1 - 1e-12, 100)
    raw = mixture.posterior(grid, NOISY)
    top = int(np.argmax(raw))
    assert 40 < top < 60 and raw[-1] < 0.1
    table = mixture.noisy_lookup()
    assert np.array_equal(table[:top], raw[:top]) and np.all(table[top:] == raw.max())


def test_losses_are_scaled_and_read_as_the_code_does():
    losses = np.arange(100.0)
    low, high = loss_range(losses)
    assert (low, high) == pytest.approx((4.95 + 1e-5, 94.05))
    scaled = scale_losses(torch.tensor([0.0, 4.95, 50.0, 94.05, 99.0], dtype=torch.float64), low, high)
    middle = (50.0 - low) / (high - low + 1e-6)
    assert scaled.tolist() == pytest.approx([1e-3, 1e-3, middle, (94.05 - low) / (high - low + 1e-6), 1 - 1e-3])
    table = torch.arange(100.0)
    assert read_lookup(table, torch.tensor([0.0, 0.004, 0.015, 0.5, 0.999, 1.0])).tolist() == [0, 0, 1, 50, 99, 99]


def test_fit_losses_keeps_only_the_5th_to_95th_percentiles(monkeypatch):
    fitted = {}
    original = BetaMixture.fit

    def spy(self, x, steps=10):
        fitted["x"] = np.asarray(x)
        return original(self, x, steps)

    monkeypatch.setattr(BetaMixture, "fit", spy)
    losses = torch.randperm(100, generator=torch.Generator().manual_seed(0)).double()  # 0..99: p5 4.95, p95 94.05
    _, low, high = fit_losses(losses)
    kept = np.arange(5.0, 95.0)
    assert (low, high) == pytest.approx((4.95 + 1e-5, 94.05))
    assert np.sort(fitted["x"]) == pytest.approx((kept - low) / (high - low + 1e-6), rel=1e-12)


@pytest.mark.parametrize("losses", [torch.full((50,), 0.7), torch.zeros(50), torch.tensor([2.3])])
def test_losses_of_one_value_give_an_uninformative_fit_not_nan(losses):
    mixture, low, high = fit_losses(losses)
    assert mixture.degenerate and math.isfinite(low) and math.isfinite(high)
    assert np.all(mixture.noisy_lookup() == 0.5) and np.all(mixture.clean_posterior([0.1, 0.9]) == 0.5)


def test_two_separated_values_stay_finite_and_ordered():
    losses = torch.cat([torch.full((60,), 0.05), torch.full((40,), 3.0)])
    mixture, low, high = fit_losses(losses)
    assert not mixture.degenerate
    assert np.all(np.isfinite(mixture.alphas)) and np.all(np.isfinite(mixture.betas))
    posterior = mixture.clean_posterior([1e-3, 1 - 1e-3])
    assert np.all(np.isfinite(posterior)) and posterior[0] > 0.99 > 0.01 > posterior[1]
