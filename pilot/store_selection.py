"""Which stores to start a store pilot in: a greedy matched-market search over the candidates.

A design is a set of stores; the pilot's matched scheme (pilot.store_randomisation: blocks within
region by the 56 days' sales before the start) draws their arms at the start. So a design is judged
by the blocks that scheme forms from it: greedily, pairs of stores in one region whose sales moved
together over the history (the smallest mean squared difference of their window-on-window change,
the variance a paired comparison is left with) are the candidates; step by step the pair that leaves
the design's stores moving most alike (the least spread of their change: what the store ANCOVA's
error is made of) is added — the stores that must be in first — up to the number of stores asked
for, or while the treatment stores' sales (the larger stores of each block, the worst case of the
draw) stay within the share at risk. Several
greedy runs, each started from another of the best pairs, give candidate designs; each is scored by
the store decision test simulated on the history (pilot.store_power) and by its pre-period balance
(standardised mean differences of the 8 weeks' sales and of the window-on-window change, averaged
over the scheme's draws, standardised by the candidates' spread), and the designs are ranked by
simulated MDE, then balance. Random designs
of the same size are summarised beside them, so the gain shows.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from pilot import plan_history, rollout, store_power
from pilot.errors import Conflict, Invalid, NotFound
from pilot.models import Pilot, Stage
from pilot.models.pilots import LIVE_STATES
from pilot.planner import PlanSettings, settings_for
from pilot.programmes import get_programme
from pilot.result_rows import clean
from pilot.store_power import StoreHistory
from pilot.store_randomisation import block_arms, matched_blocks

GREEDY_STARTS = 8  # greedy runs, each from another of the best pairs
PAIRS_KEPT = 400  # the best-fitting pairs the greedy search chooses among
BALANCE_DRAWS = 100  # draws of the scheme a design's balance is averaged over
RANDOM_DESIGNS = 20
SELECTION_SIMULATIONS = 60  # simulated pilots per proposed design


def propose_config(session: Session, data: dict[str, Any]) -> dict[str, Any]:
    """The ranked designs for the store pilot configuration in the body of POST /pilots/plan/stores."""
    programme = get_programme(session, data["programme"])
    position = data.get("stage") or 1
    if position > len(data["stages"]):
        raise Invalid(f"There is no stage {position}.", details={"fields": {"stage": ["No such stage."]}})
    stage = rollout.checked_stage(session, programme, dict(data["stages"][position - 1]), position, "store")
    settings = settings_for(session, programme, "store", data, stage, data.get("start"),
                            {**data, "simulations": min(data.get("simulations") or SELECTION_SIMULATIONS,
                                                        SELECTION_SIMULATIONS)})
    return propose(session, settings, data.get("include") or [], data.get("exclude") or [], data.get("stores"),
                   data.get("max_share_at_risk"), data.get("designs") or 5)


def propose(session: Session, s: PlanSettings, include: list[str], exclude: list[str], size: int | None,
            max_share: float | None, designs: int = 5) -> dict[str, Any]:
    """Ranked designs over the candidate stores of the settings' scope."""
    codes = {c for _, c, _ in s.stores}
    for name, given in (("include", include), ("exclude", exclude)):
        unknown = sorted(set(given) - codes)
        if unknown:
            raise Invalid(f"{name} names stores outside the candidates (the stage's scope): {', '.join(unknown)}.",
                          details={"fields": {name: [f"Not a candidate: {', '.join(unknown)}."]}})
    if set(include) & set(exclude):
        raise Invalid("A store is both included and excluded.", details={"fields": {"exclude": ["Also in include."]}})
    if size is None and max_share is None:
        raise Invalid("Give the number of stores or the largest share of sales at risk.",
                      details={"fields": {"stores": ["Give stores or max_share_at_risk."]}})
    stores = [st for st in s.stores if st[1] not in set(exclude)]
    if size is not None and (size > len(stores) or size < len(include)):
        raise Invalid(f"{size} stores cannot be chosen from {len(stores)} candidates with {len(include)} included.",
                      details={"fields": {"stores": [f"Between {max(len(include), 4)} and {len(stores)}."]}})
    history = plan_history.store_history(session, stores, s.start, 2 * s.weeks + store_power.BLOCK_WEEKS + 8)
    return search(history, s, include, size, max_share, designs)


def search(history: StoreHistory, s: PlanSettings, include: list[str], size: int | None, max_share: float | None,
           designs: int = 5) -> dict[str, Any]:
    """The greedy matched-market search on the candidates' weekly sales (pure: tests call it directly)."""
    spans = store_power.windows(history, s.weeks)
    if not spans:
        raise Invalid(f"The candidates' history holds less than {2 * s.weeks} weeks.",
                      details={"fields": {"weeks": ["Longer than the history allows."]}})
    change = np.array([post / np.where(pre > 0, pre, np.nan) - 1 for post, pre, _ in spans]).T  # stores × windows
    value = spans[0][2]
    total = float(value.sum())
    fit = _pair_fit(history.regions, change)
    must = [history.codes.index(c) for c in include]
    seen, found = set(), []
    for start in [None, *[p for _, p in fit[:GREEDY_STARTS - 1]]]:
        chosen = _greedy(history, s.allocation, s.control, value, total, fit, must, start, size, max_share, change)
        key = tuple(sorted(chosen))
        if len(chosen) >= 4 and key not in seen:
            seen.add(key)
            found.append(chosen)
    rng = np.random.default_rng(s.seed)
    scored = [_score(history, s, d, value, change, total, rng) for d in found]
    scored.sort(key=lambda d: (d["mde_rel"] if d["mde_rel"] is not None else math.inf, d["balance"]))
    n = len(found[0]) if found else (size or 4)
    return clean({"candidates": len(history.codes), "weeks": s.weeks, "target_mde_rel": s.mde,
                  "designs": [{"rank": i + 1, **d} for i, d in enumerate(scored[:designs])],
                  "random_designs": _random_designs(history, s, n, must, value, change, rng),
                  "assumptions": [
                      f"Candidates: the stage's scope less the excluded stores; history: weekly sales before "
                      f"{s.start:%Y-%m-%d} ({history.weekly.shape[1]} weeks).",
                      "Arms are drawn at the start by the pilot's matched scheme (blocks within region by the "
                      "56 days' sales); balance is the mean |SMD| over that scheme's draws.",
                      "Sales at risk: the treatment stores' share of the candidates' sales in the 56 days before the "
                      "start, counting each block's larger stores as treated (the worst draw).",
                      f"MDE: the store decision test simulated on {SELECTION_SIMULATIONS} historical pilots per design "
                      f"of {s.weeks} weeks (pilot.store_power)."]})


def _pair_fit(regions: list[str], change: np.ndarray) -> list[tuple[float, tuple[int, int]]]:
    """Pairs of stores in one region by the mean squared difference of their window-on-window change."""
    out = []
    for region in sorted(set(regions)):
        members = [i for i, r in enumerate(regions) if r == region]
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                i, j = members[a], members[b]
                both = np.isfinite(change[i]) & np.isfinite(change[j])
                if both.any():
                    out.append((float(((change[i] - change[j])[both] ** 2).mean()), (i, j)))
    out.sort()
    return out[:PAIRS_KEPT]


def _greedy(history: StoreHistory, allocation: Mapping[str, float], control: str, value: np.ndarray, total: float,
            fit: list, must: list[int], start: tuple[int, int] | None, size: int | None,
            max_share: float | None, change: np.ndarray) -> list[int]:
    """The included stores, then `start`, then step by step the pair (of the best-fitting ones) that
    leaves the design's stores moving most alike (the least spread of their change across stores,
    what the store ANCOVA's error is made of), while the constraints allow."""
    chosen = list(dict.fromkeys(must))
    if start is not None and not set(start) & set(chosen):
        chosen += list(start)
    while size is None or len(chosen) + 2 <= size:
        best, best_spread = None, math.inf
        for _, pair in fit:
            if pair[0] in chosen or pair[1] in chosen:
                continue
            trial = chosen + list(pair)
            if max_share is not None and at_risk(history, allocation, control, value, trial) > max_share * total:
                continue
            spread = _spread(change, trial)
            if spread < best_spread:
                best, best_spread = pair, spread
        if best is None:
            break
        chosen += list(best)
    if size is not None and len(chosen) < size:  # an odd size: the store that keeps the spread least
        rest = [k for k in range(len(history.codes)) if k not in chosen]
        if rest:
            chosen.append(min(rest, key=lambda k: _spread(change, chosen + [k])))
    return chosen[:max(size, len(must))] if size is not None else chosen


def _spread(change: np.ndarray, chosen: list[int]) -> float:
    """Mean over the windows of the variance of the stores' change across the design (pair fit for two)."""
    sub = change[chosen]
    ok = np.isfinite(sub)
    count = ok.sum(axis=0)
    use = count > 1
    if not use.any():
        return 0.0
    values = np.where(ok, sub, 0.0)[:, use]
    mean = values.sum(axis=0) / count[use]
    squares = (np.where(ok[:, use], values - mean, 0.0) ** 2).sum(axis=0)
    return float((squares / (count[use] - 1)).mean())


def at_risk(history: StoreHistory, allocation: Mapping[str, float], control: str, value: np.ndarray,
            chosen: list[int]) -> float:
    """Sales of the treatment stores in the worst draw: each block's largest stores as treated, free stores too."""
    treated = sum(1 for a in block_arms(allocation) if a != control)
    blocks, rest = matched_blocks([(history.codes[i], history.regions[i], float(value[i])) for i in chosen],
                                  allocation)
    index = {c: i for i, c in enumerate(history.codes)}
    risk = sum(sum(sorted((value[index[c]] for c in b), reverse=True)[:treated]) for b in blocks)
    return float(risk + sum(value[index[c]] for c in rest))


def _subset(history: StoreHistory, chosen: list[int]) -> StoreHistory:
    return StoreHistory([history.codes[i] for i in chosen], [history.regions[i] for i in chosen],
                        history.weekly[chosen])


def balance(history: StoreHistory, s: PlanSettings, chosen: list[int], value: np.ndarray, change: np.ndarray,
            rng: np.random.Generator) -> dict[str, float]:
    """Mean |SMD| of treatment against control over the scheme's draws, of the 8 weeks' sales and of the
    latest window-on-window change. Standardised by the spread among all candidates, so designs compare
    (a design of stores that move alike has a small spread of its own, and a pooled-sd SMD of noise)."""
    sub = _subset(history, chosen)
    scales = {"pre_sales": float(np.std(value, ddof=1)), "pre_change": float(np.nanstd(change[:, 0], ddof=1))}
    v, c = value[chosen], change[chosen, 0]
    smds: dict[str, list[float]] = {"pre_sales": [], "pre_change": []}
    sch = store_power.scheme(sub, v, s.allocation)
    for _ in range(BALANCE_DRAWS):
        kept, t, _, _ = store_power.draw(sch, s.control, s.arm, rng)
        if t.min() == t.max():
            continue
        for name, x in (("pre_sales", v[kept]), ("pre_change", c[kept])):
            smds[name].append(abs(x[t == 1].mean() - x[t == 0].mean()) / scales[name] if scales[name] > 0 else 0.0)
    return {k: float(np.mean(vals)) if vals else math.nan for k, vals in smds.items()}


def _score(history: StoreHistory, s: PlanSettings, chosen: list[int], value: np.ndarray, change: np.ndarray,
           total: float, rng: np.random.Generator) -> dict[str, Any]:
    sub = _subset(history, chosen)
    sim = store_power.simulate(sub, s.allocation, s.control, s.arm, s.weeks, s.mde, s.power, s.alpha,
                               s.simulations or SELECTION_SIMULATIONS, s.seed)
    smd = balance(history, s, chosen, value, change, rng)
    post, pre, _ = store_power.windows(sub, s.weeks)[0]
    share = s.shares[1] / (s.shares[0] + s.shares[1])
    return {"store_codes": sorted(sub.codes), "stores": len(chosen),
            "mde_rel": sim.mde if sim else None, "power": sim.power_at_target if sim else None,
            "mde_rel_analytic": store_power.analytic(post, pre, share, s.power, s.alpha)["mde"],
            "cannot_be_significant": bool(sim and sim.min_p_value > s.alpha),
            "smd": smd, "balance": max(smd.values()),
            "share_at_risk": at_risk(history, s.allocation, s.control, value, chosen) / total if total > 0 else None}


def _random_designs(history: StoreHistory, s: PlanSettings, n: int, must: list[int], value: np.ndarray,
                    change: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """The balance and analytic MDE of random designs of n stores (the included ones always in)."""
    pool = [i for i in range(len(history.codes)) if i not in must]
    balances, mdes = [], []
    share = s.shares[1] / (s.shares[0] + s.shares[1])
    for _ in range(RANDOM_DESIGNS):
        chosen = must + [int(i) for i in rng.choice(pool, size=max(n - len(must), 0), replace=False)]
        smd = balance(history, s, chosen, value, change, rng)
        balances.append(max(smd.values()))
        post, pre, _ = store_power.windows(_subset(history, chosen), s.weeks)[0]
        mdes.append(store_power.analytic(post, pre, share, s.power, s.alpha)["mde"])
    return {"designs": RANDOM_DESIGNS, "stores": n, "balance_median": float(np.median(balances)),
            "balance_best": float(np.min(balances)), "mde_rel_analytic_median": float(np.median(mdes))}


def design_stage(pilot: Pilot, position: int | None = None) -> Stage:
    """The stage a proposed design is for: a draft's first (or `position`), a live pilot's next one, not yet
    started — never the running stage, whose scope holds the assigned units (else a 409 with the reason)."""
    if pilot.state in LIVE_STATES:
        current = pilot.current_stage or 0
        if position is not None and position <= current:
            raise Conflict(f"Stage {position} of pilot {pilot.key!r} has started: its scope never changes. A design "
                           "applies to a stage that has not started.", code="running_stage_scope")
        nxt = next((st for st in sorted(pilot.stages, key=lambda st: st.position)
                    if st.position > current and st.started_at is None and position in (None, st.position)), None)
        if nxt is None:
            raise Conflict(f"Pilot {pilot.key!r} is {pilot.state} in stage {current} and has no later stage: a design "
                           "applies to the next stage's scope, never the running one's. Add a stage first.",
                           code="no_next_stage")
        return nxt
    stage = pilot.stage(position or 1)
    if stage is None:
        raise NotFound(f"Pilot {pilot.key!r} has no stage {position}.")
    return stage


def apply_design(session: Session, actor: str, pilot: Pilot, codes: list[str], position: int | None = None) -> Stage:
    """Set the scope of the design's stage (design_stage) to the stores `codes` (audited by pilot.rollout)."""
    stage = design_stage(pilot, position)
    return rollout.update_stage(session, actor, pilot, stage.position, {"store_codes": codes, "region_codes": []})


def propose_pilot(session: Session, pilot, size: int | None, max_share: float | None,
                  options: dict[str, Any]) -> dict[str, Any]:
    """The ranked designs for a saved store pilot's design stage (a draft's first, a live pilot's next)."""
    stage = design_stage(pilot, options.get("stage"))
    design = {"primary_metric": pilot.primary_metric, "alpha": pilot.alpha, "power": pilot.power, "mde": pilot.mde}
    settings = settings_for(session, pilot.programme, "store", design, stage, stage.started_at,  # (a stage to come)
                            {**options, "simulations": SELECTION_SIMULATIONS})
    return propose(session, settings, options.get("include") or [], options.get("exclude") or [], size, max_share,
                   options.get("designs") or 5)
