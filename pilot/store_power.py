"""Power of a store pilot by simulation on the stores' own history (the GeoLift way), with the
decision test the analysis runs, and the analytic figure beside it.

Each simulated pilot takes a historical window of the planned length (post) and the window of the
same length before it (pre), as pilot.aggregation.store_cube does; randomises the stores in scope by
the matched scheme pilot.store_randomisation builds (blocks within region sorted by the 56 days'
sales before the window's start); and runs the store decision test (experiments.randomisation:
ANCOVA with CR2 errors and Bell–McCaffrey df, and the randomisation test of the same ANCOVA over that
scheme; significant only when both are). The effect is injected as a relative lift of the treated
stores' sales (y·(1 + δ)). Per simulated pilot the smallest δ the test calls significant and
positive is found (the interval's lower bound is 0 there: one evaluation at 0, one at the additive
estimate, a secant step), so the power at any δ and the MDE at any power come from one set of runs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from experiments.cluster import ancova_cr2
from experiments.randomisation import EXACT_LIMIT, ancova_randomisation, scheme_size, store_decision
from experiments.results import InferenceConfig
from pilot.store_effects import stores_for_min_p
from pilot.store_randomisation import block_arms, matched_blocks

BLOCK_WEEKS = 8  # the matched scheme sorts stores by their sales over the 56 days before the start
# Monte Carlo draws of the randomisation test when its scheme is too large to enumerate. The analysis
# uses experiments.randomisation.MONTE_CARLO_DRAWS (10,000); 1,000 per simulated pilot keeps the
# simulation in seconds, at a Monte Carlo error of the p-value of about ±0.007 near α = 0.05.
SIM_DRAWS = 1_000


@dataclass(frozen=True)
class StoreHistory:
    """Weekly sales per store (rows: stores, columns: weeks, oldest first, the last ending at the start)."""

    codes: list[str]
    regions: list[str]
    weekly: np.ndarray


@dataclass(frozen=True)
class StorePower:
    """What the simulation found: the MDE of the decision test (inf when it cannot be significant)
    and of its CR2 part alone, the power at the target, and how it was obtained."""

    mde: float
    mde_cr2: float
    power_at_target: float
    power_cr2_at_target: float
    simulations: int
    windows: int
    stores: int
    min_p_value: float
    exhaustive: bool  # the randomisation test enumerated its scheme (else SIM_DRAWS Monte Carlo draws)


def windows(history: StoreHistory, weeks: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(post, pre, blocking value) per historical window, most recent first: daily sales over the
    `weeks` before each weekly pseudo-start's end, the same length before, and the 8 weeks' sales
    before the pseudo-start (the pre window when history is shorter)."""
    w = history.weekly.shape[1]
    out = []
    for k in range(0, w - 2 * weeks + 1):
        end = w - k
        start = end - weeks
        post = history.weekly[:, start:end].sum(axis=1) / (7 * weeks)
        pre = history.weekly[:, start - weeks:start].sum(axis=1) / (7 * weeks)
        value = history.weekly[:, max(start - BLOCK_WEEKS, 0):start].sum(axis=1)
        out.append((post, pre, value))
    return out


@dataclass(frozen=True)
class Scheme:
    """The matched scheme of a set of stores, built once (blocks and the arms' template), drawn often."""

    blocks: list[np.ndarray]  # store indices per block
    rest: np.ndarray  # stores bucketed one by one
    template: np.ndarray  # the arms of one block
    names: list[str]
    weights: np.ndarray


def scheme(history: StoreHistory, value: np.ndarray, allocation: Mapping[str, float]) -> Scheme:
    """The scheme pilot.store_randomisation builds: blocks within region by `value`, the rest free."""
    index = {c: i for i, c in enumerate(history.codes)}
    blocks, rest = matched_blocks(list(zip(history.codes, history.regions, value.tolist())), allocation)
    names = [k for k, w in allocation.items() if w > 0]
    weights = np.array([allocation[k] for k in names], dtype=float)
    return Scheme([np.array([index[c] for c in b]) for b in blocks], np.array([index[c] for c in rest], dtype=int),
                  np.array(block_arms(allocation)), names, weights / weights.sum())


def draw(sch: Scheme, control: str, arm: str,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[list[int]], list[int]]:
    """One assignment by the scheme, kept to `control` and `arm`: (store indices, treated 0/1, blocks as
    positions in the kept stores, free positions) — as store_effects._design sees it."""
    arm_of: dict[int, str] = {}
    for block in sch.blocks:
        arm_of.update(zip(block.tolist(), sch.template[rng.permutation(len(block))].tolist()))
    picks = rng.choice(len(sch.names), size=len(sch.rest), p=sch.weights) if len(sch.rest) else []
    arm_of.update((int(i), sch.names[int(k)]) for i, k in zip(sch.rest, picks))
    kept = np.array(sorted(i for i, a in arm_of.items() if a in (control, arm)), dtype=int)
    position = {int(i): p for p, i in enumerate(kept)}
    treated = np.array([1.0 if arm_of[int(i)] == arm else 0.0 for i in kept])
    blocks = [[position[i] for i in b.tolist() if i in position] for b in sch.blocks]
    return kept, treated, [b for b in blocks if b], [position[int(i)] for i in sch.rest if int(i) in position]


def draw_design(history: StoreHistory, value: np.ndarray, allocation: Mapping[str, float], control: str, arm: str,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[list[int]], list[int]]:
    """One assignment by the matched scheme of the stores by `value` (see `draw`)."""
    return draw(scheme(history, value, allocation), control, arm, rng)


def decision_bounds(y: np.ndarray, x: np.ndarray, t: np.ndarray, blocks: list[list[int]], free: list[int],
                    q: float, config: InferenceConfig) -> tuple[float, float, float, float]:
    """(decision interval's lower bound, CR2 interval's lower bound, base, smallest p of the scheme):
    store_decision itself when its scheme is enumerated, else its two parts with SIM_DRAWS draws."""
    k = [int(t[b].sum()) for b in blocks]
    if scheme_size(blocks, k, len(free)) <= EXACT_LIMIT:
        decision, model, ri = store_decision(y, x, t, blocks, free, q, config)
        low = decision.ci_low if not (ri.message or not model.ok) else -math.inf
    else:
        model = ancova_cr2(y, x, t, config)
        ri = ancova_randomisation(y, x, t, blocks, free, q, config.alpha, draws=SIM_DRAWS)
        low = min(model.ci_low, ri.ci_low) if model.ok and not ri.message else -math.inf
    return float(low), float(model.ci_low if model.ok else -math.inf), _base(y, x, t), float(ri.min_p_value)


def _base(y: np.ndarray, x: np.ndarray, t: np.ndarray) -> float:
    """The control's fitted value at the pooled pre-period mean (what the relative effect is against)."""
    design = np.column_stack([np.ones_like(x), t, x])
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    return float(beta[0] + beta[2] * x.mean())


def smallest_effect(y: np.ndarray, x: np.ndarray, t: np.ndarray, blocks: list[list[int]], free: list[int],
                    q: float, config: InferenceConfig) -> tuple[float, float, float]:
    """(δ the decision test needs, δ its CR2 part needs, smallest p): the relative lift of the treated
    stores at which the interval's lower bound reaches 0 (inf when it never can). The bound moves by
    δ·base under an additive lift, which gives the first guess; secant steps from there."""
    low0, cr0, base, min_p = decision_bounds(y, x, t, blocks, free, q, config)
    if not base > 0 or not math.isfinite(cr0):
        return math.inf, math.inf, min_p
    seen = {0.0: (low0, cr0)}

    def bound(delta: float, i: int) -> float:
        if delta not in seen:
            seen[delta] = decision_bounds(y * (1 + delta * t), x, t, blocks, free, q, config)[:2]
        return seen[delta][i]
    guess = max(-(low0 if math.isfinite(low0) else cr0) / base, 1e-6)  # one first guess: its evaluation is shared
    found = [_root(lower, guess, lambda d, i=i: bound(d, i)) if math.isfinite(lower) else math.inf
             for i, lower in enumerate((low0, cr0))]
    return found[0], found[1], min_p


TOLERANCE = 0.005  # the secant stops when its step moves δ by less than half a percentage point
STEPS = 2


def _root(f0: float, d1: float, f) -> float:
    """Secant steps from (0, f0) and the first guess d1 to f = 0; inf when the bound never reaches 0
    (an unbounded interval, or one that widens faster than the lift moves it)."""
    d0 = 0.0
    for _ in range(STEPS):
        f1 = f(d1)
        if not math.isfinite(f1):
            return math.inf
        slope = (f1 - f0) / (d1 - d0) if d1 != d0 else 0.0
        if not slope > 0:
            return math.inf if f1 < 0 else d1
        step = f1 / slope
        d0, f0, d1 = d1, f1, max(d1 - step, 1e-6)
        if abs(step) < TOLERANCE:
            return d1
    return d1


def simulate(history: StoreHistory, allocation: Mapping[str, float], control: str, arm: str, weeks: int,
             mde: float, power: float = 0.8, alpha: float = 0.05, simulations: int = 200,
             seed: int = 0) -> StorePower | None:
    """Simulated pilots on the history's windows; None when the history holds no window of 2 × weeks."""
    spans = windows(history, weeks)
    if not spans or simulations < 1:
        return None
    rng = np.random.default_rng(seed)
    config = InferenceConfig(alpha=alpha)
    q = allocation[arm] / (allocation[arm] + allocation[control])
    needs, needs_cr2, min_ps, exhaustive = [], [], [], True
    schemes = [scheme(history, value, allocation) for _, _, value in spans]
    for r in range(simulations):
        post, pre, _ = spans[r % len(spans)]
        kept, t, blocks, free = draw(schemes[r % len(spans)], control, arm, rng)
        exhaustive &= scheme_size(blocks, [int(t[b].sum()) for b in blocks], len(free)) <= EXACT_LIMIT
        d, d_cr2, min_p = smallest_effect(post[kept], pre[kept], t, blocks, free, q, config)
        needs.append(d)
        needs_cr2.append(d_cr2)
        min_ps.append(min_p)
    needs, needs_cr2 = np.array(needs), np.array(needs_cr2)
    return StorePower(quantile(needs, power), quantile(needs_cr2, power), float((needs <= mde).mean()),
                      float((needs_cr2 <= mde).mean()), simulations, len(spans), len(kept),
                      float(np.nanmedian(min_ps)), exhaustive)


def quantile(needs: np.ndarray, power: float) -> float:
    """The δ that `power` of the simulated pilots detect (inf when fewer than that can)."""
    finite = np.isfinite(needs)
    if finite.mean() < power:
        return math.inf
    return float(np.quantile(np.where(finite, needs, np.inf), power, method="inverted_cdf"))


def analytic(post: np.ndarray, pre: np.ndarray, share: float, power: float = 0.8,
             alpha: float = 0.05) -> dict[str, float]:
    """The store-level ANCOVA's MDE from the stores' spread (residual variance of post on pre, df = stores − 3)
    and the spread of each store's relative change."""
    n = len(post)
    if n < 4:
        return {"mde": math.inf, "sd_change_rel": math.nan, "residual_sd_rel": math.nan, "stores": n}
    design = np.column_stack([np.ones(n), pre])
    beta = np.linalg.lstsq(design, post, rcond=None)[0]
    resid = post - design @ beta
    sigma = math.sqrt(float(resid @ resid) / (n - 3))
    base = float(post.mean())
    n_t = max(n * share, 1.0)
    n_c = max(n - n_t, 1.0)
    df = n - 3
    se = sigma * math.sqrt(1 / n_c + 1 / n_t)
    multiplier = stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)
    change = post / np.where(pre > 0, pre, np.nan) - 1
    return {"mde": float(multiplier * se / base) if base > 0 else math.inf,
            "sd_change_rel": float(np.nanstd(change, ddof=1)), "residual_sd_rel": sigma / base if base else math.nan,
            "stores": n}


def stores_needed(mde_now: float, stores: int, target: float, alpha: float) -> int | None:
    """Stores for the target MDE (the MDE falls as 1/√stores) and at least what the scheme's smallest p needs."""
    if not math.isfinite(mde_now) or target <= 0:
        return None
    return max(math.ceil(stores * (mde_now / target) ** 2), stores_for_min_p(alpha))
