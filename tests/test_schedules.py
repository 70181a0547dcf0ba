"""The three forms of Co-teaching's forget-rate schedule against their formulas:
``paper`` tau*min((t/T_k)^c, 1), ``study`` min(t^c*tau/T_k, tau) (the slides' c x T_k study),
``official`` the official code's ``linspace(0, tau**c, T_k)`` array read at t + 1."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from noisylab.errors import ConfigError
from noisylab.schedules import CoteachingSchedule, build_schedule

ROOT = Path(__file__).resolve().parents[1]
TAU = 0.45


def official_array(tau, num_gradual, exponent, n_epoch=200):
    """The official rate_schedule, written from its description (ones * tau, then the first
    T_k entries replaced by T_k evenly spaced values from 0 to tau**c)."""
    rates = np.full(n_epoch, tau)
    rates[:num_gradual] = np.linspace(0.0, tau**exponent, num_gradual)
    return rates


def curve(form, tau=TAU, num_gradual=10, exponent=1.0, epochs=60):
    return np.array(CoteachingSchedule(tau, num_gradual, exponent, form).curve(epochs))


@pytest.mark.parametrize("num_gradual", [5, 10, 15])
@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_paper_form_is_tau_times_the_capped_power_of_time(num_gradual, exponent):
    t = np.arange(60)
    expected = TAU * np.minimum((t / num_gradual) ** exponent, 1.0)
    np.testing.assert_allclose(curve("paper", num_gradual=num_gradual, exponent=exponent), expected)


def test_paper_form_hand_values():
    schedule = CoteachingSchedule(0.5, 10, 2.0, "paper")
    assert schedule(0) == 0.0
    assert schedule(5) == pytest.approx(0.125)  # 0.5 * (5/10)^2
    assert schedule(10) == pytest.approx(0.5) and schedule(150) == pytest.approx(0.5)


@pytest.mark.parametrize("num_gradual", [5, 10, 15])
@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_study_form_is_the_power_of_time_over_tk_capped_at_tau(num_gradual, exponent):
    t = np.arange(60)
    expected = np.minimum(t**exponent * TAU / num_gradual, TAU)
    np.testing.assert_allclose(curve("study", num_gradual=num_gradual, exponent=exponent), expected)


def test_study_form_hand_values():
    fast = CoteachingSchedule(0.5, 10, 2.0, "study")  # reaches tau at t = sqrt(10) ~ 3.16
    assert [fast(t) for t in range(5)] == pytest.approx([0.0, 0.05, 0.2, 0.45, 0.5])
    slow = CoteachingSchedule(0.5, 5, 0.5, "study")  # reaches tau only at t = 25
    assert slow(16) == pytest.approx(0.4) and slow(24) < 0.5 and slow(25) == pytest.approx(0.5)
    assert CoteachingSchedule(0.5, 15, 0.5, "study")(199) == pytest.approx(0.5 * 199**0.5 / 15)  # < tau at 200


@pytest.mark.parametrize("num_gradual", [2, 5, 10, 15])
@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_official_form_reads_the_linspace_array_one_epoch_ahead(num_gradual, exponent):
    """The official loop trains epochs 1..n_epoch-1 with rate_schedule[epoch]: our 0-based t gets
    index t + 1."""
    rates = official_array(TAU, num_gradual, exponent)
    ours = curve("official", num_gradual=num_gradual, exponent=exponent, epochs=199)
    np.testing.assert_allclose(ours, rates[1:200])


def test_official_form_hand_values():
    c1 = CoteachingSchedule(0.45, 10, 1.0, "official")
    assert c1(0) == pytest.approx(0.05)  # rate_schedule[1] = 0.45 / 9: the first epoch already drops
    assert c1(7) == pytest.approx(0.40) and c1(8) == pytest.approx(0.45) and c1(100) == pytest.approx(0.45)
    c2 = CoteachingSchedule(0.45, 10, 2.0, "official")  # ramp to tau^2 = 0.2025, then a jump to tau
    assert c2(0) == pytest.approx(0.0225) and c2(8) == pytest.approx(0.2025) and c2(9) == pytest.approx(0.45)
    c_half = CoteachingSchedule(0.36, 10, 0.5, "official")  # ramp to tau^0.5 = 0.6 > tau, then down
    assert c_half(8) == pytest.approx(0.6) and c_half(9) == pytest.approx(0.36)
    assert CoteachingSchedule(0.45, 1, 1.0, "official").curve(3) == pytest.approx([0.45] * 3)
    assert CoteachingSchedule(0.45, 0, 1.0, "official").curve(3) == pytest.approx([0.45] * 3)


@pytest.mark.parametrize("num_gradual", [5, 10, 15])
def test_at_c1_paper_and_study_agree_and_official_is_paper_one_epoch_ahead_with_tk_minus_1(num_gradual):
    paper, study = curve("paper", num_gradual=num_gradual), curve("study", num_gradual=num_gradual)
    np.testing.assert_allclose(study, paper)
    official = curve("official", num_gradual=num_gradual)
    shifted = CoteachingSchedule(TAU, num_gradual - 1, 1.0, "paper")
    np.testing.assert_allclose(official, [shifted(t + 1) for t in range(60)])
    # all three end at tau; the official ramp gets there two epochs earlier (index T_k-1, read at t+1)
    assert np.argmax(paper >= TAU - 1e-12) == num_gradual and np.argmax(official >= TAU - 1e-12) == num_gradual - 2
    np.testing.assert_allclose(official[num_gradual:], paper[num_gradual:])
    assert not np.allclose(official[:num_gradual], paper[:num_gradual])


def test_at_c2_the_three_forms_differ():
    paper, study, official = (curve(form, num_gradual=10, exponent=2.0) for form in ("paper", "study", "official"))
    assert paper[2] == pytest.approx(TAU * 0.04) and study[2] == pytest.approx(TAU * 0.4)
    assert official[2] == pytest.approx(TAU**2 * 3 / 9)
    for a, b in ((paper, study), (paper, official), (study, official)):
        assert np.max(np.abs(a - b)) > 0.08
    assert paper[-1] == study[-1] == official[-1] == pytest.approx(TAU)


def test_build_schedule_reads_the_form_and_defaults_to_paper():
    base = {"name": "coteaching", "tau": None, "num_gradual": 10, "exponent": 2}
    assert build_schedule(base, 0.5, 200).form == "paper"  # configs written before `form` existed
    for form in ("paper", "study", "official"):
        schedule = build_schedule({**base, "form": form}, 0.5, 200)
        assert schedule.form == form and schedule.tau == 0.5
        assert schedule.curve(30) == pytest.approx(CoteachingSchedule(0.5, 10, 2.0, form).curve(30))
    with pytest.raises(ConfigError, match="schedule.form"):
        build_schedule({**base, "form": "slides"}, 0.5, 200)
    with pytest.raises(ConfigError, match="exponent"):
        build_schedule({**base, "exponent": 0}, 0.5, 200)


def test_schedule_config_defaults_to_the_paper_form():
    cfg = yaml.safe_load((ROOT / "conf" / "schedule" / "coteaching.yaml").read_text())
    assert cfg["form"] == "paper" and cfg["num_gradual"] == 10 and cfg["exponent"] == 1
