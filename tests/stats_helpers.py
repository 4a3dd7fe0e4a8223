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


def cr2_reference(x, y, clusters, contrast):
    """CR2 sandwich and Bell–McCaffrey df written out literally on the raw rows (Imbens & Kolesár 2016,
    eq. 4 and section 3.2; clubSandwich's CR2 with an identity working model): A_g = (I − H_gg)^−½ by
    scipy's matrix square root and a pseudo-inverse, G's column g = (I − H)[:, g] A_g X_g (XᵀX)⁻¹ c,
    df = (Σλ)² / Σλ² over the eigenvalues λ of GᵀG. Returns (estimate, se, df)."""
    from scipy import linalg

    x, y, c = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(contrast, dtype=float)
    xtx_inv = np.linalg.pinv(x.T @ x)
    beta = xtx_inv @ x.T @ y
    e = y - x @ beta
    meat, cols = 0.0, []
    labels = np.asarray(clusters)
    for g in sorted(set(clusters)):
        i = np.flatnonzero(labels == g)
        m_i = -x @ xtx_inv @ x[i].T  # the columns of I − H of the cluster's rows (N × n_g)
        m_i[i, np.arange(len(i))] += 1
        a = np.linalg.pinv(np.real(linalg.sqrtm(m_i[i])))
        v = c @ xtx_inv @ x[i].T @ a @ e[i]
        meat += v * v
        cols.append(m_i @ a @ x[i] @ xtx_inv @ c)
    lam = np.linalg.eigvalsh(np.column_stack(cols).T @ np.column_stack(cols))
    return float(c @ beta), float(np.sqrt(meat)), float(lam.sum() ** 2 / (lam**2).sum())
