"""Always-valid confidence sequences: the formula, its p-value, and its behaviour under peeking."""
import math

import numpy as np
import pytest

from experiments.means import welch
from experiments.sequential import always_valid_p, half_width, mixture_rho, sequential
from tests.stats_helpers import gb_half_width, gb_p_value, mean_stat


@pytest.mark.parametrize("se, n, alpha, tuning", [(0.5, 2000, 0.05, 5000), (0.05, 90_000, 0.01, 5000),
                                                  (2.0, 150, 0.1, 1000), (40.0, 8000, 0.05, 5000)])
def test_half_width_and_p_formulas(se, n, alpha, tuning):
    assert half_width(se, n, alpha, tuning) == pytest.approx(gb_half_width(se, n, alpha, tuning), rel=1e-12)
    assert mixture_rho(alpha, tuning) > 0
    for effect in (0.1 * se, 3 * se, 6 * se):
        assert always_valid_p(effect, se, n, tuning, alpha=alpha) == pytest.approx(gb_p_value(effect, se, n, alpha, tuning),
                                                                             rel=1e-9)


def test_sequence_is_wider_than_fixed_interval_and_p_is_consistent():
    rng = np.random.default_rng(1)
    c, t = rng.normal(10, 4, 3000), rng.normal(10.4, 4, 3000)
    fixed = welch(mean_stat(c), mean_stat(t))
    seq = sequential(fixed.effect_abs, fixed.se, 6000)
    assert seq.ci_low < fixed.ci_low and seq.ci_high > fixed.ci_high
    assert seq.p_value > fixed.p_value
    assert (seq.ci_low > 0) == (seq.p_value < 0.05)
    # p < alpha exactly when the level-alpha sequence excludes zero: the edge touches zero where
    # the effect equals the half-width
    edge = half_width(fixed.se, 6000, 0.05)
    assert always_valid_p(edge, fixed.se, 6000) == pytest.approx(0.05, rel=1e-9)
    assert always_valid_p(edge * 1.001, fixed.se, 6000) < 0.05 < always_valid_p(edge * 0.999, fixed.se, 6000)


def test_the_sequence_does_not_depend_on_the_unit_of_the_metric():
    """Spend in cents is spend in euros x 100: the same interval x 100 and the same p. (Mixing the
    per-unit variance into the mixture made the interval of a high-variance metric such as spend
    far wider than its tuning promised.)"""
    euros = sequential(0.8, 0.3, 4000)
    cents = sequential(80.0, 30.0, 4000)
    assert (cents.ci_low, cents.ci_high) == (pytest.approx(100 * euros.ci_low, rel=1e-12),
                                             pytest.approx(100 * euros.ci_high, rel=1e-12))
    assert cents.p_value == pytest.approx(euros.p_value, rel=1e-12)


def test_half_width_shrinks_as_alpha_grows():
    widths = [half_width(0.3, 4000, a) for a in np.linspace(0.001, 0.5, 200)]
    assert all(a > b for a, b in zip(widths, widths[1:]))


def test_p_value_edges():
    assert always_valid_p(0.0, 1.0, 1000) == 1.0
    assert always_valid_p(100.0, 0.1, 1000) < 1e-100
    assert always_valid_p(1e6, 0.1, 1000) == 0.0  # underflows to zero, no overflow on the way
    assert math.isnan(always_valid_p(1.0, 0.0, 1000))


def test_peeking_keeps_false_positives_bounded():
    """300 A/A tests with 10 looks: sequential rejections stay under alpha; naive peeking does not."""
    rng = np.random.default_rng(11)
    seq_reject = naive_reject = 0
    for _ in range(300):
        c, t = rng.normal(0, 1, (10, 200)), rng.normal(0, 1, (10, 200))
        seq_hit = naive_hit = False
        for look in range(1, 11):
            res = welch(mean_stat(c[:look].ravel()), mean_stat(t[:look].ravel()))
            naive_hit |= res.p_value < 0.05
            seq_hit |= sequential(res.effect_abs, res.se, 400 * look).p_value < 0.05
        seq_reject += seq_hit
        naive_reject += naive_hit
    assert seq_reject / 300 <= 0.05
    assert naive_reject / 300 > 0.08
