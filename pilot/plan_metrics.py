"""The planner's model of each catalogue metric for customer pilots: the per-unit values the analysis
will compare, their baseline moments, the covariate CUPED will use, how they scale with the pilot's
duration, and the pilot simulated on the history with the analysis's own estimator.

The analysis (pilot.effects.metric_effect) decides what is planned for: means with a pre-period
covariate (spend, visits) by CUPED; programme cost by Welch's t; proportions (conversion, retention)
by the two-proportion z-test, variance p(1 − p); ratios (spend per visit, items per basket) by the
delta method, with the pre-period ratio as covariate (ratio CUPED) — a ratio's per-unit value is its
linearisation (m − R·d) / mean(d), whose variance is the delta-method variance of the ratio per unit.

Durations other than the observed window: a sum over d weeks has a persistent part (the unit's rate,
variance ∝ d²) and a purchase-noise part (∝ d, read as Σ value² per purchase); a ratio's linearised
variance is persistent + noise / d; a proportion follows the negative-binomial model of the visits
(gamma-mixed Poisson rates, fitted to the window's mean and variance), anchored at the observed share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from experiments.power import mde_means, power_t
from experiments.results import InferenceConfig
from pilot.aggregation import METRIC_SOURCES, product_key
from pilot.effects import good, metric_effect
from pilot.metrics import CATALOGUE
from pilot.plan_history import Cohort

# the unit values the analysis reads per metric (as pilot.aggregation names them)
ANALYSED = {"spend_per_customer": ("spend", "pre_spend"), "visits_per_customer": ("visits", "pre_visits"),
            "discount_cost_per_customer": ("cost",), "conversion": ("converted",), "retention": ("retained",),
            "spend_per_visit": ("spend", "visits", "pre_spend", "pre_visits"),
            "items_per_basket": ("items", "visits", "pre_items", "pre_visits")}
NOISE = {"spend": "spend_sq", "items": "items_sq", "cost": "cost_sq", "visits": "visits"}
METHODS = {("mean", True): "cuped", ("mean", False): "welch", ("ratio", True): "ratio_cuped",
           ("ratio", False): "ratio_delta", ("proportion", False): "two_proportion_z"}


def method(metric: str, covariate: bool) -> str:
    """The test the analysis runs for the metric (with or without its covariate)."""
    return METHODS[(CATALOGUE[metric].kind, covariate)]


def columns(metric: str, c: Cohort) -> dict[str, np.ndarray]:
    """The per-unit values the analysis reads for the metric, from the cohort's history columns."""
    v = c.values
    derived = {"converted": lambda: (v["visits"] > 0).astype(float),
               "retained": lambda: ((v.get("early", 0) > 0) & (v.get("late", 0) > 0)).astype(float)}
    return {name: derived[name]() if name in derived else v[name] for name in ANALYSED[metric]}


@dataclass(frozen=True)
class UnitModel:
    """The metric per unit over the window (w weeks): its analysed value y (a ratio's linearisation
    around R), the covariate x (None without one), the moments and how they scale to d weeks."""

    metric: str
    kind: str  # mean | proportion | ratio
    weeks: int
    mean: float  # per unit over the window; a ratio's R; a proportion's share
    var: float
    within: float  # the purchase-noise part of var
    cov: float  # with the covariate
    var_x: float
    y: np.ndarray
    nbd: tuple[float, float] | None = None  # proportions: visits per week, gamma shape of the rates

    @classmethod
    def of(cls, metric: str, c: Cohort, weeks: int) -> UnitModel:
        kind, (value, other) = CATALOGUE[metric].kind, METRIC_SOURCES[metric]
        v, cols = c.values, columns(metric, c)
        if kind == "proportion":
            y = cols[value]
            visits = v["visits"]
            mv, vv = float(visits.mean()), float(visits.var(ddof=1)) if len(visits) > 1 else 0.0
            shape = mv * mv / (vv - mv) if vv > mv > 0 else math.inf
            return cls(metric, kind, weeks, float(y.mean()), float(y.var(ddof=1)), 0.0, 0.0, 0.0, y,
                       (mv / weeks, shape))
        if kind == "ratio":
            num, den = v[value], v[other]
            if not den.sum() > 0:  # no purchase in the window: no baseline (the planner's 409)
                return cls(metric, kind, weeks, 0.0, 0.0, 0.0, 0.0, 0.0, np.zeros(len(num)))
            ratio, mu = num.sum() / den.sum(), den.mean()
            y = (num - ratio * den) / mu
            within = (v[NOISE[value]] - 2 * ratio * num + ratio * ratio * den) / (mu * mu)
            pre_num, pre_den = v[f"pre_{value}"], v[f"pre_{other}"]
            x = (pre_num - pre_num.sum() / pre_den.sum() * pre_den) / pre_den.mean() if pre_den.sum() > 0 else None
            return cls._moments(metric, kind, weeks, float(ratio), y, x, within)
        x = v[other] if other is not None else None
        return cls._moments(metric, kind, weeks, float(cols[value].mean()), cols[value], x, v[NOISE[value]])

    @classmethod
    def _moments(cls, metric: str, kind: str, weeks: int, mean: float, y: np.ndarray, x: np.ndarray | None,
                 within: np.ndarray) -> UnitModel:
        var_x = float(x.var(ddof=1)) if x is not None and len(x) > 1 else 0.0
        cov = float(np.cov(x, y)[0, 1]) if var_x > 0 else 0.0
        return cls(metric, kind, weeks, mean, float(y.var(ddof=1)), float(within.mean()), cov, var_x, y)

    @property
    def covariate(self) -> bool:
        return self.var_x > 0

    def at(self, d: float) -> tuple[float, float, float]:
        """(mean, variance, correlation² with the covariate) of the metric per unit over d weeks."""
        k = d / self.weeks
        if self.kind == "proportion":
            p = self._share(d)
            return p, p * (1 - p), 0.0
        persistent, noise = max(self.var - self.within, 0.0), min(self.within, self.var)
        if self.kind == "ratio":  # Var(m − R·d) ∝ persistent·k² + noise·k, divided by mean(d)² ∝ k²
            mean, var, cov = self.mean, persistent + noise / k, self.cov
        else:
            mean, var, cov = self.mean * k, persistent * k * k + noise * k, self.cov * k
        rho2 = min(cov * cov / (self.var_x * var), 1.0) if self.var_x > 0 and var > 0 else 0.0
        return mean, var, rho2

    def _share(self, d: float) -> float:
        """The proportion over d weeks: the NBD model's, scaled to the observed share at the window."""
        rate, shape = self.nbd

        def zero(t: float) -> float:
            return math.exp(-rate * t) if math.isinf(shape) else (1 + rate * t / shape) ** -shape

        def share(t: float) -> float:
            return 1 - zero(t) if self.metric == "conversion" else 1 - 2 * zero(t / 2) + zero(t)
        at_window = share(self.weeks)
        return min(self.mean * share(d) / at_window, 1 - 1e-9) if at_window > 0 else 0.0

    def mde(self, d: float, n: float, shares: tuple[float, float], power: float, alpha: float,
            cuped_on: bool = True) -> float:
        """The relative MDE of the analysis's test over d weeks with n units (cuped_on=False: without the covariate)."""
        mean, var, rho2 = self.at(d)
        n_c, n_t = n * shares[0], n * shares[1]
        if n_c < 2 or n_t < 2 or not var > 0 or not mean > 0:
            return math.inf
        if self.kind == "proportion":
            top = 1 - mean  # the catalogue's proportions are good upwards
            if _power_z(mean, top, n_c, n_t, alpha) < power:
                return math.inf
            return optimize.brentq(lambda e: _power_z(mean, e, n_c, n_t, alpha) - power, 1e-12, top) / mean
        return mde_means(math.sqrt(var * (1 - rho2 if cuped_on else 1.0)), n_c, n_t, power, alpha) / mean

    def power(self, d: float, n: float, shares: tuple[float, float], mde: float, alpha: float) -> float:
        """The power of the analysis's test to see a relative change `mde` over d weeks with n units."""
        mean, var, rho2 = self.at(d)
        n_c, n_t = n * shares[0], n * shares[1]
        if n_c < 2 or n_t < 2 or not var > 0:
            return 0.0
        if self.kind == "proportion":
            return _power_z(mean, min(mean * mde, 1 - mean), n_c, n_t, alpha)
        return power_t(mde * mean / math.sqrt(var * (1 - rho2)), n_c, n_t / n_c, alpha)

    def baseline(self) -> dict[str, Any]:
        """The baseline per unit over the window, as the plan shows it."""
        rho2 = self.at(self.weeks)[2]
        return {"mean": self.mean, "sd": math.sqrt(self.var),
                "pre_post_correlation": math.copysign(math.sqrt(rho2), self.cov) if self.covariate else None,
                "cuped_variance_reduction": rho2, "method": method(self.metric, self.covariate)}


def _power_z(p: float, effect: float, n_c: float, n_t: float, alpha: float) -> float:
    """Power of the two-sided pooled two-proportion z-test (experiments.proportions) for p against p + effect."""
    q = p + effect
    pooled = (n_c * p + n_t * q) / (n_c + n_t)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    se1 = math.sqrt(p * (1 - p) / n_c + q * (1 - q) / n_t)
    if not se1 > 0:
        return 0.0
    z = stats.norm.ppf(1 - alpha / 2)
    return float(stats.norm.sf((z * se0 - effect) / se1) + stats.norm.cdf((-z * se0 - effect) / se1))


def simulate(metric: str, c: Cohort, allocation: dict[str, float], control: str, arm: str, mde: float,
             alpha: float, simulations: int, seed: int) -> tuple[float, str]:
    """Randomise the cohort by the allocation, move the treated units' metric by `mde` in its good
    direction, run the analysis's estimator on the arms' sums; the share of simulated pilots
    significant in the good direction, and how the change was injected."""
    rng = np.random.default_rng(seed)
    names = [k for k, w in allocation.items() if w > 0]
    edges = np.cumsum([allocation[k] for k in names]) / sum(allocation[k] for k in names)
    config = InferenceConfig(alpha=alpha)
    at_c, at_t = names.index(control), names.index(arm)
    cols = columns(metric, c)
    value = METRIC_SOURCES[metric][0]
    sign = 1.0 if good(metric, 1) > 0 else -1.0
    lift = 1 + sign * mde
    pairs = [(a, b) for i, a in enumerate(cols) for b in list(cols)[i:]]
    proportion = CATALOGUE[metric].kind == "proportion"
    base = float(cols[value].mean())
    flip = min(base * mde / (1 - base), 1.0) if proportion and base < 1 else 0.0
    weights = {**cols, **{product_key(a, b): cols[a] * cols[b] for a, b in pairs}}
    hits = 0
    for _ in range(simulations):
        arms = np.searchsorted(edges, rng.random(len(c)), side="right")
        if proportion:  # the treated non-buyers become buyers with the chance that lifts the share by mde
            units = np.where((arms == at_t) & (cols[value] == 0) & (rng.random(len(c)) < flip), 1.0, cols[value])
            weights = {value: units, product_key(value, value): units}
        n = np.bincount(arms, minlength=len(names))
        sums = {k: np.bincount(arms, weights=w, minlength=len(names)) for k, w in weights.items()}
        exponent = {k: 0 if proportion else k.split("*").count(value) for k in sums}  # the treated sums' lift
        control = {"n": float(n[at_c]), **{k: float(v[at_c]) for k, v in sums.items()}}
        treated = {"n": float(n[at_t]), **{k: float(v[at_t]) * lift ** exponent[k] for k, v in sums.items()}}
        result, _ = metric_effect(metric, control, treated, config)
        hits += bool(result.ok and result.p_value < alpha and good(metric, result.effect_abs) > 0)
    how = (f"treated non-buyers turned buyers with chance {flip:.4g} (the share × (1 + {mde:g}))" if proportion
           else f"treated units' {value} × {lift:g}")
    return hits / simulations, how
