"""Calibration of the tests: 2,000 simulated A/A pilots with 14 daily looks, and CI coverage.

Prints one JSON line: fpr_fixed, fpr_sequential_peeking, fpr_naive_peeking, ci_coverage, and the
power with a true effect (+2 on a mean of 40, 5%) of the fixed test at the last look and of the
sequential test at any look (the price of always-valid looks).
Targets: fixed-horizon false positives within [4 %, 6 %], sequential <= 5 % under peeking,
coverage within [94 %, 96 %].
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.means import welch
from experiments.sequential import sequential
from experiments.statistics import SampleMeanStatistic

SIMS, LOOKS, PER_DAY, ALPHA, TRUE_EFFECT = 2000, 14, 100, 0.05, 2.0


def daily_sums(rng, shift):
    """Per simulation and day: Σy and Σy² of one arm's new customers (skewed, spend-like values)."""
    y = rng.gamma(2.0, 20.0, (SIMS, LOOKS, PER_DAY)) + shift
    return np.cumsum(y.sum(axis=2), axis=1), np.cumsum((y**2).sum(axis=2), axis=1)


def stat(sums, squares, sim, look):
    return SampleMeanStatistic(PER_DAY * (look + 1), float(sums[sim, look]), float(squares[sim, look]))


def main():
    rng = np.random.default_rng(2026)
    started = time.perf_counter()
    c_sum, c_sq = daily_sums(rng, 0.0)
    t_sum, t_sq = daily_sums(rng, 0.0)
    fixed = naive = seq = 0
    for sim in range(SIMS):
        hits_naive = hits_seq = False
        for look in range(LOOKS):
            res = welch(stat(c_sum, c_sq, sim, look), stat(t_sum, t_sq, sim, look))
            hits_naive |= res.p_value < ALPHA
            hits_seq |= sequential(res.effect_abs, res.se, 2 * PER_DAY * (look + 1), ALPHA).p_value < ALPHA
        fixed += res.p_value < ALPHA
        naive += hits_naive
        seq += hits_seq
    e_sum, e_sq = daily_sums(rng, TRUE_EFFECT)
    covered = power_fixed = power_seq = 0
    for sim in range(SIMS):
        res = welch(stat(c_sum, c_sq, sim, LOOKS - 1), stat(e_sum, e_sq, sim, LOOKS - 1))
        covered += res.ci_low <= TRUE_EFFECT <= res.ci_high
        power_fixed += res.p_value < ALPHA
        power_seq += any(sequential(r.effect_abs, r.se, 2 * PER_DAY * (look + 1), ALPHA).p_value < ALPHA
                         for look in range(LOOKS)
                         for r in [welch(stat(c_sum, c_sq, sim, look), stat(e_sum, e_sq, sim, look))])
    print(json.dumps({"sims": SIMS, "looks": LOOKS, "units_per_arm": PER_DAY * LOOKS,
                      "fpr_fixed": fixed / SIMS, "fpr_sequential_peeking": seq / SIMS,
                      "fpr_naive_peeking": naive / SIMS, "ci_coverage": covered / SIMS,
                      "power_fixed": power_fixed / SIMS, "power_sequential": power_seq / SIMS,
                      "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
