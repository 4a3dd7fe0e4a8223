"""Design a pilot before it starts: from the retailer's own history before the planned start, the
eligible units, the baseline, CUPED's variance reduction, the store-level spread, the power curve
over 1–16 weeks, the MDE at the planned end, power by simulation on historical windows (the
GeoLift way) with the estimator and decision rule the analysis runs, and — when the design cannot
see the MDE — the alternatives in plain words. Every figure carries the assumptions it rests on.

Customer pilots are planned for the test the analysis runs on the primary metric (pilot.effects:
CUPED, Welch, the two-proportion z-test or the ratio's delta method, with the 56-day pre-period as
covariate where it takes one), each metric modelled by pilot.plan_metrics, durations too. Store
pilots are planned for the store decision test (pilot.store_power).
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

from pilot import plan_history, rollout, store_power
from pilot.aggregation import METRIC_SOURCES
from pilot.db import utcnow
from pilot.errors import Conflict, Invalid
from pilot.metrics import CATALOGUE
from pilot.models import Pilot, Stage
from pilot.plan_metrics import UnitModel, simulate
from pilot.programmes import get_programme
from pilot.result_rows import clean
from pilot.store_randomisation import PRE_DAYS

CURVE_WEEKS = range(1, 17)
DEFAULT_WEEKS = 8
DEFAULT_HISTORY_WEEKS = 8
DEFAULT_SIMULATIONS = 200
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
    if s.primary_metric not in CATALOGUE or (s.unit == "store" and s.primary_metric not in STORE_METRICS):
        allowed = sorted(STORE_METRICS if s.unit == "store" else CATALOGUE)
        raise Invalid(f"The planner plans {', '.join(allowed)} for {s.unit} pilots, not {s.primary_metric}.",
                      code="metric_not_planned", details={"fields": {"primary_metric": [
                          f"One of {', '.join(allowed)} for the planner."]}})
    if not s.stores:
        raise Invalid("The scope holds no stores.", details={"fields": {"stages": ["No stores in scope."]}})
    started = time.perf_counter()
    c = plan_history.cohort(session, [i for i, _, _ in s.stores], s.groups, s.start, s.weeks, s.history_weeks,
                            PRE_DAYS, s.primary_metric)
    if len(c) < 4:
        raise Conflict(f"Too little history before {s.start:%Y-%m-%d} in the pilot's scope: {len(c)} eligible "
                       f"customers were active in the {s.history_weeks} weeks before {c.window_start:%Y-%m-%d}.",
                       code="too_little_history")
    read = time.perf_counter()
    model = UnitModel.of(s.primary_metric, c, s.weeks)
    if not model.mean > 0:
        raise Conflict(f"The history before {s.start:%Y-%m-%d} has no {s.primary_metric} in the pilot's scope (its "
                       f"baseline over the {s.weeks} weeks from {c.window_start:%Y-%m-%d} is 0): a relative MDE "
                       "of it cannot be planned.", code="no_baseline")
    # a store pilot's customer figures are the alternative "randomise customers in the same stores": analytic only
    customer = customer_plan(s if s.unit == "customer" else replace(s, simulations=0), c, model)
    out = {"unit": s.unit, "primary_metric": s.primary_metric, "arm": s.arm, "control": s.control,
           "target_mde_rel": s.mde, "alpha": s.alpha, "power": s.power, "weeks": s.weeks,
           "start": s.start.isoformat(), "eligible": _eligible(s, c), "baseline": _baseline(s, c, model)}
    if s.unit == "customer":
        out.update(customer)
    else:
        out.update(store_plan(session, s, c, model, customer))
    out["assumptions"] = assumptions(s, c) + s.notes
    out["timings"] = {"history_s": round(read - started, 3), "compute_s": round(time.perf_counter() - read, 3)}
    return clean(out)


def _baseline(s: PlanSettings, c: plan_history.Cohort, model: UnitModel) -> dict[str, Any]:
    kind = CATALOGUE[s.primary_metric].kind
    per = {"mean": "customer, summed over the window", "proportion": "customer: 1 or 0 over the window",
           "ratio": "customer: the ratio's linearisation (m − R·d) / mean(d), its delta-method variance"}[kind]
    return {**model.baseline(), "units": len(c),
            "assumptions": {"window_start": c.window_start.isoformat(), "window_weeks": model.weeks,
                            "pre_period_start": c.pre_start.isoformat(), "pre_period_days": PRE_DAYS,
                            "metric": s.primary_metric, "kind": kind, "per": per,
                            "covariate": _covariate(s.primary_metric) if model.covariate else None,
                            "purchase_noise_share": min(model.within / model.var, 1.0)
                            if model.var > 0 and kind != "proportion" else None}}


def _covariate(metric: str) -> str:
    value, other = METRIC_SOURCES[metric]
    return f"pre_{value} / pre_{other}" if CATALOGUE[metric].kind == "ratio" else other


def _eligible(s: PlanSettings, c: plan_history.Cohort) -> dict[str, Any]:
    return {"customers": c.eligible_now, "new_per_week": c.new_per_week, "stores": len(s.stores),
            "assumptions": {"active_weeks": s.history_weeks, "groups": s.groups, "before": s.start.isoformat(),
                            "definition": f"customers of the eligible groups whose home store is in scope and who "
                                          f"bought in the scope's stores in the {s.history_weeks} weeks before the "
                                          f"start; new: active then but not in the {s.history_weeks} weeks before"}}


TESTS = {"cuped": "Welch t on CUPED-adjusted values", "welch": "Welch t", "two_proportion_z": "pooled z",
         "ratio_cuped": "z on the delta-method ratio, CUPED-adjusted by the pre-period ratio",
         "ratio_delta": "z on the delta-method ratio"}


def _mde(model: UnitModel, d: float, n: float, s: PlanSettings, cuped_on: bool = True) -> float:
    return model.mde(d, n, s.shares, s.power, s.alpha, cuped_on)


def customer_plan(s: PlanSettings, c: plan_history.Cohort, model: UnitModel) -> dict[str, Any]:
    """The analysis's power curve and MDE for the eligible customers, and power simulated on the window."""
    n = c.eligible_now
    curve = [{"weeks": d, "power": model.power(d, n, s.shares, s.mde, s.alpha),
              "mde_rel": _finite(_mde(model, d, n, s))} for d in CURVE_WEEKS]
    mde = _mde(model, s.weeks, n, s)
    name = model.baseline()["method"]
    out = {"method": name, "power_curve": curve,
           "analytic": {"power": model.power(s.weeks, n, s.shares, s.mde, s.alpha), "mde_rel": _finite(mde),
                        "mde_rel_without_cuped": _finite(_mde(model, s.weeks, n, s, cuped_on=False)),
                        "assumptions": {"units": n, "shares": list(s.shares), "weeks": s.weeks,
                                        "mean": model.at(s.weeks)[0], "sd": math.sqrt(model.at(s.weeks)[1]),
                                        "cuped_variance_reduction": model.at(s.weeks)[2],
                                        "test": f"{TESTS[name]}, two-sided"}},
           "simulated": simulate_customers(s, c)}
    out["powered"] = bool(mde <= s.mde)
    out["alternatives"], out["message"] = customer_alternatives(s, model, n, mde, curve)
    return out


def simulate_customers(s: PlanSettings, c: plan_history.Cohort) -> dict[str, Any]:
    """Randomise the window's cohort by the allocation, move the treated units' metric by the target MDE,
    run the analysis's test (pilot.plan_metrics.simulate); the share of simulated pilots that see it."""
    if s.simulations < 1:
        return {"power": None, "simulations": 0}
    power, injected = simulate(s.primary_metric, c, s.allocation, s.control, s.arm, s.mde, s.alpha, s.simulations,
                               s.seed)
    return {"power": power, "simulations": s.simulations,
            "assumptions": {"units": len(c), "window_start": c.window_start.isoformat(), "weeks": s.weeks,
                            "injected": injected, "seed": s.seed,
                            "decision": f"the analysis's test p < {s.alpha:g}, the effect in the good direction"}}


def customer_alternatives(s: PlanSettings, model: UnitModel, n: int, mde: float,
                          curve: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """When underpowered: more weeks, more units (scope), a larger MDE — each with its MDE."""
    if mde <= s.mde:
        return [], (f"With {n:,} eligible customers the smallest effect this pilot can detect in {s.weeks} weeks is "
                    f"{_pct(mde)}, within the target {_pct(s.mde)}.")
    out = []
    enough = next((p["weeks"] for p in curve if p["mde_rel"] is not None and p["mde_rel"] <= s.mde), None)
    out.append({"kind": "more_weeks", "weeks": enough or CURVE_WEEKS[-1],
                "mde_rel": _finite(_mde(model, enough or CURVE_WEEKS[-1], n, s)),
                "message": f"Running {enough} weeks detects {_pct(s.mde)}." if enough else
                f"Even {CURVE_WEEKS[-1]} weeks detect only {_pct(_mde(model, CURVE_WEEKS[-1], n, s))}: the same "
                f"customers buy longer, the sample does not grow."})
    if not math.isfinite(out[0]["mde_rel"] or math.inf):
        out[0]["message"] = f"Even {CURVE_WEEKS[-1]} weeks cannot detect {_pct(s.mde)} with {n:,} customers."
    units = _units_needed(model, n, s)
    out.append({"kind": "more_units", "units": units, "mde_rel": s.mde if units else None,
                "message": f"About {units:,} eligible customers ({units / n:.1f}× the scope: more stores or regions, "
                           f"or more customer groups) detect {_pct(s.mde)} in {s.weeks} weeks." if units else
                f"No number of customers detects {_pct(s.mde)} in {s.weeks} weeks: the baseline "
                f"{model.at(s.weeks)[0]:.1%} leaves no room for it."})
    if math.isfinite(mde):
        out.append({"kind": "larger_mde", "mde_rel": _finite(mde),
                    "message": f"Or accept a larger MDE: {_pct(mde)} in {s.weeks} weeks."})
    share = model.at(s.weeks)[0]
    seen = (f"the smallest effect you can detect in {s.weeks} weeks is {_pct(mde)}, above the target {_pct(s.mde)}"
            if math.isfinite(mde) else f"no effect on {s.primary_metric} is detectable in {s.weeks} weeks" + (
                f": its baseline is {share:.1%} already, so it can rise by at most {(1 - share) / share:.1%}"
                if model.kind == "proportion" else ""))
    return out, f"With {n:,} eligible customers {seen}. " + " ".join(a["message"] for a in out)


def _units_needed(model: UnitModel, n: int, s: PlanSettings, most: float = 1e9) -> int | None:
    """The fewest eligible customers whose MDE over the planned weeks is the target (None: none up to `most`)."""
    def short(units: float) -> bool:
        return _mde(model, s.weeks, units, s) > s.mde
    low, high = float(n), 2.0 * n
    while short(high):
        low, high = high, high * 2
        if high > most:
            return None
    while high - low > max(1.0, low * 1e-4):
        mid = (low + high) / 2
        low, high = (mid, high) if short(mid) else (low, mid)
    return math.ceil(high)


def store_plan(session: Session, s: PlanSettings, c: plan_history.Cohort, model: UnitModel,
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
    icc = _icc(c, model.y)
    m = len(c) / max(len(set(c.store.tolist())), 1)
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


def _icc(c: plan_history.Cohort, y: np.ndarray) -> float:
    """The intra-store correlation of the customers' metric `y` (one-way ANOVA estimator)."""
    stores, inverse, counts = np.unique(c.store, return_inverse=True, return_counts=True)
    k, n = len(stores), len(y)
    if k < 2 or n <= k:
        return math.nan
    means = np.bincount(inverse, weights=y) / counts
    between = float((counts * (means - y.mean()) ** 2).sum()) / (k - 1)
    within = float(((y - means[inverse]) ** 2).sum()) / (n - k)
    m0 = (n - (counts**2).sum() / n) / (k - 1)
    return max((between - within) / (between + (m0 - 1) * within), 0.0)


def store_alternatives(s: PlanSettings, mde: float, analytic: dict[str, Any], sim, model: UnitModel,
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
                    "message": f"About {needed:,} stores in matched pairs detect {_pct(s.mde)} (the scope has "
                               f"{n_stores})."})
    customers = c.eligible_now
    per_customer = [k for k in s.allocation if k != s.control and s.mechanics.get(k) in STORE_WIDE_MECHANICS]
    if not per_customer:
        fit = next((p for p in customer["power_curve"] if p["mde_rel"] is not None and p["mde_rel"] <= s.mde), None)
        d = fit["weeks"] if fit else s.weeks
        cm = _mde(model, d, customers, s)
        out.append({"kind": "customer_randomisation", "weeks": d, "mde_rel": _finite(cm), "units": customers,
                    "message": f"Randomising customers within the same stores detects {_pct(cm)} in {d} weeks."})
    out.append({"kind": "larger_mde", "mde_rel": _finite(mde),
                "message": f"Or accept a larger MDE: {_pct(mde)} in {s.weeks} weeks." if math.isfinite(mde) else
                "No MDE is detectable with this design: add stores."})
    return out, f"{seen}. " + " ".join(a["message"] for a in out)


DURATIONS = {
    "mean": "Durations other than the window: a unit's rate persists (variance ∝ weeks²), purchases are Poisson "
            "noise around it (∝ weeks); seasonality is not modelled.",
    "ratio": "Durations other than the window: the ratio's per-unit spread has a persistent part and a purchase-noise "
             "part that shrinks ∝ 1/weeks; seasonality is not modelled.",
    "proportion": "Durations other than the window: visits are Poisson around gamma-distributed rates (the negative "
                  "binomial fitted to the window), the share scaled to the window's; seasonality is not modelled."}


def assumptions(s: PlanSettings, c: plan_history.Cohort) -> list[str]:
    """The plan's assumptions in plain words."""
    out = [f"History: transactions before {s.start:%Y-%m-%d}; the pilot's stand-in window is the {s.weeks} weeks "
           f"from {c.window_start:%Y-%m-%d}, its pre-period the {PRE_DAYS} days before that.",
           f"Units: customers of the eligible groups active in the {s.history_weeks} weeks before the start; "
           f"{c.new_per_week:,.1f} new ones a week are not counted (they have a shorter exposure).",
           f"Planned for {s.arm} against {s.control} at α = {s.alpha:g} (two-sided) and power {s.power:g}, "
           "without multiplicity adjustment for other arms or guardrails.",
           DURATIONS[CATALOGUE[s.primary_metric].kind]]
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
    # a stage still to come is planned from its planned start (else now), not from the pilot's start
    begun = stage.started_at or (pilot.started_at if stage.position <= (pilot.current_stage or 0) else None)
    out = plan(session, settings_for(session, pilot.programme, pilot.unit, design, stage, begun, options))
    return {"pilot": pilot.key, "stage": stage.position, **out}
