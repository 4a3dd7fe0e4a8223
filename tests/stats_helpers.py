"""Turn raw rows into sufficient statistics, the way the database will."""
import math

import numpy as np

from experiments.statistics import RatioStatistic, RegressionAdjustedStatistic, SampleMeanStatistic


def mean_stat(y):
    y = np.asarray(y, dtype=float)
    return SampleMeanStatistic(len(y), float(y.sum()), float((y**2).sum()))


def ratio_stat(m, d):
    m, d = np.asarray(m, dtype=float), np.asarray(d, dtype=float)
    return RatioStatistic(len(m), float(m.sum()), float((m**2).sum()), float(d.sum()), float((d**2).sum()),
                          float((m * d).sum()))


def adjusted_stat(y, x):
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    return RegressionAdjustedStatistic(len(y), float(y.sum()), float((y**2).sum()), float(x.sum()),
                                       float((x**2).sum()), float((x * y).sum()))


def gb_half_width(se, n, alpha, tuning):
    """Eq. 9 of Waudby-Smith et al. with rho from eq. 161, as gbstats writes it: the mixture on the
    standardised scale, sqrt(s2) outside, s2 = se^2 * n the per-unit variance. Written out independently."""
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)
    s2 = se * se * n
    return math.sqrt(s2) * math.sqrt(2 * (n * rho * rho + 1) * math.log(math.sqrt(n * rho * rho + 1) / alpha)
                                     / (n * rho) ** 2)


def gb_p_value(effect, se, n, alpha, tuning):
    """Eq. 155: 1 / e-value of the same mixture, rho from alpha."""
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)
    t2 = effect * effect * n / (se * se)
    evalue = math.exp(rho * rho * t2 / (2 * (n * rho * rho + 1))) / math.sqrt(n * rho * rho + 1)
    return min(1 / evalue, 1.0)
