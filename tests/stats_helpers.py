"""Turn raw rows into sufficient statistics, the way the database will."""
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
