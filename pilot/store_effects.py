"""The effect tables of a store-randomised stage, on store-level values (each store's daily spend,
visits and items in the stage and in the pre-period).

Per treatment arm and store-level metric, the decision row comes first: ANCOVA with CR2 errors and
Bell–McCaffrey df together with the randomisation test of the same ANCOVA over the matched scheme
the stores were assigned by (experiments.randomisation.store_decision); then difference-in-
differences and classical ANCOVA as diagnostics. Guardrails are held to the same rules as in
customer pilots (pilot.effects' harm rule on the decision row), so a store pilot can stop on harm
and the scheduler can pause it. Power is the effect detectable now from the store-level variance
(the design effect is in it: the store is the unit) and the stores the target MDE needs.
The contamination diagnostic (customers seen in stores of more than one arm) is `contamination`.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from experiments.cluster import ancova, difference_in_differences
from experiments.randomisation import RandomisationResult, store_decision
from experiments.results import EffectResult
from experiments.srm import srm_test
from experiments.statistics import RegressionAdjustedStatistic
from pilot.aggregation import Cube
from pilot.analysis_config import SRM_ALPHA, AnalysisConfig
from pilot.metrics import CATALOGUE
from pilot.result_rows import adjust_p_values, arm_rows, clean, effect_row, sequential_columns

# metric -> (store value, denominator): a mean metric is the store's value per day, a ratio the store's ratio
STORE_METRICS = {"spend_per_customer": ("spend", None), "visits_per_customer": ("visits", None),
                 "spend_per_visit": ("spend", "visits"), "items_per_basket": ("items", "visits")}
DECISION_METHOD = "ancova_cr2+randomisation"
CONTAMINATION_WARNING = 0.10  # share of an arm's customers seen in stores of another arm above which it warns


def store_results(config: AnalysisConfig, cube: Cube, days: float) -> dict[str, Any]:
    """Every result table of a store-randomised stage (the customer-level tables stay empty)."""
    from pilot.effects import _harm as harm  # the customer pilots' rule (pilot.effects imports this module)

    arms = config.arms
    counts = [sum(1 for (a, _) in cube.stores if a == k) for k in arms]
    srm = srm_test(counts, [config.allocation[k] for k in arms], threshold=SRM_ALPHA)
    rows, decisions, power = [], [], {}
    measured = [m for m in config.metrics if m in STORE_METRICS]
    for arm in config.treatments:
        for metric in measured:
            role = config.role(metric)
            labels = {"arm": arm, "metric": metric, "kind": "mean", "role": role,
                      "good_direction": CATALOGUE[metric].good_direction}
            y, x, t, blocks, free = _design(cube, config.control, arm, metric)
            share = config.allocation[arm] / (config.allocation[arm] + config.allocation[config.control])
            decision, model, ri = store_decision(y, x, t, blocks, free, share, config.inference)
            tuning = max(len(y), 2)  # the always-valid interval tightest around the stores compared
            row = effect_row(decision, **labels, **_decision_columns(model, ri, config.alpha),
                             **sequential_columns(model, config.alpha, tuning))
            rows.append(row)
            decisions.append(row)
            if role == "primary":
                power[arm] = _power(config, model, ri, len(y))
            for method in (difference_in_differences, ancova):
                effect = method(_stat(y[t == 0], x[t == 0]), _stat(y[t == 1], x[t == 1]), config.inference)
                rows.append(effect_row(effect, **labels, **sequential_columns(effect, config.alpha, tuning)))
    # Holm over the arms' primaries only: a guardrail is a one-sided harm check that can only block an
    # advance, not a second way to advance, so it does not split α with the primary (docs/store_pilots.md)
    family = [r for r in decisions if r["role"] == "primary"]
    adjust_p_values(family, "p_holm", missing=1.0)
    _design_floor(family, config.alpha)
    for guard in (r for r in decisions if r["role"] == "guardrail"):
        _design_floor([guard], config.alpha)  # judged on its own p (pilot.effects._harm)
    for arm, row in power.items():
        primary = next((r for r in family if r["arm"] == arm and r["role"] == "primary"), None)
        if primary is not None and row.get("units_needed") is not None:
            need = max(row["units_needed"], stores_for_min_p(config.alpha, len(family)))
            row.update(units_needed=need, more_units_needed=max(need - row["units_now"], 0),
                       powered=bool(need <= row["units_now"]), min_p_holm=primary["min_p_holm"])
    for r in rows:
        r.setdefault("p_holm", None)
        if r["method"] == DECISION_METHOD and r["metric"] in config.guardrails:
            r.update(harm(r, config.guardrails[r["metric"]], config.alpha))
    unmeasured = [m for m in config.guardrails if m not in STORE_METRICS]
    stores = [{"arm": a, "store_id": s, **v} for (a, s), v in sorted(cube.stores.items())]
    return clean({"unit": "store", "arms": arm_rows(config, counts),
                  "srm": {**asdict(srm), "observed": counts, "variants": arms}, "metrics": rows, "stores": stores,
                  "groups": [], "heterogeneity": {}, "weeks": [], "trend": {}, "economics": {}, "power": power,
                  "guardrails_not_measured": unmeasured, "days": days})


def _design(cube: Cube, control: str, arm: str, metric: str):
    """The control and `arm` stores' values of the metric in the stage (y) and before (x), treated
    (0/1), and the matched scheme's blocks (indices) and free stores. A store without a `block` in
    its values (a cube built without the scheme) is free: treated independently."""
    value, per = STORE_METRICS[metric]
    y, x, t, block = [], [], [], []
    for (a, _), s in sorted(cube.stores.items(), key=lambda kv: (str(kv[0][1]), kv[0][0])):
        if a not in (control, arm):
            continue
        post = s[value] / s[per] if per else s[value]
        pre = s[f"pre_{value}"] / s[f"pre_{per}"] if per and s.get(f"pre_{per}") else (
            s[f"pre_{value}"] if not per else math.nan)
        if per and not s[per] or not math.isfinite(post) or not math.isfinite(pre):
            continue  # a ratio of a store without visits is not defined
        y.append(post)
        x.append(pre)
        t.append(1.0 if a == arm else 0.0)
        block.append(int(s.get("block", -1)))
    blocks: dict[int, list[int]] = {}
    free = []
    for i, b in enumerate(block):
        if b < 0:
            free.append(i)
        else:
            blocks.setdefault(b, []).append(i)
    return np.array(y), np.array(x), np.array(t), [v for _, v in sorted(blocks.items())], free


def _stat(y: np.ndarray, x: np.ndarray) -> RegressionAdjustedStatistic:
    return RegressionAdjustedStatistic(len(y), float(y.sum()), float((y * y).sum()), float(x.sum()),
                                       float((x * x).sum()), float((x * y).sum()))


def _decision_columns(model: EffectResult, ri: RandomisationResult, alpha: float) -> dict[str, Any]:
    """The two tests behind the decision row, each with its own p-value and interval."""
    return {"p_cr2": model.p_value, "ci_cr2": [model.ci_low, model.ci_high], "df_bm": model.df,
            "p_randomisation": ri.p_value, "ci_randomisation": [ri.ci_low, ri.ci_high],
            "min_p_value": ri.min_p_value, "cannot_be_significant": bool(ri.min_p_value > alpha),
            "randomisation": {"method": ri.method, "assignments": ri.assignments, "draws": ri.draws,
                              "seed": ri.seed}}


def _power(config: AnalysisConfig, model: EffectResult, ri: RandomisationResult, stores: int) -> dict[str, Any]:
    """The relative effect detectable now (at the pilot's α and power, t with the Bell–McCaffrey df,
    from the store-level variance: the design effect of randomising stores is in it) and the stores
    the target MDE needs (the standard error falls as 1/√stores), also for the design's smallest p."""
    target = config.mde
    out: dict[str, Any] = {"sample_unit": "store", "target_mde_rel": target, "units_now": stores,
                           "days_needed": None, "min_p_value": ri.min_p_value}
    if not model.ok and model.message != "few_clusters" or not (model.se_rel == model.se_rel) or not model.df:
        return {**out, "mde_rel_now": None, "units_needed": None, "more_units_needed": None,
                "message": model.message or "too_few_units"}
    df = model.df
    multiplier = stats.t.ppf(1 - config.alpha / 2, df) + stats.t.ppf(config.power, df)
    mde_now = float(multiplier * model.se_rel)
    needed = math.ceil(stores * (mde_now / target) ** 2) if target > 0 else None
    needed = max(needed or 0, stores_for_min_p(config.alpha))  # (and the Holm family's, in store_results)
    return {**out, "mde_rel_now": mde_now, "mde_abs_now": float(multiplier * model.se), "units_needed": needed,
            "more_units_needed": max(needed - stores, 0), "powered": bool(needed <= stores)}


def _design_floor(family: list[dict[str, Any]], alpha: float) -> None:
    """The smallest Holm-adjusted p each row of the family can reach: every row's Holm p is at least
    m × the smallest raw p, and no raw p can go below its scheme's smallest (`min_p_value`). A row
    whose floor is above α cannot be significant with this design, however long the pilot runs."""
    floors = [p for p in (r.get("min_p_value") for r in family) if p is not None and p == p]
    floor = min(1.0, len(family) * min(floors)) if floors else None
    for r in family:
        r["min_p_holm"] = floor
        r["cannot_be_significant"] = bool(floor is not None and floor > alpha)
        if r["cannot_be_significant"] and r.get("message") in (None, "few_clusters"):
            r["message"] = "cannot_be_significant"


def stores_for_min_p(alpha: float, family: int = 1) -> int:
    """The fewest stores (of two arms) whose matched scheme can reach a Holm p ≤ α in a family of
    `family` tests: each pair doubles the assignments, and the scheme's smallest two-sided p is
    2 / 2^pairs."""
    return 2 * math.ceil(math.log2(2 * family / alpha))


def contamination(session: Session, pilot, stage, cutoff: datetime) -> dict[str, Any]:
    """Per arm: the share of the customers who bought in the arm's stores during the stage who also
    bought in a store of another arm, and the share of their spend that went there; a warning above
    CONTAMINATION_WARNING. Customers without an id (anonymous sales) are not counted."""
    from pilot.models import Enrolment, Transaction

    start = stage.started_at or pilot.started_at
    e, t = Enrolment, Transaction
    rows = session.execute(
        select(t.customer_id, e.arm, func.sum(t.amount))
        .join(e, and_(e.store_id == t.store_id, e.pilot_id == pilot.id, e.stage_id == stage.id,
                      e.arm.is_not(None)))
        .where(t.occurred_at >= start, t.occurred_at < cutoff, t.customer_id.is_not(None))
        .group_by(t.customer_id, e.arm)).all()
    by_customer: dict[int, dict[str, float]] = {}
    for customer, arm, spend in rows:
        by_customer.setdefault(customer, {})[arm] = float(spend or 0.0)
    out: dict[str, Any] = {"threshold": CONTAMINATION_WARNING, "arms": {}, "warnings": []}
    for arm in sorted({a for spends in by_customer.values() for a in spends}):
        seen = [s for s in by_customer.values() if arm in s]
        mixed = [s for s in seen if len(s) > 1]
        spend_total = sum(sum(s.values()) for s in seen)
        spend_elsewhere = sum(sum(v for a, v in s.items() if a != arm) for s in mixed)
        share = len(mixed) / len(seen) if seen else 0.0
        out["arms"][arm] = {"customers": len(seen), "customers_in_other_arms": len(mixed), "customer_share": share,
                            "spend_share_in_other_arms": spend_elsewhere / spend_total if spend_total else 0.0}
        if share > CONTAMINATION_WARNING:
            out["warnings"].append({"code": "contamination", "arm": arm, "customer_share": share,
                                    "message": f"{share:.0%} of the customers who bought in {arm}'s stores also "
                                               f"bought in stores of another arm (warning above "
                                               f"{CONTAMINATION_WARNING:.0%}): the arms are not kept apart, "
                                               "and the effect is diluted towards zero."})
    return out
