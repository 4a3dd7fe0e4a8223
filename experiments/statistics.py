"""Sufficient statistics: counts, sums, sums of squares and cross-products; pooled with `+`."""
from __future__ import annotations

from dataclasses import dataclass, fields


class _Additive:
    """Adding two statistics of one kind pools their samples."""

    def __add__(self, other):  # type: ignore[no-untyped-def]
        if type(other) is not type(self):
            return NotImplemented
        return type(self)(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class SampleMeanStatistic(_Additive):
    """n values y: n, Σy, Σy² (a proportion is the same with 0/1 values)."""

    n: int
    sum: float
    sum_squares: float

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else float("nan")

    @property
    def variance(self) -> float:
        """Sample variance (n − 1 in the denominator)."""
        if self.n < 2:
            return float("nan")
        return max((self.sum_squares - self.sum**2 / self.n) / (self.n - 1), 0.0)


@dataclass(frozen=True)
class RatioStatistic(_Additive):
    """Per-unit numerator m and denominator d: Σm, Σm², Σd, Σd², Σm·d over n units."""

    n: int
    m_sum: float
    m_sum_squares: float
    d_sum: float
    d_sum_squares: float
    m_d_sum_of_products: float

    @property
    def numerator(self) -> SampleMeanStatistic:
        return SampleMeanStatistic(self.n, self.m_sum, self.m_sum_squares)

    @property
    def denominator(self) -> SampleMeanStatistic:
        return SampleMeanStatistic(self.n, self.d_sum, self.d_sum_squares)

    @property
    def covariance(self) -> float:
        if self.n < 2:
            return float("nan")
        return (self.m_d_sum_of_products - self.m_sum * self.d_sum / self.n) / (self.n - 1)

    @property
    def ratio(self) -> float:
        return self.m_sum / self.d_sum if self.d_sum else float("nan")


@dataclass(frozen=True)
class RegressionAdjustedStatistic(_Additive):
    """Outcome y with a pre-period covariate x: Σy, Σy², Σx, Σx², Σxy over n units."""

    n: int
    y_sum: float
    y_sum_squares: float
    x_sum: float
    x_sum_squares: float
    xy_sum_of_products: float

    @property
    def post(self) -> SampleMeanStatistic:
        return SampleMeanStatistic(self.n, self.y_sum, self.y_sum_squares)

    @property
    def pre(self) -> SampleMeanStatistic:
        return SampleMeanStatistic(self.n, self.x_sum, self.x_sum_squares)

    @property
    def covariance(self) -> float:
        if self.n < 2:
            return float("nan")
        return (self.xy_sum_of_products - self.x_sum * self.y_sum / self.n) / (self.n - 1)


@dataclass(frozen=True)
class ClusterSumStatistic(_Additive):
    """One cluster's (store's) units of one arm: n and Σy."""

    n: int
    sum: float


@dataclass(frozen=True)
class AdjustedRatioStatistic(_Additive):
    """A ratio in the window (y/n) and the same ratio in the pre-period (x/m) of the same units,
    with the cross-products Σy·x, Σy·m, Σn·x, Σn·m that tie them."""

    post: RatioStatistic
    pre: RatioStatistic
    y_x_sum: float
    y_m_sum: float
    n_x_sum: float
    n_m_sum: float
