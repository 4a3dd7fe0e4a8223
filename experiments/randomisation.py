"""Fisher randomisation inference for store-level ANCOVA over the assignment scheme that was used.

The scheme is the matched one of store pilots: stores sit in blocks, each block's treated stores are a
uniformly random subset of its stores of a fixed size (the arms of a block are a shuffled template),
and the stores left over are treated independently with probability q. Under the sharp null "every
store's outcome moves by δ under treatment" the control outcomes y − δ·T are known, so the test
statistic can be computed for every assignment the scheme could have drawn, and the p-value is the
probability of a statistic at least as extreme as the observed one.

The statistic is the ANCOVA coefficient of treatment (post ~ 1 + treated + pre) scaled by its
design precision: s(Z) = Zᵀ M y / √(Zᵀ M Z), M the residual maker of (1, pre). At δ it is
a_Z − δ·b_Z with a_Z = Zᵀ M y / √(Zᵀ M Z) and b_Z = Zᵀ M T / √(Zᵀ M Z); by Cauchy–Schwarz
|b_Z| ≤ b_T, so each assignment counts as "at least as extreme" on an interval of δ around the
estimate (the roots of a concave quadratic). Hence the p-value falls monotonically away from the
estimate on both sides, and the interval {δ : p(δ) > α} is exact, computed from those roots, and
never disagrees with the p-value at δ = 0.

Exact enumeration when the scheme has at most EXACT_LIMIT assignments, else MONTE_CARLO_DRAWS
draws from the scheme with the seed MONTE_CARLO_SEED, the observed assignment counted among them
(p = (1 + #{as extreme}) / (1 + draws)). Two-sided.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import combinations

import numpy as np

from experiments.cluster import ancova_cr2
from experiments.results import EffectResult, InferenceConfig

EXACT_LIMIT = 20_000
MONTE_CARLO_DRAWS = 10_000
MONTE_CARLO_SEED = 20_231_202


@dataclass(frozen=True)
class RandomisationResult:
    """The randomisation test of the ANCOVA effect and its interval by test inversion."""

    estimate: float
    p_value: float
    ci_low: float  # -inf / inf when no δ that far is rejected
    ci_high: float
    min_p_value: float  # the smallest p-value this scheme can give with these stores (its design limit)
    assignments: int  # how many assignments the scheme has (may be huge under Monte Carlo)
    draws: int  # how many were used: all of them (exact) or the Monte Carlo draws + the observed one
    method: str  # "exact" | "monte_carlo"
    seed: int | None
    message: str | None = None


def scheme_size(blocks: Sequence[Sequence[int]], treated_in_block: Sequence[int], free: int) -> int:
    """The number of assignments: Π C(block size, treated) × 2^free."""
    return math.prod(math.comb(len(b), k) for b, k in zip(blocks, treated_in_block)) * 2**free


def assignments(units: int, blocks: Sequence[Sequence[int]], treated_in_block: Sequence[int],
                free: Sequence[int], q: float) -> tuple[np.ndarray, np.ndarray]:
    """Every assignment of the scheme (rows of 0/1 over the units) and its probability."""
    return _assignments(units, tuple(map(tuple, blocks)), tuple(treated_in_block), tuple(free), q)


@lru_cache(maxsize=64)
def _assignments(units: int, blocks: tuple[tuple[int, ...], ...], treated_in_block: tuple[int, ...],
                 free: tuple[int, ...], q: float) -> tuple[np.ndarray, np.ndarray]:
    rows, probs = np.zeros((1, units)), np.ones(1)
    for block, k in zip(blocks, treated_in_block):
        options = list(combinations(block, k))
        pattern = np.zeros((len(options), units))
        for r, chosen in enumerate(options):
            pattern[r, list(chosen)] = 1
        rows = (rows[:, None, :] + pattern[None, :, :]).reshape(-1, units)
        probs = np.repeat(probs, len(options)) / len(options)
    for unit in free:
        on = rows.copy()
        on[:, unit] = 1
        rows = np.concatenate([rows, on])
        probs = np.concatenate([probs * (1 - q), probs * q])
    rows.setflags(write=False)
    probs.setflags(write=False)
    return rows, probs


def draw_assignments(units: int, blocks: Sequence[Sequence[int]], treated_in_block: Sequence[int],
                     free: Sequence[int], q: float, draws: int, seed: int) -> np.ndarray:
    """`draws` assignments drawn from the scheme (rows of 0/1), reproducibly from the seed."""
    return _draws(units, tuple(map(tuple, blocks)), tuple(treated_in_block), tuple(free), q, draws, seed)


@lru_cache(maxsize=64)
def _draws(units: int, blocks: tuple[tuple[int, ...], ...], treated_in_block: tuple[int, ...], free: tuple[int, ...],
           q: float, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros((draws, units))
    by_shape: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    for block, k in zip(blocks, treated_in_block):
        if block:
            by_shape.setdefault((len(block), k), []).append(block)
    for (size, k), same in sorted(by_shape.items()):  # a uniform k-subset of each block, for all blocks at once
        if (size, k) == (2, 1):  # pairs: a coin per pair
            pairs = np.asarray(same)
            coin = rng.random((draws, len(same))) < 0.5
            rows[:, pairs[:, 0]], rows[:, pairs[:, 1]] = coin, ~coin
            continue
        order = np.argsort(rng.random((draws, len(same), size)), axis=2)[:, :, :k]
        members = np.asarray(same)[np.arange(len(same))[None, :, None], order]
        rows[np.arange(draws)[:, None, None], members] = 1
    if free:
        rows[:, list(free)] = rng.random((draws, len(free))) < q
    rows.setflags(write=False)  # cached: shared by the calls with the same scheme
    return rows


def ancova_randomisation(y: Sequence[float], pre: Sequence[float], treated: Sequence[int],
                         blocks: Sequence[Sequence[int]], free: Sequence[int], q: float = 0.5,
                         alpha: float = 0.05, exact_limit: int = EXACT_LIMIT, draws: int = MONTE_CARLO_DRAWS,
                         seed: int = MONTE_CARLO_SEED) -> RandomisationResult:
    """The randomisation p-value and interval of the ANCOVA effect of `treated` on `y` given `pre`.

    `blocks`: the units (indices) of each block, whose number of treated units the scheme keeps;
    `free`: the units treated independently with probability `q`. Every unit is in one of them.
    """
    y, pre, t = (np.asarray(v, dtype=float) for v in (y, pre, treated))
    units = len(y)
    blocks = [list(b) for b in blocks]
    k = [int(t[b].sum()) for b in blocks]
    total = scheme_size(blocks, k, len(free))
    nan = float("nan")
    design = np.column_stack([np.ones(units), pre])
    if units < 4 or t.sum() < 1 or t.sum() > units - 1 or np.linalg.matrix_rank(design) < 2:
        return RandomisationResult(nan, nan, nan, nan, nan, total, 0, "exact", None, "too_few_units")
    if total <= exact_limit:
        z, prob = assignments(units, blocks, k, free, q)
        method, used_seed = "exact", None
    else:
        z = np.concatenate([t[None, :], draw_assignments(units, blocks, k, free, q, draws, seed)])
        prob = np.full(len(z), 1 / len(z))
        method, used_seed = "monte_carlo", seed
    # M = I − Q Qᵀ with Q an orthonormal basis of (1, pre): Zᵀ M v = Z·(M v) and Zᵀ M Z = |Z|² − |Qᵀ Z|²,
    # so every assignment costs O(units), not O(units²)
    basis = np.linalg.qr(design)[0]
    resid_y, resid_t = y - basis @ (basis.T @ y), t - basis @ (basis.T @ t)
    projected = z @ basis
    norm = np.sqrt(np.clip(z.sum(axis=1) - (projected**2).sum(axis=1), 0, None))  # z is 0/1: |z|² = Σz
    usable = norm > 1e-9 * max(norm.max(), 1e-300)  # an assignment with no contrast left (all one arm) never counts
    norm_t = math.sqrt(max(t @ resid_t, 0.0))
    if norm_t <= 1e-12:
        return RandomisationResult(nan, nan, nan, nan, nan, total, len(z), method, used_seed, "collinear")
    safe = np.where(usable, norm, 1)
    a = np.where(usable, (z @ resid_y) / safe, 0.0)
    b = np.where(usable, (z @ resid_t) / safe, 0.0)
    a_t, b_t = float(t @ resid_y) / norm_t, norm_t
    estimate = a_t / b_t
    tol = 1e-9 * (abs(a_t) + np.abs(a).max() + 1e-300)
    p_value = float(prob[usable & (np.abs(a) >= abs(a_t) - tol)].sum())
    # the assignments whose statistic is ± the observed one at every δ (T itself and its mirror image)
    twin = usable & (np.abs(b) >= b_t * (1 - 1e-9))
    min_p = float(prob[twin].sum())
    low, high = _inverted_interval(a, b, a_t, b_t, prob, usable & ~twin, alpha - min_p, estimate)
    return RandomisationResult(estimate, min(p_value, 1.0), low, high, min(min_p, 1.0), total, len(z), method,
                               used_seed)


def _inverted_interval(a: np.ndarray, b: np.ndarray, a_t: float, b_t: float, prob: np.ndarray, counted: np.ndarray,
                       budget: float, estimate: float) -> tuple[float, float]:
    """{δ : p(δ) > α}: the assignments that tie with the observed at every δ hold α − `budget` of the
    mass; each other assignment is "at least as extreme" on the interval between the roots of
    (a − δb)² − (a_T − δb_T)² (a concave quadratic, ≥ 0 at the estimate). The bound on each side is
    where the mass of the assignments still counting there falls to `budget` or below."""
    if budget < 0:
        return -math.inf, math.inf
    a, b, w = a[counted], b[counted], prob[counted]
    quad = b**2 - b_t**2  # < 0
    lin = -2 * (a * b - a_t * b_t)
    const = a**2 - a_t**2
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = np.sqrt(np.clip(lin**2 - 4 * quad * const, 0, None))
        r1, r2 = (-lin + disc) / (2 * quad), (-lin - disc) / (2 * quad)
    flat = quad > -1e-12 * b_t**2  # |b| = b_T: counts everywhere on one side; left to the infinite bound
    lows = np.where(flat, -math.inf, np.minimum(r1, r2))
    highs = np.where(flat, math.inf, np.maximum(r1, r2))
    return _bound(-lows, w, budget, -1, estimate), _bound(highs, w, budget, 1, estimate)


def _bound(ends: np.ndarray, w: np.ndarray, budget: float, sign: int, estimate: float) -> float:
    """The furthest δ (in the direction `sign`) with more than `budget` mass whose interval reaches it."""
    order = np.argsort(-ends)
    cum = np.cumsum(w[order])
    beyond = np.flatnonzero(cum > budget + 1e-12)
    return sign * float(ends[order][beyond[0]]) if len(beyond) else estimate


def store_decision(y: Sequence[float], pre: Sequence[float], treated: Sequence[int],
                   blocks: Sequence[Sequence[int]], free: Sequence[int], q: float = 0.5,
                   config: InferenceConfig = InferenceConfig()) -> tuple[EffectResult, EffectResult,
                                                                         RandomisationResult]:
    """The decision test of a store pilot: ANCOVA with CR2 errors and Bell–McCaffrey df, and the
    randomisation test of the same ANCOVA over the matched scheme; significant only when both are
    (an intersection–union test, whose p-value is the larger of the two), with the interval of that
    test: the set of effects neither rejects, the hull of the two intervals — so the p-value and the
    interval agree. Returns (the decision, the CR2 result, the randomisation result); the decision's
    `message` is "cannot_be_significant" when the scheme's smallest p-value is above α."""
    model = ancova_cr2(np.asarray(y, dtype=float), np.asarray(pre, dtype=float), np.asarray(treated, dtype=float),
                       config)
    ri = ancova_randomisation(y, pre, treated, blocks, free, q, config.alpha)
    method = "ancova_cr2+randomisation"
    if not model.ok or ri.message:
        return replace(model, method=method, message=model.message or ri.message), model, ri
    base = _base(y, pre, treated)
    low, high = min(model.ci_low, ri.ci_low), max(model.ci_high, ri.ci_high)
    rel_low = min(model.ci_rel_low, ri.ci_low / base) if base > 0 else math.nan
    rel_high = max(model.ci_rel_high, ri.ci_high / base) if base > 0 else math.nan
    limited = ri.min_p_value > config.alpha
    decision = replace(model, method=method, p_value=max(model.p_value, ri.p_value), ci_low=low, ci_high=high,
                       ci_rel_low=rel_low, ci_rel_high=rel_high,
                       message="cannot_be_significant" if limited else model.message)
    return decision, model, ri


def _base(y: Sequence[float], pre: Sequence[float], treated: Sequence[int]) -> float:
    """The control's fitted value at the pooled pre-period mean: what the relative effect is against."""
    pre = np.asarray(pre, dtype=float)
    x = np.column_stack([np.ones_like(pre), np.asarray(treated, dtype=float), pre])
    beta = np.linalg.lstsq(x, np.asarray(y, dtype=float), rcond=None)[0]
    return float(beta[0] + beta[2] * pre.mean())
