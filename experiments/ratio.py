"""Ratio metrics (Σ numerator ÷ Σ denominator per arm, e.g. spend per visit) by the delta method."""
from __future__ import annotations

import math
from dataclasses import replace

from experiments.results import EffectResult, InferenceConfig, build, degenerate, from_estimate, relative_to
from experiments.statistics import AdjustedRatioStatistic, RatioStatistic


def ratio_variance(stat: RatioStatistic) -> float:
    """Delta-method variance of Σm/Σd from per-unit sums, squares and cross-products."""
    mu_m, mu_d = stat.numerator.mean, stat.denominator.mean
    var_m, var_d, cov = stat.numerator.variance, stat.denominator.variance, stat.covariance
    return (var_m / mu_d**2 - 2 * mu_m * cov / mu_d**3 + mu_m**2 * var_d / mu_d**4) / stat.n


def ratio_delta(control: RatioStatistic, treatment: RatioStatistic,
                config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """z-test of the difference of two ratios."""
    n, means = (control.n, treatment.n), (control.ratio, treatment.ratio)
    if min(n) < 2:
        return degenerate("ratio_delta", n, means, "too_few_units")
    if control.d_sum == 0 or treatment.d_sum == 0:
        return degenerate("ratio_delta", n, means, "zero_denominator")
    return build("ratio_delta", n, means, (ratio_variance(control), ratio_variance(treatment)), None, config)


def _cov(sum_ab: float, sum_a: float, sum_b: float, n: int) -> float:
    return (sum_ab - sum_a * sum_b / n) / (n - 1)


def ratio_pre_covariance(stat: AdjustedRatioStatistic) -> float:
    """Delta-method covariance of the post ratio Σy/Σn and the pre ratio Σx/Σm of one arm."""
    post, pre, n = stat.post, stat.pre, stat.post.n
    y, d, x, m = post.numerator.mean, post.denominator.mean, pre.numerator.mean, pre.denominator.mean
    r, r_pre = y / d, x / m
    c_yx = _cov(stat.y_x_sum, post.m_sum, pre.m_sum, n)
    c_ym = _cov(stat.y_m_sum, post.m_sum, pre.d_sum, n)
    c_nx = _cov(stat.n_x_sum, post.d_sum, pre.m_sum, n)
    c_nm = _cov(stat.n_m_sum, post.d_sum, pre.d_sum, n)
    return (c_yx / (d * m) - r_pre * c_ym / (d * m) - r * c_nx / (d * m) + r * r_pre * c_nm / (d * m)) / n


def ratio_cuped(control: AdjustedRatioStatistic, treatment: AdjustedRatioStatistic,
                config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Ratio metric with a pre-period ratio as CUPED covariate (Deng et al. 2013, by linearisation).

    Effect = (R_t − R_c) − θ (R_pre,t − R_pre,c) with θ = Σ cov(R, R_pre) / Σ var(R_pre) over the two
    arms, the θ that minimises the variance of the difference; z inference. θ = 0 is ratio_delta.
    """
    n = (control.post.n, treatment.post.n)
    means = (control.post.ratio, treatment.post.ratio)
    if min(n) < 3:
        return degenerate("ratio_cuped", n, means, "too_few_units")
    if 0 in (control.post.d_sum, treatment.post.d_sum, control.pre.d_sum, treatment.pre.d_sum):
        return ratio_delta(control.post, treatment.post, config)
    var_post = (ratio_variance(control.post), ratio_variance(treatment.post))
    var_pre = (ratio_variance(control.pre), ratio_variance(treatment.pre))
    cov = (ratio_pre_covariance(control), ratio_pre_covariance(treatment))
    if not sum(var_pre) > 0:
        return ratio_delta(control.post, treatment.post, config)
    theta = sum(cov) / sum(var_pre)
    adj_var = [vp - 2 * theta * c + theta**2 * vx for vp, c, vx in zip(var_post, cov, var_pre)]
    effect = (means[1] - means[0]) - theta * (treatment.pre.ratio - control.pre.ratio)
    se = math.sqrt(max(sum(adj_var), 0.0))
    # relative to the control's ratio R_c, by the delta method: Var(R_c) and Cov(effect, R_c) =
    # −Var(R_c) + θ Cov(R_c, R_pre,c) (the treatment arm and the other pre-ratio are independent of R_c)
    base, var_base = means[0], var_post[0]
    cov_base = -var_post[0] + theta * cov[0]
    rel, se_rel = relative_to(effect, se, base, var_base, cov_base)
    result = from_estimate("ratio_cuped", n, means, effect, se, None, rel, se_rel, config)
    return replace(result, var_mean_control=var_base, cov_effect_control=cov_base)
