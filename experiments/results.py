"""Result dataclasses and the shared step from an estimate and its error to a test result."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from scipy import stats

Alternative = Literal["two-sided", "greater", "less"]
NAN = float("nan")


@dataclass(frozen=True)
class InferenceConfig:
    """Significance level and sidedness of a test."""

    alpha: float = 0.05
    alternative: Alternative = "two-sided"


@dataclass(frozen=True)
class EffectResult:
    """A treatment-versus-control comparison; `message` codes a degenerate case."""

    method: str
    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    effect_abs: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    statistic: float
    df: float | None
    effect_rel: float
    se_rel: float
    ci_rel_low: float
    ci_rel_high: float
    message: str | None = None
    # the variance of the control mean and its covariance with the effect, where the method knows
    # them (NaN otherwise): what a combination of results needs for its relative effect's error
    var_mean_control: float = NAN
    cov_effect_control: float = NAN

    @property
    def ok(self) -> bool:
        return self.message is None


def critical(config: InferenceConfig, df: float | None) -> float:
    """The critical value of the test's t (or normal, when df is None) distribution."""
    tail = config.alpha / 2 if config.alternative == "two-sided" else config.alpha
    return float(stats.norm.ppf(1 - tail) if df is None else stats.t.ppf(1 - tail, df))  # (no frozen t: 100× faster)


def p_value(statistic: float, df: float | None, alternative: Alternative) -> float:
    """The p-value of a z (df None) or t statistic."""
    def sf(x: float) -> float:
        return float(stats.norm.sf(x) if df is None else stats.t.sf(x, df))
    if alternative == "greater":
        return sf(statistic)
    if alternative == "less":
        return sf(-statistic)
    return 2 * sf(abs(statistic))


def interval(estimate: float, se: float, crit: float, alternative: Alternative) -> tuple[float, float]:
    """A confidence interval, open on one side for a one-sided test."""
    low = -math.inf if alternative == "less" else estimate - crit * se
    high = math.inf if alternative == "greater" else estimate + crit * se
    return low, high


def relative(mean_c: float, var_mean_c: float, mean_t: float, var_mean_t: float,
             cov_mean: float = 0.0) -> tuple[float, float]:
    """Relative effect mean_t / mean_c − 1 and its delta-method standard error."""
    if mean_c == 0 or not math.isfinite(mean_c):
        return NAN, NAN
    rel = mean_t / mean_c - 1
    var = var_mean_t / mean_c**2 + mean_t**2 * var_mean_c / mean_c**4 - 2 * mean_t * cov_mean / mean_c**3
    return rel, math.sqrt(max(var, 0.0))


def relative_to(effect: float, se: float, base: float, var_base: float, cov_effect_base: float) -> tuple[float, float]:
    """effect / base and its delta-method standard error, given the effect's error, Var(base) and
    Cov(effect, base): for estimates whose relative effect is not a plain ratio of two arm means."""
    if not base:
        return NAN, NAN
    var = se**2 / base**2 + effect**2 * var_base / base**4 - 2 * effect * cov_effect_base / base**3
    return effect / base, math.sqrt(max(var, 0.0))


def build(method: str, n: tuple[int, int], means: tuple[float, float], var_means: tuple[float, float],
          df: float | None, config: InferenceConfig, cov_means: float = 0.0) -> EffectResult:
    """Effect result from the two arms' means, the variances of those means and their covariance."""
    se = math.sqrt(max(var_means[0] + var_means[1] - 2 * cov_means, 0.0))
    rel, se_rel = relative(means[0], var_means[0], means[1], var_means[1], cov_means)
    result = from_estimate(method, n, means, means[1] - means[0], se, df, rel, se_rel, config)
    return replace(result, var_mean_control=var_means[0], cov_effect_control=cov_means - var_means[0])


def from_estimate(method: str, n: tuple[int, int], means: tuple[float, float], effect: float, se: float,
                  df: float | None, rel: float, se_rel: float, config: InferenceConfig) -> EffectResult:
    """Effect result from an estimate, its standard error and the relative effect's."""
    if not math.isfinite(se) or se == 0:
        return degenerate(method, n, means, "zero_variance" if se == 0 else "too_few_units")
    crit = critical(config, df)
    low, high = interval(effect, se, crit, config.alternative)
    rel_low, rel_high = interval(rel, se_rel, crit, config.alternative)
    statistic = effect / se
    return EffectResult(method, n[0], n[1], means[0], means[1], effect, se, low, high,
                        p_value(statistic, df, config.alternative), statistic, df, rel, se_rel, rel_low, rel_high,
                        None if math.isfinite(rel) else "zero_control_mean")


def degenerate(method: str, n: tuple[int, int], means: tuple[float, float], message: str) -> EffectResult:
    """A result that carries a coded reason instead of numbers."""
    return EffectResult(method, n[0], n[1], means[0], means[1], means[1] - means[0], NAN, NAN, NAN, NAN, NAN,
                        None, NAN, NAN, NAN, NAN, message)
