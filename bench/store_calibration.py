"""Calibration of store pilots' decision with few stores, and of the novelty test.

Store pilots of G = 6, 10, 16, 24 and 40 stores in two regions, matched by Pilot's own randomisation
(pilot.store_randomisation.matched_arms, the scheme from matched_blocks), 8 pre + 8 post weeks of
store-level sales with a store-level AR(1) drift (store pre/post correlation about 0.9); 2,000 A/A
replications and 1,000 at +10% per size, through the decision path the service uses:
pilot.store_effects.store_results on the store cube, then pilot.recommendation.recommend.

Keys, per G:
- fpr_G: A/A share of replications where the decision's CR2 + Bell–McCaffrey ANCOVA rejects at 5%
  (the model part of the decision test; the randomisation part cannot reject at G = 6, by design);
- coverage_G: share of the +10% replications whose decision interval (relative) holds +10%;
- power10_G: share of the +10% replications that the recommendation advances;
- false_advance_G: A/A share that the recommendation advances;
- power10_ols_G, power10_cr2_G, power10_ri_G, power10_decision_G (diagnostics): the +10% share
  significant at 5% the good way by classical ANCOVA (the store-level ceiling), its CR2 test, the
  randomisation test, and the decision row (both, Holm over the arms' primaries) — where power goes.
novelty_detected: of 20 seeds of the `novelty` preset (pilot.simulate, the whole service path:
ingestion, aggregation in SQL, compute, recommend; one SQLite database per worker, its synthetic
retailer built once), how many end in make_dynamic; novelty_false_alarm: the share of 200
constant-effect pilots (the preset with the novelty set to 0 and a lasting +6% on visits, 1,200
customers) whose trend test says `fading` (novelty_false_make_dynamic: those ending in make_dynamic;
novelty_fading: the novelty seeds whose test fired).

PILOT_BENCH_QUICK=1 runs a tenth of every count (a quick look; the default is the issue's counts).
Two worker processes. One JSON line at the end.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = (6, 10, 16, 24, 40)
QUICK = os.environ.get("PILOT_BENCH_QUICK") == "1"
AA, EFFECT = (200, 100) if QUICK else (2000, 1000)
NOVELTY_SEEDS, CONSTANT_SEEDS = (4, 20) if QUICK else (20, 200)
PRE_WEEKS = POST_WEEKS = 8
LIFT = 0.10


def _config():
    from pilot.analysis_config import AnalysisConfig, Gate
    from pilot.rollout import DEFAULT_STORE_GATE
    return AnalysisConfig(unit="store", primary_metric="spend_per_customer", control="control",
                          allocation={"control": 0.5, "bonus": 0.5},
                          mechanics={"control": "control", "bonus": "cumulative_bonus"}, alpha=0.05, power=0.8,
                          mde=0.02, margin_rate=0.28, guardrails={"spend_per_visit": 0.03},
                          gate=Gate.from_dict(DEFAULT_STORE_GATE))


def store_panel(rng: np.random.Generator, stores: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weekly sales per day (stores × weeks) and the visits behind them: store levels log-normal
    (sd 0.35), a store-level AR(1) drift (φ 0.8, innovations sd 0.11) and weekly noise (sd 0.07)."""
    weeks = PRE_WEEKS + POST_WEEKS
    level = 1500 * np.exp(rng.normal(0, 0.35, stores))
    drift = np.zeros((stores, weeks))
    drift[:, 0] = rng.normal(0, 0.11 / np.sqrt(1 - 0.64), stores)
    for w in range(1, weeks):
        drift[:, w] = 0.8 * drift[:, w - 1] + rng.normal(0, 0.11, stores)
    spend = level[:, None] * np.exp(drift + rng.normal(0, 0.07, (stores, weeks)))
    basket = 30 * np.exp(rng.normal(0, 0.1, stores))[:, None] * np.exp(rng.normal(0, 0.02, (stores, weeks)))
    return spend, spend / basket, rng.random(stores)


def replicate(args: tuple[int, int, bool]) -> dict[str, float]:
    """One store pilot: match, plant the effect on the treated stores' visits, decide."""
    from pilot.aggregation import Cube
    from pilot.recommendation import recommend
    from pilot.store_effects import store_results
    from pilot.store_randomisation import matched_arms, matched_blocks
    stores, seed, effect = args
    rng = np.random.default_rng([stores, seed, int(effect)])
    spend, visits, _ = store_panel(rng, stores)
    pre_spend, pre_visits = spend[:, :PRE_WEEKS].mean(axis=1), visits[:, :PRE_WEEKS].mean(axis=1)
    codes = [f"s{i:02d}" for i in range(stores)]
    triples = [(c, f"region{i % 2}", float(pre_spend[i] * 7 * PRE_WEEKS)) for i, c in enumerate(codes)]
    weights = {"control": 0.5, "bonus": 0.5}
    arms = matched_arms(triples, weights, f"bench-{stores}-{seed}-{int(effect)}")
    blocks, _ = matched_blocks(triples, weights)
    block_of = {c: b for b, members in enumerate(blocks) for c in members}
    cube = Cube()
    for i, code in enumerate(codes):
        lift = 1 + LIFT if effect and arms[code] == "bonus" else 1.0
        post_spend, post_visits = spend[i, PRE_WEEKS:].mean() * lift, visits[i, PRE_WEEKS:].mean() * lift
        cube.stores[(arms[code], i)] = {"spend": post_spend / 7, "visits": post_visits / 7, "items": 2 * post_visits / 7,
                                        "pre_spend": pre_spend[i] / 7, "pre_visits": pre_visits[i] / 7,
                                        "pre_items": 2 * pre_visits[i] / 7, "block": block_of.get(code, -1)}
    config = _config()
    results = store_results(config, cube, days=7 * POST_WEEKS)
    rec = recommend(config, results, {"problems": []})
    row = next(r for r in results["metrics"] if r["role"] == "primary")
    ols = next(r for r in results["metrics"] if r["role"] == "primary" and r["method"] == "ancova")
    low, high = row["ci_rel_low"], row["ci_rel_high"]

    def up(p: float | None, effect: float | None) -> float:  # significant at 5% (two-sided) and the good way
        return float(p is not None and p < 0.05 and (effect or 0) > 0)
    return {"reject_cr2": float(row["p_cr2"] is not None and row["p_cr2"] < 0.05),
            "covered": float((low is None or low <= LIFT) and (high is None or LIFT <= high)),
            "advance": float(rec["decision"] == "advance"),
            "ols": up(ols["p_value"], ols["effect_abs"]), "cr2": up(row["p_cr2"], row["effect_abs"]),
            "ri": up(row["p_randomisation"], row["effect_abs"]), "decision": up(row["p_holm"], row["effect_abs"])}


_APPS: dict[str, object] = {}  # per worker process and kind: one database, its retailer built once


def _app(kind: str):
    from pilot import create_app
    if kind not in _APPS:
        folder = tempfile.mkdtemp(prefix=f"pilot-bench-{kind}-")
        _APPS[kind] = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{folder}/bench.db",
                                  "AUTO_MIGRATE": True, "SECRET_KEY": "bench"})
    return _APPS[kind]


def novelty_run(args: tuple[str, int]) -> dict[str, float]:
    """One planted pilot through the whole service (ingestion, aggregation in SQL, compute, recommend)
    in the worker's SQLite database: the retailer is built once per worker, each pilot gets its own
    key, salt and layer, and the sales of the pilot before are deleted first."""
    kind, seed = args
    from datetime import UTC, datetime

    from sqlalchemy import text

    from pilot import analysis_runs
    from pilot.auth import CLI
    from pilot.db import db
    from pilot.rollout import get_pilot, transition
    from pilot.simulate import preset, simulate
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    with _app(kind).app_context():
        db.session.execute(text("DELETE FROM transactions"))
        if kind == "novelty":
            scenario = preset("novelty", seed=seed, key=f"novelty-{seed}")
        else:  # a lasting +6% on visits from the first day, no novelty
            scenario = preset("novelty", seed=seed, key=f"constant-{seed}", novelty=0.0, customers=1200,
                              effects={"bonus": {"*": {"visits": 0.06}}})
        key = simulate(db.session, scenario, now=now)["pilot"]
        db.session.commit()
        run = analysis_runs.create_run(db.session, CLI.actor, get_pilot(db.session, key), cutoff=now)
        analysis_runs.execute(db.session, run)
        trend = run.results["trend"]["bonus"]
        out = {"make_dynamic": float(run.recommendation["action"]["type"] == "make_dynamic"),
               "fading": float(bool(trend.get("fading")))}
        transition(db.session, CLI.actor, get_pilot(db.session, key), "cancel")  # not live: the next may overlap
        db.session.commit()
    return out


def main() -> None:
    started = time.perf_counter()
    out: dict[str, float] = {}
    with ProcessPoolExecutor(2) as pool:
        for g in SIZES:
            aa = list(pool.map(replicate, [(g, s, False) for s in range(AA)], chunksize=50))
            lift = list(pool.map(replicate, [(g, s, True) for s in range(EFFECT)], chunksize=50))
            out[f"fpr_{g}"] = sum(r["reject_cr2"] for r in aa) / AA
            out[f"coverage_{g}"] = sum(r["covered"] for r in lift) / EFFECT
            out[f"power10_{g}"] = sum(r["advance"] for r in lift) / EFFECT
            out[f"false_advance_{g}"] = sum(r["advance"] for r in aa) / AA
            for part in ("ols", "cr2", "ri", "decision"):  # where the power goes (diagnostics, not targets)
                out[f"power10_{part}_{g}"] = sum(r[part] for r in lift) / EFFECT
            print(json.dumps({k: v for k, v in out.items() if k.endswith(f"_{g}")}), file=sys.stderr, flush=True)
        novelty = list(pool.map(novelty_run, [("novelty", s) for s in range(1, NOVELTY_SEEDS + 1)]))
        constant = list(pool.map(novelty_run, [("constant", s) for s in range(1, CONSTANT_SEEDS + 1)]))
    out["novelty_detected"] = int(sum(r["make_dynamic"] for r in novelty))
    out["novelty_false_alarm"] = sum(r["fading"] for r in constant) / CONSTANT_SEEDS
    out["novelty_fading"] = int(sum(r["fading"] for r in novelty))  # the test fired (make_dynamic needs more)
    out["novelty_false_make_dynamic"] = sum(r["make_dynamic"] for r in constant) / CONSTANT_SEEDS
    rng = np.random.default_rng(0)
    corr = [np.corrcoef(*(lambda s: (s[:, :PRE_WEEKS].mean(1), s[:, PRE_WEEKS:].mean(1)))(store_panel(rng, 40)[0]))[0, 1]
            for _ in range(200)]
    print(f"A/A {AA}, +10% {EFFECT} per size; novelty seeds {NOVELTY_SEEDS}, constant {CONSTANT_SEEDS}; store "
          f"pre/post correlation {np.mean(corr):.3f}; {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
