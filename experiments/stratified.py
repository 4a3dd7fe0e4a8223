"""Post-stratification: one effect from the effects of strata whose arms were mixed in different proportions.

When a stage's weights change while it runs (a ramp from 80/20 to 20/80), the units of each
period follow that period's weights, and units joined at different times differ (a longer exposure,
another season). Pooling the arms then compares an early-heavy arm with a late-heavy one. Within a
period the arms are comparable; the post-stratified effect weights each period's effect by the
period's share of the units compared (Σ w_p Δ_p, w_p = units_p / units) with the variance
Σ w_p² se_p² of independent strata. For differences in means this is the treatment coefficient of
the regression fully interacted with centred period indicators (Lin 2013), and its error that
regression's HC2 error.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from experiments.results import EffectResult, InferenceConfig, degenerate, from_estimate, relative_to


def post_stratified(strata: Sequence[EffectResult], config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """The strata's effects combined with weights by their units (normal reference distribution).

    Strata without a usable contrast (an arm with no or too few units in that period, no variance)
    are left out and the weights renormalised over the rest: the effect is then the one of the
    periods in which both arms were assigned. Means are the arms' standardised means Σ w_p mean_p;
    the relative effect is the effect over the standardised control mean m, its error by the delta
    method from Var(m) = Σ w_p² Var(m_p) and Cov(effect, m) = Σ w_p² Cov(Δ_p, m_p) (the ratio of
    the interacted regression's treatment coefficient to its intercept). Strata from a method that
    does not report those two leave the control mean's error out (the effect's error over m)."""
    usable = [s for s in strata if s.ok and math.isfinite(s.se)]
    n = (sum(s.n_control for s in strata), sum(s.n_treatment for s in strata))
    method = f"{strata[0].method}+post_stratified" if strata else "post_stratified"
    if not usable:
        return degenerate(method, n, (math.nan, math.nan), "too_few_units")
    total = sum(s.n_control + s.n_treatment for s in usable)
    weights = [(s.n_control + s.n_treatment) / total for s in usable]
    effect = sum(w * s.effect_abs for w, s in zip(weights, usable))
    se = math.sqrt(sum(w * w * s.se * s.se for w, s in zip(weights, usable)))
    means = (sum(w * s.mean_control for w, s in zip(weights, usable)),
             sum(w * s.mean_treatment for w, s in zip(weights, usable)))
    rel, se_rel = (effect / means[0], se / abs(means[0])) if means[0] else (math.nan, math.nan)
    var_c = sum(w * w * s.var_mean_control for w, s in zip(weights, usable))
    cov = sum(w * w * s.cov_effect_control for w, s in zip(weights, usable))
    if means[0] and math.isfinite(var_c) and math.isfinite(cov):
        rel, se_rel = relative_to(effect, se, means[0], var_c, cov)
    result = from_estimate(method, n, means, effect, se, None, rel, se_rel, config)
    return replace(result, var_mean_control=var_c, cov_effect_control=cov)
