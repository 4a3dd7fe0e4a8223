"""Design a pilot before it starts: from the retailer's own history before the planned start, the
eligible units, the baseline, CUPED's variance reduction, the store-level spread, the power curve
over 1–16 weeks, the MDE at the planned end, power by simulation on historical windows (the
GeoLift way) with the estimator and decision rule the analysis runs, and — when the design cannot
see the MDE — the alternatives in plain words. Every figure carries the assumptions it rests on.

Customer pilots are planned for the CUPED test (experiments.cuped) on the metric summed over the
window, with the 56-day pre-period as covariate, as pilot.aggregation and pilot.effects compute it.
Durations other than the observed window follow a variance-components model: a unit's metric over d
weeks has a persistent part (its rate, variance ∝ d²) and a purchase-noise part (∝ d), read from
the window as Σ amount² per unit; the covariance with the pre-period grows ∝ d. Store pilots are
planned for the store decision test (pilot.store_power).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy.orm import Session

from experiments.cuped import cuped
from experiments.power import mde_means, power_t
from experiments.results import InferenceConfig
from experiments.statistics import RegressionAdjustedStatistic
from pilot import plan_history, rollout, store_power
from pilot.db import utcnow
from pilot.errors import Conflict, Invalid
from pilot.models import Pilot, Stage
from pilot.programmes import get_programme
from pilot.result_rows import clean
from pilot.store_randomisation import PRE_DAYS

CURVE_WEEKS = range(1, 17)
DEFAULT_WEEKS = 8
DEFAULT_HISTORY_WEEKS = 8
DEFAULT_SIMULATIONS = 200
PLANNED_METRICS = {"spend_per_customer": "spend", "visits_per_customer": "visits"}
STORE_METRICS = {"spend_per_customer"}  # the store simulation reads the stores' sales
# mechanics given at the counter to everyone in a store: they cannot be randomised per customer
STORE_WIDE_MECHANICS = frozenset({"preferred_service"})
SIMULATION_WINDOWS = 8  # extra weekly offsets of the historical window the store simulation slides over


@dataclass(frozen=True)
class PlanSettings:
    """What a plan is computed for: the pilot's design, its scope and the planning horizon."""

    unit: str
    primary_metric: str
    alpha: float
    power: float
    mde: float
    allocation: dict[str, float]
    control: str
    mechanics: dict[str, str]
    stores: list[tuple[int, str, str]]  # (id, code, region) in scope
    groups: list[str] | None
    start: datetime
    weeks: int = DEFAULT_WEEKS
    history_weeks: int = DEFAULT_HISTORY_WEEKS
    simulations: int = DEFAULT_SIMULATIONS
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def arm(self) -> str:
        """The treatment planned for: the one with the smallest weight (the hardest comparison)."""
        arms = [k for k, w in self.allocation.items() if w > 0 and k != self.control]
        return min(arms, key=lambda k: (self.allocation[k], k))

    @property
    def shares(self) -> tuple[float, float]:
        """Control's and the planned arm's share of all units."""
        total = sum(w for w in self.allocation.values() if w > 0)
        return self.allocation[self.control] / total, self.allocation[self.arm] / total


def plan(session: Session, s: PlanSettings) -> dict[str, Any]:
    """The plan of a customer or store pilot, as plain data with its assumptions."""
    if s.primary_metric not in PLANNED_METRICS or (s.unit == "store" and s.primary_metric not in STORE_METRICS):
        allowed = sorted(STORE_METRICS if s.unit == "store" else PLANNED_METRICS)
        raise Invalid(f"The planner plans {', '.join(allowed)} for {s.unit} pilots, not {s.primary_metric}.",
                      code="metric_not_planned", details={"fields": {"primary_metric": [
                          f"One of {', '.join(allowed)} for the planner."]}})
    if not s.stores:
        raise Invalid("The scope holds no stores.", details={"fields": {"stages": ["No stores in scope."]}})
    started = time.perf_counter()
    c = plan_history.cohort(session, [i for i, _, _ in s.stores], s.groups, s.start, s.weeks, s.history_weeks,
                            PRE_DAYS, PLANNED_METRICS[s.primary_metric])
    if len(c.y) < 4 or not c.y.mean() > 0:
        raise Conflict(f"Too little history before {s.start:%Y-%m-%d} in the pilot's scope: {len(c.y)} eligible "
                       f"customers were active in the {s.history_weeks} weeks before {c.window_start:%Y-%m-%d}.",
                       code="too_little_history")
    read = time.perf_counter()
    model = CustomerModel.of(c, s.weeks)
    # a store pilot's customer figures are the alternative "randomise customers in the same stores": analytic only
    customer = customer_plan(s if s.unit == "customer" else replace(s, simulations=0), c, model)
    out = {"unit": s.unit, "primary_metric": s.primary_metric, "arm": s.arm, "control": s.control,
           "target_mde_rel": s.mde, "alpha": s.alpha, "power": s.power, "weeks": s.weeks,
           "start": s.start.isoformat(), "eligible": _eligible(s, c), "baseline": model.baseline(s, c)}
    if s.unit == "customer":
        out.update(customer)
    else:
        out.update(store_plan(session, s, c, model, customer))
    out["assumptions"] = assumptions(s, c) + s.notes
    out["timings"] = {"history_s": round(read - started, 3), "compute_s": round(time.perf_counter() - read, 3)}
    return clean(out)


@dataclass(frozen=True)
class CustomerModel:
    """Per-unit moments of the historical window (w weeks) and how they scale to d weeks."""

    weeks: int
    mean: float
    var: float
    within: float  # the purchase-noise part of var (mean Σ amount² per unit; visits: mean visits)
    cov: float  # with the pre-period covariate
    var_x: float

    @classmethod
    def of(cls, c: plan_history.Cohort, weeks: int) -> CustomerModel:
        var_x = float(c.x.var(ddof=1)) if len(c.x) > 1 else 0.0
        cov = float(np.cov(c.x, c.y)[0, 1]) if var_x > 0 else 0.0
        return cls(weeks, float(c.y.mean()), float(c.y.var(ddof=1)), float(c.within.mean()), cov, var_x)

    def at(self, d: float) -> tuple[float, float, float]:
        """(mean, variance, correlation²) of the metric over d weeks."""
        k = d / self.weeks
        persistent = max(self.var - self.within, 0.0)
        var = persistent * k * k + min(self.within, self.var) * k
        rho2 = min((self.cov * k) ** 2 / (self.var_x * var), 1.0) if self.var_x > 0 and var > 0 else 0.0
        return self.mean * k, var, rho2

    def mde(self, d: float, n: float, s: PlanSettings, cuped_on: bool = True) -> float:
        """The relative MDE of CUPED (or the plain t-test) over d weeks with n units."""
        mean, var, rho2 = self.at(d)
        sd = math.sqrt(var * (1 - rho2 if cuped_on else 1.0))
        n_c, n_t = n * s.shares[0], n * s.shares[1]
        if n_c < 2 or n_t < 2 or not sd > 0 or not mean > 0:
            return math.inf
        return mde_means(sd, n_c, n_t, s.power, s.alpha) / mean

    def power(self, d: float, n: float, s: PlanSettings) -> float:
        """The power of CUPED to see the target MDE over d weeks with n units."""
        mean, var, rho2 = self.at(d)
        sd = math.sqrt(var * (1 - rho2))
        n_c, n_t = n * s.shares[0], n * s.shares[1]
        if n_c < 2 or n_t < 2 or not sd > 0:
            return 0.0
        return power_t(s.mde * mean / sd, n_c, n_t / n_c, s.alpha)

    def baseline(self, s: PlanSettings, c: plan_history.Cohort) -> dict[str, Any]:
        rho2 = self.at(self.weeks)[2]
        return {"mean": self.mean, "sd": math.sqrt(self.var), "pre_post_correlation": math.copysign(math.sqrt(rho2),
                                                                                                   self.cov),
                "cuped_variance_reduction": rho2, "units": len(c.y),
                "assumptions": {"window_start": c.window_start.isoformat(), "window_weeks": self.weeks,
                                "pre_period_start": c.pre_start.isoformat(), "pre_period_days": PRE_DAYS,
                                "metric": s.primary_metric, "per": "customer, summed over the window",
                                "purchase_noise_share": min(self.within / self.var, 1.0) if self.var > 0 else None}}


def _eligible(s: PlanSettings, c: plan_history.Cohort) -> dict[str, Any]:
    return {"customers": c.eligible_now, "new_per_week": c.new_per_week, "stores": len(s.stores),
            "assumptions": {"active_weeks": s.history_weeks, "groups": s.groups, "before": s.start.isoformat(),
                            "definition": f"customers of the eligible groups whose home store is in scope and who "
                                          f"bought in the scope's stores in the {s.history_weeks} weeks before the "
                                          f"start; new: active then but not in the {s.history_weeks} weeks before"}}


def customer_plan(s: PlanSettings, c: plan_history.Cohort, model: CustomerModel) -> dict[str, Any]:
    """Analytic CUPED power curve and MDE for the eligible customers, and power simulated on the window."""
    n = c.eligible_now
    curve = [{"weeks": d, "power": model.power(d, n, s), "mde_rel": _finite(model.mde(d, n, s))} for d in CURVE_WEEKS]
    mde = model.mde(s.weeks, n, s)
    simulated = simulate_customers(s, c)
    out = {"method": "cuped", "power_curve": curve,
           "analytic": {"power": model.power(s.weeks, n, s), "mde_rel": _finite(mde),
                        "mde_rel_without_cuped": _finite(model.mde(s.weeks, n, s, cuped_on=False)),
                        "assumptions": {"units": n, "shares": list(s.shares), "weeks": s.weeks,
                                        "sd": math.sqrt(model.var), "cuped_variance_reduction": model.at(s.weeks)[2],
                                        "test": "Welch t on CUPED-adjusted values, two-sided"}},
           "simulated": simulated}
    out["powered"] = bool(mde <= s.mde)
    out["alternatives"], out["message"] = customer_alternatives(s, model, n, mde, curve)
    return out


def simulate_customers(s: PlanSettings, c: plan_history.Cohort) -> dict[str, Any]:
    """Randomise the window's cohort by the allocation, lift the treated units' metric by the target
    MDE, run CUPED; the share of simulated pilots significant and positive."""
    if s.simulations < 1:
        return {"power": None, "simulations": 0}
    rng = np.random.default_rng(s.seed)
    names = [k for k, w in s.allocation.items() if w > 0]
    edges = np.cumsum([s.allocation[k] for k in names]) / sum(s.allocation[k] for k in names)
    config = InferenceConfig(alpha=s.alpha)
    control, arm = names.index(s.control), names.index(s.arm)
    lift = 1 + s.mde
    columns = (c.y, c.y * c.y, c.x, c.x * c.x, c.x * c.y)
    hits = 0
    for _ in range(s.simulations):
        arms = np.searchsorted(edges, rng.random(len(c.y)), side="right")
        n = np.bincount(arms, minlength=len(names))
        sums = [np.bincount(arms, weights=v, minlength=len(names)) for v in columns]
        stat_c = RegressionAdjustedStatistic(int(n[control]), *(float(v[control]) for v in sums))
        y, yy, x, xx, xy = (float(v[arm]) for v in sums)
        stat_t = RegressionAdjustedStatistic(int(n[arm]), y * lift, yy * lift**2, x, xx, xy * lift)
        result = cuped(stat_c, stat_t, config).effect
        hits += bool(result.ok and result.p_value < s.alpha and result.effect_abs > 0)
    return {"power": hits / s.simulations, "simulations": s.simulations,
            "assumptions": {"units": len(c.y), "window_start": c.window_start.isoformat(), "weeks": s.weeks,
                            "injected": f"treated units' {s.primary_metric} × (1 + {s.mde:g})",
                            "decision": f"CUPED p < {s.alpha:g} and effect > 0", "seed": s.seed}}


def customer_alternatives(s: PlanSettings, model: CustomerModel, n: int, mde: float,
                          curve: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """When underpowered: more weeks, more units (scope), a larger MDE — each with its MDE."""
    if mde <= s.mde:
        return [], (f"With {n:,} eligible customers the smallest effect this pilot can detect in {s.weeks} weeks is "
                    f"{_pct(mde)}, within the target {_pct(s.mde)}.")
    out = []
    enough = next((p["weeks"] for p in curve if p["mde_rel"] is not None and p["mde_rel"] <= s.mde), None)
    out.append({"kind": "more_weeks", "weeks": enough or CURVE_WEEKS[-1],
                "mde_rel": _finite(model.mde(enough or CURVE_WEEKS[-1], n, s)),
                "message": f"Running {enough} weeks detects {_pct(s.mde)}." if enough else
                f"Even {CURVE_WEEKS[-1]} weeks detect only {_pct(model.mde(CURVE_WEEKS[-1], n, s))}: the same "
                f"customers buy longer, the sample does not grow."})
    ratio = (mde / s.mde) ** 2
    out.append({"kind": "more_units", "units": math.ceil(n * ratio), "mde_rel": s.mde,
                "message": f"About {math.ceil(n * ratio):,} eligible customers ({ratio:.1f}× the scope: more stores "
                           f"or regions, or more customer groups) detect {_pct(s.mde)} in {s.weeks} weeks."})
    out.append({"kind": "larger_mde", "mde_rel": _finite(mde),
                "message": f"Or accept a larger MDE: {_pct(mde)} in {s.weeks} weeks."})
    return out, (f"With {n:,} eligible customers the smallest effect you can detect in {s.weeks} weeks is "
                 f"{_pct(mde)}, above the target {_pct(s.mde)}. " + " ".join(a["message"] for a in out))


def store_plan(session: Session, s: PlanSettings, c: plan_history.Cohort, model: CustomerModel,
               customer: dict[str, Any]) -> dict[str, Any]:
    """The store-level spread, ICC and design effect, the analytic and simulated MDE of the store
    decision test, and the customer-level alternative in the same stores."""
    weeks_needed = 2 * max(max(CURVE_WEEKS), s.weeks) + SIMULATION_WINDOWS
    history = plan_history.store_history(session, s.stores, s.start, weeks_needed)
    short = _trim(history)
    spans = store_power.windows(short, s.weeks)
    share = s.shares[1] / (s.shares[0] + s.shares[1])
    if not spans:
        raise Conflict(f"The stores' history before {s.start:%Y-%m-%d} holds less than {2 * s.weeks} weeks "
                       f"({short.weekly.shape[1]}): a store pilot of {s.weeks} weeks cannot be simulated.",
                       code="too_little_history")
    post, pre, _ = spans[0]
    analytic = store_power.analytic(post, pre, share, s.power, s.alpha)
    curve = []
    for d in CURVE_WEEKS:
        w = store_power.windows(short, d)
        a = store_power.analytic(w[0][0], w[0][1], share, s.power, s.alpha) if w else None
        curve.append({"weeks": d, "mde_rel": _finite(a["mde"]) if a else None,
                      "power": _store_power(a, s) if a else None})
    sim = store_power.simulate(short, s.allocation, s.control, s.arm, s.weeks, s.mde, s.power, s.alpha,
                               s.simulations, s.seed) if s.simulations > 0 else None
    icc = _icc(c)
    m = len(c.y) / max(len(set(c.store.tolist())), 1)
    simulated = None if sim is None else {
        "mde_rel": _finite(sim.mde), "power": sim.power_at_target, "mde_rel_cr2_alone": _finite(sim.mde_cr2),
        "simulations": sim.simulations, "cannot_be_significant": bool(sim.min_p_value > s.alpha),
        "min_p_value": sim.min_p_value,
        "assumptions": {"windows": sim.windows, "stores": sim.stores, "weeks": s.weeks, "seed": s.seed,
                        "injected": "treated stores' daily sales × (1 + δ)",
                        "decision": "ANCOVA with CR2 errors and Bell–McCaffrey df, and the randomisation test over "
                                    "the matched scheme; significant only when both are",
                        "randomisation": "exhaustive" if sim.exhaustive else
                        f"Monte Carlo, {store_power.SIM_DRAWS:,} draws per simulated pilot"}}
    mde = sim.mde if sim is not None else analytic["mde"]
    out = {"method": "store_decision", "power_curve": curve,
           "store_level": {"stores": len(s.stores), "sd_change_rel": analytic["sd_change_rel"],
                           "residual_sd_rel": analytic["residual_sd_rel"], "icc": icc,
                           "customers_per_store": m, "design_effect": 1 + (m - 1) * icc if icc == icc else None,
                           "assumptions": {"weeks": s.weeks, "stores": len(s.stores),
                                           "history_weeks": short.weekly.shape[1],
                                           "variance": "between stores, of the daily sales in the window given the "
                                                       "window before (ANCOVA residual)"}},
           "analytic": {"mde_rel": _finite(analytic["mde"]), "power": _store_power(analytic, s),
                        "assumptions": {"stores": analytic["stores"], "df": analytic["stores"] - 3,
                                        "share_treated": share}},
           "simulated": simulated, "powered": bool(mde <= s.mde)}
    out["alternatives"], out["message"] = store_alternatives(s, mde, analytic, sim, model, c, customer)
    return out


def _trim(history: store_power.StoreHistory) -> store_power.StoreHistory:
    """The weeks since the first week any store in scope sold something (no simulated window on empty weeks)."""
    sold = np.flatnonzero(history.weekly.sum(axis=0) > 0)
    first = int(sold[0]) + 1 if len(sold) else history.weekly.shape[1]  # the first week may be partial
    return store_power.StoreHistory(history.codes, history.regions, history.weekly[:, first:])


def _store_power(a: dict[str, Any], s: PlanSettings) -> float | None:
    """The analytic power of the store ANCOVA to see the target MDE (noncentral t, df = stores − 3)."""
    df = a["stores"] - 3
    if df < 1 or not math.isfinite(a["mde"]):
        return None
    multiplier = stats.t.ppf(1 - s.alpha / 2, df) + stats.t.ppf(s.power, df)
    nc = s.mde / (a["mde"] / multiplier)
    return float(stats.nct.sf(stats.t.ppf(1 - s.alpha / 2, df), df, nc))


def _icc(c: plan_history.Cohort) -> float:
    """The intra-store correlation of the customers' metric (one-way ANOVA estimator)."""
    stores, inverse, counts = np.unique(c.store, return_inverse=True, return_counts=True)
    k, n = len(stores), len(c.y)
    if k < 2 or n <= k:
        return math.nan
    means = np.bincount(inverse, weights=c.y) / counts
    between = float((counts * (means - c.y.mean()) ** 2).sum()) / (k - 1)
    within = float(((c.y - means[inverse]) ** 2).sum()) / (n - k)
    m0 = (n - (counts**2).sum() / n) / (k - 1)
    return max((between - within) / (between + (m0 - 1) * within), 0.0)


def store_alternatives(s: PlanSettings, mde: float, analytic: dict[str, Any], sim, model: CustomerModel,
                       c: plan_history.Cohort, customer: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """More weeks, more stores, customer randomisation in the same stores, a larger MDE — in plain words."""
    n_stores = len(s.stores)
    seen = (f"With these {n_stores} stores the smallest effect you can detect in {s.weeks} weeks is {_pct(mde)}"
            if math.isfinite(mde) else f"With these {n_stores} stores the store decision test cannot reach "
            f"significance at α = {s.alpha:g} in any number of weeks (its randomisation test has too few assignments)")
    if mde <= s.mde:
        return [], f"{seen}, within the target {_pct(s.mde)}."
    out = []
    base = mde if math.isfinite(mde) else analytic["mde"]
    needed = store_power.stores_needed(base, n_stores, s.mde, s.alpha)
    if needed:
        out.append({"kind": "more_stores", "stores": needed, "mde_rel": s.mde,
                    "message": f"About {needed} stores in matched pairs detect {_pct(s.mde)}."})
    customers = c.eligible_now
    per_customer = [k for k in s.allocation if k != s.control and s.mechanics.get(k) in STORE_WIDE_MECHANICS]
    if not per_customer:
        fit = next((p for p in customer["power_curve"] if p["mde_rel"] is not None and p["mde_rel"] <= s.mde), None)
        d = fit["weeks"] if fit else s.weeks
        cm = model.mde(d, customers, s)
        out.append({"kind": "customer_randomisation", "weeks": d, "mde_rel": _finite(cm), "units": customers,
                    "message": f"Randomising customers within the same stores detects {_pct(cm)} in {d} weeks."})
    out.append({"kind": "larger_mde", "mde_rel": _finite(mde),
                "message": f"Or accept a larger MDE: {_pct(mde)} in {s.weeks} weeks." if math.isfinite(mde) else
                "No MDE is detectable with this design: add stores."})
    return out, f"{seen}. " + " ".join(a["message"] for a in out)


def assumptions(s: PlanSettings, c: plan_history.Cohort) -> list[str]:
    """The plan's assumptions in plain words."""
    out = [f"History: transactions before {s.start:%Y-%m-%d}; the pilot's stand-in window is the {s.weeks} weeks "
           f"from {c.window_start:%Y-%m-%d}, its pre-period the {PRE_DAYS} days before that.",
           f"Units: customers of the eligible groups active in the {s.history_weeks} weeks before the start; "
           f"{c.new_per_week:,.1f} new ones a week are not counted (they have a shorter exposure).",
           f"Planned for {s.arm} against {s.control} at α = {s.alpha:g} (two-sided) and power {s.power:g}, "
           "without multiplicity adjustment for other arms or guardrails.",
           "Durations other than the window: a unit's rate persists (variance ∝ weeks²), purchases are "
           "Poisson noise around it (∝ weeks); seasonality is not modelled."]
    if c.first_transaction is not None and c.first_transaction > c.pre_start:
        out.append(f"The history starts {c.first_transaction:%Y-%m-%d}, inside the pre-period: the covariate "
                   "is partial and CUPED's reduction understated.")
    if s.unit == "store":
        out.append("Store pilots: the store is the unit; the stores' weekly sales over the history, windows "
                   "slid week by week; the matched scheme as the pilot will draw it.")
    return out


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _pct(value: float) -> str:
    if not math.isfinite(value):
        return "not reachable"
    return f"{value:.1%}" if value < 0.1 else f"{value:.0%}"


def settings_for(session: Session, programme, unit: str, design: dict[str, Any], stage: Stage,
                 start: datetime | None, options: dict[str, Any]) -> PlanSettings:
    """The settings of a plan for `stage` of a pilot `design` (alpha, power, mde, primary_metric)."""
    mechanics = {v.key: v.mechanic for v in programme.variants}
    control = next(k for k, w in stage.allocation.items() if w > 0 and mechanics[k] == "control")
    if not any(w > 0 and k != control for k, w in stage.allocation.items()):
        raise Invalid("The stage has no treatment arm with weight > 0.",
                      details={"fields": {"stages": ["Needs a treatment arm."]}})
    stores = [(st.id, st.code, st.region.code) for st in rollout.scope_stores(session, stage)]
    when = start or (datetime.combine(stage.planned_start, datetime.min.time(), UTC) if stage.planned_start
                     else utcnow())
    weeks = options.get("weeks") or _planned_weeks(stage) or DEFAULT_WEEKS
    return PlanSettings(unit=unit, primary_metric=design["primary_metric"], alpha=design["alpha"],
                        power=design["power"], mde=design["mde"], allocation=dict(stage.allocation), control=control,
                        mechanics=mechanics, stores=stores, groups=stage.eligible_groups, start=when, weeks=weeks,
                        history_weeks=options.get("history_weeks") or DEFAULT_HISTORY_WEEKS,
                        simulations=options.get("simulations", DEFAULT_SIMULATIONS), seed=options.get("seed", 0))


def _planned_weeks(stage: Stage) -> int | None:
    if stage.planned_start and stage.planned_end:
        return max(1, min(52, round((stage.planned_end - stage.planned_start).days / 7)))
    return None


def plan_config(session: Session, data: dict[str, Any]) -> dict[str, Any]:
    """The plan of a pilot configuration that is not saved (the body of POST /pilots/plan)."""
    programme = get_programme(session, data["programme"])
    position = data.get("stage") or 1
    if position > len(data["stages"]):
        raise Invalid(f"There is no stage {position}.", details={"fields": {"stage": ["No such stage."]}})
    stage = rollout.checked_stage(session, programme, dict(data["stages"][position - 1]), position, data["unit"])
    return plan(session, settings_for(session, programme, data["unit"], data, stage, data.get("start"), data))


def plan_pilot(session: Session, pilot: Pilot, options: dict[str, Any]) -> dict[str, Any]:
    """The plan of a saved pilot's current stage (its first while a draft), from the history before its start."""
    stage = pilot.stage(options.get("stage") or pilot.current_stage or 1)
    if stage is None:
        raise Invalid(f"Pilot {pilot.key!r} has no stage {options.get('stage')}.",
                      details={"fields": {"stage": ["No such stage."]}})
    design = {"primary_metric": pilot.primary_metric, "alpha": pilot.alpha, "power": pilot.power, "mde": pilot.mde}
    out = plan(session, settings_for(session, pilot.programme, pilot.unit, design, stage,
                                     stage.started_at or pilot.started_at, options))
    return {"pilot": pilot.key, "stage": stage.position, **out}
