"""The decision table (pilot.recommendation) on constructed results: every branch, its action and its
reasons in numbers, the bars at their edges, and which rule wins when several apply."""
from __future__ import annotations

from dataclasses import replace

import pytest

from pilot.analysis_config import AnalysisConfig, Gate
from pilot.recommendation import recommend

CONFIG = AnalysisConfig(unit="customer", primary_metric="spend_per_customer", control="control",
                        allocation={"control": 0.4, "bonus": 0.3, "gold": 0.3},
                        mechanics={"control": "control", "bonus": "cumulative_bonus", "gold": "fixed_discount"},
                        alpha=0.05, power=0.8, mde=0.03, margin_rate=0.28, guardrails={"spend_per_visit": 0.03},
                        gate=Gate(min_days=14, min_units_per_arm=1000))
OK = {"problems": []}


def row(arm: str, effect_rel: float, p: float, metric: str = "spend_per_customer", role: str = "primary",
        method: str = "cuped", **extra) -> dict:
    """A metric row as pilot.effects writes it: a mean of 40 per customer, the CI ±2 points."""
    return {"arm": arm, "metric": metric, "role": role, "method": method, "effect_abs": 40.0 * effect_rel,
            "effect_rel": effect_rel, "ci_rel_low": effect_rel - 0.02, "ci_rel_high": effect_rel + 0.02,
            "p_value": p, "p_holm": p, **extra}


def results(**over) -> dict:
    """A healthy stage: bonus lifts spend by 6% (p = 0.001) at a profit, gold does little, 28 of 14 days."""
    base = {"unit": "customer", "days": 28.0,
            "arms": [{"variant": "control", "role": "control", "n": 4000},
                     {"variant": "bonus", "role": "treatment", "n": 3000},
                     {"variant": "gold", "role": "treatment", "n": 3000}],
            "srm": {"p_value": 0.4, "observed": [4000, 3000, 3000], "expected": [4000.0, 3000.0, 3000.0]},
            "metrics": [row("bonus", 0.06, 0.001), row("gold", 0.01, 0.4),
                        row("bonus", -0.01, 0.5, "spend_per_visit", "guardrail", harmed=False, max_harm=0.03),
                        row("gold", -0.01, 0.5, "spend_per_visit", "guardrail", harmed=False, max_harm=0.03)],
            "groups": [], "heterogeneity": {}, "trend": {},
            "economics": {"bonus": {"roi": 0.5, "net_profit_per_customer": 0.8, "break_even_discount_rate": 0.04,
                                    "projected_net_profit": 12000.0, "projected_incremental_revenue": 80000.0},
                          "gold": {"roi": 0.1, "net_profit_per_customer": 0.1, "break_even_discount_rate": 0.02,
                                   "projected_net_profit": None, "projected_incremental_revenue": None}},
            "power": {"bonus": {"mde_rel_now": 0.02, "more_units_needed": 0, "days_needed": 0.0},
                      "gold": {"mde_rel_now": 0.02, "more_units_needed": 0, "days_needed": 0.0}}}
    return {**base, **over}


def metrics(*rows: dict) -> list[dict]:
    """The healthy stage's guardrail rows under other primary rows."""
    return [*rows, *[r for r in results()["metrics"] if r["role"] == "guardrail"]]


def codes(rec: dict) -> list[str]:
    return [r["code"] for r in rec["reasons"]]


def core(rec: dict) -> dict:
    """The decision without the per-arm verdicts and the summary (tested on their own below)."""
    return {k: v for k, v in rec.items() if k not in ("verdicts", "summary")}


def verdicts(rec: dict) -> dict[str, str]:
    return {v["arm"]: v["verdict"] for v in rec["verdicts"]}


# -- investigate -----------------------------------------------------------------------------------

def test_a_sample_ratio_mismatch_is_investigated():
    srm = {"p_value": 2e-5, "observed": [4000, 2600, 3000], "expected": [3840.0, 2880.0, 2880.0]}
    rec = recommend(CONFIG, results(srm=srm), OK)
    assert core(rec) == {"decision": "investigate", "arm": None, "action": {"type": "pause"}, "reasons": [{
        "code": "sample_ratio_mismatch", "p_value": 2e-5, "observed": [4000, 2600, 3000],
        "expected": [3840.0, 2880.0, 2880.0],
        "message": "Arm sizes [4000, 2600, 3000] differ from the planned weights (χ² p = 2e-05): assignment or "
                   "data is broken; results are not to be trusted."}]}


@pytest.mark.parametrize("p", [0.001, 0.04, None])
def test_arm_sizes_within_the_strict_srm_bar_are_trusted(p):
    """The bar is p < 0.001, not alpha: a sample-ratio check runs often."""
    rec = recommend(CONFIG, results(srm={"p_value": p, "observed": [4000, 3000, 3000], "expected": None}), OK)
    assert rec["decision"] == "advance"


SILENT = {"code": "silent_stores", "stores": ["s-04", "s-11"],
          "message": "2 enrolled store(s) sent no transactions since the stage started: s-04, s-11."}
FAILED = {"code": "failed_batches", "batches": 3,
          "message": "3 ingestion batch(es) failed during the stage; outcomes may be missing."}


@pytest.mark.parametrize("problems", [[SILENT], [FAILED], [SILENT, FAILED]])
def test_data_quality_problems_are_investigated_each_under_its_own_code(problems):
    rec = recommend(CONFIG, results(), {"problems": problems})
    assert (rec["decision"], rec["arm"], rec["action"]) == ("investigate", None, {"type": "pause"})
    assert rec["reasons"] == problems


def test_a_mismatch_and_data_problems_are_all_reasons_and_come_before_harm():
    harmed = metrics(row("bonus", 0.06, 0.001),
                     row("bonus", -0.08, 0.001, "spend_per_visit", "guardrail", harmed=True, max_harm=0.03))
    srm = {"p_value": 1e-9, "observed": [1, 2, 3], "expected": [2.0, 2.0, 2.0]}
    rec = recommend(CONFIG, results(srm=srm, metrics=harmed), {"problems": [FAILED]})
    assert rec["decision"] == "investigate" and codes(rec) == ["sample_ratio_mismatch", "failed_batches"]


# -- stop ------------------------------------------------------------------------------------------

def harmed_stage() -> dict:
    """Two arms: the only treatment (bonus) lifts spend but harms spend per visit."""
    return results(arms=results()["arms"][:2],
                   metrics=[row("bonus", 0.06, 0.001),
                            row("bonus", -0.08, 0.001, "spend_per_visit", "guardrail", harmed=True, max_harm=0.03)])


def test_a_harmed_guardrail_of_the_best_arm_stops_the_stage():
    rec = recommend(CONFIG, harmed_stage(), OK)
    assert core(rec) == {"decision": "stop", "arm": "bonus", "action": {"type": "rollback"}, "reasons": [{
        "code": "guardrail_harmed", "arm": "bonus", "metric": "spend_per_visit", "effect_rel": -0.08,
        "ci_rel": [-0.08 - 0.02, -0.08 + 0.02], "max_harm": 0.03, "p_value": 0.001,
        "message": "spend_per_visit moved -8.0% in bonus (CI -10.0% to -6.0%); at most 3.0% harm is tolerated."}]}


def harm_in(arm: str) -> dict:
    """Three arms: bonus is best on spend (+6%), gold does little (+1%); `arm` harms spend per visit by 8%."""
    stage = results()
    for r in stage["metrics"]:
        if r["arm"] == arm and r["role"] == "guardrail":
            r.update(effect_rel=-0.08, ci_rel_low=-0.10, ci_rel_high=-0.06, p_value=0.001, harmed=True)
    return stage


def test_harm_in_an_arm_that_is_not_the_best_drops_it_from_the_next_stage():
    rec = recommend(CONFIG, harm_in("gold"), OK)
    assert (rec["decision"], rec["arm"], rec["action"]) == ("advance", "bonus", {"type": "advance",
                                                                                  "drop_arms": ["gold"]})
    assert verdicts(rec) == {"bonus": "keep", "gold": "drop_harm"}
    assert codes(rec) == ["gate_met", "guardrail_harmed"] and rec["reasons"][1]["arm"] == "gold"
    assert rec["summary"] == ("advance with bonus; drop gold: spend_per_visit -8.0% (CI -10.0% to -6.0%), "
                              "at most 3.0% harm tolerated")


def test_harm_in_the_best_arm_drops_it_and_the_next_best_arm_is_judged():
    rec = recommend(CONFIG, harm_in("bonus"), OK)
    assert verdicts(rec) == {"bonus": "drop_harm", "gold": "undecided"}
    # gold (+1%, p = 0.4) is not at its gate: the stage goes on without bonus
    assert (rec["decision"], rec["arm"], rec["action"]) == ("adjust", "gold", {"type": "drop_arm", "arm": "bonus",
                                                                                "drop_arms": ["bonus"]})
    assert codes(rec) == ["guardrail_harmed"]


def test_harm_in_every_arm_stops_and_the_gate_can_tolerate_harm():
    both = harm_in("bonus")
    for r in both["metrics"]:
        if r["arm"] == "gold" and r["role"] == "guardrail":
            r.update(harm_in("gold")["metrics"][3])
    rec = recommend(CONFIG, both, OK)
    assert (rec["decision"], rec["action"], codes(rec)) == ("stop", {"type": "rollback"},
                                                            ["guardrail_harmed", "guardrail_harmed"])
    lenient = replace(CONFIG, gate=Gate(min_days=14, min_units_per_arm=1000, no_guardrail_harm=False))
    assert recommend(lenient, harmed_stage(), OK)["decision"] == "advance"
    assert recommend(lenient, both, OK)["decision"] == "advance"


def below_mde(**over) -> dict:
    """bonus +0.5% (CI −1.5% to +2.5%, p = 0.6), gold less: at most 2.5% against an MDE of 3%."""
    return results(metrics=metrics(row("bonus", 0.005, 0.6), row("gold", 0.001, 0.9)), **over)


def test_an_effect_clearly_below_the_mde_stops_the_stage():
    rec = recommend(CONFIG, below_mde(), OK)
    assert core(rec) == {"decision": "stop", "arm": "bonus", "action": {"type": "rollback"}, "reasons": [{
        "code": "effect_below_mde", "arm": "bonus", "effect_rel": 0.005, "ci_rel": [0.005 - 0.02, 0.005 + 0.02],
        "mde": 0.03,
        "message": "The best arm (bonus) moves spend_per_customer by +0.5%, and at most +2.5%: clearly below the "
                   "3.0% the pilot set out to find."}]}


@pytest.mark.parametrize("change", ["ci_reaches_mde", "too_early", "too_few_units"])
def test_an_effect_below_the_mde_is_only_final_with_the_time_and_units_run(change):
    stage = below_mde()
    if change == "ci_reaches_mde":
        stage["metrics"][0]["ci_rel_high"] = 0.031
    elif change == "too_early":
        stage["days"] = 13.0
    else:
        stage["arms"][1]["n"] = 999
    assert recommend(CONFIG, stage, OK)["decision"] == "extend"


def test_a_significant_effect_smaller_than_the_mde_is_not_stopped():
    small = {**row("bonus", 0.01, 0.004), "ci_rel_low": 0.002, "ci_rel_high": 0.018}
    rec = recommend(CONFIG, results(metrics=metrics(small, row("gold", 0.001, 0.9))), OK)
    assert (rec["decision"], codes(rec)) == ("advance", ["gate_met"])


def test_below_the_mde_reads_the_good_side_of_a_metric_that_should_fall():
    """A cost metric: −0.5% (CI −2.5% to +1.5%): the most it could fall is 2.5%, below the 3% MDE."""
    cost = replace(CONFIG, primary_metric="discount_cost_per_customer", guardrails={})
    rows = [row("bonus", -0.005, 0.6, "discount_cost_per_customer"),
            row("gold", 0.01, 0.4, "discount_cost_per_customer")]
    rec = recommend(cost, results(metrics=rows), OK)
    assert (rec["decision"], rec["arm"], codes(rec)) == ("stop", "bonus", ["effect_below_mde"])
    rows[0]["ci_rel_low"] = -0.035  # it could fall by more than the MDE: not clearly below it
    assert recommend(cost, results(metrics=rows), OK)["decision"] == "extend"


# -- adjust ----------------------------------------------------------------------------------------

def group(name: str, effect_rel: float, p_bh: float, n_control: int = 500, n_treatment: int = 400) -> dict:
    return {"arm": "bonus", "group": name, "metric": "spend_per_customer", "effect_abs": 40.0 * effect_rel,
            "effect_rel": effect_rel, "p_bh": p_bh, "n_control": n_control, "n_treatment": n_treatment}


def tiered(het_p: float = 0.002) -> dict:
    groups = [group("young_parents", 0.20, 0.001), group("families", 0.12, 0.01), group("singles", -0.01, 0.7),
              group("seniors", 0.3, 0.001, n_control=0)]  # no control units: not a comparison
    return results(groups=groups, heterogeneity={"bonus": {"q": 14.2, "p_value": het_p, "df": 2}})


def test_an_arm_that_works_in_some_groups_is_narrowed_to_them():
    rec = recommend(CONFIG, tiered(), OK)
    assert core(rec) == {"decision": "adjust", "arm": "bonus", "action": {"type": "narrow_groups",
                                                                      "groups": ["young_parents", "families"]},
                   "reasons": [{"code": "works_in_some_groups", "arm": "bonus", "q": 14.2, "p_value": 0.002,
                                "groups": {"young_parents": {"effect_rel": 0.20, "p_bh": 0.001},
                                           "families": {"effect_rel": 0.12, "p_bh": 0.01},
                                           "singles": {"effect_rel": -0.01, "p_bh": 0.7}},
                                "message": "bonus works for young_parents +20.0%, families +12.0% but not for "
                                           "singles -1.0% (Cochran's Q p = 0.002). Target young_parents, families."}]}


@pytest.mark.parametrize("het_p", [0.01, 0.03, None])
def test_groups_are_narrowed_only_below_the_stricter_heterogeneity_bar(het_p):
    assert recommend(CONFIG, tiered(het_p), OK)["decision"] == "advance"


def test_no_narrowing_when_the_arm_works_everywhere_or_nowhere():
    everywhere = tiered()
    everywhere["groups"] = everywhere["groups"][:2]
    assert recommend(CONFIG, everywhere, OK)["decision"] == "advance"
    nowhere = tiered()
    nowhere["groups"] = [group("singles", -0.01, 0.7), group("families", 0.05, 0.2)]
    assert recommend(CONFIG, nowhere, OK)["decision"] == "advance"


def worse_gold(p_value: float = 0.004, p_holm: float = 0.004) -> dict:
    gold = {**row("gold", -0.05, p_value), "p_holm": p_holm}
    return results(metrics=metrics(row("bonus", 0.06, 0.001), gold))


WORSE = {"code": "worse_than_control", "arm": "gold", "metric": "spend_per_customer", "effect_rel": -0.05,
         "ci_rel": [-0.05 - 0.02, -0.05 + 0.02], "p_holm": 0.004,
         "message": "gold moves spend_per_customer by -5.0% against control (CI -7.0% to -3.0%, Holm p = 0.004): "
                    "drop it."}


def test_an_arm_clearly_worse_than_control_is_dropped():
    rec = recommend(CONFIG, worse_gold(), OK)  # bonus meets the gate: advance without gold
    assert (rec["decision"], rec["action"]) == ("advance", {"type": "advance", "drop_arms": ["gold"]})
    assert rec["reasons"][1:] == [WORSE] and verdicts(rec) == {"bonus": "keep", "gold": "drop_worse"}
    early = worse_gold()
    early["days"] = 9.5  # bonus short of its gate: drop gold now, the stage goes on
    assert core(recommend(CONFIG, early, OK)) == {"decision": "adjust", "arm": "bonus", "reasons": [WORSE],
                                                  "action": {"type": "drop_arm", "arm": "gold", "drop_arms": ["gold"]}}


def test_an_arm_clearly_worse_than_the_best_arm_is_dropped():
    stage = results()
    stage["versus_best"] = [{"arm": "gold", "best": "bonus", "metric": "spend_per_customer", "effect_abs": -2.0,
                             "effect_rel": -0.047, "ci_rel_low": -0.07, "ci_rel_high": -0.024, "p_value": 0.001,
                             "p_holm": 0.001}]
    rec = recommend(CONFIG, stage, OK)
    assert verdicts(rec) == {"bonus": "keep", "gold": "drop_worse"}
    assert rec["action"] == {"type": "advance", "drop_arms": ["gold"]}
    assert rec["reasons"][1]["code"] == "worse_than_best" and rec["reasons"][1]["best"] == "bonus"
    stage["versus_best"][0].update(p_holm=0.2)  # not clearly worse: undecided, stays in
    assert verdicts(recommend(CONFIG, stage, OK)) == {"bonus": "keep", "gold": "undecided"}


def test_an_arm_that_helps_less_stays_and_arms_all_worse_stop_the_stage():
    helps_less = results(metrics=metrics(row("bonus", 0.06, 0.001), row("gold", 0.03, 0.01)))
    rec = recommend(CONFIG, helps_less, OK)
    assert rec["action"] == {"type": "advance"} and verdicts(rec) == {"bonus": "keep", "gold": "keep"}
    both_worse = results(metrics=metrics(row("bonus", -0.03, 0.01), row("gold", -0.06, 0.001)))
    rec = recommend(CONFIG, both_worse, OK)
    assert (rec["decision"], rec["action"], codes(rec)) == ("stop", {"type": "rollback"},
                                                            ["worse_than_control", "worse_than_control"])


def test_an_arm_is_dropped_on_its_holm_p_value_not_the_raw_one():
    assert recommend(CONFIG, worse_gold(p_value=0.01, p_holm=0.08), OK)["action"] == {"type": "advance"}
    assert recommend(CONFIG, worse_gold(p_value=0.08, p_holm=0.04), OK)["action"]["drop_arms"] == ["gold"]


def test_narrowing_takes_a_dropped_arm_along():
    stage = tiered()
    stage["metrics"] = worse_gold()["metrics"]
    assert recommend(CONFIG, stage, OK)["action"] == {"type": "narrow_groups", "groups": ["young_parents",
                                                                                       "families"],
                                                      "drop_arms": ["gold"]}


FADING = {"bonus": {"fading": True, "slope": -0.42, "p_value": 0.003}}


def test_a_fading_effect_asks_for_a_dynamic_reward():
    rec = recommend(CONFIG, results(trend=FADING), OK)
    assert core(rec) == {"decision": "adjust", "arm": "bonus", "action": {"type": "make_dynamic", "arm": "bonus"},
                   "reasons": [{"code": "effect_fading", "arm": "bonus", "slope_per_week": -0.42, "p_value": 0.003,
                                "message": "The effect of bonus shrinks by 0.42 per customer each week (p = 0.003): "
                                           "a novelty effect. Make the reward dynamic (rotating offers, rising "
                                           "tiers) to keep it."}]}


def test_only_a_helping_arm_whose_effect_fades_is_made_dynamic():
    steady = {"bonus": {**FADING["bonus"], "fading": False}}
    assert recommend(CONFIG, results(trend=steady), OK)["decision"] == "advance"
    assert recommend(CONFIG, results(trend={"gold": FADING["bonus"]}), OK)["decision"] == "advance"  # not the best
    hurting = results(trend=FADING, metrics=metrics(row("bonus", -0.01, 0.6), row("gold", -0.02, 0.7)))
    assert codes(recommend(CONFIG, hurting, OK)) == ["effect_below_mde"]


def test_dropping_an_arm_comes_before_a_dynamic_reward():
    stage = worse_gold()
    stage["trend"] = FADING
    assert recommend(CONFIG, stage, OK)["action"] == {"type": "drop_arm", "arm": "gold", "drop_arms": ["gold"]}


def unprofitable(roi: float = -0.3) -> dict:
    econ = {**results()["economics"], "bonus": {"roi": roi, "net_profit_per_customer": -1.2,
                                                "break_even_discount_rate": 0.0193, "projected_net_profit": -9000.0,
                                                "projected_incremental_revenue": 80000.0}}
    return results(economics=econ)


def test_an_uplift_that_does_not_pay_is_repriced_at_the_break_even_rate():
    rec = recommend(CONFIG, unprofitable(), OK)
    assert core(rec) == {"decision": "adjust", "arm": "bonus",
                   "action": {"type": "reprice", "arm": "bonus", "break_even_discount_rate": 0.0193},
                   "reasons": [{"code": "uplift_but_unprofitable", "arm": "bonus", "effect_rel": 0.06, "roi": -0.3,
                                "net_profit_per_customer": -1.2, "break_even_discount_rate": 0.0193,
                                "message": "bonus lifts spend_per_customer by +6.0% but loses 1.20 per customer "
                                           "(ROI -30%). At a discount of 1.9% or less the same uplift would pay "
                                           "for itself."}]}


def test_repricing_needs_a_significant_uplift_and_an_roi_below_the_gate():
    lenient = replace(CONFIG, gate=Gate(min_days=14, min_units_per_arm=1000, min_roi=-0.5))
    assert recommend(lenient, unprofitable(), OK)["decision"] == "advance"
    assert recommend(CONFIG, unprofitable(roi=0.0), OK)["decision"] == "advance"  # at the bar is enough
    doubtful = unprofitable()
    doubtful["metrics"][0].update(p_value=0.2, p_holm=0.2)
    rec = recommend(CONFIG, doubtful, OK)
    assert rec["decision"] == "extend" and rec["reasons"][0]["gate_unmet"] == ["significant", "roi"]


def test_a_store_randomised_stage_is_never_adjusted_and_reads_difference_in_differences():
    stage = {**worse_gold(), "unit": "store", "trend": FADING, "economics": unprofitable()["economics"]}
    assert recommend(CONFIG, stage, OK)["decision"] == "advance"  # (a store pilot has no economics: ROI passes)
    stage["metrics"] = [row("bonus", 0.06, 0.001, method="ancova"),
                        row("bonus", 0.06, 0.3, method="difference_in_differences")]
    stage["arms"] = stage["arms"][:2]
    assert recommend(CONFIG, stage, OK)["reasons"][0]["gate_unmet"] == ["significant"]


# -- advance and extend ------------------------------------------------------------------------------

def test_a_stage_that_meets_its_gate_advances():
    rec = recommend(CONFIG, results(), OK)
    assert core(rec) == {"decision": "advance", "arm": "bonus", "action": {"type": "advance"}, "reasons": [{
        "code": "gate_met", "arm": "bonus", "effect_rel": 0.06, "ci_rel": [0.06 - 0.02, 0.06 + 0.02], "p_value": 0.001,
        "roi": 0.5, "days": 28.0, "units_per_arm": 3000, "projected_net_profit": 12000.0,
        "projected_incremental_revenue": 80000.0,
        "message": "bonus lifts spend_per_customer by +6.0% (CI +4.0% to +8.0%, p = 0.001), ROI 50%; projected "
                   "net profit at the next stage: 12,000."}]}


def test_a_stage_without_significance_advances_when_the_gate_does_not_ask_for_it():
    relaxed = replace(CONFIG, gate=Gate(min_days=14, min_units_per_arm=1000, require_significant=False))
    stage = results(metrics=metrics(row("bonus", 0.06, 0.2), row("gold", 0.01, 0.4)))
    assert recommend(CONFIG, stage, OK)["decision"] == "extend"
    assert recommend(relaxed, stage, OK)["decision"] == "advance"


def test_a_stage_short_of_its_days_is_extended_by_the_days_missing():
    power = {"bonus": {"mde_rel_now": 0.021, "more_units_needed": 1234.0, "days_needed": 3.2}}
    stage = results(days=9.5, power=power)
    rec = recommend(CONFIG, stage, OK)
    assert core(rec) == {"decision": "extend", "arm": "bonus", "action": {"type": "extend", "days": 5, "more_units": 1234.0},
                   "reasons": [{"code": "underpowered", "arm": "bonus", "gate_unmet": ["min_days"], "days": 9.5,
                                "min_days": 14, "units_per_arm": 3000, "min_units_per_arm": 1000,
                                "mde_rel_now": 0.021, "more_units_needed": 1234.0, "days_needed": 3.2,
                                "message": "Not enough evidence yet: 10 of 14 days run; the effect detectable now "
                                           "is 2.1%; about 1,234 more units are needed for the target MDE."}]}


@pytest.mark.parametrize("days_needed, days", [(3.2, 4), (None, 7), (0.0, 7)])
def test_a_stage_short_of_evidence_is_extended_by_the_days_the_units_need(days_needed, days):
    stage = results(metrics=metrics(row("bonus", 0.04, 0.08), row("gold", 0.01, 0.4)),
                    power={"bonus": {"mde_rel_now": 0.05, "more_units_needed": 800, "days_needed": days_needed}})
    rec = recommend(CONFIG, stage, OK)
    assert rec["action"] == {"type": "extend", "days": days, "more_units": 800}
    assert rec["reasons"][0]["gate_unmet"] == ["significant"]
    assert rec["reasons"][0]["message"] == ("Not enough evidence yet: the effect detectable now is 5.0%; about 800 "
                                            "more units are needed for the target MDE.")


def test_a_stage_short_of_units_says_so():
    stage = results()
    stage["arms"][2]["n"] = 640
    rec = recommend(CONFIG, stage, OK)
    assert rec["decision"] == "extend" and rec["reasons"][0]["gate_unmet"] == ["min_units_per_arm"]
    assert "640 of 1000 units in the smallest arm" in rec["reasons"][0]["message"]


# -- the configuration it reads ----------------------------------------------------------------------

def test_the_configuration_is_read_from_a_runs_stored_json():
    stored = {"pilot": "p", "stage": 1, "unit": "customer", "primary_metric": "visits_per_customer",
              "guardrails": [{"metric": "spend_per_visit", "max_harm": 0.05}, {"metric": "retention"}],
              "alpha": 0.1, "power": 0.9, "mde": 0.04, "margin_rate": 0.3,
              "allocation": {"control": 0.5, "bonus": 0.5, "gold": 0.0}, "control": "control",
              "mechanics": {"control": "control", "bonus": "cumulative_bonus", "gold": "fixed_discount"},
              "gate": {"min_days": 28, "min_units_per_arm": 500}, "eligible_groups": None, "pre_days": 56}
    config = AnalysisConfig.from_dict(stored)
    assert config.guardrails == {"spend_per_visit": 0.05, "retention": 0.0}
    assert config.gate == Gate(min_days=28, min_units_per_arm=500)  # the rest at the analysis defaults
    assert AnalysisConfig.from_dict({**stored, "gate": None}).gate == Gate()
    assert (config.arms, config.treatments, config.sequential_tuning) == (["control", "bonus"], ["bonus"], 5000.0)
    assert config.metrics[:3] == ["visits_per_customer", "spend_per_visit", "retention"]
    assert sorted(config.metrics) == sorted({"visits_per_customer", "spend_per_customer", "spend_per_visit",
                                             "conversion", "retention", "items_per_basket",
                                             "discount_cost_per_customer"})
    assert [config.role(m) for m in ("visits_per_customer", "retention", "conversion")] == \
        ["primary", "guardrail", "secondary"]
    assert (config.alpha, config.inference.alpha, config.power, config.mde) == (0.1, 0.1, 0.9, 0.04)
